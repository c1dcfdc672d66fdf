"""What a run on AWS Batch printed: a child's CloudWatch stream, and each failed child's story.

A retried child writes each attempt to a new stream; `logs` follows it from one to the next.
`failures` tells what `watch` and `report` print about each failed child: its failed command
and stderr (from its marker and the work pack), its reasons and exit code, its last log lines.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from typing import Any

from opsctl.backends.aws.batch import child_index, never_started
from opsctl.backends.aws.runs import RETENTION, AwsRuns
from opsctl.records import StatusDocument
from opsctl.run.failures import child_failure, failed_indices, log_lines, summary
from opsctl.run.states import TERMINAL, JobState
from opsctl.visible import visible
from opsctl_contract.errors import BadInput, OpsctlError


def failures(runs: AwsRuns, run_id: str, doc: StatusDocument) -> list[str]:
    """Each failed child's failed command and its stderr (from its marker and the work
    pack: opsctl/run/failures.py), its reasons and exit code, and its last log lines (for
    `watch`), read from the end of its stream (api.BatchAPI.log_tail). Children that
    never started (`cancelled`) are not failures: where a step has some, its FAILED children
    are all described to find the ones that ran, else up to 10 are."""
    store = runs.state_store(run_id)
    lines = []
    for step in doc["steps"]:
        if step["state"] != JobState.FAILED or not step["job_id"]:
            continue
        if step["gone"]:
            children = []
        elif step["array_size"] > 1 and step.get("cancelled"):
            ran = [c for c in runs.failed_children(step["job_id"]) if not never_started(c)]
            children = sorted(ran, key=child_index)[:10]
        elif step["array_size"] > 1:
            children = runs.api.failed_children(step["job_id"])
        else:
            job = runs.api.describe([step["job_id"]]).get(step["job_id"])
            children = [job] if job and job["status"] == JobState.FAILED and not never_started(job) else []
        if not children or step["gone"]:
            lines.append(f"{step['name']}: {step['reason'] or 'failed'}")
        failed = failed_indices(store, step["name"]) if children else []
        # The manifest's record of the step (its split, its commands), read once there are
        # failed commands to find: it is in this process already after a status.
        record = runs.record(run_id).doc if failed else {}
        known = next((s for s in record.get("steps", []) if s["name"] == step["name"]), None)
        for child in children:
            container = child.get("container", {})
            index = child_index(child)
            reason = child.get("statusReason", "no reason given")
            stream = container.get("logStreamName")
            # its last lines, however long the stream
            tail = runs.api.log_tail(runs.infra.log_group, stream) if stream else []
            lines += summary(
                f"{step['name']}[{index}]",
                f"{reason} (container: {container.get('reason', '-')}, "
                f"exit code {container.get('exitCode', '-')})",
                child_failure(store, known, index, record.get("generation", 1), failed)
                if known and failed
                else None,
                log_lines(tail, len(tail)),
                f"opsctl logs {run_id} {step['name']} --index {index}",
            )
    return [visible(line) for line in lines]  # log lines and reasons: shown, never obeyed


def logs(
    runs: AwsRuns, run_id: str, step: str, index: int | None, *, follow: bool, poll: float = 2.0
) -> Iterator[bytes]:
    """CloudWatch events of one child (`--index`, default 0), paginated, `--follow`ing.

    A retried child writes each attempt to a new stream: when DescribeJobs names a new
    one, the old stream is read to its end and the new one from its start.
    """
    doc = runs.read_manifest(run_id)
    steps = {s["name"]: s for s in doc["steps"]}
    if step not in steps:
        raise BadInput(f"step '{step}' is not in run {run_id} (steps: {', '.join(steps)})")
    size = steps[step]["array_size"]
    index = index or 0
    if index >= size:
        raise BadInput(f"--index {index}: step '{step}' has children 0..{size - 1}")
    if step not in doc["jobs"]:
        raise OpsctlError(f"{run_id}: step '{step}' was never submitted")
    job_id = doc["jobs"][step] + (f":{index}" if size > 1 else "")
    stream: str | None = None
    token: str | None = None
    while True:
        job = runs.api.describe([job_id]).get(job_id)
        if job is None:
            job = gone_job(runs, doc, step, job_id)
        newest = job.get("container", {}).get("logStreamName")
        if not newest:
            if JobState(job.get("status", "SUBMITTED")) in TERMINAL or not follow:
                reason = job.get("statusReason", "none given")
                raise OpsctlError(f"no log stream: the job never started (reason: {reason})")
            time.sleep(poll)
            continue
        if stream and newest != stream:
            yield from drain(runs, stream, token)  # the end of the previous attempt's stream
        if newest != stream:
            stream, token = newest, None
        token = yield from drain(runs, newest, token)
        if not follow or JobState(job["status"]) in TERMINAL:
            return
        time.sleep(poll)


def drain(runs: AwsRuns, stream: str, token: str | None) -> Generator[bytes, None, str | None]:
    """Every message of `stream` after `token`, a page at a time (at most 1 MB, so memory
    stays flat however long the stream); returns the token to continue from."""
    while True:
        messages, next_token = runs.api.child_log_events(runs.infra.log_group, stream, token)
        if messages:
            # surrogates (a message that was not UTF-8) as escapes: never a traceback
            yield "".join(f"{m}\n" for m in messages).encode(errors="backslashreplace")
        if next_token == token:
            return token
        token = next_token


def gone_job(runs: AwsRuns, doc: dict[str, Any], step: str, job_id: str) -> dict[str, Any]:
    """A job DescribeJobs no longer returns, as far as the manifest remembers it."""
    final = doc.get("final", {}).get(step, {})
    if final.get("job_id") == job_id and final.get("log_stream"):
        return {"status": final["state"], "container": {"logStreamName": final["log_stream"]}}
    raise OpsctlError(
        f"job {job_id} (step '{step}') is unknown to AWS Batch ({RETENTION}), and its log stream "
        f"name went with it; the streams stay in log group {runs.infra.log_group} for its retention"
    )
