"""A run on AWS Batch as Batch sees it: each step's job, for the run service to settle against
its markers (opsctl/run/status.py).

One DescribeJobs call per 100 steps and one listing of each running step's markers make a poll.
Batch keeps a job about 7 days after it ends; the manifest is the long-term record: a step's
final state, counts and times are written to it when a poll first sees the step ended, and a
run whose jobs Batch no longer knows is read from there and from its markers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opsctl.backends.aws.batch import STARTED, job_state, never_started
from opsctl.backends.aws.runs import MANIFEST, RETENTION, AwsRuns, Manifest, denied, final_record
from opsctl.records import AwsManifest, FinalRecord, ManifestStep, Requests, StatusStep
from opsctl.run.states import TERMINAL, JobState, roll_up
from opsctl.run.status import Counted, RunView, StepView, not_counted
from opsctl.run.status import elapsed as seconds_between
from opsctl_contract.errors import BadInput

# A job submitted this recently that DescribeJobs does not return yet is taken as SUBMITTED;
# later, as gone (past Batch's retention).
UNSEEN_GRACE = 60.0


@dataclass
class AwsView(RunView):
    """The run as Batch sees it, with the manifest it was read from (`record_final` writes it)."""

    record: Manifest | None = None


def view_of(runs: AwsRuns, record: Manifest, stuck_after: float) -> AwsView:
    """The run of manifest `record` as Batch sees it: ceil(steps/100) DescribeJobs calls.

    `warnings` names steps that have waited RUNNABLE for more than `stuck_after` seconds.
    """
    doc = record.doc
    run_id = doc["run_id"]
    jobs = runs.api.describe(list(doc["jobs"].values()))
    now = time.time()
    submitted = len(doc["jobs"]) == len(doc["steps"])
    return AwsView(
        run_id=run_id,
        pipeline=doc["pipeline"],
        backend="aws",
        created=doc["created"],
        steps=[step_view(runs, doc, step, jobs, now) for step in doc["steps"]],
        reason=None if submitted else f"launch incomplete: `opsctl resume {run_id}` submits the rest",
        submitted=submitted,
        warnings=[
            _stuck_warning(step, waited)
            for step in doc["steps"]
            if (job := jobs.get(doc["jobs"].get(step["name"], "")))
            and (waited := _runnable_for(job, jobs, now * 1000)) > stuck_after
        ],
        launch_requests=doc.get("launch_requests", {}),
        record=record,
    )


def step_view(
    runs: AwsRuns, doc: AwsManifest, step: ManifestStep, jobs: dict[str, dict[str, Any]], now: float
) -> StepView:
    """One step as Batch sees its job, to be settled against its markers (opsctl/run/status.py).

    A job Batch no longer returns is read from the final state recorded when it ended; with
    no such record, from its markers alone, once it was submitted long enough ago to be seen
    (before that it reads SUBMITTED, as does a step not submitted yet).
    """
    name = step["name"]
    job_id = doc["jobs"].get(name)
    extra: dict[str, Any] = {"job_id": job_id, "gone": False}
    if job_id is None:
        return StepView(step, JobState.SUBMITTED, settled=False, counted=not_counted(step), extra=extra)
    job = jobs.get(job_id)
    state = job_state(job) if job is not None else None
    final = final_record(doc, name)
    # Counted once when the step ended: no listing (a record before opsctl kept attempts: None).
    counted = None
    if final and (job is None or state in TERMINAL):
        requests: Requests = final.get("requests", {})
        counted = Counted(final["commands"], requests, final.get("attempts"))
    if job is not None and state is not None:
        summary = job.get("arrayProperties", {}).get("statusSummary")
        extra |= {
            "started_at": job.get("startedAt"),
            "stopped_at": job.get("stoppedAt"),
            "log_stream": job.get("container", {}).get("logStreamName"),
        }
        return StepView(
            step,
            state,
            reason=job.get("statusReason") if state is JobState.FAILED else None,
            counts={k: v for k, v in summary.items() if v}
            if summary and step["array_size"] > 1
            else {job["status"]: 1},
            cancelled=(final.get("cancelled") or 0)
            if final and state in TERMINAL
            else cancelled(runs, job, step["array_size"])
            if state is JobState.FAILED
            else 0,
            elapsed=elapsed(job.get("startedAt"), job.get("stoppedAt")),
            # A step that ended is counted exactly, from its markers; a running one from its
            # children's ledgers.
            ended=state in TERMINAL,
            counted=counted,
            extra=extra,
        )
    if final:  # past retention: as recorded when it ended (its markers may have expired too)
        return StepView(
            step,
            JobState(final["state"]),
            reason=final["reason"],
            counts=final.get("counts") or {},
            cancelled=final.get("cancelled") or 0,
            elapsed=elapsed(final.get("started_at"), final.get("stopped_at")),
            settled=False,
            counted=counted,
            extra=extra | {"gone": True},
        )
    if now - (doc.get("submitted_at", {}).get(name) or _epoch(doc["created"])) >= UNSEEN_GRACE:
        return StepView(
            step,
            JobState.FAILED,
            ended=True,
            forgotten=f"job {job_id} is unknown to AWS Batch ({RETENTION}) and no final state was recorded",
            extra=extra | {"gone": True},
        )
    # Submitted too recently for DescribeJobs to return it.
    return StepView(step, JobState.SUBMITTED, settled=False, ended=True, extra=extra)


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

    def change(d: AwsManifest) -> None:
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


def _stuck_warning(step: ManifestStep, waited: float) -> str:
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


def elapsed(started_ms: float | None, stopped_ms: float | None) -> float | None:
    """Seconds between two of Batch's times (epoch milliseconds), never below 0: Batch's clock
    and this machine's may disagree. Until now while the job runs."""
    return seconds_between(started_ms, stopped_ms, per_second=1000)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
