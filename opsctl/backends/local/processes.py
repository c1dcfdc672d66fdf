"""The processes of a local run: which are its own, and how they are stopped.

Every process of a run carries `OPSCTL_RUN_ID=<run>` in its environment: the supervisor, each
worker, and each command a worker starts. That mark, not a pid from the state database, is what
decides: once a run's processes are gone another process may get one of their pids, and a
damaged database may not hold the pids at all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

# Seconds between SIGTERM and SIGKILL, for timeouts and kills: AWS Batch's 30 s (user guide,
# "Job timeouts"), so a command's clean-up gets the same time on both backends.
STOP_GRACE = 30.0


def pid_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (a finished child its parent has not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _marked(pid: int, mark: bytes) -> bool | None:
    """Whether `pid`'s environment holds `mark`; None where /proc cannot say."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except PermissionError:
        return False  # another user's process: never ours
    except OSError:
        return None
    return mark in environ.split(b"\0")


def runs_for(pid: int, run_id: str) -> bool:
    """True if `pid` is alive and works for `run_id` (OPSCTL_RUN_ID in its environment)."""
    if not pid_alive(pid):
        return False
    marked = _marked(pid, f"OPSCTL_RUN_ID={run_id}".encode())
    return True if marked is None else marked  # no /proc (macOS): the pid is all there is


def run_processes(run_id: str) -> list[int]:
    """Every live process of `run_id`, found by its environment: no database needed."""
    mark = f"OPSCTL_RUN_ID={run_id}".encode()
    try:
        pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    except OSError:
        return []
    me = os.getpid()
    return [pid for pid in pids if pid != me and _marked(pid, mark) and pid_alive(pid)]


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _signal(pid: int, signum: int) -> None:
    """The process's whole group when it leads one (a worker and its command), else itself."""
    try:
        leader = os.getpgid(pid) == pid
    except ProcessLookupError:
        return
    if leader:
        signal_group(pid, signum)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def terminate(pids: list[int], wait: Callable[[], bool], grace: float = STOP_GRACE) -> None:
    """SIGTERM each process (its group, if it leads one), then SIGKILL what is left after `grace`
    seconds; `wait` says when they have all gone."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not wait() and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def terminate_run(run_id: str, pids: list[int], grace: float = STOP_GRACE) -> int:
    """Stop every process of the run: those in `pids` still working for it, and any other
    carrying its mark. Returns how many were found."""
    found = sorted({p for p in pids if runs_for(p, run_id)} | set(run_processes(run_id)))
    terminate(found, wait=lambda: not any(runs_for(p, run_id) for p in found), grace=grace)
    return len(found)
