"""A process's leftovers: what its children started and left running, found and ended.

A command that ends may leave processes behind: `sleep 30 &`, a `nohup` daemon, a child that
went `setsid` (a process group of its own) or `env -i` (no OPSCTL_RUN_ID to find it by). In a
container on AWS Batch they die with the container; on one machine they would outlive the run.
So the worker, and the local supervisor above it, make themselves *child subreapers*
(prctl(2) PR_SET_CHILD_SUBREAPER, Linux 3.4): an orphan anywhere below is re-parented to them
instead of to init, however it detached. Their descendants are then exactly their process tree,
read from `/proc/<pid>/task/<tid>/children` (Linux 3.5), which is all the tree walk costs: a
command that left nothing costs one small read.

Where either is missing (not Linux), `become_subreaper` says so and leftovers of the process
group are still reached by the callers' group signals.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterable

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
LEFTOVER_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for what a finished command left
KILL_WAIT = 5.0  # seconds a SIGKILLed process may take to go


def become_subreaper() -> bool:
    """Adopt every orphan among this process's descendants; False where the kernel cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def children(pid: int) -> list[int]:
    """The children of `pid` (of all its threads; ended ones not yet reaped included); none
    where /proc cannot say. Plain `os` calls: a worker pays this once a command (about 25 µs,
    against 60 µs through pathlib)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")  # noqa: PTH208 - the cost above
    except OSError:  # gone meanwhile, or no /proc
        return found
    for task in tasks:
        try:
            fd = os.open(f"/proc/{pid}/task/{task}/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            found.extend(map(int, os.read(fd, 1 << 20).split()))
        except OSError:
            pass
        finally:
            os.close(fd)
    return found


def tree(roots: Iterable[int]) -> list[int]:
    """`roots` and all their descendants, parents first (an explicit stack: no recursion)."""
    found: list[int] = []
    pending = list(roots)
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children(pid))
    return found


def leftovers(keep: Iterable[int] = ()) -> list[int]:
    """This process's descendants outside the subtrees of `keep` (its children still in use)."""
    kept = set(keep)
    return tree(p for p in children(os.getpid()) if p not in kept)


def end(pids: Iterable[int], keep: Iterable[int] = (), grace: float = LEFTOVER_GRACE) -> int:
    """SIGTERM `pids`, then SIGKILL whatever is still among `leftovers(keep)` after `grace`
    seconds (what they started meanwhile included), reaping the ones that are this process's
    children. Returns how many processes there were; a process SIGKILL cannot end (stuck in
    the kernel) is left after KILL_WAIT more seconds, for the caller's `leftovers` to name."""
    kept = list(keep)
    ended = set(pids)
    for pid in ended:
        _signal(pid, signal.SIGTERM)
    kill_at = time.monotonic() + grace
    while True:
        _reap(children(os.getpid()), kept)
        left = leftovers(kept)
        ended.update(left)
        now = time.monotonic()
        if not left or now > kill_at + KILL_WAIT:
            return len(ended)
        if now >= kill_at:
            for pid in left:
                _signal(pid, signal.SIGKILL)
        time.sleep(0.01)


def end_leftovers(keep: Iterable[int] = (), grace: float = LEFTOVER_GRACE) -> int:
    """End what is left below this process outside `keep`'s subtrees; how many there were."""
    kept = list(keep)
    left = leftovers(kept)
    return end(left, kept, grace) if left else 0


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _reap(pids: Iterable[int], keep: list[int]) -> None:
    """Collect the exit status of each of `pids` (this process's children) that has ended, so
    that none stays a zombie; `keep` are waited for by their owners."""
    for pid in pids:
        if pid not in keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
