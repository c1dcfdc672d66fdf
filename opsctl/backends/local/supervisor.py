"""The local supervisor: one detached process per run that runs its DAG to the end.

Each array child is an `opsctl-worker run` subprocess in its own process group, with the same
environment contract as on AWS Batch. States live in memory and are written to the run's SQLite
database once per tick, in one transaction; a tick whose write fails (a full disk, say) is
retried, and the next write that succeeds brings every row up to date again, so a full disk
costs time, not state. `python -m opsctl.backends.local RUN_DIR` starts it. The states and
what a change of one means for the rest of the DAG are dag.py's; this module runs the processes.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from opsctl.backends.local import containers
from opsctl.backends.local.dag import Dag
from opsctl.backends.local.processes import STOP_GRACE, signal_group, terminate
from opsctl.backends.local.schema import migrate
from opsctl.backends.local.state import KILLED_ATTEMPT, LocalRun, mark_killed, open_log
from opsctl.run.states import TERMINAL, JobState
from opsctl_contract import subreaper
from opsctl_contract.environment import local_environment
from opsctl_contract.errors import OpsctlError

if TYPE_CHECKING:
    from opsctl.records import ManifestStep

LOCK_FD = "OPSCTL_LOCK_FD"  # the inherited descriptor that holds the run's lock


@dataclass
class _Child:
    step: ManifestStep
    index: int
    proc: subprocess.Popen[bytes]
    deadline: float
    log: IO[bytes]
    timed_out: bool = False
    container: str | None = None  # its container's name, under --containers


class Supervisor(Dag):
    """Runs the DAG of one run until every step is SUCCEEDED or FAILED."""

    def __init__(
        self,
        run: LocalRun,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick: float = 0.02,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.manifest = run.manifest
        self.engine = self.manifest.get("engine") or ""  # the container engine, under --containers
        self.clock = clock
        self.tick = tick
        self.stop_grace = stop_grace
        self.running: dict[tuple[str, int], _Child] = {}
        self.stopping = False
        self.stale = False  # a tick's write failed: the database is behind the memory
        # Attempt rows changed since the last write that committed (rewritten if one fails).
        self.attempts: dict[tuple[str, int, int, int], dict[str, Any]] = {}
        # One connection for the supervisor's life; each tick is one transaction.
        self.conn = sqlite3.connect(run.path / "run.db", timeout=30)
        self.conn.row_factory = sqlite3.Row
        with self.conn:
            migrate(self.conn)
        (record,) = run.rows(self.conn, "run")
        self.max_parallel = record["max_parallel"]
        super().__init__(run, record["generation"], run.rows(self.conn, "child"), run.rows(self.conn, "step"))
        # Children of this process that are not the run's (none in the supervisor process; a
        # test's servers where a test runs the supervisor in its own process).
        self.others = set(subreaper.children(os.getpid()))

    def stop(self, _signum: int = 0, _frame: object = None) -> None:
        self.stopping = True

    def loop(self) -> JobState:
        try:
            return self._loop()
        finally:
            self.conn.close()

    def _loop(self) -> JobState:
        while True:
            try:
                with self.conn as conn:
                    if self.stale:
                        self._write_all(conn)
                    ended = self._tick(conn)
                    self._write_attempts(conn)
                self.attempts.clear()  # committed
                if ended is not None:
                    return ended
            except (sqlite3.DatabaseError, OSError) as e:
                # A full disk, an I/O error, a damaged database: the run goes on in memory and
                # in its markers, and each tick tries to record it again.
                if not self.stale:
                    print(
                        f"opsctl supervisor: cannot record the run's state ({e}); retrying", file=sys.stderr
                    )
                self.stale = True
                time.sleep(max(self.tick, 1.0))
                continue
            self.stale = False
            time.sleep(self.tick)

    def _tick(self, conn: sqlite3.Connection) -> JobState | None:
        self._reap(conn)
        if self.stopping:
            return self._kill_all(conn)
        if not self.started:
            self._first_pass(conn)
        self._start(conn)
        if all(state in TERMINAL for state in self.step_state.values()) and not self.running:
            states = self.step_state.values()
            state = JobState.SUCCEEDED if all(s is JobState.SUCCEEDED for s in states) else JobState.FAILED
            conn.execute("UPDATE run SET state = ?, finished = ?", (state, time.time()))
            return state
        return None

    def _write_all(self, conn: sqlite3.Connection) -> None:
        """Every child and step row from memory: after a failed write, what it lost."""
        for key, row in self.children.items():
            fields = {k: v for k, v in row.items() if k not in ("step", "idx")}
            self._set_child(conn, key, **fields)
        for name, row in self.step_rows.items():
            conn.execute(
                "UPDATE step SET state = ?, reason = ?, started = ?, finished = ? WHERE name = ?",
                (row["state"], row["reason"], row["started"], row["finished"], name),
            )

    def _attempt(self, key: tuple[str, int], attempt: int, **fields: Any) -> None:
        row = self.attempts.setdefault((*key, self.generation, attempt), {})
        row.update(fields)

    def _write_attempts(self, conn: sqlite3.Connection) -> None:
        for (step, index, generation, attempt), row in self.attempts.items():
            where = (step, index, generation, attempt)
            key = "step = ? AND idx = ? AND generation = ? AND attempt = ?"
            conn.execute(
                "INSERT OR IGNORE INTO attempt (step, idx, generation, attempt) VALUES (?, ?, ?, ?)", where
            )
            assignments = ", ".join(f"{name} = ?" for name in row)
            conn.execute(f"UPDATE attempt SET {assignments} WHERE {key}", (*row.values(), *where))  # noqa: S608 - names are ours

    def _reap(self, conn: sqlite3.Connection) -> None:
        self._end_orphans()
        now = self.clock()
        for key, child in list(self.running.items()):
            code, cpu = _reaped(child.proc)
            if code is None:
                if now > child.deadline and not child.timed_out:
                    child.timed_out = True
                    signal_group(child.proc.pid, signal.SIGTERM)
                elif child.timed_out and now > child.deadline + self.stop_grace:
                    signal_group(child.proc.pid, signal.SIGKILL)
                continue
            del self.running[key]
            child.log.close()
            finished = time.time()
            if child.container and code:  # a killed engine client may leave its container behind
                containers.remove(self.engine, child.container)
            attempt = self.children[key]["attempt"]
            if code == 0:
                self._set_child(
                    conn, key, state=JobState.SUCCEEDED, exit_code=0, reason=None, finished=finished
                )
                self._attempt(key, attempt, finished=finished, exit_code=0, cpu=cpu)
                continue
            reason = (
                f"timeout after {child.step['timeout']} s" if child.timed_out else f"worker exited {code}"
            )
            # Exit 2 is bad input: a retry would fail the same way (AWS: EXIT on the worker's 2).
            # A timed-out attempt is not retried either, as AWS Batch does not retry one.
            retry = code != 2 and not child.timed_out and attempt <= child.step["retries"]
            self._set_child(
                conn,
                key,
                state=JobState.RUNNABLE if retry else JobState.FAILED,
                exit_code=code,
                reason=reason,
                finished=finished,
            )
            self._attempt(key, attempt, finished=finished, exit_code=code, reason=reason, cpu=cpu)

    def _end_orphans(self) -> None:
        """End what workers that died left running. A worker ends its commands' leftovers
        itself; those of one that was killed (a timeout's SIGKILL, the OOM killer) are
        re-parented to this process, a subreaper, and die now, as a container's processes
        die with it on AWS Batch."""
        keep = self.others | {child.proc.pid for child in self.running.values()}
        if orphans := [pid for pid in subreaper.children(os.getpid()) if pid not in keep]:
            ended = subreaper.end(subreaper.tree(orphans), keep=keep, grace=0)
            print(f"opsctl supervisor: ended {ended} processes left by workers that ended", file=sys.stderr)

    def _start(self, conn: sqlite3.Connection) -> None:
        """Start RUNNABLE children, upstream steps first, up to `max_parallel` at once."""
        while self.runnable and len(self.running) < self.max_parallel:
            _, index, name = heapq.heappop(self.runnable)
            key = (name, index)
            if self.children[key]["state"] == JobState.RUNNABLE and key not in self.running:
                self._spawn(conn, self.steps[name], index)

    def _spawn(self, conn: sqlite3.Connection, step: ManifestStep, index: int) -> None:
        key = (step["name"], index)
        attempt = int(self.children[key]["attempt"]) + 1
        contract = local_environment(
            step, self.run.run_id, str(self.run.path), index, attempt, self.generation
        )
        env = {
            **os.environ,
            # Commands find this environment's interpreter first, as in an activated venv: on
            # AWS the image's Python is the one on PATH.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            **contract,
        }
        engine, image = self.manifest.get("engine"), step.get("image")
        container = None
        # -I: a `worker` in the launch directory or on the step's PYTHONPATH does not stand in
        # for opsctl's; the commands still get the PYTHONPATH.
        argv = [sys.executable, "-I", "-m", "worker", "run"]
        if engine and image:
            container = containers.name(self.run.run_id, step["name"], index, attempt)
            gpus = not self.manifest.get("no_gpus")  # `--no-gpus`: a trial without GPUs or their preflight
            argv = containers.command(
                engine,
                image,
                container,
                self.run.path,
                contract,
                gpus=gpus and bool(step.get("gpus")),
                preflight_gpu=gpus and step["queue"] == "gpu",  # as AWS runs a gpu-queue step
            )
        try:
            log = open_log(self.run.log_path(step["name"], index))
            log.write(f"== {self.run.run_id} {step['name']}[{index}] attempt {attempt} ==\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # its own process group: kill and timeout reach its commands
            )
        except (OSError, ValueError) as e:
            # A full disk for its log, an environment the kernel refuses: this attempt fails,
            # not the supervisor; `opsctl resume` runs it again once the cause is gone.
            self._set_child(
                conn, key, state=JobState.FAILED, attempt=attempt, reason=f"cannot start the worker: {e}"
            )
            return
        self.running[key] = _Child(
            step, index, proc, self.clock() + step["timeout"], log, container=container
        )
        started = time.time()
        self._set_child(
            conn,
            key,
            state=JobState.RUNNING,
            attempt=attempt,
            pid=proc.pid,
            started=started,
            exit_code=None,
            reason=None,
        )
        self._attempt(key, attempt, started=started)

    def _kill_all(self, conn: sqlite3.Connection) -> JobState:
        procs = [child.proc for child in self.running.values()]
        ended = lambda: all(p.poll() is not None for p in procs)  # noqa: E731
        terminate([p.pid for p in procs], wait=ended, grace=self.stop_grace)
        for key, child in self.running.items():
            if child.container:
                containers.remove(self.engine, child.container)
            code, cpu = _reaped(child.proc)
            attempt = self.children[key]["attempt"]
            self._attempt(key, attempt, finished=time.time(), exit_code=code, reason=KILLED_ATTEMPT, cpu=cpu)
        self._end_orphans()
        self._write_attempts(conn)
        mark_killed(conn)
        return JobState.FAILED


def _reaped(proc: subprocess.Popen[bytes]) -> tuple[int | None, float | None]:
    """A child's exit code and CPU seconds (its own and its commands', user + system) if it has
    ended, else (None, None): wait4 instead of Popen.poll, for the resource usage."""
    if proc.returncode is not None:
        return proc.returncode, None
    try:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere: Popen knows the code
        return proc.poll(), None
    if pid == 0:
        return None, None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, round(usage.ru_utime + usage.ru_stime, 3)


def supervise(run_dir: Path) -> int:
    """The supervisor process: hold the run's lock, run the DAG, exit 0 if it succeeded."""
    run = LocalRun(run_dir.name, run_dir)
    inherited = os.environ.pop(LOCK_FD, None)
    if inherited is not None:
        lock = int(inherited)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the same open file: already ours
    else:
        lock = run.lock()
    os.set_inheritable(lock, False)  # the workers must not keep the run locked after we end
    subreaper.become_subreaper()  # what a killed worker leaves comes here (Supervisor._end_orphans)
    supervisor = Supervisor(run)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    state = supervisor.loop()
    return 0 if state is JobState.SUCCEEDED else 1


def main(argv: list[str]) -> None:
    """`python -m opsctl.backends.local RUN_DIR` (the package's __main__.py): started through the
    package, so this module is imported once, not run a second time as `__main__`."""
    if len(argv) != 1:
        raise SystemExit("usage: python -m opsctl.backends.local RUN_DIR")
    try:
        sys.exit(supervise(Path(argv[0])))
    except OpsctlError as e:
        print(f"opsctl supervisor: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
