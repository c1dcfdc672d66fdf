"""AWS Batch, played by the test harness: the Batch API over HTTP on 127.0.0.1, with real
`opsctl-worker` processes as the jobs' containers.

moto's Batch runs no containers (every job SUCCEEDED at once, in its no-Docker mode), so it can
neither show a running array nor retry a child. This plays the scheduler's part, and only that:
opsctl's own code (the CLI, `AwsBackend`) submits, polls, kills and resumes through boto3, its
Batch client pointed here with `AWS_ENDPOINT_URL_BATCH`, while S3 and CloudWatch Logs stay on the
moto server. What it answers follows the AWS Batch API Reference (REST-JSON, `POST /v1/<op>`):

- SubmitJob (API Reference, "SubmitJob"): an array job when `arrayProperties.size` >= 2, its
  children `<id>:<index>`; `dependsOn` (all children, or index by index for N_TO_N). Refused
  with AWS's ClientException wording: a jobName outside its pattern ("Job name should match
  valid pattern"), a job definition revision that is not ACTIVE ("JobDefinition <arn> is not in
  ACTIVE status"). Accepted, but each job then ends FAILED before any attempt, as when ECS
  RunTask refuses the task: container overrides over ECS's 8,192 characters (status reason
  "Container Overrides length must be at most 8192");
- DescribeJobs ("DescribeJobs", Response Syntax): ids it does not know are left out, as for jobs
  past retention; an array parent is only SUBMITTED, PENDING, FAILED or SUCCEEDED (User Guide,
  "Array jobs") with `arrayProperties.statusSummary`; a child has `arrayProperties.index`;
- ListJobs by `arrayJobId` + `jobStatus`, or by `jobQueue` + a JOB_NAME filter;
- CancelJob (jobs not started only: one STARTING or RUNNING is left alone, and the call still
  succeeds) / TerminateJob (stops a running job, cancels one not started), each cascading from
  a parent to its children;
- DescribeJobQueues for the queues it was given, DescribeJobDefinitions by reference (ARN,
  `name:revision`, `name`) or by `jobDefinitionName` and `status`, and
  DescribeComputeEnvironments ("DescribeComputeEnvironments", Response Syntax) for the one
  compute environment behind each queue (ENVIRONMENTS: the cpu queue's spot c5, the gpu
  queue's on-demand g5, as tests/moto_env.py creates them on moto).

Each child attempt runs the job's command with the job's environment plus what Batch sets
(AWS_BATCH_JOB_ID, AWS_BATCH_JOB_ATTEMPT, AWS_BATCH_JOB_ARRAY_INDEX for array children). An
attempt that ends is retried by the submitted `retryStrategy` (User Guide, "Automated job
retries"): the first `evaluateOnExit` rule whose patterns all match decides; no rule matching
means RETRY while attempts remain. A timed-out attempt gets SIGTERM, SIGKILL after
`stop_grace` s, reason "Job attempt duration exceeded timeout", and is not retried (User
Guide, "Job timeouts"). Each attempt's output goes, line by line as it is written, to a log
stream of its own, as the awslogs driver sends it.

The world's faults are methods: `reclaim` (a spot host taken back: the child is SIGKILLed,
reason "Host EC2 (instance ...) terminated."), `forget` (a job past Batch's retention),
`deploy` (a Terraform apply that changes a job definition: revision N+1 registered, N
deregistered) and `start_on` (children that start between a DescribeJobs and a call).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.helpers import WORKER, environ_set

QUEUES = {f"arn:aws:batch:us-east-1:123456789012:job-queue/player-{q}": f"player-{q}" for q in ("cpu", "gpu")}
DEFINITIONS = [f"arn:aws:batch:us-east-1:123456789012:job-definition/player-{q}:1" for q in ("cpu", "gpu")]
# Each queue's compute environment: (name, capacity type, instance types or families).
ENVIRONMENTS = {
    "player-cpu": ("player-cpu-spot", "SPOT", ["c5"]),
    "player-gpu": ("player-gpu", "EC2", ["g5"]),
}
ENVIRONMENT_ARN = "arn:aws:batch:us-east-1:123456789012:compute-environment/{}"
# What a job asks for when neither its definition nor its overrides say (the stack's default).
DEFAULT_RESOURCES = [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}]
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
# SubmitJobRequest.jobName (botocore batch model): a letter or digit, then up to 127 more of
# letters, digits, '-' and '_'.
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# ECS RunTask's `overrides`: 8,192 characters, the JSON included (botocore ecs model), and the
# status reason Batch gives a job whose overrides ECS refused.
MAX_OVERRIDES = 8192
OVERRIDES_REASON = "Container Overrides length must be at most 8192"
# PutLogEvents takes at most 10,000 events a call.
LOG_BATCH = 10_000
TERMINAL = ("SUCCEEDED", "FAILED")
ORDER = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")


class ApiError(Exception):
    def __init__(self, message: str, kind: str = "ClientException", status: int = 400) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass
class Job:
    """A job as Batch keeps it: a single job, an array parent, or an array child."""

    job_id: str
    name: str
    request: dict[str, Any]
    created: int
    index: int | None = None  # array children only
    parent: Job | None = None
    children: list[Job] = field(default_factory=list)
    status: str = "SUBMITTED"
    reason: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    started: int | None = None
    stopped: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    stream: str | None = None
    deadline: float | None = None
    kill_at: float | None = None
    ending_reason: str | None = None  # set when the harness or a timeout stops the attempt
    exit_code: int | None = None
    shipped: int = 0  # bytes of the attempt's output already sent to its log stream


def _now_ms() -> int:
    return int(time.time() * 1000)


class BatchPlayer:
    def __init__(
        self,
        workdir: Path,
        *,
        queues: dict[str, str],
        definitions: list[str],
        log_group: str = "/aws/batch/job",
        capacity: int = 64,
        stop_grace: float = 2.0,
        record: Callable[[dict[str, Any]], None] | None = None,
        worker_env: dict[str, str] | None = None,
        logs_client: Any = None,
    ) -> None:
        self.workdir = workdir
        self.queues = queues  # arn -> name
        # arn -> ACTIVE | INACTIVE, every revision ever registered here
        self.definitions = dict.fromkeys(definitions, "ACTIVE")
        self.log_group = log_group
        self.capacity = capacity
        self.stop_grace = stop_grace
        self.infra = Path()  # the infra file naming its queues and definitions (tests/conftest.py)
        self.jobs: dict[str, Job] = {}
        self.submitted: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        # (operation, calls to let through first, error) answered instead of the operation
        self._refusals: list[tuple[str, int, ApiError]] = []
        self._start_on: set[str] = set()  # operations before which RUNNABLE jobs start
        # For the permission tests (tests/iam/): each call answered, with who signed it; what
        # the workers' environment adds (their credentials, as a job role gives them); and the
        # Logs client the awslogs driver ships with (the instance role's credentials).
        self.record = record
        self.worker_env = worker_env or {}
        self._logs_client: Any = logs_client

    # --- life -------------------------------------------------------------------------------

    def start(self) -> str:
        player = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                operation = self.path.rstrip("/").rsplit("/", 1)[-1]
                params = json.loads(body or b"{}")
                try:
                    status, answer = 200, player.answer(operation, params)
                except ApiError as e:
                    status, answer = e.status, {"__type": e.kind, "message": str(e)}
                if player.record is not None:
                    player.record(signed_call("batch", operation, params, self.headers, status, answer))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status != 200:
                    self.send_header("x-amzn-ErrorType", answer["__type"])
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        for target in (self._server.serve_forever, self._schedule):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._stop.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        with self.lock:
            for job in self.jobs.values():
                if job.proc and job.proc.poll() is None:
                    _signal(job.proc.pid, signal.SIGKILL)
                    job.proc.wait()

    def wait_until(self, done: Any, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError("the jobs did not get there in time")
            time.sleep(0.05)

    def idle(self) -> bool:
        """Every job has ended."""
        with self.lock:
            return all(job.status in TERMINAL for job in self.jobs.values())

    # --- the world's faults -----------------------------------------------------------------

    def running_children(self) -> list[Job]:
        with self.lock:
            return [j for j in self.jobs.values() if j.proc is not None and j.proc.poll() is None]

    def reclaim(self, job: Job) -> None:
        """The spot instance under `job` is taken back: its container dies at once."""
        with self.lock:
            if job.proc is None or job.proc.poll() is not None:
                return
            job.ending_reason = "Host EC2 (instance i-0c0ffee0c0ffee000) terminated."
            _signal(job.proc.pid, signal.SIGKILL)

    def forget(self, job_id: str) -> None:
        """Past Batch's retention: DescribeJobs and ListJobs no longer know the job."""
        with self.lock:
            job = self.jobs.pop(job_id)
            for child in job.children:
                self.jobs.pop(child.job_id, None)

    def deploy(self, queue: str) -> str:
        """A deploy that changes the job definition of `queue` ("cpu" or "gpu"), as Terraform
        applies it: revision N+1 registered, N deregistered (INACTIVE). The new ARN."""
        with self.lock:
            current = max(
                (a for a, s in self.definitions.items() if s == "ACTIVE" and f"/player-{queue}:" in a),
                key=lambda a: int(a.rsplit(":", 1)[1]),
            )
            stem, revision = current.rsplit(":", 1)
            new = f"{stem}:{int(revision) + 1}"
            self.definitions[new] = "ACTIVE"
            self.definitions[current] = "INACTIVE"
            return new

    def hold(self) -> None:
        """No capacity: RUNNABLE jobs stay RUNNABLE (until `start_on` lets them go)."""
        with self.lock:
            self.capacity = 0

    def start_on(self, *operations: str) -> None:
        """Before answering any of `operations` (e.g. "canceljob"), start every RUNNABLE job of
        the one it names, whatever the capacity: children that started after the caller last
        described the job."""
        with self.lock:
            self._start_on.update(operations)

    def refuse(
        self,
        operation: str,
        message: str,
        *,
        after: int = 0,
        kind: str = "ClientException",
        status: int = 400,
    ) -> None:
        """Answer `operation` (e.g. "submitjob") with an error, after letting `after` calls through."""
        with self.lock:
            self._refusals.append((operation, after, ApiError(message, kind, status)))

    def allow(self) -> None:
        with self.lock:
            self._refusals.clear()

    # --- the API ----------------------------------------------------------------------------

    def answer(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            for k, (op, after, error) in enumerate(self._refusals):
                if op == operation:
                    if after > 0:
                        self._refusals[k] = (op, after - 1, error)
                        break
                    raise error
            handler = getattr(self, f"_op_{operation}", None)
            if handler is None:
                raise ApiError(f"operation {operation} is not played here")
            if operation in self._start_on and body.get("jobId") in self.jobs:
                job = self.jobs[body["jobId"]]
                for target in job.children or [job]:
                    if target.status == "RUNNABLE":
                        self._start_attempt(target)
            result: dict[str, Any] = handler(body)
            return result

    def _op_describejobqueues(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted = body.get("jobQueues") or list(self.queues)
        return {
            "jobQueues": [
                {
                    "jobQueueName": name,
                    "jobQueueArn": arn,
                    "state": "ENABLED",
                    "status": "VALID",
                    "priority": 1,
                    "computeEnvironmentOrder": [
                        {"order": 1, "computeEnvironment": ENVIRONMENT_ARN.format(ENVIRONMENTS[name][0])}
                    ],
                }
                for arn, name in self.queues.items()
                if arn in wanted or name in wanted
            ]
        }

    def _op_describecomputeenvironments(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted = body.get("computeEnvironments") or []
        found = []
        for name, capacity, types in ENVIRONMENTS.values():
            arn = ENVIRONMENT_ARN.format(name)
            if wanted and arn not in wanted and name not in wanted:
                continue
            found.append(
                {
                    "computeEnvironmentName": name,
                    "computeEnvironmentArn": arn,
                    "type": "MANAGED",
                    "state": "ENABLED",
                    "status": "VALID",
                    "computeResources": {
                        "type": capacity,
                        "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED"
                        if capacity == "SPOT"
                        else "BEST_FIT_PROGRESSIVE",
                        "minvCpus": 0,
                        "maxvCpus": 64,
                        "instanceTypes": types,
                        "subnets": ["subnet-12345678"],
                        "securityGroupIds": ["sg-12345678"],
                        "instanceRole": "arn:aws:iam::123456789012:instance-profile/player",
                    },
                }
            )
        return {"computeEnvironments": found}

    def _op_describejobdefinitions(self, body: dict[str, Any]) -> dict[str, Any]:
        """By reference: an ARN or `name:revision` names one revision, whatever its status; a
        bare name its newest ACTIVE one. Else every revision, of `jobDefinitionName` if given,
        with `status` if given."""
        if body.get("jobDefinitions"):
            found = [a for ref in body["jobDefinitions"] if (a := self._definition(ref, any_status=True))]
        else:
            found = [
                arn
                for arn, status in self.definitions.items()
                if body.get("status", status) == status
                and body.get("jobDefinitionName", _definition_name(arn)) == _definition_name(arn)
            ]
        return {
            "jobDefinitions": [
                {
                    "jobDefinitionArn": arn,
                    "jobDefinitionName": _definition_name(arn),
                    "revision": int(arn.rsplit(":", 1)[-1]),
                    "status": self.definitions[arn],
                    "type": "container",
                }
                for arn in found
            ]
        }

    def _definition(self, ref: str, *, any_status: bool = False) -> str | None:
        """The ARN a job definition reference names: an ARN or `name:revision` (ACTIVE unless
        `any_status`), or a bare name (its newest ACTIVE revision, as SubmitJob reads one)."""
        for arn, status in self.definitions.items():
            if ref in (arn, arn.rsplit("/", 1)[-1]):
                return arn if any_status or status == "ACTIVE" else None
        named = [a for a, s in self.definitions.items() if s == "ACTIVE" and _definition_name(a) == ref]
        return max(named, key=lambda a: int(a.rsplit(":", 1)[1]), default=None)

    def _op_submitjob(self, body: dict[str, Any]) -> dict[str, Any]:
        if not JOB_NAME.fullmatch(body["jobName"]):
            raise ApiError(
                "Error executing request, Exception : Job name should match valid pattern, "
                f"RequestId: {uuid.uuid4()}"
            )
        if body["jobQueue"] not in self.queues and body["jobQueue"] not in self.queues.values():
            raise ApiError(f"JobQueue {body['jobQueue']} not found.")
        ref = body["jobDefinition"]
        if self._definition(ref) is None:
            known = self._definition(ref, any_status=True) is not None
            raise ApiError(
                f"JobDefinition {ref} is not in ACTIVE status"
                if known
                else f"JobDefinition name {ref} does not exist or is not in ACTIVE status"
            )
        for dep in body.get("dependsOn", []):
            if dep["jobId"] not in self.jobs:
                raise ApiError(f"Dependent job {dep['jobId']} not found.")
        self.submitted.append(body)
        job = Job(str(uuid.uuid4()), body["jobName"], body, _now_ms())
        size = body.get("arrayProperties", {}).get("size", 0)
        for index in range(size):
            child = Job(f"{job.job_id}:{index}", body["jobName"], body, job.created, index=index, parent=job)
            job.children.append(child)
            self.jobs[child.job_id] = child
        self.jobs[job.job_id] = job
        return {
            "jobId": job.job_id,
            "jobName": job.name,
            "jobArn": f"arn:aws:batch:us-east-1:123456789012:job/{job.job_id}",
        }

    def _op_describejobs(self, body: dict[str, Any]) -> dict[str, Any]:
        if len(body["jobs"]) > 100:
            raise ApiError("jobs: at most 100 ids")
        return {"jobs": [self._describe(self.jobs[i]) for i in body["jobs"] if i in self.jobs]}

    def _op_listjobs(self, body: dict[str, Any]) -> dict[str, Any]:
        if "arrayJobId" in body:
            parent = self.jobs.get(body["arrayJobId"])
            found = [
                c for c in (parent.children if parent else []) if c.status == body.get("jobStatus", c.status)
            ]
        else:
            names = {v for f in body.get("filters", []) if f["name"] == "JOB_NAME" for v in f["values"]}
            found = [
                j
                for j in self.jobs.values()
                if j.index is None and j.request["jobQueue"] == body.get("jobQueue") and j.name in names
            ]
        found = found[: body.get("maxResults", 100)]
        return {"jobSummaryList": [{"jobId": j.job_id, "jobName": j.name, "status": j.status} for j in found]}

    def _op_canceljob(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs[body["jobId"]]
        for target in job.children or [job]:
            if target.status in ("SUBMITTED", "PENDING", "RUNNABLE"):
                self._end(target, "FAILED", body["reason"])
        return {}

    def _op_terminatejob(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs[body["jobId"]]
        for target in job.children or [job]:
            if target.proc is not None and target.proc.poll() is None:
                target.ending_reason = body["reason"]
                self._stop_attempt(target)
            elif target.status not in TERMINAL:
                self._end(target, "FAILED", body["reason"])
        return {}

    # --- scheduling -------------------------------------------------------------------------

    def _schedule(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                self._tick()
            time.sleep(0.02)

    def _units(self) -> list[Job]:
        """What runs: single jobs and array children (parents only track them)."""
        return [j for j in self.jobs.values() if not j.children]

    def _tick(self) -> None:
        now = time.monotonic()
        for job in self._units():
            if job.proc is not None:
                self._ship_log(job)
                self._watch_attempt(job, now)
        for job in self._units():
            if job.status in ("SUBMITTED", "PENDING"):
                verdict = self._dependencies(job)
                if verdict == "failed":
                    self._end(job, "FAILED", "Dependent Job failed")
                else:
                    job.status = "RUNNABLE" if verdict == "met" else "PENDING"
        running = sum(1 for j in self._units() if j.proc is not None)
        for job in self._units():
            if job.status == "RUNNABLE" and running < self.capacity:
                self._start_attempt(job)
                running += 1
        for job in list(self.jobs.values()):
            if job.children and job.status not in TERMINAL:
                self._roll_up(job)

    def _dependencies(self, job: Job) -> str:
        for dep in job.request.get("dependsOn", []):
            other = self.jobs.get(dep["jobId"])
            if other is None:
                continue
            target = other
            if dep.get("type") == "N_TO_N" and job.index is not None and other.children:
                target = other.children[job.index]
            if target.status == "FAILED":
                return "failed"
            if target.status != "SUCCEEDED":
                return "waiting"
        return "met"

    def _batch_environment(self, job: Job) -> dict[str, str]:
        """What Batch sets in a job's container (User Guide, "AWS Batch job environment
        variables")."""
        queue = job.request["jobQueue"]
        queue_name = self.queues.get(queue, queue)
        env = {
            "AWS_BATCH_CE_NAME": ENVIRONMENTS[queue_name][0],
            "AWS_BATCH_JQ_NAME": queue_name,
            "AWS_BATCH_JOB_ID": job.job_id,
            "AWS_BATCH_JOB_ATTEMPT": str(len(job.attempts) + 1),
        }
        if job.index is not None and job.parent is not None:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(job.index)
            env["AWS_BATCH_JOB_ARRAY_SIZE"] = str(len(job.parent.children))
        return env

    def _overrides_refused(self, job: Job, added: dict[str, str]) -> bool:
        """Whether ECS RunTask would refuse the job's task: its overrides (Batch's container,
        the command, the environment with Batch's own variables, the resources) over 8,192
        characters of JSON."""
        overrides = job.request.get("containerOverrides", {})
        container: dict[str, Any] = {
            "name": "default",
            "command": overrides.get("command", []),
            "environment": [
                *overrides.get("environment", []),
                *({"name": k, "value": v} for k, v in added.items()),
            ],
        }
        if overrides.get("resourceRequirements"):
            container["resourceRequirements"] = overrides["resourceRequirements"]
        task = {"containerOverrides": [container]}
        return len(json.dumps(task, separators=(",", ":"), ensure_ascii=False)) > MAX_OVERRIDES

    def _start_attempt(self, job: Job) -> None:
        request = job.request
        overrides = request.get("containerOverrides", {})
        added = self._batch_environment(job)
        if self._overrides_refused(job, added):
            self._end(job, "FAILED", OVERRIDES_REASON)  # RunTask refused: no attempt, no retry
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSCTL_", "AWS_BATCH_"))}
        env.update(self.worker_env)
        env.update({e["name"]: e["value"] for e in overrides.get("environment", [])})
        env.update(added)
        job.log_path = self.workdir / f"{job.job_id.replace(':', '-')}-{len(job.attempts) + 1}.log"
        job.stream = f"player/default/{uuid.uuid4().hex}"
        job.shipped = 0
        self._logs().create_log_stream(logGroupName=self.log_group, logStreamName=job.stream)
        with job.log_path.open("wb") as log:
            job.proc = subprocess.Popen(
                [WORKER, *overrides.get("command", ["run"])],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        job.status = "RUNNING"
        job.started = _now_ms()
        job.ending_reason = None
        job.kill_at = None
        timeout = request.get("timeout", {}).get("attemptDurationSeconds")
        job.deadline = time.monotonic() + timeout if timeout else None

    def _stop_attempt(self, job: Job) -> None:
        """SIGTERM now, SIGKILL after the grace, as Batch stops a container."""
        assert job.proc is not None
        _signal(job.proc.pid, signal.SIGTERM)
        job.kill_at = time.monotonic() + self.stop_grace

    def _watch_attempt(self, job: Job, now: float) -> None:
        assert job.proc is not None
        code = job.proc.poll()
        if code is None:
            if job.deadline is not None and now > job.deadline and job.kill_at is None:
                job.ending_reason = TIMEOUT_REASON
                self._stop_attempt(job)
            elif job.kill_at is not None and now > job.kill_at:
                _signal(job.proc.pid, signal.SIGKILL)
            return
        exit_code = 128 - code if code < 0 else code
        reason = job.ending_reason or ("Essential container in task exited" if exit_code else None)
        self._ship_log(job, final=True)
        job.attempts.append(
            {
                "container": {"exitCode": exit_code, "logStreamName": job.stream},
                "startedAt": job.started,
                "stoppedAt": _now_ms(),
                "statusReason": reason,
            }
        )
        job.proc = None
        job.exit_code = exit_code
        if exit_code == 0 and job.ending_reason is None:
            self._end(job, "SUCCEEDED", reason)
        elif self._retry(job, exit_code, reason):
            job.status = "RUNNABLE"
            job.reason = reason
        else:
            self._end(job, "FAILED", reason)

    def _retry(self, job: Job, exit_code: int, reason: str | None) -> bool:
        """The submitted retryStrategy's verdict; timeouts and terminations are never retried."""
        if reason == TIMEOUT_REASON or (job.ending_reason and not job.ending_reason.startswith("Host EC2")):
            return False
        strategy = job.request.get("retryStrategy", {})
        if len(job.attempts) >= strategy.get("attempts", 1):
            return False
        for rule in strategy.get("evaluateOnExit", []):
            checks = [
                ("onStatusReason", reason or ""),
                ("onReason", ""),  # the container reason: no OOM or pull errors are played
                ("onExitCode", str(exit_code)),
            ]
            if all(fnmatch.fnmatchcase(value, rule[key]) for key, value in checks if key in rule):
                return bool(rule["action"].upper() == "RETRY")
        return True

    def _end(self, job: Job, status: str, reason: str | None) -> None:
        job.status = status
        job.reason = reason
        job.stopped = _now_ms()

    def _roll_up(self, parent: Job) -> None:
        states = [c.status for c in parent.children]
        if all(s == "SUCCEEDED" for s in states):
            self._end(parent, "SUCCEEDED", None)
        elif all(s in TERMINAL for s in states):
            self._end(parent, "FAILED", "Array Child Job failed")
        elif any(s not in ("SUBMITTED",) for s in states):
            parent.status = "PENDING"
        if parent.started is None and any(c.started for c in parent.children):
            parent.started = min(c.started for c in parent.children if c.started)

    def _logs(self) -> Any:
        if self._logs_client is None:
            import boto3

            self._logs_client = boto3.client("logs")
        return self._logs_client

    def _ship_log(self, job: Job, *, final: bool = False) -> None:
        """New lines of the attempt's output into its CloudWatch log stream (on the moto
        server), as the awslogs driver sends them while the container runs."""
        assert job.log_path is not None and job.stream is not None
        with job.log_path.open("rb") as f:
            f.seek(job.shipped)
            data = f.read()
        if not final:
            data = data[: data.rfind(b"\n") + 1]
        if not data:
            return
        from botocore.exceptions import BotoCoreError

        stamp = _now_ms()
        lines = data.splitlines(keepends=True) or [b""]
        for start in range(0, len(lines), LOG_BATCH):
            batch = lines[start : start + LOG_BATCH]
            events = [
                {"timestamp": stamp, "message": line.decode(errors="replace").rstrip("\r\n")}
                for line in batch
            ]
            try:
                self._logs().put_log_events(
                    logGroupName=self.log_group, logStreamName=job.stream, logEvents=events
                )
            except BotoCoreError:
                # A Logs endpoint that timed out must not end the scheduler: like the awslogs
                # driver, keep what was not sent and send it again at the next tick.
                return
            job.shipped += sum(len(line) for line in batch)

    def _describe(self, job: Job) -> dict[str, Any]:
        """A DescribeJobs entry, in the shape of the API Reference's Response Syntax."""
        request = job.request
        overrides = request.get("containerOverrides", {})
        entry: dict[str, Any] = {
            "jobArn": f"arn:aws:batch:us-east-1:123456789012:job/{job.job_id}",
            "jobName": job.name,
            "jobId": job.job_id,
            "jobQueue": request["jobQueue"],
            "status": job.status,
            "attempts": job.attempts,
            "createdAt": job.created,
            "retryStrategy": request.get("retryStrategy", {}),
            "dependsOn": request.get("dependsOn", []),
            "jobDefinition": request["jobDefinition"],
            "container": {
                "command": overrides.get("command", []),
                "environment": overrides.get("environment", []),
                # The definition's, each type the overrides name replaced (API Reference,
                # "ContainerOverrides": resourceRequirements).
                "resourceRequirements": list(
                    {
                        r["type"]: r for r in [*DEFAULT_RESOURCES, *overrides.get("resourceRequirements", [])]
                    }.values()
                ),
            },
            "timeout": request.get("timeout", {}),
            "tags": request.get("tags", {}),
            "propagateTags": request.get("propagateTags", False),
        }
        if job.reason:
            entry["statusReason"] = job.reason
        if job.started:
            entry["startedAt"] = job.started
        if job.stopped and job.status in TERMINAL:
            entry["stoppedAt"] = job.stopped
        last = job.attempts[-1]["container"] if job.attempts else {}
        if job.proc is not None:
            entry["container"]["logStreamName"] = job.stream
        elif last:
            entry["container"].update(last)
        if job.children:
            summary = dict.fromkeys(ORDER, 0)
            for child in job.children:
                summary[child.status] += 1
            entry["arrayProperties"] = {"statusSummary": summary, "size": len(job.children)}
            entry.pop("container")
        elif job.index is not None:
            entry["arrayProperties"] = {"index": job.index}
        return entry


# REST-JSON paths name operations in lower case (`/v1/submitjob`); IAM names them in CamelCase.
OPERATIONS = {
    name.lower(): name
    for name in (
        "SubmitJob",
        "DescribeJobs",
        "ListJobs",
        "CancelJob",
        "TerminateJob",
        "DescribeJobQueues",
        "DescribeJobDefinitions",
        "DescribeComputeEnvironments",
        "RegisterJobDefinition",
        "DeregisterJobDefinition",
    )
}


def signed_call(
    service: str, operation: str, params: Any, headers: Any, status: int, answer: Any = None
) -> dict[str, Any]:
    """A call a harness server answered, as tests/iam/requests.py reads recordings: the access
    key and region from the request's SigV4 credential scope."""
    from tests.iam.requests import CREDENTIAL

    signed = CREDENTIAL.search(headers.get("Authorization", ""))
    key, region = (signed[1], signed[2]) if signed else ("", "")
    name = OPERATIONS.get(operation, operation)
    call = {"key": key, "service": service, "operation": name, "params": params, "region": region}
    return {"call": call, "status": status, "response": answer if isinstance(answer, dict) else {}}


def _definition_name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1].split(":")[0]


def _signal(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@contextlib.contextmanager
def playing(work: Path, outputs: dict[str, str]) -> Iterator[BatchPlayer]:
    """A started player whose infra file (`player.infra`) names its queues and definitions, the
    rest taken from `outputs` (bucket, region, log group on the moto server). boto3's Batch
    clients made meanwhile, in this process and its children, go to it (AWS_ENDPOINT_URL_BATCH).
    """
    from tests.moto_env import write_infra

    work.mkdir(parents=True, exist_ok=True)
    player = BatchPlayer(work, queues=QUEUES, definitions=DEFINITIONS, log_group=outputs["log_group"])
    queues = list(QUEUES)
    with environ_set("AWS_ENDPOINT_URL_BATCH", player.start()):
        try:
            player.infra = write_infra(
                work / "infra.json",
                {
                    **outputs,
                    "cpu_queue": queues[0],
                    "gpu_queue": queues[1],
                    "cpu_job_definition": DEFINITIONS[0],
                    "gpu_job_definition": DEFINITIONS[1],
                },
            )
            yield player
        finally:
            player.stop()
