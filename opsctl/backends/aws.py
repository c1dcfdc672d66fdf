"""The AWS Batch backend: one SubmitJob per step, and nothing that has to stay running.

The run lives in the infra bucket under `runs/<run_id>/`: `manifest.json` (the pipeline as
launched, with every step's job id recorded as soon as it is submitted), `lists/<step>.txt`
and the workers' markers under `state/`. Batch's own `dependsOn` carries the DAG, so any machine
with credentials and the infra outputs can watch, kill, resume or read the logs of a run.

`BatchAPI` is the only code that calls AWS Batch and CloudWatch Logs; S3 goes through
`opsctl.storage`.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opsctl import pipeline as spec
from opsctl.errors import BadInput, OpsctlError
from opsctl.infra import InfraOutputs
from opsctl.runs import contract_environment, manifest, new_run_id
from opsctl.states import TERMINAL, JobState
from opsctl.storage import NotFound, S3Store
from worker.listfile import render_commands
from worker.markers import Markers

DESCRIBE_CHUNK = 100  # DescribeJobs takes at most 100 job ids
KILLED = "killed by user"
STUCK_AFTER = 15 * 60.0  # seconds RUNNABLE before status warns
BEFORE_START = (JobState.SUBMITTED, JobState.PENDING, JobState.RUNNABLE)
STARTED = (JobState.STARTING, JobState.RUNNING)

# attempts = retries + 1. Batch applies the first rule that matches, and retries when none
# does, hence the catch-all EXIT at the end (at most 5 rules):
#  - a reclaimed spot instance is always worth another attempt;
#  - an image that cannot be pulled will not be pulled next time either;
#  - worker exit 2 is bad input (environment, list file): the same input fails the same way;
#  - any other exit code is a failed command: retried, like the local backend does;
#  - anything else (e.g. a job that never ran for another reason) ends the job.
RETRY_RULES = [
    {"onStatusReason": "Host EC2*", "action": "RETRY"},
    {"onReason": "CannotPullContainerError*", "action": "EXIT"},
    {"onExitCode": "2", "action": "EXIT"},
    {"onExitCode": "*", "action": "RETRY"},
    {"onReason": "*", "action": "EXIT"},
]


class BatchAPI:
    """Intent-named calls to AWS Batch and CloudWatch Logs; boto3 only here (and in storage)."""

    def __init__(self, region: str) -> None:
        import boto3
        from botocore.config import Config

        config = Config(region_name=region, retries={"mode": "adaptive", "max_attempts": 10})
        self.batch = boto3.client("batch", config=config)
        self.logs = boto3.client("logs", config=config)

    def submit_step(self, **request: Any) -> str:
        job_id: str = self.batch.submit_job(**request)["jobId"]
        return job_id

    def describe(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Job descriptions by id, in chunks of 100 (DescribeJobs' limit)."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(job_ids), DESCRIBE_CHUNK):
            for job in self.batch.describe_jobs(jobs=job_ids[start : start + DESCRIBE_CHUNK])["jobs"]:
                found[job["jobId"]] = job
        return found

    def failed_children(self, array_job_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """Up to `limit` failed children of an array job, described."""
        summaries = self.batch.list_jobs(arrayJobId=array_job_id, jobStatus="FAILED", maxResults=limit)
        ids = [job["jobId"] for job in summaries.get("jobSummaryList", [])]
        return list(self.describe(ids).values()) if ids else []

    def jobs_named(self, queue: str, name: str) -> list[str]:
        """Ids of the jobs called `name` in `queue`: finds a submission whose id was not recorded."""
        ids: list[str] = []
        pages = self.batch.get_paginator("list_jobs").paginate(
            jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}]
        )
        for page in pages:
            ids.extend(job["jobId"] for job in page.get("jobSummaryList", []) if job.get("jobName") == name)
        return ids

    def cancel(self, job_id: str, reason: str) -> None:
        self.batch.cancel_job(jobId=job_id, reason=reason)

    def terminate(self, job_id: str, reason: str) -> None:
        self.batch.terminate_job(jobId=job_id, reason=reason)

    def child_log_events(self, group: str, stream: str, token: str | None) -> tuple[list[str], str | None]:
        """One page of a log stream's messages, oldest first, and the token for the next page."""
        request: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            request["nextToken"] = token
        try:
            response = self.logs.get_log_events(**request)
        except self.logs.exceptions.ResourceNotFoundException:
            # Batch names the stream when the container starts; it appears with its first line.
            return [], token
        return [event["message"] for event in response["events"]], response.get("nextForwardToken")


class AwsBackend:
    """launch, status, kill, resume, logs and list for runs on AWS Batch."""

    name = "aws"

    def __init__(self, infra: InfraOutputs, api: BatchAPI | None = None) -> None:
        self.infra = infra
        self._api = api
        # Manifests of fully submitted runs, for repeated polls by this process: their job ids
        # only change through `resume`, and a run a watch follows cannot be resumed until it ended.
        self._submitted: dict[str, dict[str, Any]] = {}

    @functools.cached_property
    def api(self) -> BatchAPI:
        return self._api or BatchAPI(self.infra.region)

    def store(self, run_id: str) -> S3Store:
        """Where a run lives: s3://BUCKET/runs/<run_id>/."""
        return S3Store(self.infra.bucket, f"runs/{run_id}")

    def state_store(self, run_id: str) -> S3Store:
        """The run's markers (OPSCTL_STATE_URI)."""
        return S3Store(self.infra.bucket, f"runs/{run_id}/state")

    # --- the manifest ---------------------------------------------------------------------

    def read_manifest(self, run_id: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.store(run_id).read("manifest.json"))
        except NotFound:
            raise BadInput(
                f"run '{run_id}' not found in s3://{self.infra.bucket}/runs/ (infra: {self.infra.source})"
            ) from None
        return data

    def _write_manifest(self, doc: dict[str, Any]) -> None:
        self.store(doc["run_id"]).write("manifest.json", json.dumps(doc, indent=2).encode())

    # --- launch and resume ----------------------------------------------------------------

    def launch(self, spec_path: Path, max_parallel: int | None = None) -> str:
        """Validate, upload the list files and the manifest, then submit the steps in order."""
        pipe = spec.load(spec_path)  # before any AWS call
        run_id = new_run_id(pipe.name)
        store = self.store(run_id)
        list_uris = {}
        for step in pipe.steps:
            store.write(f"lists/{step.name}.txt", render_commands(step.commands).encode())
            list_uris[step.name] = f"{store.uri}/lists/{step.name}.txt"
        doc = manifest(pipe, run_id, "aws", list_uris)
        doc["infra"] = {"bucket": self.infra.bucket, "region": self.infra.region}
        doc["jobs"] = {}
        self._write_manifest(doc)
        self._submit_missing(doc)
        return run_id

    def _submit_missing(
        self, doc: dict[str, Any], resubmit: frozenset[str] = frozenset(), *, adopt: bool = False
    ) -> list[str]:
        """Submit every step without a recorded job id (and those in `resubmit`), in order.

        Each job id is written to the manifest as soon as SubmitJob returns, so a launch that
        dies half way is completed by `resume` without submitting anything twice. With `adopt`
        (resume), a job is first looked up by the name it would be submitted under, in case an
        earlier launch or resume died between SubmitJob and recording the id. That name is
        `<run>-<step>`, and for a resubmission `<run>-<step>-<first 8 of the replaced job id>`:
        it follows from the manifest alone, so the same resume run twice picks the same name.
        """
        submitted = []
        for step in doc["steps"]:
            name = step["name"]
            if name in doc["jobs"] and name not in resubmit:
                continue
            replaced = doc["jobs"].get(name)
            job_name = f"{doc['run_id']}-{name}" + (f"-{replaced[:8]}" if replaced else "")
            orphans = self.api.jobs_named(self.infra.queue(step["queue"]), job_name) if adopt else []
            if orphans:
                # Submitted by a launch that died before recording it: adopt, do not duplicate.
                doc["jobs"][name] = orphans[0]
            else:
                doc["jobs"][name] = self.api.submit_step(**self.submit_request(doc, step, job_name))
                submitted.append(name)
            self._write_manifest(doc)
        return submitted

    def submit_request(self, doc: dict[str, Any], step: dict[str, Any], job_name: str) -> dict[str, Any]:
        """The SubmitJob request for one step (an array job when array_size >= 2)."""
        run_id = doc["run_id"]
        env = contract_environment(step, run_id, self.store(run_id).uri, doc.get("generation", 1))
        # Containers cannot reach the instance metadata (hop limit 1): tell boto3 the region.
        env["AWS_DEFAULT_REGION"] = self.infra.region
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
            "jobQueue": self.infra.queue(step["queue"]),
            "jobDefinition": self.infra.job_definition(step["queue"]),
            "containerOverrides": overrides,
            "retryStrategy": {"attempts": step["retries"] + 1, "evaluateOnExit": RETRY_RULES},
            "timeout": {"attemptDurationSeconds": step["timeout"]},
            "tags": {"opsctl:run": run_id, "opsctl:step": step["name"], "opsctl:pipeline": doc["pipeline"]},
            "propagateTags": True,
        }
        if step["array_size"] > 1:
            request["arrayProperties"] = {"size": step["array_size"]}
        depends = [
            {"jobId": doc["jobs"][d["step"]], **({"type": "N_TO_N"} if d["n_to_n"] else {})}
            for d in step["depends_on"]
        ]
        if depends:
            request["dependsOn"] = depends
        return request

    def resume(self, run_id: str) -> str:
        """Submit what a launch never submitted, and again every step that failed.

        A resubmitted step's dependents are resubmitted too (they depended on the old job).
        Steps still running are left alone. Workers skip commands that have `done` markers,
        so only unfinished work runs again.
        """
        doc = self.read_manifest(run_id)
        jobs = self.api.describe(list(doc["jobs"].values()))
        redo: set[str] = set()
        for step in doc["steps"]:  # topological order: dependencies are decided first
            job_id = doc["jobs"].get(step["name"])
            status = jobs.get(job_id or "", {}).get("status")
            if (job_id and status == JobState.FAILED) or any(d["step"] in redo for d in step["depends_on"]):
                redo.add(step["name"])
        if redo:
            doc.setdefault("replaced", []).append(
                {n: doc["jobs"][n] for n in sorted(redo) if n in doc["jobs"]}
            )
        submitted = self._submit_missing(doc, frozenset(redo), adopt=True)
        return f"{run_id} resumed: submitted {', '.join(submitted) or 'nothing'}"

    # --- status ---------------------------------------------------------------------------

    def status(self, run_id: str, *, stuck_after: float = STUCK_AFTER) -> dict[str, Any]:
        """The status document: ceil(steps/100) DescribeJobs calls and one listing per step.

        `warnings` names steps that have waited RUNNABLE for more than `stuck_after` seconds.
        """
        doc = self._submitted.get(run_id) or self.read_manifest(run_id)
        if len(doc["jobs"]) == len(doc["steps"]):
            self._submitted[run_id] = doc
        jobs = self.api.describe(list(doc["jobs"].values()))
        markers = self.state_store(run_id)
        now_ms = time.time() * 1000
        warnings = []
        steps = []
        for step in doc["steps"]:
            job = jobs.get(doc["jobs"].get(step["name"], ""))
            state = JobState(job["status"]) if job else JobState.SUBMITTED
            if job and "arrayProperties" in job and step["array_size"] > 1:
                counts = {k: v for k, v in job["arrayProperties"].get("statusSummary", {}).items() if v}
            else:
                counts = {state.value: 1} if job else {}
            done, failed, rerun = Markers(markers, step["name"]).scan()
            steps.append(
                {
                    "name": step["name"],
                    "queue": step["queue"],
                    "state": state.value,
                    "reason": job.get("statusReason") if job and state is JobState.FAILED else None,
                    "array_size": step["array_size"],
                    "counts": counts,
                    "elapsed": _elapsed(job),
                    "commands": {
                        "total": step["commands"],
                        "done": len(done),
                        "failed": len(failed),
                        "reexecuted": len(rerun),
                    },
                    "job_id": job["jobId"] if job else None,
                }
            )
            waited = _runnable_for(job, jobs, now_ms) if job else 0.0
            if waited > stuck_after:
                warnings.append(
                    f"step '{step['name']}' has been RUNNABLE for {waited / 60:.0f} min: likely "
                    + (
                        "no GPU instance types in the gpu compute environment, or "
                        if step["queue"] == "gpu"
                        else ""
                    )
                    + "no capacity for its instance types (spot), or its compute environment's maxvCpus is "
                    "reached or smaller than the job's vCPUs/memory"
                )
        return {
            "run_id": run_id,
            "pipeline": doc["pipeline"],
            "backend": "aws",
            "state": _run_state(
                [JobState(s["state"]) for s in steps], submitted=len(doc["jobs"]) == len(steps)
            ),
            "reason": None
            if len(doc["jobs"]) == len(steps)
            else "launch incomplete: `opsctl resume` submits the rest",
            "created": doc["created"],
            "elapsed": None,
            "steps": steps,
            "warnings": warnings,
        }

    def failures(self, run_id: str, doc: dict[str, Any]) -> list[str]:
        """Each failed child's reasons, exit code and last log lines (for `watch`)."""
        lines = []
        for step in doc["steps"]:
            if step["state"] != JobState.FAILED or not step["job_id"]:
                continue
            children = (
                self.api.failed_children(step["job_id"])
                if step["array_size"] > 1
                else list(self.api.describe([step["job_id"]]).values())
            )
            for child in children:
                container = child.get("container", {})
                index = child.get("arrayProperties", {}).get("index", 0)
                reason = child.get("statusReason", "no reason given")
                lines.append(
                    f"{step['name']}[{index}] failed: {reason} (container: {container.get('reason', '-')}, "
                    f"exit code {container.get('exitCode', '-')})"
                )
                stream = container.get("logStreamName")
                if stream:
                    messages, _ = self.api.child_log_events(self.infra.log_group, stream, None)
                    lines.extend(f"    {m}" for m in messages[-10:])
        return lines

    # --- kill, logs, list -----------------------------------------------------------------

    def kill(self, run_id: str) -> str:
        """CancelJob before a job starts, TerminateJob once it has; parents cascade to children."""
        doc = self.read_manifest(run_id)
        jobs = self.api.describe(list(doc["jobs"].values()))
        done = []
        for step in doc["steps"]:
            job = jobs.get(doc["jobs"].get(step["name"], ""))
            if not job:
                continue
            state = JobState(job["status"])
            running_children = any(
                job.get("arrayProperties", {}).get("statusSummary", {}).get(s.value) for s in STARTED
            )
            if state in STARTED or (state not in TERMINAL and running_children):
                self.api.terminate(job["jobId"], KILLED)
                done.append(f"terminated {step['name']}")
            elif state in BEFORE_START:
                self.api.cancel(job["jobId"], KILLED)
                done.append(f"cancelled {step['name']}")
        return f"{run_id}: " + ("; ".join(done) if done else "nothing left to stop")

    def logs(
        self, run_id: str, step: str, index: int | None, *, follow: bool, poll: float = 2.0
    ) -> Iterator[bytes]:
        """CloudWatch events of one child (`--index`, default 0), paginated, `--follow`ing."""
        doc = self.read_manifest(run_id)
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
        token: str | None = None
        while True:
            job = self.api.describe([job_id]).get(job_id, {})
            stream = job.get("container", {}).get("logStreamName")
            if not stream:
                if JobState(job.get("status", "SUBMITTED")) in TERMINAL or not follow:
                    reason = job.get("statusReason", "none given")
                    raise OpsctlError(f"no log stream: the job never started (reason: {reason})")
                time.sleep(poll)
                continue
            while True:
                messages, next_token = self.api.child_log_events(self.infra.log_group, stream, token)
                for message in messages:
                    yield (message + "\n").encode()
                if next_token == token:
                    break
                token = next_token
            if not follow or JobState(job["status"]) in TERMINAL:
                return
            time.sleep(poll)

    def list_runs(self) -> list[dict[str, Any]]:
        """Runs from the manifests under the bucket's runs/, newest first."""
        bucket = S3Store(self.infra.bucket, "runs")
        rows = []
        for key in bucket.list():
            if key.count("/") == 1 and key.endswith("/manifest.json"):
                doc = json.loads(bucket.read(key))
                rows.append(
                    {
                        "run_id": doc["run_id"],
                        "pipeline": doc["pipeline"],
                        "backend": "aws",
                        "state": None,  # one DescribeJobs per run would make list slow: see status
                        "created": doc["created"],
                    }
                )
        return sorted(rows, key=lambda r: (r["created"], r["run_id"]), reverse=True)


def _run_state(states: list[JobState], *, submitted: bool) -> str:
    if submitted and all(s is JobState.SUCCEEDED for s in states):
        return JobState.SUCCEEDED.value
    if any(s is JobState.FAILED for s in states) and all(s in TERMINAL for s in states):
        return JobState.FAILED.value
    if any(s in STARTED for s in states):
        return JobState.RUNNING.value
    return JobState.PENDING.value if submitted else JobState.SUBMITTED.value


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


def _elapsed(job: dict[str, Any] | None) -> float | None:
    if not job or not job.get("startedAt"):
        return None
    end = float(job.get("stoppedAt") or time.time() * 1000)
    return round((end - float(job["startedAt"])) / 1000, 1)
