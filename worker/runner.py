"""Run one child's share of a step: its commands in order, each recorded by a marker.

The runner never stops at the first failure unless asked: one bad command must not hide the
results of the others. A signal (Batch's SIGTERM on terminate, a local kill) stops the command
in flight without marking it, so the next attempt runs it again.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from types import FrameType
from typing import BinaryIO

import structlog

from opsctl_contract import subreaper
from opsctl_contract.environment import COMMAND_INDEX
from opsctl_contract.markers import DONE, FAILED, Ledger, Markers
from worker.env import WorkerEnv

STDERR_TAIL_BYTES = 4096


class Terminated(Exception):
    """The worker got SIGTERM or SIGINT while running commands."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_terminated(signum: int, _frame: FrameType | None) -> None:
    """Signal handler: unwind to the runner, which stops the command in flight.

    Further signals are ignored from here on, so that a second SIGTERM cannot interrupt the
    clean-up; the scheduler's SIGKILL still ends everything if the clean-up takes too long.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Terminated(signum)


@dataclass(frozen=True)
class Summary:
    ran: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def run_commands(
    env: WorkerEnv,
    commands: Mapping[int, str],
    indices: Iterable[int],
    markers: Markers,
    *,
    done: Set[int] = frozenset(),
    fail_fast: bool = False,
    stderr: BinaryIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    ledger: Ledger | None = None,
    cwd: str | None = None,
) -> Summary:
    """Run `commands[k]` for each k in `indices` that is not in `done`, each started in `cwd`
    (the attempt's scratch directory: worker/cli.py, `scratch`). `commands` may grow while
    `indices` is consumed: a dynamic-split child learns a stolen command as it claims it.

    Commands inherit this process's environment, plus OPSCTL_COMMAND_INDEX, which is set in
    `os.environ` itself: a child that inherits the environment as it is costs nothing, while
    handing `subprocess` a new mapping re-encodes every variable for every command.
    """
    log = structlog.get_logger()
    host = socket.gethostname()
    out = stderr or sys.stderr.buffer
    ran = failed = skipped = 0
    # Children this process has already are not the commands' (none in a worker; a test's
    # servers where the runner runs in the test's own process).
    others = subreaper.children(os.getpid())
    for k in indices:
        if k in done:
            skipped += 1
            log.info("command", index=k, outcome="skipped", reason="done marker present")
            continue
        if not ran and not failed:
            # What this attempt cost before its first command (bench/scale.py reads it).
            usage = markers.store.usage  # the worker's: its state store and list file read
            log.info("first command", index=k, requests=dict(usage.requests), read_bytes=usage.read_bytes)
        os.environ[COMMAND_INDEX] = str(k)
        outcome = _run_one(commands[k], out, clock, others, cwd)
        exit_code, tail, seconds = outcome.exit_code, outcome.tail, outcome.seconds
        if outcome.leftovers:
            log.warning("leftover processes ended", index=k, count=outcome.leftovers)
        record = {
            "index": k,
            "exit_code": exit_code,
            "seconds": seconds,
            "attempt": env.attempt,
            "child": env.index,
            "host": host,
            "run_id": env.run_id,
        }
        ran += 1
        if exit_code == 0:
            markers.mark(DONE, k, record)
            if ledger:
                ledger.note(DONE)
            log.info("command", index=k, outcome="done", exit_code=0, seconds=seconds)
            continue
        failed += 1
        markers.mark(FAILED, k, {**record, "stderr_tail": tail})
        if ledger:
            ledger.note(FAILED)
        log.warning("command", index=k, outcome="failed", exit_code=exit_code, seconds=seconds)
        if fail_fast:
            break
    return Summary(ran=ran, failed=failed, skipped=skipped)


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    tail: str  # the end of its stderr
    seconds: float  # from its start to its shell's exit
    leftovers: int = 0  # processes it left running, ended after it


def _run_one(
    command: str,
    out: BinaryIO,
    clock: Callable[[], float] = time.monotonic,
    others: Sequence[int] = (),
    cwd: str | None = None,
) -> Outcome:
    """Run `command` with /bin/sh; stdout passes through, stderr is passed on and its tail kept.

    The command is over when its shell exits, not when its stderr closes: a background child
    (`sleep 30 &`) holds that pipe open. Its end is seen on a pidfd (Linux 5.3) beside the pipe,
    or by polling where there is none; then the pipe is drained of what is already in it, and
    what the command left running is ended (opsctl_contract/subreaper.py); `others` are this
    process's children that are not the command's.

    A command the kernel refuses to start (too long, say: the spec validation stops those, but a
    list file can be edited) fails like one a shell cannot execute, 126, and the worker goes on
    with the next one: a worker that died here would be retried into the same wall.
    """
    started = clock()
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stderr=subprocess.PIPE, cwd=cwd)
    except (OSError, ValueError) as e:
        message = f"opsctl-worker: cannot start the command: {e}\n"
        out.write(message.encode())
        out.flush()
        return Outcome(126, message, round(clock() - started, 3))
    assert proc.stderr is not None  # noqa: S101 - guaranteed by stderr=PIPE
    tail = bytearray()

    def forward(chunk: bytes) -> None:
        out.write(chunk)
        out.flush()
        tail.extend(chunk)
        del tail[:-STDERR_TAIL_BYTES]

    pipe = proc.stderr.fileno()
    try:
        _follow(proc, pipe, forward)
        returncode = proc.wait()
        seconds = round(clock() - started, 3)
        left = subreaper.end_leftovers(keep=others)
        _drain(pipe, forward)
    except BaseException:
        # Interrupted (signal): stop the command and all it started, so nothing of this
        # attempt outlives it.
        _stop(proc, others)
        raise
    finally:
        proc.stderr.close()
    # Like a shell: a command killed by signal N reports 128 + N.
    exit_code = 128 - returncode if returncode < 0 else returncode
    return Outcome(exit_code, tail.decode("utf-8", errors="replace"), seconds, left)


def _follow(proc: subprocess.Popen[bytes], pipe: int, forward: Callable[[bytes], None]) -> None:
    """Forward the command's stderr until it closes or the command exits, whichever is first."""
    try:
        ended = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3: poll the exit
        ended = None
    poller = select.poll()
    poller.register(pipe, select.POLLIN)
    if ended is not None:
        poller.register(ended, select.POLLIN)
    try:
        while True:
            events = dict(poller.poll(None if ended is not None else 50))
            if pipe in events:
                chunk = os.read(pipe, 65536)
                if not chunk:
                    return  # closed: the command's processes are gone, or closed it
                forward(chunk)
            elif (ended is not None and ended in events) or (ended is None and proc.poll() is not None):
                return
    finally:
        if ended is not None:
            os.close(ended)


def _drain(pipe: int, forward: Callable[[bytes], None]) -> None:
    """Forward what is left in the pipe without waiting for more: whatever still holds its
    other end (a process no walk found) cannot keep the worker waiting."""
    os.set_blocking(pipe, False)
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(pipe, 65536):
            forward(chunk)


def _stop(proc: subprocess.Popen[bytes], others: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM the command and everything it started (orphans it left re-parented here
    included; `others` are not its), SIGKILL what is left after `grace`."""
    subreaper.end(subreaper.leftovers(keep=others), keep=others, grace=grace)
    proc.wait()  # reaped by `end` already: Popen takes the status as lost
