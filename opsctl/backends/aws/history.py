"""What a run on AWS Batch did and cost: every child attempt, and their price.

Attempts come from Batch (ListJobs by array job for the children's ids, DescribeJobs 100 a
call); Batch forgets a job about 7 days after it ends, so once every step has ended they are
kept beside the manifest and read from there. Prices come from aws/prices.py, or by hand.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from opsctl.backends.aws.runs import ATTEMPTS, RETENTION, AwsRuns, denied, final_record
from opsctl.costs import HandPrices, Rate, estimate
from opsctl.limits import MAX_ARRAY_SIZE, MAX_INTEGER, STEP_NAME
from opsctl.records import AttemptRecord, StatusDocument
from opsctl.run.states import JobState
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.shapes import Int, ListOf, MapOf, Maybe, Text, problem
from opsctl_contract.storage import NotFound

# attempts.json as `attempts` keeps it: the Batch jobs it was read from, and their attempts.
KEPT_ATTEMPTS = {
    "jobs": MapOf(ListOf(str), keys=STEP_NAME),
    "attempts": ListOf(
        {
            "step": Text(STEP_NAME),
            "index": Int(0, MAX_ARRAY_SIZE - 1),
            "generation": Int(1, MAX_INTEGER),
            "attempt": Int(1, MAX_INTEGER),
            "started": Maybe(float),
            "finished": Maybe(float),
            "exit_code": Maybe(int),
            "reason": Maybe(str),
            "cpu_seconds": Maybe(float),
            "vcpus": Maybe(float),
            "gpus": Maybe(float),
        }
    ),
}


def attempts(runs: AwsRuns, run_id: str) -> list[AttemptRecord]:
    """Every child attempt, as `opsctl report` takes them: ListJobs by array job id for the
    children's ids, then DescribeJobs, 100 a call, for their `attempts` (start, stop, exit
    code, reason, vCPUs, GPUs). The `generation` is the step's submission: 1 for the launch's
    job, 2 for the first resume that submitted it again. Batch does not give CPU time.

    Batch forgets a job about 7 days after it ends, so once every step has ended the
    attempts are kept beside the manifest (ATTEMPTS); a later call reads them there, with no
    Batch call, as long as no resume has submitted a step since.
    """
    doc = runs.record(run_id).doc
    history = {
        step["name"]: [r[step["name"]] for r in doc.get("replaced", []) if step["name"] in r]
        + ([doc["jobs"][step["name"]]] if step["name"] in doc["jobs"] else [])
        for step in doc["steps"]
    }
    ended = all(final_record(doc, step["name"]) for step in doc["steps"])
    store = runs.store(run_id)
    if ended:
        with contextlib.suppress(NotFound, ValueError):
            kept = json.loads(store.read(ATTEMPTS))
            # A record of another shape is no record: the attempts are read again from Batch.
            if problem(kept, KEPT_ATTEMPTS) is None and kept["jobs"] == history:
                return list(kept["attempts"])
    found: list[AttemptRecord] = []
    complete = True  # every job still known to Batch
    for step in doc["steps"]:
        name = step["name"]
        for generation, job_id in enumerate(history[name], start=1):
            ids = runs.api.children(job_id) if step["array_size"] > 1 else [job_id]
            jobs = runs.api.describe(ids).values()
            complete = complete and bool(jobs)
            for job in jobs:
                index = int(job.get("arrayProperties", {}).get("index", 0))
                found.extend(_attempts_of(job, name, index, generation))
    found.sort(key=lambda a: (a["started"] is None, a["started"] or 0, a["step"], a["index"]))
    if ended and complete:
        try:
            store.write(ATTEMPTS, json.dumps({"jobs": history, "attempts": found}).encode())
        except BadInput as e:
            if not denied(e):
                raise
            runs.warn(
                f"the attempts were not kept: {e}; s3:PutObject on {store.uri}/{ATTEMPTS} keeps "
                "them, so that reports outlive Batch's retention (about 7 days after a job ends)"
            )
    return found


def cost(
    runs: AwsRuns,
    run_id: str,
    doc: StatusDocument,
    attempts: list[AttemptRecord],
    by_hand: HandPrices | None,
) -> dict[str, Any]:
    """The estimate of opsctl.costs for `attempts`, priced by opsctl/backends/aws/prices.py (or
    `by_hand`); a price that cannot be had (not listed, or the price list or EC2 refused or
    unreachable) leaves the estimate out, with the reason, and the report goes on."""
    timed = {a["step"] for a in attempts}
    forgotten = [s["name"] for s in doc["steps"] if s["commands"]["done"] and s["name"] not in timed]
    if forgotten:
        return {
            "dollars": None,
            "unavailable": f"the attempts of {', '.join(forgotten)} are unknown ({RETENTION})",
        }
    queues = {step["name"]: runs.infra.queue(step["queue"]) for step in doc["steps"]}
    now = time.time()
    since = min((a["started"] for a in attempts if a["started"] is not None), default=now)
    until = max((a["finished"] or now for a in attempts), default=now)

    def rate_of(queue: str, vcpus: float, gpus: float) -> Rate:
        if by_hand is not None:
            return by_hand.rate(vcpus, gpus)
        return runs.prices.rate(queue, vcpus, gpus, since, until)

    try:
        return estimate(attempts, queues, rate_of, doc.get("requests"), now)
    except OpsctlError as e:  # no price to be had (prices.NoPrice), no permission, EC2 unreachable
        by_hand_hint = "`--price vcpu=DOLLARS,gpu=DOLLARS` prices it by hand"
        return {"dollars": None, "unavailable": f"{e}; {by_hand_hint}"}


def _attempts_of(job: dict[str, Any], step: str, index: int, generation: int) -> list[AttemptRecord]:
    """A described child's attempts (API Reference, "DescribeJobs": `attempts[]` of AttemptDetail,
    times in epoch milliseconds), and the one running now, which `attempts` lists only once ended.
    vCPUs and GPUs are the job's (`container.resourceRequirements`, or the older `vcpus`)."""
    container = job.get("container", {})
    asked = {r["type"]: float(r["value"]) for r in container.get("resourceRequirements", [])}
    vcpus, gpus = asked.get("VCPU", container.get("vcpus")), asked.get("GPU", 0.0)
    rows: list[AttemptRecord] = []
    tried = job.get("attempts", [])
    for n, attempt in enumerate(tried, start=1):
        ended = attempt.get("container", {})
        reason = attempt.get("statusReason") or ended.get("reason")
        if n == len(tried) and job.get("status") == JobState.FAILED:
            reason = _last_reason(job.get("statusReason"), reason)
        rows.append(
            {
                "step": step,
                "index": index,
                "generation": generation,
                "attempt": n,
                "started": _seconds_or_none(attempt.get("startedAt")),
                "finished": _seconds_or_none(attempt.get("stoppedAt")),
                "exit_code": ended.get("exitCode"),
                "reason": reason,
                "cpu_seconds": None,
                "vcpus": vcpus,
                "gpus": gpus,
            }
        )
    if job.get("status") in ("STARTING", "RUNNING") and job.get("startedAt"):
        rows.append(
            {
                "step": step,
                "index": index,
                "generation": generation,
                "attempt": len(rows) + 1,
                "started": job["startedAt"] / 1000,
                "finished": None,
                "exit_code": None,
                "reason": None,
                "cpu_seconds": None,
                "vcpus": vcpus,
                "gpus": gpus,
            }
        )
    return rows


def _last_reason(job_reason: str | None, attempt_reason: str | None) -> str | None:
    """The reason of a FAILED job's last attempt: the job's own status reason first, which is
    what ended it (the reason `opsctl kill` gave TerminateJob, "killed by user"), where the
    attempt's (its container's end, "Essential container in task exited") says something else."""
    if not job_reason or job_reason == attempt_reason:
        return attempt_reason
    return job_reason if not attempt_reason else f"{job_reason} ({attempt_reason})"


def _seconds_or_none(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000
