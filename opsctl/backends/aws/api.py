"""`BatchAPI`: intent-named calls to AWS Batch, CloudWatch Logs and ECR, and the only code that
makes them (S3 is opsctl_contract/storage.py's; EC2 and the price list are prices.py's).

Each method says what it is for (submit a step, describe jobs, list an array's children, read a
stream's tail), counts the Batch calls made (`opsctl report` prints them), and turns AWS's
errors into one line through opsctl_contract.awsclient.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opsctl.backends.aws.batch import ECR_IMAGE, definition_name
from opsctl_contract.awsclient import aws_call, client
from opsctl_contract.errors import BadInput

if TYPE_CHECKING:
    from mypy_boto3_batch.literals import JobStatusType
    from mypy_boto3_ecr.type_defs import ImageIdentifierTypeDef

DESCRIBE_CHUNK = 100  # DescribeJobs takes at most 100 job ids
LOG_TAIL = 10  # lines of a failed child's log that `watch` prints
ACTIVE_STATUSES: tuple[JobStatusType, ...] = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


def plain(response: Mapping[str, Any]) -> dict[str, Any]:
    """An answer of boto3 as the rest of the backend reads it, a plain dict (the calls are typed
    by boto3-stubs, their answers read by key as the API Reference documents them)."""
    return dict(response)


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
            listed = self.batch.describe_job_definitions(jobDefinitions=definitions)["jobDefinitions"]
        active = {
            name: plain(d)
            for d in listed
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
            return [plain(d) for page in pages for d in page["jobDefinitions"]]

    def active_definitions(self) -> list[dict[str, Any]]:
        """Every ACTIVE job definition of the account in this region, paged."""
        with self._call("ACTIVE job definitions"):
            pages = self.batch.get_paginator("describe_job_definitions").paginate(status="ACTIVE")
            return [plain(d) for page in pages for d in page["jobDefinitions"]]

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
            ref: ImageIdentifierTypeDef = {"imageDigest": digest} if digest else {"imageTag": tag or "latest"}
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
                    found[job["jobId"]] = plain(job)
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
                response = plain(self.logs.get_log_events(**request))
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
