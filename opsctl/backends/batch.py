"""AWS Batch as opsctl uses it: the SubmitJob request of a step, what a job's state means, and
`BatchAPI`, the only code that calls Batch and CloudWatch Logs.

The request builder and the state rule are pure, so `opsctl validate` can size a step's request
against Batch's limit without credentials, and `status` and `kill` read a job the same way.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from typing import Any

from opsctl.states import TERMINAL, JobState
from opsctl_contract.awsclient import aws_call, client
from opsctl_contract.environment import contract_environment
from opsctl_contract.errors import BadInput

DESCRIBE_CHUNK = 100  # DescribeJobs takes at most 100 job ids
LOG_TAIL = 10  # lines of a failed child's log that `watch` prints
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
ACTIVE_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")  # not ended
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


def batch_environment(step: dict[str, Any], ce_name: str, queue_name: str, job_id: str) -> dict[str, str]:
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
    doc: dict[str, Any],
    step: dict[str, Any],
    *,
    job_name: str,
    queue: str,
    job_definition: str,
    region: str,
    run_uri: str,
    after: dict[str, str],
) -> dict[str, Any]:
    """The SubmitJob request for one step of the run `doc` (an array job when array_size >= 2).

    `after` maps the dependencies still to wait for to their job ids; a dependency that already
    succeeded (on a resume) is left out, since its job may be past Batch's retention.
    """
    env = contract_environment(step, doc["run_id"], run_uri, doc.get("generation", 1))
    # Containers cannot reach the instance metadata (hop limit 1): tell boto3 the region.
    env["AWS_DEFAULT_REGION"] = region
    resources = [
        {"type": kind, "value": str(step[key])}
        for kind, key in (("VCPU", "vcpus"), ("MEMORY", "memory"), ("GPU", "gpus"))
        if step[key] is not None
    ]
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
            "opsctl:run": doc["run_id"],
            "opsctl:step": step["name"],
            "opsctl:pipeline": doc["pipeline"],
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


class BatchAPI:
    """Intent-named calls to AWS Batch and CloudWatch Logs; boto3 only here (and in storage, and
    prices.py for EC2 and the price list)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.batch = client("batch", region)
        self.logs = client("logs", region)
        self.ecr = client("ecr", region)
        self.calls: Counter[str] = Counter()  # Batch calls made, by operation (`opsctl report` prints it)
        self.batch.meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _call(self, what: str) -> Any:
        return aws_call("AWS Batch", what, self.region)

    def unusable(
        self, queues: list[str], definitions: list[str]
    ) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """The queues (not ENABLED) and job definitions (no ACTIVE revision) of `queues`/
        `definitions` that cannot take jobs, and the usable definitions as described, by the
        reference asked for: two calls, made before a launch uploads or submits anything.

        A deploy that changes a job definition registers revision N+1 and deregisters N, so an
        infra file written before it (every operator's, after each CI deploy) names an INACTIVE
        revision, which SubmitJob refuses ("JobDefinition ... is not in ACTIVE status"). Such a
        reference, or one without a revision, stands for the newest ACTIVE revision of its name
        (one DescribeJobDefinitions by name and status ACTIVE, only then): what the stack has now.
        """
        with self._call("job queues " + ", ".join(queues)):
            found = self.batch.describe_job_queues(jobQueues=queues)["jobQueues"]
        usable = {
            name
            for q in found
            if q.get("state") == "ENABLED"
            for name in (q["jobQueueArn"], q["jobQueueName"])
        }
        problems = [f"job queue {q}" for q in queues if q not in usable]
        with self._call("job definitions " + ", ".join(definitions)):
            found = self.batch.describe_job_definitions(jobDefinitions=definitions)["jobDefinitions"]
        active = {
            name: d
            for d in found
            if d.get("status", "ACTIVE") == "ACTIVE"
            for name in (d["jobDefinitionArn"], f"{d['jobDefinitionName']}:{d['revision']}")
        }
        described: dict[str, dict[str, Any]] = {}
        for ref in definitions:
            newest = active.get(ref) or max(
                self.definitions_named(definition_name(ref)), key=lambda d: int(d["revision"]), default=None
            )
            if newest is None:
                problems.append(f"job definition {ref}")
            else:
                described[ref] = newest
        return problems, described

    def definitions_named(self, name: str) -> list[dict[str, Any]]:
        """The ACTIVE revisions of the job definition `name`: one call (a page holds 100)."""
        with self._call(f"job definition {name}"):
            pages = self.batch.get_paginator("describe_job_definitions").paginate(
                jobDefinitionName=name, status="ACTIVE"
            )
            return [d for page in pages for d in page["jobDefinitions"]]

    def active_definitions(self) -> list[dict[str, Any]]:
        """Every ACTIVE job definition of the account in this region, paged."""
        with self._call("ACTIVE job definitions"):
            pages = self.batch.get_paginator("describe_job_definitions").paginate(status="ACTIVE")
            return [d for page in pages for d in page["jobDefinitions"]]

    def register_definition(self, request: dict[str, Any]) -> str:
        with self._call(f"RegisterJobDefinition {request['jobDefinitionName']}"):
            return str(self.batch.register_job_definition(**request)["jobDefinitionArn"])

    def deregister_definition(self, arn: str) -> None:
        with self._call(f"DeregisterJobDefinition {arn}"):
            self.batch.deregister_job_definition(jobDefinition=arn)

    def active_job_definitions(self, queues: list[str]) -> Counter[str]:
        """How many jobs not yet ended on `queues` use each job definition: ListJobs per queue and
        active status, paged (an array job is listed once, as its parent)."""
        used: Counter[str] = Counter()
        for queue in queues:
            for status in ACTIVE_STATUSES:
                with self._call(f"{status} jobs in {queue}"):
                    pages = self.batch.get_paginator("list_jobs").paginate(jobQueue=queue, jobStatus=status)
                    for page in pages:
                        used.update(
                            job["jobDefinition"]
                            for job in page.get("jobSummaryList", [])
                            if "jobDefinition" in job
                        )
        return used

    def images_missing(self, images: list[str]) -> list[str]:
        """Those of `images` that their ECR repository does not hold: one DescribeImages each.

        Only ECR images are checked (`<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>`);
        a public registry's image is Batch's to pull.
        """
        missing = []
        for image in images:
            found = ECR_IMAGE.fullmatch(image)
            if not found:
                continue
            account, region, repository, tag, digest = found.groups()
            ecr = self.ecr if region == self.region else client("ecr", region)
            ref = {"imageDigest": digest} if digest else {"imageTag": tag or "latest"}
            gone = (ecr.exceptions.ImageNotFoundException, ecr.exceptions.RepositoryNotFoundException)
            with aws_call("ECR", f"image {image}", region):
                try:
                    ecr.describe_images(registryId=account, repositoryName=repository, imageIds=[ref])
                except gone:
                    missing.append(image)
        return missing

    def submit_step(self, **request: Any) -> str:
        with self._call(f"SubmitJob {request['jobName']} on {request['jobQueue']}"):
            job_id: str = self.batch.submit_job(**request)["jobId"]
        return job_id

    def describe(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Job descriptions by id, in chunks of 100 (DescribeJobs' limit).

        A job Batch no longer knows (about 7 days after it ended) is simply absent.
        """
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(job_ids), DESCRIBE_CHUNK):
            chunk = job_ids[start : start + DESCRIBE_CHUNK]
            with self._call("jobs " + ", ".join(chunk[:3]) + (" ..." if len(chunk) > 3 else "")):
                for job in self.batch.describe_jobs(jobs=chunk)["jobs"]:
                    found[job["jobId"]] = job
        return found

    def failed_children(self, array_job_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """Up to `limit` failed children of an array job, described."""
        with self._call(f"children of {array_job_id}"):
            summaries = self.batch.list_jobs(arrayJobId=array_job_id, jobStatus="FAILED", maxResults=limit)
        ids = [job["jobId"] for job in summaries.get("jobSummaryList", [])]
        return list(self.describe(ids).values()) if ids else []

    def children(self, array_job_id: str) -> list[str]:
        """Every child's job id of an array job: ListJobs by array job id, once per status (the
        call answers one status at a time), 1,000 a page."""
        ids: list[str] = []
        for status in (*ACTIVE_STATUSES, "SUCCEEDED", "FAILED"):
            with self._call(f"{status} children of {array_job_id}"):
                pages = self.batch.get_paginator("list_jobs").paginate(
                    arrayJobId=array_job_id, jobStatus=status, PaginationConfig={"PageSize": 1000}
                )
                ids.extend(job["jobId"] for page in pages for job in page.get("jobSummaryList", []))
        return ids

    def jobs_named(self, queue: str, name: str) -> list[str]:
        """Ids of the jobs called `name` in `queue`: finds a submission whose id was not recorded."""
        ids: list[str] = []
        with self._call(f"jobs named {name} in {queue}"):
            pages = self.batch.get_paginator("list_jobs").paginate(
                jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}]
            )
            for page in pages:
                ids.extend(
                    job["jobId"] for job in page.get("jobSummaryList", []) if job.get("jobName") == name
                )
        return ids

    def terminate(self, job_id: str, reason: str) -> None:
        """TerminateJob: stops a job that is STARTING or RUNNING and cancels one that has not
        started (API Reference, "TerminateJob"), an array parent's children with it. CancelJob
        would leave a child that started meanwhile running, and still succeed."""
        with self._call(f"job {job_id}"):
            self.batch.terminate_job(jobId=job_id, reason=reason)

    def child_log_events(self, group: str, stream: str, token: str | None) -> tuple[list[str], str | None]:
        """One page of a log stream's messages, oldest first, and the token for the next page."""
        request: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            request["nextToken"] = token
        response = self._log_events(request)
        if response is None:
            return [], token
        return [event["message"] for event in response["events"]], response.get("nextForwardToken")

    def log_tail(self, group: str, stream: str, lines: int = LOG_TAIL) -> list[str]:
        """The last `lines` messages of a log stream, oldest first: one GetLogEvents from the
        end (startFromHead false, limit N), however long the stream. A stream not written yet
        has none."""
        request = {"logGroupName": group, "logStreamName": stream, "startFromHead": False, "limit": lines}
        response = self._log_events(request)
        return [] if response is None else [event["message"] for event in response["events"]][-lines:]

    def _log_events(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """GetLogEvents; None for a stream that does not exist yet. Batch names the stream when the
        container starts; it appears with its first line. A missing group is a configuration
        error (asked, not read from the message: emulators word both cases alike)."""
        group = request["logGroupName"]
        with aws_call("CloudWatch Logs", f"log group {group}", self.region):
            try:
                response: dict[str, Any] = self.logs.get_log_events(**request)
            except self.logs.exceptions.ResourceNotFoundException:
                if not self._group_exists(group):
                    raise BadInput(
                        f"CloudWatch Logs: log group {group} does not exist (infra output log_group)"
                    ) from None
                return None
        return response

    @functools.cache  # noqa: B019 - one BatchAPI per command; the group does not come and go
    def _group_exists(self, group: str) -> bool:
        found = self.logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
        return any(g["logGroupName"] == group for g in found)
