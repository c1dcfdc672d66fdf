"""The local backend's operations that change a run: launch, kill and resume; and `LocalBackend`.

`launch` writes a run directory (state.py) and starts a detached supervisor (supervisor.py) in
its own session, then returns. Everything the CLI shows comes from the run's SQLite database
and the workers' markers, so any `opsctl` process can watch, kill or resume the run while the
supervisor works. A run has at most one supervisor: whoever starts one holds the run's lock
first and hands it over.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from opsctl.backends.local.containers import check_gpus, check_images, find_engine, worker_image
from opsctl.backends.local.logs import failed, log_pass, recorded
from opsctl.backends.local.processes import (
    STOP_GRACE,
    pid_alive,
    run_processes,
    runs_for,
    signal_group,
    terminate_run,
)
from opsctl.backends.local.schema import migrate
from opsctl.backends.local.state import (
    BrokenRun,
    LocalRun,
    create_run,
    mark_killed,
    open_log,
    read_only,
    runs_dir,
    writable,
)
from opsctl.backends.local.status import attempts, cost, list_runs, view
from opsctl.backends.local.supervisor import LOCK_FD
from opsctl.backends.options import Containers
from opsctl.costs import HandPrices
from opsctl.records import AttemptRecord, ListRow, StatusDocument, StatusStep
from opsctl.run.ids import opsctl_home
from opsctl.run.plan import plan_resume, restage
from opsctl.run.service import FailedStep, LogPass, Recorded, RunService
from opsctl.run.states import TERMINAL, JobState
from opsctl.run.status import RunView
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.files import LIST_FILE_LIMIT, read_text
from opsctl_contract.storage import LocalStore


def launch(spec_path: Path, max_parallel: int | None = None, *, containers: Containers | None = None) -> str:
    """Create the run directory and start its supervisor; return the run id at once.

    With `containers`, every child runs in its step's image or its queue's worker image
    (containers.py); the engine, every image and, for `gpus:` steps, the engine's GPUs are
    checked first."""
    from opsctl import pipeline as spec

    pipe = spec.load(spec_path)
    engine = None
    images: dict[str, str] = {}
    if containers:
        engine = find_engine()
        images = {
            step.name: step.image or worker_image(step.queue, containers.image_tag) for step in pipe.steps
        }
        check_images(engine, images.values())
        if containers.gpus:
            check_gpus(engine, {step.name: images[step.name] for step in pipe.steps if step.gpus})
    run = create_run(pipe, max_parallel, engine=engine, images=images, gpus=not containers or containers.gpus)
    start_supervisor(run, run.lock())
    return run.run_id


def start_supervisor(run: LocalRun, lock: int) -> int:
    """Start the supervisor in its own session, detached from this terminal; return its pid.

    `lock` is a descriptor holding the run's lock (`LocalRun.lock`): the supervisor inherits it
    and holds it for its life, so the run is never without its lock between this call and then.
    """
    try:
        with open_log(run.path / "supervisor.log") as log:
            proc = subprocess.Popen(
                # -I: no `opsctl` in the launch directory or on PYTHONPATH stands in for ours
                [sys.executable, "-I", "-m", "opsctl.backends.local", str(run.path)],
                # OPSCTL_RUN_ID marks it as this run's (processes.runs_for); OPSCTL_HOME, made
                # absolute, is where the run's commands find it wherever they change directory.
                env={
                    **os.environ,
                    "OPSCTL_HOME": str(opsctl_home()),
                    "OPSCTL_RUN_ID": run.run_id,
                    LOCK_FD: str(lock),
                },
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                pass_fds=(lock,),
            )
        os.ftruncate(lock, 0)
        os.pwrite(lock, str(proc.pid).encode(), 0)
    except OSError as e:
        raise OpsctlError(f"{run.run_id}: cannot start its supervisor: {e.strerror}") from None
    finally:
        os.close(lock)
    with run.db() as conn:
        conn.execute(
            "UPDATE run SET supervisor_pid = ?, state = ?, reason = NULL, finished = NULL",
            (proc.pid, JobState.RUNNING),
        )
    return proc.pid


def kill(run_id: str) -> str:
    """Stop the supervisor and every process of the run; idempotent. Says what was done.

    The processes are found by their environment, not the database, so a run whose database
    is damaged is stopped all the same.
    """
    run = LocalRun.find(run_id)
    try:
        row: sqlite3.Row | None = run.run_row()
    except BrokenRun:
        row = None
    pids = _recorded_pids(run) if row is not None else []
    supervisor = (row["supervisor_pid"] if row is not None else None) or run.lock_holder()
    if supervisor and runs_for(supervisor, run_id):
        os.kill(supervisor, signal.SIGTERM)  # it stops its children and records the kill
        deadline = time.monotonic() + STOP_GRACE + 3
        while pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(supervisor):
            signal_group(supervisor, signal.SIGKILL)
    stopped = terminate_run(run_id, pids)  # whatever the supervisor left, or ran without one
    # SIGKILL has been sent to all of them: what is still there after a moment cannot be ended.
    deadline = time.monotonic() + 3
    while (alive := _still_alive(run_id, supervisor)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive:
        shown = ", ".join(map(str, alive[:10]))
        raise OpsctlError(
            f"{run_id}: {len(alive)} of its processes are still alive after SIGKILL (pids {shown}); "
            f"nothing recorded; `opsctl kill {run_id}` tries again"
        )
    if row is None:
        return f"{run_id}: stopped {stopped} processes; its state database is unreadable, nothing recorded"
    if row["state"] in TERMINAL and not stopped and not (supervisor and pid_alive(supervisor)):
        return f"{run_id} already ended {row['state']}" + (f" ({row['reason']})" if row["reason"] else "")
    with run.db() as conn:
        mark_killed(conn)
    return f"{run_id} killed"


def _still_alive(run_id: str, supervisor: int | None) -> list[int]:
    pids = set(run_processes(run_id))
    if supervisor and runs_for(supervisor, run_id):
        pids.add(supervisor)
    return sorted(pids)


def resume(run_id: str) -> str:
    """Run again every step that did not succeed, in a new generation (opsctl/run/plan.py).

    Takes the run's lock first: of two resumes at once, one starts the supervisor and the other
    says the run is running. Workers skip commands that have done markers.
    """
    run = LocalRun.find(run_id)
    if not writable(run.path):
        raise read_only(run.path, "resume")
    engine = run.manifest.get("engine")
    if engine and not os.access(engine, os.X_OK):
        raise BadInput(f"{run_id} runs its steps' images with {engine} (--containers), which is gone")
    lock = run.lock()
    try:
        doc = status(run_id)
        if doc["state"] == JobState.SUCCEEDED:
            os.close(lock)
            return f"{run_id} already SUCCEEDED; nothing to resume"
        # A supervisor that died may have left children running: stop them, their commands re-run.
        terminate_run(run_id, _recorded_pids(run))
        # No writer of the run is left: what any of them was killed staging is stale.
        LocalStore(run.path / "state").sweep()
        # No supervisor runs, so every step that did not succeed has ended, whatever it last read.
        states = {
            s["name"]: JobState.SUCCEEDED if s["state"] == JobState.SUCCEEDED else JobState.FAILED
            for s in doc["steps"]
        }
        redo, generation = plan_resume(run.manifest["steps"], states, run.run_row()["generation"])
        with run.db() as conn:
            migrate(conn)
            splits = {s["name"]: s["split"] for s in run.manifest["steps"]}
            for name in redo:
                # The children that did not succeed; all of them when every child exited 0 but
                # commands have no done marker (the step was failed by its markers), and on the
                # dynamic split, whose new pack deals what is left to every child.
                every = (
                    splits[name] == "dynamic"
                    or not conn.execute(
                        "SELECT 1 FROM child WHERE step = ? AND state != ?", (name, JobState.SUCCEEDED)
                    ).fetchone()
                )
                conn.execute(
                    "UPDATE child SET state = ?, attempt = 0, pid = NULL, exit_code = NULL, reason = NULL, "
                    "started = NULL, finished = NULL WHERE step = ? AND (? OR state != ?)",
                    (JobState.SUBMITTED, name, every, JobState.SUCCEEDED),
                )
                conn.execute(
                    "UPDATE step SET state = ?, reason = NULL, started = NULL, finished = NULL, "
                    "done = NULL, failed = NULL, reexecuted = NULL WHERE name = ?",
                    (JobState.SUBMITTED, name),
                )
            conn.execute("UPDATE run SET generation = ?", (generation,))
        restage(
            run.manifest["steps"],
            redo,
            generation,
            LocalStore(run.path / "state"),
            lambda step: read_text(run.path / "lists" / f"{step}.txt", LIST_FILE_LIMIT, "list file"),
        )
    except BaseException:
        os.close(lock)
        raise
    start_supervisor(run, lock)
    return f"{run_id} resumed: {', '.join(redo)} in generation {generation}"


def _recorded_pids(run: LocalRun) -> list[int]:
    try:
        with run.db() as conn:
            return [r[0] for r in conn.execute("SELECT pid FROM child WHERE pid IS NOT NULL")]
    except BrokenRun:
        return []


class LocalBackend(RunService):
    """This package as the scheduler of a run service (opsctl/run/service.py): the engine is
    the run's supervisor, its view is run.db."""

    name = "local"
    priced = False  # this machine has no price: a cost only with `--price`
    log_poll = 0.5

    def __init__(self) -> None:
        self.warnings: list[str] = []  # never added to: a read here writes nothing

    def view(self, run_id: str, *, stuck_after: float = 0.0) -> RunView:
        return view(run_id)  # local children never wait for capacity: nothing is stuck

    def ended(self, view: RunView, steps: list[StatusStep]) -> None:
        """Nothing to keep: the supervisor records every step's end itself."""

    def state_store(self, run_id: str) -> LocalStore:
        return LocalStore(LocalRun.find(run_id).path / "state")

    def failed(self, run_id: str, step: StatusStep) -> FailedStep:
        return failed(run_id, step)

    def recorded(self, run_id: str) -> Recorded:
        return recorded(run_id)

    def log_pass(self, run_id: str, step: str, index: int | None, cursor: Any, *, follow: bool) -> LogPass:
        return log_pass(run_id, step, index, cursor, follow=follow)

    def launch(
        self, spec_path: Path, max_parallel: int | None = None, *, containers: Containers | None = None
    ) -> str:
        return launch(spec_path, max_parallel, containers=containers)

    def launched(self, run_id: str) -> tuple[str | None, dict[str, str] | None]:
        """Where the run's directory is, for the operator; the directory is its own record."""
        return f"run directory (logs, markers): {runs_dir() / run_id}", None

    def notes(self, doc: StatusDocument) -> list[str]:
        """A step's `image:` runs only under `--containers`: said where a run was launched without."""
        if any(s.get("image") for s in doc["steps"]) and not doc.get("engine"):
            return ["(images not used: launched without --containers, so on this host)"]
        return []

    def kill(self, run_id: str) -> str:
        return kill(run_id)

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        """Every child attempt of the run, in the order they started (`opsctl report`)."""
        return attempts(run_id)

    def cost(
        self, run_id: str, doc: StatusDocument, attempts: list[AttemptRecord], by_hand: HandPrices | None
    ) -> dict[str, Any] | None:
        return cost(run_id, doc, attempts, by_hand)

    def resume(self, run_id: str) -> str:
        return resume(run_id)

    def list_runs(self) -> list[ListRow]:
        return list_runs()


def status(run_id: str) -> StatusDocument:
    """The status document of local run `run_id` (opsctl/records.py `StatusDocument`)."""
    return LocalBackend().status(run_id)
