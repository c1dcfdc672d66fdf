"""Run one child's share of a step: its commands in order, each recorded by a marker.

The runner never stops at the first failure unless asked: one bad command must not hide the
results of the others. A signal (Batch's SIGTERM on terminate, a local kill) stops the command
in flight without marking it, so the next attempt runs it again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from types import FrameType
from typing import BinaryIO

import structlog

from opsctl_contract.environment import COMMAND_INDEX
from opsctl_contract.markers import DONE, FAILED, Ledger, Markers
from opsctl_contract.storage import READ_BYTES, REQUESTS
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
) -> Summary:
    """Run `commands[k]` for each k in `indices` that is not in `done`. `commands` may grow
    while `indices` is consumed: a dynamic-split child learns a stolen command as it claims it.

    Commands inherit this process's environment, plus OPSCTL_COMMAND_INDEX, which is set in
    `os.environ` itself: a child that inherits the environment as it is costs nothing, while
    handing `subprocess` a new mapping re-encodes every variable for every command.
    """
    log = structlog.get_logger()
    host = socket.gethostname()
    out = stderr or sys.stderr.buffer
    ran = failed = skipped = 0
    for k in indices:
        if k in done:
            skipped += 1
            log.info("command", index=k, outcome="skipped", reason="done marker present")
            continue
        if not ran and not failed:
            # What this attempt cost before its first command (bench/scale.py reads it).
            log.info("first command", index=k, requests=dict(REQUESTS), read_bytes=READ_BYTES["read"])
        started = clock()
        os.environ[COMMAND_INDEX] = str(k)
        exit_code, tail = _run_one(commands[k], out)
        seconds = round(clock() - started, 3)
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


def _run_one(command: str, out: BinaryIO) -> tuple[int, str]:
    """Run `command` with /bin/sh; stdout passes through, stderr is passed on and its tail kept.

    A command the kernel refuses to start (too long, say: the spec validation stops those, but a
    list file can be edited) fails like one a shell cannot execute, 126, and the worker goes on
    with the next one: a worker that died here would be retried into the same wall.
    """
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stderr=subprocess.PIPE)
    except (OSError, ValueError) as e:
        message = f"opsctl-worker: cannot start the command: {e}\n"
        out.write(message.encode())
        out.flush()
        return 126, message
    assert proc.stderr is not None  # noqa: S101 - guaranteed by stderr=PIPE
    tail = b""
    try:
        while chunk := os.read(proc.stderr.fileno(), 65536):
            out.write(chunk)
            out.flush()
            tail = (tail + chunk)[-STDERR_TAIL_BYTES:]
        returncode = proc.wait()
    except BaseException:
        # Interrupted (signal): stop the command too, so nothing of this attempt outlives it.
        _stop(proc)
        raise
    finally:
        proc.stderr.close()
    # Like a shell: a command killed by signal N reports 128 + N.
    exit_code = 128 - returncode if returncode < 0 else returncode
    return exit_code, tail.decode("utf-8", errors="replace")


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
