"""AWS Batch as opsctl uses it: the SubmitJob request of a step, what a job's state means, and
how a described job is read (api.py holds `BatchAPI`, the only code that calls Batch and
CloudWatch Logs).

The request builder and the state rule are pure, so `opsctl validate` can size a step's request
against Batch's limit without credentials, and `status` and `kill` read a job the same way.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from opsctl.run.states import TERMINAL, JobState
from opsctl_contract.environment import contract_environment

if TYPE_CHECKING:
    from opsctl.records import ManifestStep

# "Maximum job payload size (for SubmitJob API operations): 30 KiB" (user guide, "AWS Batch
# service quotas"); command lists go to S3 for that reason, but a step's `env` travels inline.
MAX_SUBMIT_BYTES = 30 * 1024
# Batch starts each container with ECS RunTask, handing it the job's container overrides, and
# RunTask's `overrides` allow "a total of 8192 characters ... This limit includes the JSON
# formatting characters of the override structure" (botocore ecs model, RunTaskRequest.overrides).
# Batch accepts a SubmitJob over it; each job then ends FAILED before any attempt, status reason
# "Container Overrides length must be at most 8192", never retried. It binds long before 30 KiB.
MAX_ECS_OVERRIDES = 8192
# The container's name in the ECS task Batch registers for a job definition (its log streams are
# <prefix>/default/<task id>).
ECS_CONTAINER = "default"
# SubmitJob's jobName: "up to 128 letters long. The first character must be alphanumeric, can
# contain uppercase and lowercase letters, numbers, hyphens (-), and underscores (_)" (botocore
# batch model, SubmitJobRequest.jobName).
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

# attempts = retries + 1. Batch applies the first rule that matches, and retries when none
# does, hence the catch-all EXIT at the end (at most 5 rules):
#  - a reclaimed spot instance is always worth another attempt;
#  - an image that cannot be pulled will not be pulled next time either;
#  - worker exit 2 is bad input (environment, list file): the same input fails the same way;
#  - any other exit code is a failed command: retried, like the local backend does;
#  - anything else (e.g. a job that never ran for another reason) ends the job.
# Batch never retries an attempt stopped by its timeout (user guide, "Job timeouts").
RETRY_RULES = [
    {"onStatusReason": "Host EC2*", "action": "RETRY"},
    {"onReason": "CannotPullContainerError*", "action": "EXIT"},
    {"onExitCode": "2", "action": "EXIT"},
    {"onExitCode": "*", "action": "RETRY"},
    {"onReason": "*", "action": "EXIT"},
]

STARTED = (JobState.STARTING, JobState.RUNNING)
# An image in ECR: <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>(:<tag>|@<digest>)
ECR_IMAGE = re.compile(
    r"([0-9]{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/([^:@]+)(?::([^@]+))?(?:@(.+))?"
)


def job_state(job: dict[str, Any]) -> JobState:
    """The state a step is in, from its job as DescribeJobs returns it.

    An array parent is only ever SUBMITTED, PENDING, FAILED or SUCCEEDED (user guide, "Array
    jobs"): it reads PENDING while its children run. Until it ends, the step is as far along as
    its most advanced child, from the parent's `statusSummary`: RUNNING, else STARTING, else
    RUNNABLE, else the parent's own status. `status`, `watch` and `kill` all read it this way.
    """
    state = JobState(job["status"])
    summary = job.get("arrayProperties", {}).get("statusSummary") or {}
    if state in TERMINAL:
        return state
    live = (JobState.RUNNING, JobState.STARTING, JobState.RUNNABLE)
    return next((s for s in live if summary.get(s)), state)


def job_name(run_id: str, step: str, replaced: str | None = None) -> str:
    """The SubmitJob jobName of a step: `<run>-<step>`, and for a resubmission
    `<run>-<step>-<first 8 characters of the job it replaces>`.

    It follows from the manifest alone, so the same resume run twice picks the same name (and
    finds a job an interrupted one submitted). At most 61 + 1 + 40 + 1 + 8 = 111 characters of
    a-z, 0-9, '-' and '_', starting with a letter or digit: within JOB_NAME.
    """
    return f"{run_id}-{step}" + (f"-{replaced[:8]}" if replaced else "")


def batch_environment(step: ManifestStep, ce_name: str, queue_name: str, job_id: str) -> dict[str, str]:
    """What Batch adds to a child's environment (User Guide, "AWS Batch job environment
    variables"), with the values of its last attempt and highest index: the array variables only
    for an array child, whose job id is `<parent id>:<index>`."""
    env = {
        "AWS_BATCH_CE_NAME": ce_name,
        "AWS_BATCH_JQ_NAME": queue_name,
        "AWS_BATCH_JOB_ATTEMPT": str(step["retries"] + 1),
        "AWS_BATCH_JOB_ID": job_id,
    }
    if step["array_size"] > 1:
        last = step["array_size"] - 1
        env.update(
            AWS_BATCH_JOB_ID=f"{job_id}:{last}",
            AWS_BATCH_JOB_ARRAY_INDEX=str(last),
            AWS_BATCH_JOB_ARRAY_SIZE=str(step["array_size"]),
        )
    return env


def ecs_overrides(request: dict[str, Any], added: dict[str, str]) -> dict[str, Any]:
    """The `overrides` of the ECS RunTask that Batch makes for one child of the SubmitJob
    `request`: a TaskOverride (botocore ecs model) with one ContainerOverride naming Batch's
    container, the request's command, its environment plus what Batch `added`, and its resource
    requirements, given both as ECS's `resourceRequirements` and as its `cpu` (1,024 units a
    vCPU) and `memory` fields, since AWS does not say which form Batch sends: counting both
    errs on the long side, by some 30 characters."""
    asked = request["containerOverrides"]
    container: dict[str, Any] = {
        "name": ECS_CONTAINER,
        "command": asked["command"],
        "environment": [*asked["environment"], *({"name": k, "value": v} for k, v in added.items())],
    }
    resources = asked.get("resourceRequirements", [])
    if resources:
        container["resourceRequirements"] = resources
        values = {r["type"]: r["value"] for r in resources}
        if "VCPU" in values:
            container["cpu"] = int(values["VCPU"]) * 1024
        if "MEMORY" in values:
            container["memory"] = int(values["MEMORY"])
    return {"containerOverrides": [container]}


def overrides_chars(overrides: dict[str, Any]) -> int:
    """Characters of `overrides` as JSON, compact. A non-ASCII character counts as its \\u
    escape, the longest form a serialiser may give it."""
    return len(json.dumps(overrides, separators=(",", ":")))


def submit_request(
    step: ManifestStep,
    *,
    run_id: str,
    pipeline: str,
    generation: int,
    job_name: str,
    queue: str,
    job_definition: str,
    region: str,
    run_uri: str,
    after: dict[str, str],
) -> dict[str, Any]:
    """The SubmitJob request for one step of run `run_id` of `pipeline`, in `generation` (an
    array job when array_size >= 2).

    `after` maps the dependencies still to wait for to their job ids; a dependency that already
    succeeded (on a resume) is left out, since its job may be past Batch's retention.
    """
    env = contract_environment(step, run_id, run_uri, generation)
    # Containers cannot reach the instance metadata (hop limit 1): tell boto3 the region.
    env["AWS_DEFAULT_REGION"] = region
    asked = (("VCPU", step.get("vcpus")), ("MEMORY", step.get("memory")), ("GPU", step.get("gpus")))
    resources = [{"type": kind, "value": str(value)} for kind, value in asked if value is not None]
    overrides: dict[str, Any] = {
        # The images' ENTRYPOINT is opsctl-worker; a GPU step first proves its GPU works.
        "command": ["run", "--preflight-gpu"] if step["queue"] == "gpu" else ["run"],
        "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
    }
    if resources:
        overrides["resourceRequirements"] = resources
    request: dict[str, Any] = {
        "jobName": job_name,
        "jobQueue": queue,
        "jobDefinition": job_definition,
        "containerOverrides": overrides,
        "retryStrategy": {"attempts": step["retries"] + 1, "evaluateOnExit": RETRY_RULES},
        "timeout": {"attemptDurationSeconds": step["timeout"]},
        "tags": {
            "opsctl:run": run_id,
            "opsctl:step": step["name"],
            "opsctl:pipeline": pipeline,
        },
        "propagateTags": True,
    }
    if step["array_size"] > 1:
        request["arrayProperties"] = {"size": step["array_size"]}
    depends = [
        {"jobId": after[d["step"]], **({"type": "N_TO_N"} if d["n_to_n"] else {})}
        for d in step["depends_on"]
        if d["step"] in after
    ]
    if depends:
        request["dependsOn"] = depends
    return request


def definition_name(ref: str) -> str:
    """The name in a job definition reference: an ARN, `name:revision` or `name`."""
    return ref.rsplit("/", 1)[-1].split(":", 1)[0]


def request_bytes(request: dict[str, Any]) -> int:
    """The size of a request's JSON body as boto3 sends it."""
    return len(json.dumps(request, separators=(",", ":")).encode())


def never_started(job: dict[str, Any]) -> bool:
    """A FAILED job (or array child) that Batch ended before it ran: no attempt, no start."""
    return job.get("status") == JobState.FAILED and not job.get("attempts") and not job.get("startedAt")


def child_index(job: dict[str, Any]) -> int:
    """An array child's index; 0 for a single job."""
    return int(job.get("arrayProperties", {}).get("index", 0))
