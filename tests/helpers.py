"""What several test modules run: the CLI as a user runs it, and the one-line error it must give."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

OPSCTL = str(Path(sys.executable).parent / "opsctl")
WORKER = str(Path(sys.executable).parent / "opsctl-worker")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, python: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`opsctl ARGS` as a separate process; a hang fails the test at `timeout` seconds. `python`:
    the interpreter to run it with (`host_python`), which its supervisor and workers use too."""
    argv = [python, OPSCTL] if python else [OPSCTL]
    return subprocess.run(
        [*argv, *args], env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout
    )


def host_python(folder: Path, sitecustomize: str) -> str:
    """A Python that sees this venv's packages and runs `sitecustomize` at every start: a host
    that misbehaves (dies at a chosen moment, say) for every process opsctl starts on it. opsctl
    starts its supervisor and workers isolated (`python -I`), so no PYTHONPATH or environment
    variable reaches them; a site-packages folder of the interpreter itself does."""
    venv.EnvBuilder(with_pip=False).create(folder)
    (site,) = (folder / "lib").glob("python3*/site-packages")
    ours = sysconfig.get_paths()["purelib"]
    (site / "opsctl-test-host.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    (site / "sitecustomize.py").write_text(sitecustomize)
    return str(folder / "bin" / "python")


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single `opsctl:` line of a failed command: no traceback, no usage box, the exit code."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsctl: "), result.stderr
    return lines[0]
