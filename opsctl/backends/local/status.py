"""A local run as its supervisor records it, its list and its attempts, read from run.db.

The supervisor writes run.db as the run goes; these only read it (and the workers' ledgers),
so any `opsctl` process can ask while the supervisor works. The status document is assembled
from `view` by the run service (opsctl/run/status.py).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from opsctl.backends.local.schema import migrate
from opsctl.backends.local.state import BrokenRun, LocalRun, runs_dir, writable
from opsctl.costs import HandPrices, estimate
from opsctl.records import AttemptRecord, ListRow, ManifestStep, StatusDocument, commands_of, requests_of
from opsctl.run.ids import check_run_id
from opsctl.run.manifest import BadState
from opsctl.run.states import DEPENDENCY_FAILED, TERMINAL, JobState, attempts_of
from opsctl.run.status import Counted, RunView, StepView, elapsed
from opsctl_contract.errors import BadInput
from opsctl_contract.markers import ledger_totals
from opsctl_contract.storage import LocalStore


def view(run_id: str) -> RunView:
    """The run as its supervisor recorded it in run.db: each step's state, children, reasons
    and times. Local children never wait for capacity, only for a slot: nothing is stuck."""
    run = LocalRun.find(run_id)
    # Asked before the rows are read: a supervisor that ends while they are read has written
    # its last rows by then, and the next poll reads them; asked after, it would read as dead
    # beside rows older than its end, and `watch` would stop on a run that finished fine.
    supervised = run.supervised()
    with run.db() as conn:
        runs = run.rows(conn, "run")
        steps = run.rows(conn, "step", "ORDER BY position")
        children = run.rows(conn, "child", "ORDER BY step, idx")
    if len(runs) != 1:
        raise BrokenRun(f"run {run_id}: its state database has {len(runs)} run records, not one")
    row = runs[0]
    state = JobState(row["state"])
    reason = row["reason"]
    if state not in TERMINAL and not supervised:
        reason = f"supervisor died (or never started): `opsctl resume {run_id}` continues the run"
    by_step: dict[str, list[sqlite3.Row]] = {}
    for child in children:
        by_step.setdefault(child["step"], []).append(child)
    manifest_steps = {s["name"]: s for s in run.manifest["steps"]}
    store = LocalStore(run.path / "state")
    return RunView(
        run_id=run_id,
        pipeline=row["pipeline"],
        backend="local",
        created=_iso(row["created"]),
        steps=[
            _step_view(store, manifest_steps[step["name"]], step, by_step.get(step["name"], []))
            for step in steps
        ],
        state=state,
        reason=reason,
        elapsed=elapsed(row["created"], row["finished"]),
        # The container engine the steps' images run under (--containers), or None.
        extra={"engine": run.manifest.get("engine")},
    )


def _step_view(
    store: LocalStore, record: ManifestStep, step: sqlite3.Row, kids: list[sqlite3.Row]
) -> StepView:
    ended = step["state"] in TERMINAL
    attempts = attempts_of(kid["attempt"] for kid in kids)
    counted = None
    if ended and "done" in step.keys() and step["done"] is not None:  # noqa: SIM118 - a Row
        # Counted by the supervisor when the step ended; its workers' requests from ledgers.
        ledger = ledger_totals(store, step["name"])
        figures = {"total": record["commands"], **{k: step[k] for k in ("done", "failed", "reexecuted")}}
        counted = Counted(
            commands_of(figures), requests_of({"put": ledger["put"], "get": ledger["get"]}), attempts
        )
    return StepView(
        step=record,
        state=JobState(step["state"]),
        reason=step["reason"],
        counts=dict(Counter(kid["state"] for kid in kids)),
        # A child's attempt is 0 until it starts (again 0 after a resume resets it): a FAILED
        # child at 0 was killed, or failed by a dependency, before it ran (states.CANCELLED).
        cancelled=sum(1 for kid in kids if kid["state"] == JobState.FAILED and not kid["attempt"]),
        elapsed=elapsed(step["started"], step["finished"]),
        ended=ended,
        counted=counted,
        attempts=attempts,
        failed_children=[
            {"index": k["idx"], "attempt": k["attempt"], "exit_code": k["exit_code"], "reason": k["reason"]}
            for k in kids
            if k["state"] == JobState.FAILED and k["reason"] != DEPENDENCY_FAILED and k["attempt"]
        ],
    )


def list_runs() -> list[ListRow]:
    """Every run under $OPSCTL_HOME, newest first; a run that cannot be read is listed with
    `state: null` and a `problem`, and the others as usual."""
    base = runs_dir()
    rows: list[tuple[float, ListRow]] = []  # by creation time, which the row holds as text
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
                (
                    created,
                    {
                        "run_id": path.name,
                        "pipeline": None,
                        "backend": "local",
                        "state": None,
                        "created": _iso(created),
                        "problem": str(e),
                    },
                )
            )
            continue
        rows.append(
            (
                row["created"],
                {
                    "run_id": row["id"],
                    "pipeline": row["pipeline"],
                    "backend": "local",
                    "state": row["state"],
                    "created": _iso(row["created"]),
                },
            )
        )
    rows.sort(key=lambda r: (r[0], r[1]["run_id"]), reverse=True)
    return [row for _, row in rows]


def attempts(run_id: str) -> list[AttemptRecord]:
    """Every child attempt from the state database: step, index, generation, attempt, started,
    finished, exit_code, reason, cpu_seconds."""
    run = LocalRun.find(run_id)
    with run.db() as conn:
        if writable(run.path):
            migrate(conn)
        rows = run.rows(conn, "attempt", "ORDER BY started, step, idx")
    return [
        {
            "step": row["step"],
            "index": row["idx"],
            "generation": row["generation"],
            "attempt": row["attempt"],
            "started": row["started"],
            "finished": row["finished"],
            "exit_code": row["exit_code"],
            "reason": row["reason"],
            "cpu_seconds": row["cpu"],
        }
        for row in rows
    ]


def cost(
    run_id: str, doc: StatusDocument, attempts: list[AttemptRecord], by_hand: HandPrices | None
) -> dict[str, Any] | None:
    """What the run would cost at the prices given by hand (a child takes its step's vCPUs,
    1 unless set, and GPUs); with none given, nothing: this machine has no price."""
    if by_hand is None:
        return None
    steps = LocalRun.find(run_id).manifest["steps"]
    shape = {s["name"]: (s.get("vcpus") or 1, s.get("gpus") or 0) for s in steps}
    sized: list[AttemptRecord] = [
        {**a, "vcpus": float(shape[a["step"]][0]), "gpus": float(shape[a["step"]][1])} for a in attempts
    ]
    queues = {s["name"]: s["queue"] for s in doc["steps"]}
    return estimate(sized, queues, lambda _queue, vcpus, gpus: by_hand.rate(vcpus, gpus), None)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
