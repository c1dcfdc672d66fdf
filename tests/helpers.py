"""What several test modules run: the CLI as a user runs it, and the one-line error it must give."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OPSCTL = str(Path(sys.executable).parent / "opsctl")
WORKER = str(Path(sys.executable).parent / "opsctl-worker")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`opsctl ARGS` as a separate process; a hang fails the test at `timeout` seconds."""
    return subprocess.run(
        [OPSCTL, *args], env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout
    )


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single `opsctl:` line of a failed command: no traceback, no usage box, the exit code."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsctl: "), result.stderr
    return lines[0]
