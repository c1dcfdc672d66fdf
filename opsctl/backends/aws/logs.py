"""What a run on AWS Batch printed: a child's CloudWatch stream, and its failed children.

A retried child writes each attempt to a new stream; `log_pass` follows it from one to the
next. `failed` gives the run service (opsctl/run/service.py) each failed child's reasons, exit
code and last log lines, which it tells with the child's failed command and stderr.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from opsctl.backends.aws.batch import child_index, never_started
from opsctl.backends.aws.runs import RETENTION, AwsRuns
from opsctl.records import AwsManifest, StatusStep
from opsctl.run.service import ChildStory, FailedStep, LogPass
from opsctl.run.states import TERMINAL, JobState
from opsctl_contract.errors import BadInput, OpsctlError


def failed(runs: AwsRuns, step: StatusStep) -> FailedStep:
    """A FAILED step's children that ran, each with its reasons and exit code and its last log
    lines, read from the end of its stream (api.BatchAPI.log_tail). Children that never started
    (`cancelled`) are not failures: where a step has some, its FAILED children are all described
    to find the ones that ran, else up to 10 are. A step Batch forgot, or with no child that ran,
    is told by its reason."""
    job_id = step.get("job_id")
    if step["state"] != JobState.FAILED or not job_id:
        return FailedStep()
    if step.get("gone"):
        children = []
    elif step["array_size"] > 1 and step.get("cancelled"):
        ran = [c for c in runs.failed_children(job_id) if not never_started(c)]
        children = sorted(ran, key=child_index)[:10]
    elif step["array_size"] > 1:
        children = runs.api.failed_children(job_id)
    else:
        job = runs.api.describe([job_id]).get(job_id)
        children = [job] if job and job["status"] == JobState.FAILED and not never_started(job) else []
    stories = []
    for child in children:
        container = child.get("container", {})
        stream = container.get("logStreamName")
        # its last lines, however long the stream
        tail = runs.api.log_tail(runs.infra.log_group, stream) if stream else []
        reason = child.get("statusReason", "no reason given")
        code = container.get("exitCode", "-")
        stories.append(
            ChildStory(
                child_index(child),
                f"{reason} (container: {container.get('reason', '-')}, exit code {code})",
                tail,
                len(tail),
            )
        )
    return FailedStep(None if stories else step["reason"] or "failed", stories)


@dataclass
class Following:
    """Where `log_pass` goes on from: the child's job, and its stream and page token so far."""

    doc: AwsManifest
    job_id: str
    stream: str | None = None
    token: str | None = None


def log_pass(
    runs: AwsRuns, run_id: str, step: str, index: int | None, at: Following | None, *, follow: bool
) -> LogPass:
    """CloudWatch events of one child (`--index`, default 0) after `at`, paginated.

    A retried child writes each attempt to a new stream: when DescribeJobs names a new
    one, the old stream is read to its end and the new one from its start.
    """
    if at is None:
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
        at = Following(doc, doc["jobs"][step] + (f":{index}" if size > 1 else ""))
    job = runs.api.describe([at.job_id]).get(at.job_id)
    if job is None:
        job = gone_job(runs, at.doc, step, at.job_id)
    ended = JobState(job.get("status", "SUBMITTED")) in TERMINAL
    newest = job.get("container", {}).get("logStreamName")
    if not newest:
        if ended or not follow:
            raise OpsctlError(
                f"no log stream: the job never started (reason: {job.get('statusReason', 'none given')})"
            )
        return at, False
    if at.stream and newest != at.stream:
        yield from drain(runs, at.stream, at.token)  # the end of the previous attempt's stream
    if newest != at.stream:
        at.stream, at.token = newest, None
    at.token = yield from drain(runs, newest, at.token)
    return at, ended


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


def gone_job(runs: AwsRuns, doc: AwsManifest, step: str, job_id: str) -> dict[str, Any]:
    """A job DescribeJobs no longer returns, as far as the manifest remembers it."""
    final = doc.get("final", {}).get(step)
    if final and final["job_id"] == job_id and final.get("log_stream"):
        return {"status": final["state"], "container": {"logStreamName": final.get("log_stream")}}
    raise OpsctlError(
        f"job {job_id} (step '{step}') is unknown to AWS Batch ({RETENTION}), and its log stream "
        f"name went with it; the streams stay in log group {runs.infra.log_group} for its retention"
    )
