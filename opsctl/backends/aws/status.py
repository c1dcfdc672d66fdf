"""A run's status on AWS Batch: Batch's view of each step's job, settled against its markers.

One DescribeJobs call per 100 steps and one listing of each running step's markers make a poll.
Batch keeps a job about 7 days after it ends; the manifest is the long-term record: a step's
final state, counts and times are written to it when a poll first sees the step ended, and a
run whose jobs Batch no longer knows is read from there and from its markers.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any

from opsctl.backends.aws.batch import STARTED, job_state, never_started
from opsctl.backends.aws.runs import MANIFEST, RETENTION, AwsRuns, Manifest, denied, final_record
from opsctl.records import (
    Commands,
    FinalRecord,
    StatusDocument,
    StatusStep,
    commands_of,
    requests_of,
    state_of,
)
from opsctl.run.states import STUCK_AFTER, TERMINAL, Attempts, JobState, attempts_of, roll_up, settle
from opsctl_contract.errors import BadInput
from opsctl_contract.markers import Entry, ledgers, step_figures
from opsctl_contract.storage import S3Store, Usage, request_cost

# A job submitted this recently that DescribeJobs does not return yet is taken as SUBMITTED;
# later, as gone (past Batch's retention).
UNSEEN_GRACE = 60.0


def status(runs: AwsRuns, run_id: str, *, stuck_after: float = STUCK_AFTER) -> StatusDocument:
    """The status document: ceil(steps/100) DescribeJobs calls and a listing of each
    step's markers (one LIST page per 1,000 markers).

    `warnings` names steps that have waited RUNNABLE for more than `stuck_after` seconds.
    """
    return status_of(runs, runs.record(run_id), stuck_after)


def status_of(runs: AwsRuns, record: Manifest, stuck_after: float) -> StatusDocument:
    doc = record.doc
    run_id = doc["run_id"]
    jobs = runs.api.describe(list(doc["jobs"].values()))
    now = time.time()
    steps = [step_status(runs, doc, step, jobs, now) for step in doc["steps"]]
    warnings = [
        _stuck_warning(step, waited)
        for step in doc["steps"]
        if (job := jobs.get(doc["jobs"].get(step["name"], "")))
        and (waited := _runnable_for(job, jobs, now * 1000)) > stuck_after
    ]
    record_final(runs, record, steps)
    warnings += runs.warnings
    submitted = len(doc["jobs"]) == len(steps)
    total = Counter(doc.get("launch_requests", {}))
    for s in steps:
        total.update(s["requests"])
    # The run's storage requests (launch and workers) at S3 Standard's request prices.
    requests = requests_of(total)
    requests["dollars"] = round(request_cost(total), 6)
    return {
        "run_id": run_id,
        "pipeline": doc["pipeline"],
        "backend": "aws",
        "state": state_of(roll_up([JobState(s["state"]) for s in steps], submitted=submitted)),
        "reason": None if submitted else f"launch incomplete: `opsctl resume {run_id}` submits the rest",
        "created": doc["created"],
        "elapsed": None,
        "steps": steps,
        "warnings": warnings,
        "requests": requests,
    }


def step_status(
    runs: AwsRuns, doc: dict[str, Any], step: dict[str, Any], jobs: dict[str, dict[str, Any]], now: float
) -> StatusStep:
    """One step's entry: Batch's view of its job, settled against its markers.

    A job Batch no longer returns is read from the final state recorded when it ended; with
    no such record, from its markers alone, once it was submitted long enough ago to be seen
    (before that it reads SUBMITTED, as does a step not submitted yet).
    """
    name = step["name"]
    job_id = doc["jobs"].get(name)
    job = jobs.get(job_id or "")
    final = final_record(doc, name)
    state = job_state(job) if job is not None else None
    entry: StatusStep = {
        "name": name,
        "queue": step["queue"],
        "image": step.get("image"),
        "state": JobState.SUBMITTED.value,
        "reason": None,
        "array_size": step["array_size"],
        "counts": {},
        "cancelled": 0,  # of counts' FAILED: children that never started (states.CANCELLED)
        "attempts": attempts_of([]),
        "elapsed": None,
        "commands": _no_commands(step),
        "requests": {},
        "job_id": job_id,
        "gone": False,
    }
    if final and (job is None or state in TERMINAL):
        # Counted once when the step ended: no listing.
        entry["commands"], entry["requests"] = final["commands"], final.get("requests", {})
        entry["attempts"] = final.get("attempts")  # a record before opsctl kept them: None
    elif job_id:
        # A step that ended is counted exactly, from its markers; a running one from its
        # children's ledgers: one LIST, a page per 1,000 children, however much is done.
        # The same listing gives its attempts (`_ListedOnce`).
        store = _ListedOnce.of(runs.state_store(doc["run_id"]))
        figures, requests = step_figures(
            store, name, step["commands"], exact=job is None or state in TERMINAL
        )
        entry["commands"], entry["requests"] = commands_of(figures), requests_of(requests)
        entry["attempts"] = _ledger_attempts(ledgers(store, name))
    done = entry["commands"]["done"]
    if job is not None and state is not None:
        state, short = settle(state, done, step["commands"], doc["run_id"])
        summary = job.get("arrayProperties", {}).get("statusSummary")
        if final and state in TERMINAL:
            entry["cancelled"] = final.get("cancelled") or 0
        elif state is JobState.FAILED:
            entry["cancelled"] = cancelled(runs, job, step["array_size"])
        entry["state"] = state_of(state)
        entry["reason"] = short or (job.get("statusReason") if state is JobState.FAILED else None)
        many = summary and step["array_size"] > 1
        entry["counts"] = {k: v for k, v in summary.items() if v} if many else {job["status"]: 1}
        entry["elapsed"] = elapsed(job.get("startedAt"), job.get("stoppedAt"))
        entry["started_at"] = job.get("startedAt")
        entry["stopped_at"] = job.get("stoppedAt")
        entry["log_stream"] = job.get("container", {}).get("logStreamName")
    elif job_id and final:
        # Past retention: as recorded when it ended (its markers may have expired too).
        entry["state"], entry["counts"] = final["state"], final.get("counts") or {}
        entry["commands"], entry["cancelled"] = final["commands"], final.get("cancelled") or 0
        entry["reason"] = final["reason"]
        entry["elapsed"] = elapsed(final.get("started_at"), final.get("stopped_at"))
        entry["gone"] = True
    elif job_id and now - (doc.get("submitted_at", {}).get(name) or _epoch(doc["created"])) >= UNSEEN_GRACE:
        missing = step["commands"] - done
        entry["state"] = state_of(JobState.FAILED if missing else JobState.SUCCEEDED)
        entry["reason"] = (
            f"job {job_id} is unknown to AWS Batch ({RETENTION}) and no final state was recorded"
            + (
                f": {missing} of {step['commands']} commands have no done marker; "
                f"`opsctl resume {doc['run_id']}` runs them"
                if missing
                else ": every command has a done marker"
            )
        )
        entry["gone"] = True
    return entry


def cancelled(runs: AwsRuns, job: dict[str, Any], array_size: int) -> int:
    """How many children of a FAILED step's job never started: those Batch ended FAILED
    with no attempt (TerminateJob or CancelJob before they ran, "Dependent Job failed").
    Asked once, when a poll first sees the step ended (the final record keeps it): an array's
    FAILED children listed, 1,000 a page, and described, 100 a call; a single job says so
    itself."""
    if array_size == 1 or "statusSummary" not in job.get("arrayProperties", {}):
        return int(never_started(job))
    if not job["arrayProperties"]["statusSummary"].get(JobState.FAILED.value):
        return 0
    return sum(never_started(child) for child in runs.failed_children(job["jobId"]))


def record_final(runs: AwsRuns, record: Manifest, steps: list[StatusStep]) -> None:
    """Write each step's final state to the manifest the first time it is seen ended.

    One conditional PUT per step over the run's life; once every step's job has a final
    record, the run's own state and end time too (what `opsctl list` shows).

    The write is kept on reads because it is how a run outlives Batch's retention, but a
    reader without s3:PutObject still gets its answer: a denied write is one warning (in
    `status`'s warnings), and this process does not try again (the change stays in its copy).
    """
    new = {
        s["name"]: _final_of(s, job_id)
        for s in steps
        if (job_id := s.get("job_id"))
        and s["state"] in TERMINAL
        and final_record(record.doc, s["name"]) is None
    }
    if not new:
        return

    def change(d: dict[str, Any]) -> None:
        for name, final in new.items():
            if d["jobs"].get(name) == final["job_id"]:  # not since resubmitted by a resume
                d.setdefault("final", {})[name] = final
        finals = [final_record(d, step["name"]) for step in d["steps"]]
        if all(finals):
            d["state"] = roll_up([JobState(f["state"]) for f in finals if f], submitted=True).value
            d["finished"] = time.time()

    try:
        record.update(change)
    except BadInput as e:
        if not denied(e):
            raise
        runs.warn(
            f"the final state of {', '.join(new)} was not recorded: {e}; s3:PutObject on "
            f"{record.store.uri}/{MANIFEST} records it, and the run is read from that record once "
            "Batch forgets its jobs (about 7 days after they end)"
        )


class _ListedOnce(S3Store):
    """A run's state store for one step of one poll, each listing made once: the ledger listing
    that counts a running step's commands (markers.step_figures) gives its attempts too
    (`_ledger_attempts`) without a second LIST."""

    def __init__(self, bucket: str, prefix: str, usage: Usage | None = None) -> None:
        super().__init__(bucket, prefix, usage)
        self._listed: dict[tuple[str, str, str], list[str]] = {}

    @classmethod
    def of(cls, store: S3Store) -> _ListedOnce:
        return cls(store.bucket, store.prefix, store.usage)

    def list(self, folder: str = "", *, after: str = "", upto: str = "") -> list[str]:
        key = (folder, after, upto)
        if key not in self._listed:
            self._listed[key] = super().list(folder, after=after, upto=upto)
        return list(self._listed[key])


def _ledger_attempts(entries: list[Entry]) -> Attempts:
    """A step's attempts from its children's ledgers (one per child attempt that ran the
    worker): each child's attempt number in its newest generation. An attempt that ended
    before the worker ran (an image not pulled, a failed GPU preflight) counts once a later
    attempt of its child has run."""
    newest: dict[int, tuple[int, int]] = {}
    for e in entries:
        newest[e.child] = max(newest.get(e.child, (0, 0)), (e.generation, e.attempt))
    return attempts_of(attempt for _, attempt in newest.values())


def _final_of(step: StatusStep, job_id: str) -> FinalRecord:
    """What the manifest keeps of a step whose job `job_id` ended: enough to read it the same
    once Batch forgets the job (its log stream where it is one job: an array's are its children's)."""
    return {
        "job_id": job_id,
        "state": step["state"],
        "reason": step["reason"],
        "counts": step["counts"],
        "cancelled": step["cancelled"],
        "attempts": step["attempts"],
        "commands": step["commands"],
        "requests": step["requests"],
        "started_at": step.get("started_at"),
        "stopped_at": step.get("stopped_at"),
        "log_stream": step.get("log_stream") if step["array_size"] == 1 else None,
    }


def _stuck_warning(step: dict[str, Any], waited: float) -> str:
    return (
        f"step '{step['name']}' has been RUNNABLE for {waited / 60:.0f} min: likely "
        + ("no GPU instance types in the gpu compute environment, or " if step["queue"] == "gpu" else "")
        + "no capacity for its instance types (spot), or its compute environment's maxvCpus is "
        "reached or smaller than the job's vCPUs/memory"
    )


def _runnable_for(job: dict[str, Any], jobs: dict[str, dict[str, Any]], now_ms: float) -> float:
    """Seconds a job has been waiting for capacity (RUNNABLE with nothing started), else 0.

    Batch does not say when a job became RUNNABLE; it is when it was created or, later, when
    the last job it depends on stopped.
    """
    summary = job.get("arrayProperties", {}).get("statusSummary", {})
    waiting = job["status"] == JobState.RUNNABLE or (
        summary.get("RUNNABLE", 0) > 0 and not any(summary.get(s.value) for s in (*STARTED, *TERMINAL))
    )
    if not waiting:
        return 0.0
    since = max(
        [float(job.get("createdAt", now_ms))]
        + [
            float(jobs[d["jobId"]].get("stoppedAt", 0))
            for d in job.get("dependsOn", [])
            if d["jobId"] in jobs
        ]
    )
    return max(0.0, (now_ms - since) / 1000)


def _no_commands(step: dict[str, Any]) -> Commands:
    return {"total": step["commands"], "done": 0, "failed": 0, "reexecuted": 0}


def elapsed(started_ms: float | None, stopped_ms: float | None) -> float | None:
    if not started_ms:
        return None
    end = float(stopped_ms or time.time() * 1000)
    # Never below 0: Batch's times and this machine's clock may disagree, or a clock step back.
    return max(0.0, round((end - float(started_ms)) / 1000, 1))


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
