"""A Slurm run as the cluster and the run's own records tell it: each child's state, for the run
service to settle against the markers (opsctl/run/status.py).

One command per poll, by the run's job name, gives every child Slurm knows of: one `sacct` where
the cluster keeps accounting (slurmdbd answers it, and keeps ended jobs for good), else one
`squeue` (the controller's live jobs, and ended ones for MinJobAge, 300 s by default). A child's
end is also in its exit records (job.py), which the run keeps for good: they are read first, so
a run reads the same once Slurm forgot it, on clusters with or without accounting.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from opsctl.backends.slurm.client import QueueRow, SlurmClient
from opsctl.backends.slurm.job import TIMED_OUT, Exit, exits
from opsctl.backends.slurm.runs import SlurmRun
from opsctl.records import ManifestStep, SlurmArray
from opsctl.run.states import DEPENDENCY_FAILED, KILLED, TERMINAL, JobState, attempts_of
from opsctl.run.status import RunView, StepView, elapsed, not_counted
from opsctl_contract.errors import OpsctlError

# A job this recently submitted that Slurm does not show yet is taken as waiting; later, as lost.
UNSEEN_GRACE = 60.0
# Seconds slurmdbd may be behind the controller (1-4 s measured): an attempt this recently
# started that sacct shows pending, or not at all, is taken as running.
SACCT_LAG = 10.0

# Slurm's job states (squeue's %T, sacct's State) as Batch's. PENDING waits for a dependency or
# for room.
LIVE = {
    "PENDING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "CONFIGURING": JobState.STARTING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
}
# An attempt with a start record and no end, whose job is not live: the script was stopped
# from outside (its node died with no attempt left to run again, scancel, the OOM killer).
LOST = "its attempt ended without an exit code (its node failed, or the job was cancelled)"
# Why Slurm ended a child whose script never recorded an end.
_ENDED = {
    "CANCELLED": "cancelled",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "preempted",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "past its deadline",
    "OUT_OF_MEMORY": "out of memory",
    "TIMEOUT": "past its time limit",
    "FAILED": "failed before the worker started",
}


@dataclass(slots=True)
class Child:
    """What is known of one child in the step's newest generation."""

    state: JobState = JobState.SUBMITTED
    attempt: int = 0  # its latest attempt, from 1; 0 before it started
    exit_code: int | None = None
    reason: str | None = None
    started: float | None = None
    finished: float | None = None
    ran: bool = False  # an attempt of it ran the worker
    open: bool = False  # its latest attempt has a start record and no end yet
    began: float | None = None  # when its latest attempt started
    listed: bool = False  # Slurm's poll has a row of it


@dataclass
class Seen:
    """One poll of the cluster: its rows of the run's jobs by array job id."""

    rows: dict[str, list[QueueRow]] = field(default_factory=dict)
    at: float = field(default_factory=time.time)  # when it was asked
    accounted: bool = False  # the rows are sacct's, which lags squeue by a few seconds

    @classmethod
    def poll(cls, client: SlurmClient, run: SlurmRun, *, earlier: bool = False) -> Seen:
        """One command for the whole run: `sacct` where the cluster keeps accounting (it answers
        from slurmdbd, for good), else `squeue`; squeue too when sacct fails (slurmdbd down),
        as the exit records carry the rest. `earlier`: the jobs a resume replaced as well."""
        doc = run.doc
        name = job_name(run.run_id)
        rows: list[QueueRow] | None = None
        if doc.get("accounting"):
            try:
                rows = client.accounted(name, run.jobs(earlier=earlier))
            except OpsctlError:
                rows = None
        seen = cls(accounted=rows is not None)
        for row in client.queue(name) if rows is None else rows:
            seen.rows.setdefault(row.array_job, []).append(row)
        return seen


def within_lag(began: float | None, now: float) -> bool:
    """Whether an attempt began within sacct's lag of `now`."""
    return began is not None and now - began < SACCT_LAG


def job_name(run_id: str) -> str:
    """The name every job of the run is submitted under: one `sacct --name` or `squeue --name`
    finds them all."""
    return f"opsctl-{run_id}"


def tasks(text: str) -> list[int]:
    """The task ids of squeue and sacct ("3", "4-9%2", "1,3,5-7", "[4-9]") as ids; a plain
    job's "N/A" as 0."""
    text = text.strip("[]").split("%", 1)[0]
    if text in ("N/A", ""):
        return [0]
    found: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            found.extend(range(int(first), int(last or first) + 1))
    return found


def children(
    step: ManifestStep, arrays: list[SlurmArray], seen: Seen, records: list[Exit], generation: int, tries: int
) -> dict[int, Child]:
    """Each child the step's newest arrays run: ended as its exit records say once the script
    recorded its last attempt, else live as Slurm shows it, else ended as Slurm shows it (it
    never ran to the end of its script)."""
    kids = {i: Child() for a in arrays for i in tasks(a["children"]) if i < step["array_size"]}
    for e in sorted(records, key=lambda e: e.attempt):
        if e.generation != generation or e.index not in kids:
            continue
        kid = kids[e.index]
        kid.attempt, kid.exit_code, kid.ran = e.attempt, e.exit_code, True
        kid.started = kid.started or e.started
        kid.finished, kid.open, kid.began = e.finished, e.finished is None, e.started
        if e.exit_code == 0:
            kid.state, kid.reason = JobState.SUCCEEDED, None
        else:
            kid.state = JobState.FAILED
            kid.reason = (
                f"timed out after {step['timeout']} s"
                if e.exit_code == TIMED_OUT
                else f"exit code {e.exit_code}"
                if e.exit_code is not None
                else LOST
            )
    for array in arrays:
        for row in seen.rows.get(array["job"], []):
            for task in tasks(row.tasks):
                index = task + array["offset"]
                if index not in kids:
                    continue
                kid = kids[index]
                kid.listed = True
                if kid.exit_code is not None and (kid.exit_code in (0, TIMED_OUT) or kid.attempt >= tries):
                    continue  # its script recorded its last attempt: Slurm may not have caught up
                if row.state in LIVE:
                    state = LIVE[row.state]
                    if (
                        state is JobState.PENDING
                        and kid.open
                        and seen.accounted
                        and within_lag(kid.began, seen.at)
                    ):
                        state = JobState.RUNNING  # its attempt started since sacct last heard
                    elif state is JobState.PENDING and row.reason not in (
                        "Dependency",
                        "DependencyNeverSatisfied",
                    ):
                        state = JobState.RUNNABLE  # its dependencies are met: it waits for room
                    kid.state = state
                    if state is JobState.RUNNING and not kid.open and kid.attempt < tries:
                        kid.attempt += 1  # the attempt starting now, before its record
                    kid.finished = None
                elif not kid.ran:
                    kid.state = JobState.FAILED
                    kid.reason = (
                        DEPENDENCY_FAILED
                        if row.reason == "DependencyNeverSatisfied"
                        else _ENDED.get(row.state, row.state.lower())
                    )
                elif kid.reason == LOST and row.state in _ENDED:
                    kid.reason = _ENDED[row.state]  # Slurm still says why it ended
    return kids


def step_view(run: SlurmRun, step: ManifestStep, seen: Seen, now: float) -> StepView:
    """One step as Slurm and its exit records see it."""
    doc = run.doc
    arrays = doc["arrays"].get(step["name"])
    if arrays is None:
        return StepView(step, JobState.SUBMITTED, settled=False, counted=not_counted(step))
    kids = children(
        step, arrays, seen, exits(run.exits, step["name"]), doc["generation"], step["retries"] + 1
    )
    unseen = not any(seen.rows.get(a["job"]) for a in arrays)
    recent = now - doc["submitted_at"].get(step["name"], now) < UNSEEN_GRACE
    for kid in kids.values():
        if kid.state is JobState.SUBMITTED and not (unseen and recent):
            kid.state = JobState.FAILED
            kid.reason = KILLED if "killed" in doc else "unknown to Slurm, and it left no exit record"
        elif kid.reason == LOST and "killed" in doc:
            kid.reason = KILLED
        elif kid.reason == LOST and not kid.listed and seen.accounted and within_lag(kid.began, seen.at):
            # Started, and not yet in sacct, which records a job a few seconds behind squeue.
            kid.state, kid.reason = JobState.RUNNING, None
    counts = Counter(k.state for k in kids.values())
    failed = [i for i, k in sorted(kids.items()) if k.state is JobState.FAILED]
    state = _roll(counts, len(kids))
    reason = None
    if state is JobState.FAILED:
        if "killed" in doc:
            reason = KILLED
        elif all(not kids[i].ran and kids[i].reason == DEPENDENCY_FAILED for i in failed):
            reason = DEPENDENCY_FAILED
        else:
            reason = f"{len(failed)} of {len(kids)} children failed"
    started = [k.started for k in kids.values() if k.started]
    finished = [k.finished for k in kids.values() if k.finished]
    return StepView(
        step,
        state,
        reason=reason,
        counts={s.value: n for s, n in counts.items()},
        cancelled=sum(1 for i in failed if not kids[i].ran),
        elapsed=elapsed(min(started), max(finished) if state in TERMINAL and finished else None)
        if started
        else None,
        ended=state in TERMINAL,
        attempts=attempts_of(k.attempt for k in kids.values()),
        failed_children=[
            {"index": i, "attempt": kids[i].attempt, "exit_code": kids[i].exit_code, "reason": kids[i].reason}
            for i in failed
            if kids[i].ran
        ],
    )


def _roll(counts: Counter[JobState], size: int) -> JobState:
    """A step's state from its children's, as Batch gives an array parent's."""
    if counts[JobState.SUCCEEDED] == size:
        return JobState.SUCCEEDED
    if counts[JobState.SUCCEEDED] + counts[JobState.FAILED] == size:
        return JobState.FAILED
    for state in (JobState.RUNNING, JobState.STARTING, JobState.RUNNABLE, JobState.PENDING):
        if counts[state]:
            return JobState.RUNNING if state is JobState.STARTING else state
    return JobState.SUBMITTED


def view(run: SlurmRun, client: SlurmClient) -> RunView:
    """The run: one poll of Slurm, and a listing of each submitted step's exit records."""
    doc = run.doc
    seen = Seen.poll(client, run)
    now = time.time()
    submitted = len(doc["arrays"]) == len(doc["steps"])
    return RunView(
        run_id=run.run_id,
        pipeline=doc["pipeline"],
        backend="slurm",
        created=doc["created"],
        steps=[step_view(run, step, seen, now) for step in doc["steps"]],
        reason=None if submitted else f"launch incomplete: `opsctl resume {run.run_id}` submits the rest",
        submitted=submitted,
    )
