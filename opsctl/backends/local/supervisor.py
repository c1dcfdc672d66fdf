"""The local supervisor: one detached process per run that runs its DAG to the end.

Each array child is an `opsctl-worker run` subprocess in its own process group, with the same
environment contract as on AWS Batch. States live in memory and are written to the run's SQLite
database once per tick, in one transaction; a tick whose write fails (a full disk, say) is
retried, and the next write that succeeds brings every row up to date again, so a full disk
costs time, not state. `python -m opsctl.backends.local RUN_DIR` starts it.
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from opsctl.backends.local import containers
from opsctl.backends.local.processes import STOP_GRACE, signal_group, terminate
from opsctl.backends.local.state import KILLED_ATTEMPT, LocalRun, mark_killed, migrate, open_log
from opsctl.states import TERMINAL, JobState, settle
from opsctl_contract import subreaper
from opsctl_contract.environment import local_environment
from opsctl_contract.errors import OpsctlError
from opsctl_contract.markers import Markers
from opsctl_contract.storage import LocalStore, NotFound
from opsctl_contract.work import DamagedWork, Pack

DEPENDENCY_FAILED = "dependency failed"
LOCK_FD = "OPSCTL_LOCK_FD"  # the inherited descriptor that holds the run's lock


@dataclass
class _Child:
    step: dict[str, Any]
    index: int
    proc: subprocess.Popen[bytes]
    deadline: float
    log: IO[bytes]
    timed_out: bool = False
    container: str | None = None  # its container's name, under --containers


class Supervisor:
    """Runs the DAG of one run until every step is SUCCEEDED or FAILED."""

    def __init__(
        self,
        run: LocalRun,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick: float = 0.02,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.run = run
        self.manifest = run.manifest
        self.steps = {s["name"]: s for s in self.manifest["steps"]}
        self.markers = LocalStore(run.path / "state")
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
        self.max_parallel, self.generation = record["max_parallel"], record["generation"]
        self.children = {(r["step"], r["idx"]): dict(r) for r in run.rows(self.conn, "child")}
        self.step_rows = {r["name"]: dict(r) for r in run.rows(self.conn, "step")}
        self.step_state = {name: JobState(r["state"]) for name, r in self.step_rows.items()}
        # What each tick looks at is kept up to date as children change, so that a tick costs
        # O(children that changed), not O(children): a 10,000-child step ticks every 20 ms.
        self.position = {name: i for i, name in enumerate(self.steps)}
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in self.steps}
        self.waiting: dict[str, set[int]] = {name: set() for name in self.steps}
        self.runnable: list[tuple[int, int, str]] = []  # a heap: upstream steps first, then index
        for (name, index), row in self.children.items():
            self._track(name, index, None, row["state"])
        self.empty = {name: self._empty_children(name) for name in self.steps}
        self.dependents: dict[str, list[tuple[str, bool]]] = {name: [] for name in self.steps}
        for name, step in self.steps.items():
            for dep in step["depends_on"]:
                self.dependents[dep["step"]].append((name, dep["n_to_n"]))
        self.started = False  # the first tick releases whatever waits with its dependencies met
        # Children of this process that are not the run's (none in the supervisor process; a
        # test's servers where a test runs the supervisor in its own process).
        self.others = set(subreaper.children(os.getpid()))

    def _empty_children(self, name: str) -> frozenset[int]:
        """The children of step `name` whose shard of this generation's work pack is empty.

        They would start a worker that finds nothing to do and exits 0, a Python process each
        (a step of 1,000 children for one command took 59 s): they are counted SUCCEEDED when
        their dependencies are met, with no attempt and no log. A step that ended, or a pack
        that is missing or damaged (the workers say so, exit 2), leaves every child to start."""
        step = self.steps[name]
        if self.step_state[name] in TERMINAL:
            return frozenset()
        try:
            sizes = Pack(self.markers, name, self.generation).sizes(step["array_size"])
        except (NotFound, DamagedWork):
            return frozenset()
        return frozenset(i for i, size in enumerate(sizes) if not size)

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

    def _set_child(self, conn: sqlite3.Connection, key: tuple[str, int], **fields: Any) -> None:
        before = self.children[key]["state"]
        self.children[key].update(fields)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        conn.execute(f"UPDATE child SET {assignments} WHERE step = ? AND idx = ?", (*fields.values(), *key))  # noqa: S608 - names are ours
        after = self.children[key]["state"]
        if after != before:
            self._track(*key, before, after)
            self._changed(conn, *key, after)

    def _track(self, name: str, index: int, before: str | None, after: str) -> None:
        """Keep the per-step counts, the waiting sets and the runnable heap in step with a child."""
        if before is not None:
            self.counts[name][before] -= 1
        self.counts[name][after] += 1
        if after in (JobState.SUBMITTED, JobState.PENDING):
            self.waiting[name].add(index)
        else:
            self.waiting[name].discard(index)
        if after == JobState.RUNNABLE:
            heapq.heappush(self.runnable, (self.position[name], index, name))

    def _changed(self, conn: sqlite3.Connection, name: str, index: int, state: str) -> None:
        """What a child's new state means for its step and the steps that depend on it."""
        if state == JobState.SUCCEEDED:
            for dependent, n_to_n in self.dependents[name]:
                if n_to_n and index in self.waiting[dependent]:
                    self._release(conn, dependent, [index])
        step_state = self.step_state[name]
        if step_state in TERMINAL:
            return
        counts = self.counts[name]
        size = self.steps[name]["array_size"]
        if counts[JobState.SUCCEEDED] + counts[JobState.FAILED] == size:
            self._finish_step(conn, name)
            return
        # Like a Batch array parent: the most advanced state among its live children.
        live = next((s for s in (JobState.RUNNING, JobState.RUNNABLE) if counts[s]), JobState.PENDING)
        if live != step_state:
            self._set_step(conn, name, live)

    def _finish_step(self, conn: sqlite3.Connection, name: str) -> None:
        failed = self.counts[name][JobState.FAILED]
        size = self.steps[name]["array_size"]
        # Counted exactly once, here, from the markers: status reads these, not the markers.
        done, failed_commands, rerun = Markers(self.markers, name).scan()
        conn.execute(
            "UPDATE step SET done = ?, failed = ?, reexecuted = ? WHERE name = ?",
            (len(done), len(failed_commands), len(rerun), name),
        )
        if failed:
            self._set_step(conn, name, JobState.FAILED, f"{failed} of {size} children failed")
        else:
            # Every child exited 0; the step succeeded only if every command is done.
            settled = settle(JobState.SUCCEEDED, len(done), self.steps[name]["commands"], self.run.run_id)
            self._set_step(conn, name, *settled)
        if self.step_state[name] is JobState.SUCCEEDED:
            for dependent, n_to_n in self.dependents[name]:
                if not n_to_n:
                    self._release(conn, dependent, list(self.waiting[dependent]))
        else:
            self._fail_dependents(conn, name)

    def _fail_dependents(self, conn: sqlite3.Connection, name: str) -> None:
        """A failed step fails every step downstream, without running what has not started."""
        for dependent, _ in self.dependents[name]:
            if self.step_state[dependent] in TERMINAL:
                continue
            self._set_step(conn, dependent, JobState.FAILED, DEPENDENCY_FAILED)
            for index in range(self.steps[dependent]["array_size"]):
                key = (dependent, index)
                if self.children[key]["state"] not in TERMINAL and key not in self.running:
                    self._set_child(conn, key, state=JobState.FAILED, reason=DEPENDENCY_FAILED)
            self._fail_dependents(conn, dependent)

    def _first_pass(self, conn: sqlite3.Connection) -> None:
        """At start: fail what depends on a failed step, release what waits with its dependencies met."""
        self.started = True
        for name in self.steps:
            if self.step_state[name] is JobState.FAILED:
                self._fail_dependents(conn, name)
        for name in self.steps:
            if self.step_state[name] not in TERMINAL:
                self._release(conn, name, sorted(self.waiting[name]))
                counts = self.counts[name]
                ended = counts[JobState.SUCCEEDED] + counts[JobState.FAILED] == self.steps[name]["array_size"]
                if ended and self.step_state[name] not in TERMINAL:  # not already by its last release
                    self._finish_step(conn, name)

    def _release(self, conn: sqlite3.Connection, name: str, indices: list[int]) -> None:
        """Waiting children of `name` whose dependencies are met become RUNNABLE; the rest PENDING."""
        if self.step_state[name] in TERMINAL:
            return
        deps = self.steps[name]["depends_on"]
        for index in indices:
            ready = all(self._dependency_met(d, index) for d in deps)
            if ready and index in self.empty[name]:
                # Nothing to run (`_empty_children`): done, without a process or a slot.
                self._set_child(conn, (name, index), state=JobState.SUCCEEDED, finished=time.time())
                continue
            new = JobState.RUNNABLE if ready else JobState.PENDING
            if new != self.children[(name, index)]["state"]:
                self._set_child(conn, (name, index), state=new)

    def _set_step(
        self, conn: sqlite3.Connection, name: str, state: JobState, reason: str | None = None
    ) -> None:
        self.step_state[name] = state
        now = time.time()
        row = self.step_rows[name]
        # started: when its first child started running; finished: when it ended.
        if row["started"] is None and state is JobState.RUNNING:
            row["started"] = now
        row.update(state=state.value, reason=reason, finished=now if state in TERMINAL else None)
        conn.execute(
            "UPDATE step SET state = ?, reason = ?, started = ?, finished = ? WHERE name = ?",
            (row["state"], row["reason"], row["started"], row["finished"], name),
        )

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
                containers.remove(self.manifest["engine"], child.container)
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

    def _dependency_met(self, dep: dict[str, Any], index: int) -> bool:
        if dep["n_to_n"]:
            return bool(self.children[(dep["step"], index)]["state"] == JobState.SUCCEEDED)
        return self.step_state[dep["step"]] is JobState.SUCCEEDED

    def _start(self, conn: sqlite3.Connection) -> None:
        """Start RUNNABLE children, upstream steps first, up to `max_parallel` at once."""
        while self.runnable and len(self.running) < self.max_parallel:
            _, index, name = heapq.heappop(self.runnable)
            key = (name, index)
            if self.children[key]["state"] == JobState.RUNNABLE and key not in self.running:
                self._spawn(conn, self.steps[name], index)

    def _spawn(self, conn: sqlite3.Connection, step: dict[str, Any], index: int) -> None:
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
                containers.remove(self.manifest["engine"], child.container)
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
