"""The local backend's operations: launch, status, kill, resume, logs and list.

`launch` writes a run directory (state.py) and starts a detached supervisor (supervisor.py) in
its own session, then returns. Everything the CLI shows comes from the run's SQLite database
and the workers' markers, so any `opsctl` process can watch, kill or resume the run while the
supervisor works. A run has at most one supervisor: whoever starts one holds the run's lock
first and hands it over.
"""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsctl.backends.local.containers import Containers, check_gpus, check_images, find_engine, worker_image
from opsctl.backends.local.processes import (
    STOP_GRACE,
    pid_alive,
    run_processes,
    runs_for,
    signal_group,
    terminate_run,
)
from opsctl.backends.local.state import (
    BrokenRun,
    LocalRun,
    create_run,
    mark_killed,
    migrate,
    open_log,
    read_only,
    runs_dir,
    writable,
)
from opsctl.backends.local.supervisor import DEPENDENCY_FAILED, LOCK_FD
from opsctl.costs import HandPrices, estimate
from opsctl.failures import child_failure, failed_indices, list_file_text, log_lines, summary
from opsctl.runs import BadState, check_run_id, opsctl_home, plan_resume, write_work
from opsctl.states import TERMINAL, JobState, attempts_of, settle
from opsctl.visible import visible
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.files import LIST_FILE_LIMIT, read_text
from opsctl_contract.listfile import parse_commands
from opsctl_contract.markers import ledger_totals, step_figures
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
    """Run again every step that did not succeed, in a new generation (runs.plan_resume).

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
        state = LocalStore(run.path / "state")
        for step in run.manifest["steps"]:
            if step["name"] in redo:
                text = read_text(run.path / "lists" / f"{step['name']}.txt", LIST_FILE_LIMIT, "list file")
                write_work(state, step, parse_commands(text), generation)
    except BaseException:
        os.close(lock)
        raise
    start_supervisor(run, lock)
    return f"{run_id} resumed: {', '.join(redo)} in generation {generation}"


def attempts(run_id: str) -> list[dict[str, Any]]:
    """Every child attempt from the state database: step, index, generation, attempt, started,
    finished, exit_code, reason, cpu_seconds."""
    run = LocalRun.find(run_id)
    with run.db() as conn:
        if writable(run.path):
            migrate(conn)
        rows = run.rows(conn, "attempt", "ORDER BY started, step, idx")
    named = {"idx": "index", "cpu": "cpu_seconds"}
    return [{named.get(k, k): row[k] for k in row.keys()} for row in rows]  # noqa: SIM118 - a Row


def _recorded_pids(run: LocalRun) -> list[int]:
    try:
        with run.db() as conn:
            return [r[0] for r in conn.execute("SELECT pid FROM child WHERE pid IS NOT NULL")]
    except BrokenRun:
        return []


def status(run_id: str) -> dict[str, Any]:
    """The status document of DESIGN §3.3, plus reasons and failed children."""
    run = LocalRun.find(run_id)
    with run.db() as conn:
        runs = run.rows(conn, "run")
        steps = run.rows(conn, "step", "ORDER BY position")
        children = run.rows(conn, "child", "ORDER BY step, idx")
    if len(runs) != 1:
        raise BrokenRun(f"run {run_id}: its state database has {len(runs)} run records, not one")
    row = runs[0]
    state = row["state"]
    reason = row["reason"]
    if state not in TERMINAL and not run.supervised():
        reason = f"supervisor died (or never started): `opsctl resume {run_id}` continues the run"
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
        total = manifest_steps[step["name"]]["commands"]
        ended = step["state"] in TERMINAL
        if ended and "done" in step.keys() and step["done"] is not None:  # noqa: SIM118 - a Row
            # Counted by the supervisor when the step ended; its workers' requests from ledgers.
            figures = {"total": total, **{k: step[k] for k in ("done", "failed", "reexecuted")}}
            ledger = ledger_totals(store, step["name"])
            requests = {"put": ledger["put"], "get": ledger["get"]}
        else:
            figures, requests = step_figures(store, step["name"], total, exact=ended)
        step_state, short = settle(JobState(step["state"]), figures["done"], total, run_id)
        # A child's attempt is 0 until it starts (again 0 after a resume resets it): a FAILED
        # child at 0 was killed, or failed by a dependency, before it ran (states.CANCELLED).
        cancelled = sum(1 for kid in kids if kid["state"] == JobState.FAILED and not kid["attempt"])
        doc_steps.append(
            {
                "name": step["name"],
                "queue": manifest_steps[step["name"]]["queue"],
                "image": manifest_steps[step["name"]].get("image"),  # used under --containers only
                "state": step_state.value,
                "reason": short or step["reason"],
                "array_size": len(kids),
                "counts": counts,
                "cancelled": cancelled,  # of counts' FAILED
                "attempts": attempts_of(kid["attempt"] for kid in kids),
                "elapsed": _elapsed(step["started"], step["finished"] or now) if step["started"] else None,
                "commands": figures,
                "requests": requests,
                "failed_children": [
                    {
                        "index": k["idx"],
                        "attempt": k["attempt"],
                        "exit_code": k["exit_code"],
                        "reason": k["reason"],
                    }
                    for k in kids
                    if k["state"] == JobState.FAILED and k["reason"] != DEPENDENCY_FAILED and k["attempt"]
                ],
            }
        )
    if state == JobState.SUCCEEDED and (short_steps := [s for s in doc_steps if s["state"] != state]):
        state, reason = JobState.FAILED.value, f"step '{short_steps[0]['name']}': {short_steps[0]['reason']}"
    finished = row["finished"] or now
    run_requests: Counter[str] = Counter()
    for entry in doc_steps:
        run_requests.update(entry["requests"])
    return {
        "run_id": run_id,
        "pipeline": row["pipeline"],
        "backend": "local",
        "engine": run.manifest.get("engine"),  # steps' images run under it (--containers), or None
        "state": state,
        "reason": reason,
        "created": _iso(row["created"]),
        "elapsed": _elapsed(row["created"], finished),
        "steps": doc_steps,
        "requests": dict(run_requests),  # the workers' operations on the run's state, by S3 price class
    }


def list_runs() -> list[dict[str, Any]]:
    """Every run under $OPSCTL_HOME, newest first; a run that cannot be read is listed with
    `state: null` and a `problem`, and the others as usual."""
    base = runs_dir()
    rows: list[dict[str, Any]] = []
    for path in base.iterdir() if base.is_dir() else []:
        try:
            run = LocalRun(check_run_id(path.name), path)
        except BadInput:
            continue  # not a run: a half-built one, or something else put here
        try:
            row = run.run_row()
        except (BrokenRun, BadState) as e:
            created = path.stat().st_mtime
            rows.append(
                {
                    "run_id": path.name,
                    "pipeline": None,
                    "backend": "local",
                    "state": None,
                    "created": created,
                    "problem": str(e),
                }
            )
            continue
        rows.append(
            {
                "run_id": row["id"],
                "pipeline": row["pipeline"],
                "backend": "local",
                "state": row["state"],
                "created": row["created"],
            }
        )
    rows.sort(key=lambda r: (r["created"], r["run_id"]), reverse=True)
    return [{**r, "created": _iso(r["created"])} for r in rows]


def _elapsed(started: float, ended: float) -> float:
    """Seconds from one wall-clock record to another, never below 0: a clock set back between
    them (NTP, a VM restored) would otherwise show a step running for minus a day."""
    return max(0.0, round(ended - started, 1))


def _or_dash(value: object) -> str:
    """A figure as the failure lines show it: `-` where there is none (a killed child has no
    exit code of its own), as on AWS."""
    return "-" if value is None else str(value)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


LOG_CHUNK = 1 << 20  # bytes read at a time: memory stays flat however long a log grows
LOG_TAIL = 10  # lines of a failed child's log in the failure summary, as on AWS (batch.LOG_TAIL)
LOG_WINDOW = 40  # lines read for them: the worker's accounting events are left out


def logs(run_id: str, step: str, index: int | None, *, follow: bool, poll: float = 0.5) -> Iterator[bytes]:
    """A step's logs (one child's, or all), as they grow while `follow` and the step runs.

    Read a MiB at a time, the bytes exactly as logged; each read ends on a character boundary
    (`_whole`), so a reader decoding them gets whole characters even as children interleave."""
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
        last = not follow or ended or not run.supervised()
        for i in offsets:
            try:
                log = run.log_path(step, i).open("rb")
            except FileNotFoundError:
                continue  # the child has not started
            with log:
                log.seek(offsets[i])
                rest = b""
                while chunk := log.read(LOG_CHUNK):
                    data = rest + chunk
                    # A character still being written is left for the next pass, so that the
                    # next child's output never lands inside it; on the last pass, all of it.
                    cut = _whole(data)
                    rest = data[cut:]
                    offsets[i] += cut
                    if cut:
                        yield data[:cut]
                if rest and last:
                    offsets[i] += len(rest)
                    yield rest
        if last:
            return
        time.sleep(poll)


def _whole(data: bytes) -> int:
    """How much of `data` ends on a UTF-8 character boundary: all of it but a character its
    last bytes begin and do not finish (bytes that are not UTF-8 count as whole)."""
    for back in range(1, min(len(data), 4) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte, of a 2-, 3- or 4-byte character
            size = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if back < size else len(data)
    return len(data)


def tail(path: Path, lines: int = 10, window: int = 16384) -> list[str]:
    """The last lines of a log, reading only its end: logs of long steps run to megabytes."""
    try:
        with path.open("rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - window)
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return []
    if start:  # the window may begin inside a character: its last bytes are not ones to show
        data = data[:3].lstrip(bytes(range(0x80, 0xC0))) + data[3:]
    # Lines end at line feeds only: a carriage return is shown (\x0d), as `opsctl logs` shows it,
    # not taken as a break that lets a line hide what came before it.
    return [visible(line) for line in data.removesuffix(b"\n").split(b"\n")[-lines:] if data]


class LocalBackend:
    """This package behind the interface every backend offers (opsctl.backends.base.Backend)."""

    name = "local"

    def launch(
        self, spec_path: Path, max_parallel: int | None = None, *, containers: Containers | None = None
    ) -> str:
        return launch(spec_path, max_parallel, containers=containers)

    def status(self, run_id: str, *, stuck_after: float = 0.0) -> dict[str, Any]:
        # Local children never wait for capacity, only for a slot: no stuck warnings.
        return {**status(run_id), "warnings": []}

    def failures(self, run_id: str, doc: dict[str, Any]) -> list[str]:
        """Each failed child's failed command, its stderr, its reason and its log's last lines
        (opsctl/failures.py); a failed step with no failed child, its reason."""
        run = LocalRun.find(run_id)
        store = LocalStore(run.path / "state")
        recorded = {s["name"]: s for s in run.manifest["steps"]}
        generation = run.run_row()["generation"] if any(s["failed_children"] for s in doc["steps"]) else 1
        lines = []
        for step in doc["steps"]:
            reason = step["reason"]
            if (
                step["state"] == JobState.FAILED
                and not step["failed_children"]
                and reason != DEPENDENCY_FAILED
            ):
                lines.append(f"{step['name']}: {reason}")
            failed = failed_indices(store, step["name"]) if step["failed_children"] else []
            text_of = functools.partial(list_file_text, run.path / "lists" / f"{step['name']}.txt")
            for child in step["failed_children"]:
                index, code = child["index"], _or_dash(child["exit_code"])
                lines += summary(
                    f"{step['name']}[{index}]",
                    f"{child['reason']} (attempt {child['attempt']}, exit code {code})",
                    child_failure(store, recorded[step["name"]], index, generation, failed, text_of),
                    log_lines(tail(run.log_path(step["name"], index), LOG_WINDOW), LOG_TAIL),
                    f"opsctl logs {run_id} {step['name']} --index {index}",
                )
        return [visible(line) for line in lines]  # reasons too: text read back from the run's database

    def kill(self, run_id: str) -> str:
        return kill(run_id)

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        """Every child attempt of the run, in the order they started (`opsctl report`)."""
        return attempts(run_id)

    def cost(
        self, run_id: str, doc: dict[str, Any], attempts: list[dict[str, Any]], by_hand: HandPrices | None
    ) -> dict[str, Any] | None:
        """What the run would cost at the prices given by hand (a child takes its step's vCPUs,
        1 unless set, and GPUs); with none given, nothing: this machine has no price."""
        if by_hand is None:
            return None
        steps = LocalRun.find(run_id).manifest["steps"]
        shape = {s["name"]: (s.get("vcpus") or 1, s.get("gpus") or 0) for s in steps}
        sized = [{**a, "vcpus": shape[a["step"]][0], "gpus": shape[a["step"]][1]} for a in attempts]
        queues = {s["name"]: s["queue"] for s in doc["steps"]}
        return estimate(sized, queues, lambda _queue, vcpus, gpus: by_hand.rate(vcpus, gpus), None)

    def resume(self, run_id: str) -> str:
        return resume(run_id)

    def logs(self, run_id: str, step: str, index: int | None, *, follow: bool) -> Iterator[bytes]:
        return logs(run_id, step, index, follow=follow)

    def list_runs(self) -> list[dict[str, Any]]:
        return list_runs()
