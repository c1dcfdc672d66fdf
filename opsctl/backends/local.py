"""The local backend: the whole pipeline on this machine, no cloud and no server.

`launch` writes a run directory and starts a detached supervisor (its own session), then
returns. The supervisor runs the DAG: each array child is an `opsctl-worker run` subprocess,
in its own process group, with the same environment contract as on AWS Batch. Everything the
CLI shows comes from the run's SQLite database and the workers' markers, so any `opsctl`
process can watch, kill or resume the run while the supervisor works.

Run directory (`$OPSCTL_HOME/runs/<run_id>/`):
    run.db          run, step and child states (SQLite, WAL)
    manifest.json   the pipeline as launched
    lists/<step>.txt  the commands each step's workers read
    state/          markers (OPSCTL_STATE_URI)
    logs/<step>/<index>.log  each child's stdout and stderr, all attempts
    supervisor.log  the supervisor's own output
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from opsctl.errors import BadInput, OpsctlError
from opsctl.runs import local_environment, manifest, new_run_id, opsctl_home, plan_resume
from opsctl.states import TERMINAL, JobState, settle
from opsctl.storage import LocalStore
from worker.listfile import render_commands
from worker.markers import DONE, Markers

if TYPE_CHECKING:  # the supervisor process starts without the YAML parser: it reads the manifest
    from opsctl import pipeline as spec

# Seconds between SIGTERM and SIGKILL, for timeouts and kills: AWS Batch's 30 s (user guide,
# "Job timeouts"), so a command's clean-up gets the same time on both backends.
STOP_GRACE = 30.0
KILLED = "killed by user"
DEPENDENCY_FAILED = "dependency failed"

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    id TEXT PRIMARY KEY, pipeline TEXT, state TEXT, reason TEXT,
    created REAL, finished REAL, supervisor_pid INTEGER, max_parallel INTEGER,
    generation INTEGER DEFAULT 1
);
CREATE TABLE IF NOT EXISTS step (
    name TEXT PRIMARY KEY, position INTEGER, state TEXT, reason TEXT, started REAL, finished REAL
);
CREATE TABLE IF NOT EXISTS child (
    step TEXT, idx INTEGER, state TEXT, attempt INTEGER, pid INTEGER,
    exit_code INTEGER, reason TEXT, started REAL, finished REAL,
    PRIMARY KEY (step, idx)
);
"""


def runs_dir() -> Path:
    return opsctl_home() / "runs"


@dataclass(frozen=True)
class LocalRun:
    """One run's directory and database."""

    run_id: str
    path: Path

    @classmethod
    def find(cls, run_id: str) -> LocalRun:
        path = runs_dir() / run_id
        if not (path / "run.db").is_file():
            raise BadInput(
                f"run '{run_id}' not found under {runs_dir()} (OPSCTL_HOME); `opsctl list` shows runs"
            )
        return cls(run_id, path)

    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """A connection whose changes are committed when the block ends without error."""
        conn = sqlite3.connect(self.path / "run.db", timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    @property
    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / "manifest.json").read_text())
        return data

    def log_path(self, step: str, index: int) -> Path:
        return self.path / "logs" / step / f"{index}.log"

    def run_row(self) -> sqlite3.Row:
        with self.db() as conn:
            row: sqlite3.Row = conn.execute("SELECT * FROM run").fetchone()
        return row

    def supervisor_alive(self) -> bool:
        pid = self.run_row()["supervisor_pid"]
        return bool(pid) and runs_for(pid, self.run_id)


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


def runs_for(pid: int, run_id: str) -> bool:
    """True if `pid` is alive and works for `run_id` (OPSCTL_RUN_ID in its environment).

    The pid alone is not enough: once a run's processes are gone, another process may get the
    pid, and kill and resume signal whole process groups.
    """
    if not pid_alive(pid):
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except PermissionError:
        return False  # another user's process: never ours
    except OSError:
        return True  # no /proc (macOS): the pid is all there is
    return f"OPSCTL_RUN_ID={run_id}".encode() in environ.split(b"\0")


# --- launch -----------------------------------------------------------------------------------


def launch(spec_path: Path, max_parallel: int | None = None) -> str:
    """Create the run directory and start its supervisor; return the run id at once."""
    from opsctl import pipeline as spec

    run = create_run(spec.load(spec_path), max_parallel)
    start_supervisor(run)
    return run.run_id


def create_run(pipe: spec.Pipeline, max_parallel: int | None = None) -> LocalRun:
    """The run directory and database of a new run, every job SUBMITTED; nothing runs yet."""
    run_id = new_run_id(pipe.name)
    run = LocalRun(run_id, runs_dir() / run_id)
    (run.path / "lists").mkdir(parents=True)
    (run.path / "state").mkdir()
    list_uris = {}
    for step in pipe.steps:
        list_file = run.path / "lists" / f"{step.name}.txt"
        list_file.write_text(render_commands(step.commands))
        list_uris[step.name] = str(list_file)
    (run.path / "manifest.json").write_text(json.dumps(manifest(pipe, run_id, "local", list_uris), indent=2))
    with run.db() as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        conn.execute(
            "INSERT INTO run VALUES (?, ?, ?, NULL, ?, NULL, NULL, ?, 1)",
            (run_id, pipe.name, JobState.SUBMITTED, time.time(), max_parallel or os.cpu_count() or 1),
        )
        for position, step in enumerate(pipe.steps):
            conn.execute(
                "INSERT INTO step VALUES (?, ?, ?, NULL, NULL, NULL)",
                (step.name, position, JobState.SUBMITTED),
            )
            conn.executemany(
                "INSERT INTO child VALUES (?, ?, ?, 0, NULL, NULL, NULL, NULL, NULL)",
                [(step.name, i, JobState.SUBMITTED) for i in range(step.array_size)],
            )
    return run


def start_supervisor(run: LocalRun) -> int:
    """Start the supervisor in its own session, detached from this terminal; return its pid."""
    with (run.path / "supervisor.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opsctl.backends.local", str(run.path)],
            env={**os.environ, "OPSCTL_RUN_ID": run.run_id},  # marks it as this run's (runs_for)
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    with run.db() as conn:
        conn.execute(
            "UPDATE run SET supervisor_pid = ?, state = ?, reason = NULL, finished = NULL",
            (proc.pid, JobState.RUNNING),
        )
    return proc.pid


# --- the supervisor ---------------------------------------------------------------------------


@dataclass
class _Child:
    step: dict[str, Any]
    index: int
    proc: subprocess.Popen[bytes]
    deadline: float
    log: IO[bytes]
    timed_out: bool = False


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
        # One connection for the supervisor's life; each tick is one transaction.
        self.conn = sqlite3.connect(run.path / "run.db", timeout=30)
        self.conn.row_factory = sqlite3.Row
        self.max_parallel, self.generation = self.conn.execute(
            "SELECT max_parallel, generation FROM run"
        ).fetchone()
        self.children = {(r["step"], r["idx"]): dict(r) for r in self.conn.execute("SELECT * FROM child")}
        self.step_state = {r["name"]: JobState(r["state"]) for r in self.conn.execute("SELECT * FROM step")}

    def stop(self, _signum: int = 0, _frame: object = None) -> None:
        self.stopping = True

    def loop(self) -> JobState:
        try:
            return self._loop()
        finally:
            self.conn.close()

    def _loop(self) -> JobState:
        while True:
            with self.conn as conn:
                self._reap(conn)
                if self.stopping:
                    return self._kill_all(conn)
                self._advance(conn)
                self._start(conn)
                if all(state in TERMINAL for state in self.step_state.values()) and not self.running:
                    state = (
                        JobState.SUCCEEDED
                        if all(s is JobState.SUCCEEDED for s in self.step_state.values())
                        else JobState.FAILED
                    )
                    conn.execute("UPDATE run SET state = ?, finished = ?", (state, time.time()))
                    return state
            time.sleep(self.tick)

    def _set_child(self, conn: sqlite3.Connection, key: tuple[str, int], **fields: Any) -> None:
        self.children[key].update(fields)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        conn.execute(f"UPDATE child SET {assignments} WHERE step = ? AND idx = ?", (*fields.values(), *key))  # noqa: S608 - names are ours

    def _set_step(
        self, conn: sqlite3.Connection, name: str, state: JobState, reason: str | None = None
    ) -> None:
        self.step_state[name] = state
        now = time.time()
        # started: when its first child started running; finished: when it ended.
        conn.execute(
            "UPDATE step SET state = ?, reason = ?, "
            "started = CASE WHEN started IS NULL AND ? THEN ? ELSE started END, "
            "finished = CASE WHEN ? THEN ? ELSE NULL END WHERE name = ?",
            (state, reason, state is JobState.RUNNING, now, state in TERMINAL, now, name),
        )

    def _reap(self, conn: sqlite3.Connection) -> None:
        now = self.clock()
        for key, child in list(self.running.items()):
            code = child.proc.poll()
            if code is None:
                if now > child.deadline and not child.timed_out:
                    child.timed_out = True
                    _signal_group(child.proc.pid, signal.SIGTERM)
                elif child.timed_out and now > child.deadline + self.stop_grace:
                    _signal_group(child.proc.pid, signal.SIGKILL)
                continue
            del self.running[key]
            child.log.close()
            attempt = self.children[key]["attempt"]
            if code == 0:
                self._set_child(
                    conn, key, state=JobState.SUCCEEDED, exit_code=0, reason=None, finished=time.time()
                )
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
                finished=time.time(),
            )

    def _advance(self, conn: sqlite3.Connection) -> None:
        """Move steps and children along: pending → runnable, failures down the DAG, step ends."""
        for name, step in self.steps.items():
            state = self.step_state[name]
            if state in TERMINAL:
                continue
            keys = [(name, i) for i in range(step["array_size"])]
            deps = step["depends_on"]
            if any(self.step_state[d["step"]] is JobState.FAILED for d in deps):
                for key in keys:
                    if self.children[key]["state"] not in TERMINAL:
                        self._set_child(conn, key, state=JobState.FAILED, reason=DEPENDENCY_FAILED)
                self._set_step(conn, name, JobState.FAILED, DEPENDENCY_FAILED)
                continue
            for key in keys:
                if self.children[key]["state"] in (JobState.SUBMITTED, JobState.PENDING):
                    ready = all(self._dependency_met(d, key[1]) for d in deps)
                    new = JobState.RUNNABLE if ready else JobState.PENDING
                    if new != self.children[key]["state"]:
                        self._set_child(conn, key, state=new)
            states = [JobState(self.children[key]["state"]) for key in keys]
            if all(s in TERMINAL for s in states):
                failed = sum(s is JobState.FAILED for s in states)
                if failed:
                    self._set_step(conn, name, JobState.FAILED, f"{failed} of {len(keys)} children failed")
                else:
                    # Every child exited 0; the step succeeded only if every command is done.
                    done = len(Markers(self.markers, name).indices(DONE))
                    settled = settle(JobState.SUCCEEDED, done, step["commands"], self.run.run_id)
                    self._set_step(conn, name, *settled)
            else:
                # Like a Batch array parent: the most advanced state among its live children.
                live = next(
                    (s for s in (JobState.RUNNING, JobState.RUNNABLE) if s in states), JobState.PENDING
                )
                if live != state:
                    self._set_step(conn, name, live)

    def _dependency_met(self, dep: dict[str, Any], index: int) -> bool:
        if dep["n_to_n"]:
            return bool(self.children[(dep["step"], index)]["state"] == JobState.SUCCEEDED)
        return self.step_state[dep["step"]] is JobState.SUCCEEDED

    def _start(self, conn: sqlite3.Connection) -> None:
        if len(self.running) >= self.max_parallel:
            return
        for name, step in self.steps.items():  # manifest order is topological: upstream first
            for index in range(step["array_size"]):
                key = (name, index)
                if self.children[key]["state"] != JobState.RUNNABLE:
                    continue
                self._spawn(conn, step, index)
                if len(self.running) >= self.max_parallel:
                    return

    def _spawn(self, conn: sqlite3.Connection, step: dict[str, Any], index: int) -> None:
        key = (step["name"], index)
        attempt = int(self.children[key]["attempt"]) + 1
        log_path = self.run.log_path(step["name"], index)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        log.write(f"== {self.run.run_id} {step['name']}[{index}] attempt {attempt} ==\n".encode())
        log.flush()
        env = {
            **os.environ,
            # Commands find this environment's interpreter first, as in an activated venv: on
            # AWS the image's Python is the one on PATH.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            **local_environment(step, self.run.run_id, str(self.run.path), index, attempt, self.generation),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # its own process group: kill and timeout reach its commands
        )
        self.running[key] = _Child(step, index, proc, self.clock() + step["timeout"], log)
        self._set_child(
            conn,
            key,
            state=JobState.RUNNING,
            attempt=attempt,
            pid=proc.pid,
            started=time.time(),
            exit_code=None,
            reason=None,
        )

    def _kill_all(self, conn: sqlite3.Connection) -> JobState:
        procs = [child.proc for child in self.running.values()]
        terminate_groups(
            [p.pid for p in procs],
            wait=lambda: all(p.poll() is not None for p in procs),
            grace=self.stop_grace,
        )
        mark_killed(conn)
        return JobState.FAILED


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def terminate_groups(pgids: list[int], wait: Callable[[], bool], grace: float = STOP_GRACE) -> None:
    """SIGTERM each process group, then SIGKILL whatever is left after `grace` seconds."""
    for pgid in pgids:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while not wait() and time.monotonic() < deadline:
        time.sleep(0.05)
    for pgid in pgids:
        _signal_group(pgid, signal.SIGKILL)


def mark_killed(conn: sqlite3.Connection) -> None:
    """Everything not finished ends FAILED, "killed by user"."""
    for table in ("child", "step", "run"):
        conn.execute(
            f"UPDATE {table} SET state = ?, reason = ?, finished = ? WHERE state NOT IN (?, ?)",  # noqa: S608 - fixed names
            (JobState.FAILED, KILLED, time.time(), JobState.SUCCEEDED, JobState.FAILED),
        )


def supervise(run_dir: Path) -> int:
    run = LocalRun(run_dir.name, run_dir)
    supervisor = Supervisor(run)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    state = supervisor.loop()
    return 0 if state is JobState.SUCCEEDED else 1


# --- operations on a run ----------------------------------------------------------------------


def kill(run_id: str) -> str:
    """Stop the supervisor and every child; idempotent. Returns what was done, for the user."""
    run = LocalRun.find(run_id)
    row = run.run_row()
    if row["state"] in TERMINAL and not _live_children(run):
        return f"{run_id} already ended {row['state']}" + (f" ({row['reason']})" if row["reason"] else "")
    supervisor_pid = row["supervisor_pid"]
    if supervisor_pid and runs_for(supervisor_pid, run_id):
        os.kill(supervisor_pid, signal.SIGTERM)  # it stops its children and records the kill
        deadline = time.monotonic() + STOP_GRACE + 3
        while pid_alive(supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(supervisor_pid):
            _signal_group(supervisor_pid, signal.SIGKILL)
    # Whatever the supervisor left (or, if it was dead, what its children still run).
    leftovers = _live_children(run)
    terminate_groups(leftovers, wait=lambda: not any(pid_alive(p) for p in leftovers))
    with run.db() as conn:
        mark_killed(conn)
    return f"{run_id} killed"


def resume(run_id: str) -> str:
    """Run again every step that did not succeed, in a new generation (runs.plan_resume).

    Workers skip commands that have done markers, so only unfinished work runs again.
    """
    run = LocalRun.find(run_id)
    row = run.run_row()
    if run.supervisor_alive():
        raise OpsctlError(
            f"{run_id} is still running (supervisor pid {row['supervisor_pid']}); nothing to resume"
        )
    doc = status(run_id)
    if doc["state"] == JobState.SUCCEEDED:
        return f"{run_id} already SUCCEEDED; nothing to resume"
    # Children of a supervisor that died may still run: stop them, their commands re-run.
    leftovers = _live_children(run)
    terminate_groups(leftovers, wait=lambda: not any(pid_alive(p) for p in leftovers))
    # No supervisor runs, so every step that did not succeed has ended, whatever it last read.
    states = {
        s["name"]: JobState.SUCCEEDED if s["state"] == JobState.SUCCEEDED else JobState.FAILED
        for s in doc["steps"]
    }
    redo, generation = plan_resume(run.manifest["steps"], states, row["generation"])
    with run.db() as conn:
        for name in redo:
            # The children that did not succeed; all of them when every child exited 0 but
            # commands have no done marker (the step was failed by its markers).
            every = not conn.execute(
                "SELECT 1 FROM child WHERE step = ? AND state != ?", (name, JobState.SUCCEEDED)
            ).fetchone()
            conn.execute(
                "UPDATE child SET state = ?, attempt = 0, pid = NULL, exit_code = NULL, reason = NULL, "
                "started = NULL, finished = NULL WHERE step = ? AND (? OR state != ?)",
                (JobState.SUBMITTED, name, every, JobState.SUCCEEDED),
            )
            conn.execute(
                "UPDATE step SET state = ?, reason = NULL, started = NULL, finished = NULL WHERE name = ?",
                (JobState.SUBMITTED, name),
            )
        conn.execute("UPDATE run SET generation = ?", (generation,))
    start_supervisor(run)
    return f"{run_id} resumed: {', '.join(redo)} in generation {generation}"


def _live_children(run: LocalRun) -> list[int]:
    with run.db() as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM child WHERE pid IS NOT NULL")]
    return [pid for pid in pids if runs_for(pid, run.run_id)]


def status(run_id: str) -> dict[str, Any]:
    """The status document of DESIGN §3.3, plus reasons and failed children."""
    run = LocalRun.find(run_id)
    with run.db() as conn:
        row = conn.execute("SELECT * FROM run").fetchone()
        steps = conn.execute("SELECT * FROM step ORDER BY position").fetchall()
        children = conn.execute("SELECT * FROM child ORDER BY step, idx").fetchall()
    state = row["state"]
    reason = row["reason"]
    if state not in TERMINAL and row["supervisor_pid"] and not runs_for(row["supervisor_pid"], run_id):
        reason = "supervisor died: `opsctl resume` continues the run"
    by_step: dict[str, list[sqlite3.Row]] = {}
    for child in children:
        by_step.setdefault(child["step"], []).append(child)
    manifest_steps = {s["name"]: s for s in run.manifest["steps"]}
    store = LocalStore(run.path / "state")
    now = time.time()
    doc_steps = []
    for step in steps:
        kids = by_step.get(step["name"], [])
        counts = dict(Counter(kid["state"] for kid in kids))
        done, failed, rerun = Markers(store, step["name"]).scan()
        total = manifest_steps[step["name"]]["commands"]
        step_state, short = settle(JobState(step["state"]), len(done), total, run_id)
        doc_steps.append(
            {
                "name": step["name"],
                "queue": manifest_steps[step["name"]]["queue"],
                "state": step_state.value,
                "reason": short or step["reason"],
                "array_size": len(kids),
                "counts": counts,
                "elapsed": round((step["finished"] or now) - step["started"], 1) if step["started"] else None,
                "commands": {
                    "total": total,
                    "done": len(done),
                    "failed": len(failed),
                    "reexecuted": len(rerun),
                },
                "failed_children": [
                    {
                        "index": k["idx"],
                        "attempt": k["attempt"],
                        "exit_code": k["exit_code"],
                        "reason": k["reason"],
                    }
                    for k in kids
                    if k["state"] == JobState.FAILED and k["reason"] != DEPENDENCY_FAILED
                ],
            }
        )
    if state == JobState.SUCCEEDED and (short_steps := [s for s in doc_steps if s["state"] != state]):
        state, reason = JobState.FAILED.value, f"step '{short_steps[0]['name']}': {short_steps[0]['reason']}"
    finished = row["finished"] or now
    return {
        "run_id": run_id,
        "pipeline": row["pipeline"],
        "backend": "local",
        "state": state,
        "reason": reason,
        "created": _iso(row["created"]),
        "elapsed": round(finished - row["created"], 1),
        "steps": doc_steps,
    }


def list_runs() -> list[dict[str, Any]]:
    """Every run under $OPSCTL_HOME, newest first."""
    base = runs_dir()
    found = [
        LocalRun(p.name, p).run_row()
        for p in (base.iterdir() if base.is_dir() else [])
        if (p / "run.db").is_file()
    ]
    found.sort(key=lambda row: row["created"], reverse=True)
    return [
        {
            "run_id": row["id"],
            "pipeline": row["pipeline"],
            "backend": "local",
            "state": row["state"],
            "created": _iso(row["created"]),
        }
        for row in found
    ]


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def logs(run_id: str, step: str, index: int | None, *, follow: bool, poll: float = 0.5) -> Iterator[bytes]:
    """A step's logs (one child's, or all), as they grow while `follow` and the step runs."""
    run = LocalRun.find(run_id)
    sizes = {s["name"]: s["array_size"] for s in run.manifest["steps"]}
    if step not in sizes:
        raise BadInput(f"step '{step}' is not in run {run_id} (steps: {', '.join(sizes)})")
    if index is not None and index >= sizes[step]:
        raise BadInput(f"--index {index}: step '{step}' has children 0..{sizes[step] - 1}")
    offsets = dict.fromkeys([index] if index is not None else range(sizes[step]), 0)
    while True:
        # Read the state before the files: whatever was written before the step ended is then
        # printed by this pass, so the last lines are never lost.
        with run.db() as conn:
            ended = conn.execute("SELECT state FROM step WHERE name = ?", (step,)).fetchone()[0] in TERMINAL
        for i in offsets:
            try:
                with run.log_path(step, i).open("rb") as f:
                    f.seek(offsets[i])
                    data = f.read()
            except FileNotFoundError:
                continue  # the child has not started
            offsets[i] += len(data)
            if data:
                yield data  # bytes: a UTF-8 character may straddle two reads
        if not follow or ended or not run.supervisor_alive():
            return
        time.sleep(poll)


def tail(path: Path, lines: int = 10, window: int = 16384) -> list[str]:
    """The last lines of a log, reading only its end: logs of long steps run to megabytes."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - window))
            data = f.read()
    except FileNotFoundError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


class LocalBackend:
    """This module behind the interface every backend offers (opsctl.backends.base.Backend)."""

    name = "local"

    def launch(self, spec_path: Path, max_parallel: int | None = None) -> str:
        return launch(spec_path, max_parallel)

    def status(self, run_id: str, *, stuck_after: float = 0.0) -> dict[str, Any]:
        # Local children never wait for capacity, only for a slot: no stuck warnings.
        return {**status(run_id), "warnings": []}

    def failures(self, run_id: str, doc: dict[str, Any]) -> list[str]:
        run = LocalRun.find(run_id)
        lines = []
        for step in doc["steps"]:
            for child in step["failed_children"]:
                lines.append(
                    f"{step['name']}[{child['index']}] failed: {child['reason']} "
                    f"(attempt {child['attempt']}, exit code {child['exit_code']})"
                )
                lines.extend(f"    {line}" for line in tail(run.log_path(step["name"], child["index"])))
        return lines

    def kill(self, run_id: str) -> str:
        return kill(run_id)

    def resume(self, run_id: str) -> str:
        return resume(run_id)

    def logs(self, run_id: str, step: str, index: int | None, *, follow: bool) -> Iterator[bytes]:
        return logs(run_id, step, index, follow=follow)

    def list_runs(self) -> list[dict[str, Any]]:
        return list_runs()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m opsctl.backends.local RUN_DIR")
    try:
        sys.exit(supervise(Path(sys.argv[1])))
    except OpsctlError as e:
        print(f"opsctl supervisor: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
