"""What several test modules run: the CLI as a user runs it, and the one-line error it must give;
the worker's environment and events; waiting; markers; a variable set for a block; clients of a
moto server a test starts. One copy each, so that a fix to how the tests run or read something
reaches every test that does it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import sysconfig
import time
import venv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

OPSCTL = str(Path(sys.executable).parent / "opsctl")
WORKER = str(Path(sys.executable).parent / "opsctl-worker")


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    python: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`opsctl ARGS` as a separate process; a hang fails the test at `timeout` seconds. `python`:
    the interpreter to run it with (`host_python`), which its supervisor and workers use too;
    `cwd`: where it runs, for arguments relative to it (the repository's examples/, say)."""
    argv = [python, OPSCTL] if python else [OPSCTL]
    return subprocess.run(
        [*argv, *args], env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A status document's steps by name: tests read a step, not a position in the list."""
    return {step["name"]: step for step in doc["steps"]}


def wait_until(done: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `done` until it holds; past `timeout` seconds the test fails naming `what`, so a
    run that never gets there fails instead of stalling the suite."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(interval)


def worker_env(**contract: str) -> dict[str, str]:
    """This process's environment without any AWS_BATCH_ or OPSCTL_ variable (the test's own
    runner may set some), plus `contract`: a worker sees only the contract the test gives it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_BATCH_", "OPSCTL_"))}
    env.update(contract)
    return env


def events(stderr: str, name: str | None = None) -> list[dict[str, Any]]:
    """The worker's JSON log events in `stderr` (one object a line, among plain lines), in
    order; only those whose `event` is `name`, when given."""
    found = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [e for e in found if name is None or e.get("event") == name]


def marker_indices(folder: Path) -> list[int]:
    """The command indices of the markers in a step's done/ (or failed/) folder, sorted. A name
    there that is not a marker's, all digits, fails the test: a worker stages what it writes in
    the state's .opsctl-staging/ and renames it into place, so a writer killed in between leaves
    its file there, never among the markers (tests/faults checks the same after every round). A
    folder not made yet holds no markers."""
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    strays = [name for name in names if not name.isdigit()]
    assert not strays, f"not markers, among the markers in {folder}: {strays}"
    return sorted(int(name) for name in names)


@contextlib.contextmanager
def environ_set(name: str, value: str) -> Iterator[None]:
    """`name=value` in this process's environment (and so in every client and child made
    meanwhile) for the block; afterwards as it was, unset or its old value."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def moto_client(
    service: str,
    endpoint: str,
    key_id: str = "testing",
    secret: str = "testing",  # noqa: S107 - moto's fake key
    cert: Path | str | None = None,
    region: str = "us-east-1",
) -> Any:
    """A boto3 client of a moto server the test started itself (not the session's, which
    boto3's defaults already point at): signing as `key_id`, which is who it plays where moto
    checks IAM, and trusting `cert` where the server speaks TLS."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        **({"verify": str(cert)} if cert is not None else {}),
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


def one_step_run(spans: list[tuple[float, float]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A succeeded local run of one step, as `report.facts` takes it: its status document, and
    one first attempt of child i from `spans[i]` (start and end, epoch seconds), exit 0."""
    status = {
        "run_id": "r-20260101-000000-abcd",
        "pipeline": "p",
        "backend": "local",
        "state": "SUCCEEDED",
        "reason": None,
        "steps": [
            {
                "name": "s",
                "queue": "cpu",
                "state": "SUCCEEDED",
                "array_size": len(spans),
                "commands": {"total": len(spans), "done": len(spans), "failed": 0, "reexecuted": 0},
            }
        ],
    }
    attempts = [
        {
            "step": "s",
            "index": i,
            "generation": 1,
            "attempt": 1,
            "started": start,
            "finished": end,
            "exit_code": 0,
            "reason": None,
            "cpu_seconds": None,
        }
        for i, (start, end) in enumerate(spans)
    ]
    return status, attempts
