"""The AWS Batch backend against a moto server over HTTP (Batch in moto's no-Docker mode).

moto marks every submitted job SUCCEEDED at once and runs nothing, so where a test needs the
commands to have run, it runs `opsctl-worker run` itself with exactly the environment the job
was submitted with: the container's view of the contract, against the same S3.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from opsctl.backends.aws import RETRY_RULES, AwsBackend, BatchAPI
from opsctl.errors import OpsctlError
from opsctl.infra import load_outputs
from opsctl.storage import s3_client

WORKER = str(Path(sys.executable).parent / "opsctl-worker")
OPSCTL = str(Path(sys.executable).parent / "opsctl")

FOUR_STEPS = """
name: four
defaults: {{retries: 2, timeout: 900}}
steps:
  - name: pre
    queue: cpu
    array_size: 4
    commands: {{template: "echo pre {{i}}", range: {n}}}
  - name: filter
    queue: cpu
    array_size: 4
    vcpus: 2
    memory: 4096
    commands: {{template: "echo filter {{i}}", range: {n}}}
    depends_on: [{{step: pre, type: N_TO_N}}]
  - name: calibrate
    queue: cpu
    command: echo calibrate
    depends_on: [filter]
    env: {{MODE: fast}}
  - name: fbp
    queue: gpu
    array_size: 3
    gpus: 1
    commands: {{template: "echo fbp {{i}}", range: {n}}}
    depends_on: [calibrate]
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "four.yaml"
    path.write_text(FOUR_STEPS.format(n=12))
    return path


@pytest.fixture
def backend(infra_file: Path) -> AwsBackend:
    return AwsBackend(load_outputs(infra_file))


class Calls:
    """Counts API calls by operation name on the given clients (botocore event hooks)."""

    def __init__(self, *clients: Any) -> None:
        self.clients = clients
        self.names: Counter[str] = Counter()

    def _count(self, model: Any, **_: Any) -> None:
        self.names[model.name] += 1

    def __enter__(self) -> Counter[str]:
        for client in self.clients:
            client.meta.events.register("before-call", self._count)
        return self.names

    def __exit__(self, *_: object) -> None:
        for client in self.clients:
            client.meta.events.unregister("before-call", self._count)


def described(
    job_id: str, status: str, summary: dict[str, int] | None = None, **extra: Any
) -> dict[str, Any]:
    """A DescribeJobs entry, for answers that moto cannot give (botocore's Stubber)."""
    job: dict[str, Any] = {
        "jobId": job_id,
        "jobName": job_id,
        "jobQueue": "q",
        "status": status,
        "startedAt": 0,
        "jobDefinition": "d",
        **extra,
    }
    if summary is not None:
        job["arrayProperties"] = {"statusSummary": summary, "size": sum(summary.values())}
    return job


def stubbed(infra_file: Path, manifest: dict[str, Any]) -> tuple[AwsBackend, BatchAPI]:
    """A backend whose Batch client a test stubs, with `manifest` stored in the (moto) bucket."""
    api = BatchAPI("us-east-1")
    backend = AwsBackend(load_outputs(infra_file), api=api)
    backend._write_manifest(manifest)
    return backend, api


@contextlib.contextmanager
def submitted_requests(backend: AwsBackend) -> Iterator[list[dict[str, Any]]]:
    """Capture the SubmitJob requests as sent (moto does not keep retryStrategy)."""
    requests: list[dict[str, Any]] = []

    def capture(params: dict[str, Any], **_: Any) -> None:
        requests.append(params)

    backend.api.batch.meta.events.register("provide-client-params.batch.SubmitJob", capture)
    try:
        yield requests
    finally:
        backend.api.batch.meta.events.unregister("provide-client-params.batch.SubmitJob", capture)


def test_launch_submits_one_job_per_step(backend: AwsBackend, spec: Path) -> None:
    with submitted_requests(backend) as requests:
        run_id = backend.launch(spec)

    doc = backend.read_manifest(run_id)
    jobs = backend.api.describe(list(doc["jobs"].values()))
    by_step = {name: jobs[job_id] for name, job_id in doc["jobs"].items()}
    assert [r["jobName"] for r in requests] == [
        f"{run_id}-{s}" for s in ("pre", "filter", "calibrate", "fbp")
    ]
    assert by_step["pre"]["arrayProperties"]["size"] == 4
    assert "arrayProperties" not in requests[2], "a one-job step is not an array"
    assert by_step["fbp"]["jobQueue"] == backend.infra.gpu_queue
    assert by_step["pre"]["jobQueue"] == backend.infra.cpu_queue
    assert by_step["filter"]["dependsOn"] == [{"jobId": doc["jobs"]["pre"], "type": "N_TO_N"}]
    assert by_step["calibrate"]["dependsOn"] == [{"jobId": doc["jobs"]["filter"]}]
    assert by_step["fbp"]["tags"] == {"opsctl:run": run_id, "opsctl:step": "fbp", "opsctl:pipeline": "four"}

    env = {e["name"]: e["value"] for e in by_step["calibrate"]["container"]["environment"]}
    assert env["MODE"] == "fast" and env["ARRAY_SIZE"] == "1" and env["OPSCTL_STEP"] == "calibrate"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["LIST_FILE_S3_PATH"] == f"s3://{backend.infra.bucket}/runs/{run_id}/lists/calibrate.txt"
    assert env["OPSCTL_STATE_URI"] == f"s3://{backend.infra.bucket}/runs/{run_id}/state"
    assert not [name for name in env if name.startswith("AWS_BATCH_") and name != "AWS_BATCH_JOB_ID"]

    filter_request = requests[1]
    assert filter_request["retryStrategy"] == {"attempts": 3, "evaluateOnExit": RETRY_RULES}
    assert filter_request["timeout"] == {"attemptDurationSeconds": 900}
    assert filter_request["propagateTags"] is True
    assert filter_request["containerOverrides"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "2"},
        {"type": "MEMORY", "value": "4096"},
    ]
    assert requests[3]["containerOverrides"]["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert requests[3]["containerOverrides"]["command"] == ["run", "--preflight-gpu"]
    assert requests[0]["containerOverrides"]["command"] == ["run"]


def test_launch_and_poll_make_a_fixed_number_of_calls(backend: AwsBackend, tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(
        FOUR_STEPS.format(n=10_000).replace(
            "command: echo calibrate", "commands: {template: 'c {i}', range: 10000}"
        )
    )
    with Calls(backend.api.batch, s3_client()) as launch_calls:
        run_id = backend.launch(big)
    # 4 list files, the first manifest, then the manifest again after each of the 4 submits.
    assert launch_calls == Counter({"SubmitJob": 4, "PutObject": 9})
    with Calls(backend.api.batch, s3_client()) as first_poll:
        backend.status(run_id)
    assert first_poll == Counter({"GetObject": 1, "DescribeJobs": 1, "ListObjectsV2": 4})
    with Calls(backend.api.batch, s3_client()) as poll_calls:
        doc = backend.status(run_id)
    assert poll_calls == Counter({"DescribeJobs": 1, "ListObjectsV2": 4}), "the manifest is read once"
    assert [s["commands"]["total"] for s in doc["steps"]] == [10_000] * 4


def run_container(backend: AwsBackend, job: dict[str, Any], index: int | None) -> None:
    """Run the worker as Batch would: the job's environment plus the index Batch sets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSCTL_", "AWS_BATCH_"))}
    env.update({e["name"]: e["value"] for e in job["container"]["environment"]})
    if index is not None:
        env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
    subprocess.run(
        [WORKER, *job["container"]["command"]], env=env, check=True, capture_output=True, timeout=60
    )


def test_status_counts_commands_from_markers(backend: AwsBackend, spec: Path) -> None:
    run_id = backend.launch(spec)
    doc = backend.read_manifest(run_id)
    pre = backend.api.describe([doc["jobs"]["pre"]])[doc["jobs"]["pre"]]
    for index in (0, 2):
        run_container(backend, pre, index)
    status = backend.status(run_id)
    assert status["state"] == "SUCCEEDED" and status["backend"] == "aws"
    steps = {s["name"]: s for s in status["steps"]}
    assert steps["pre"]["commands"] == {"total": 12, "done": 6, "failed": 0, "reexecuted": 0}, (
        "children 0 and 2: 3 each"
    )
    assert steps["pre"]["counts"] == {"SUCCEEDED": 4}
    assert steps["calibrate"]["counts"] == {"SUCCEEDED": 1}
    assert set(status) >= {"run_id", "pipeline", "backend", "state", "steps"}
    assert set(steps["fbp"]) >= {"name", "state", "array_size", "counts", "commands"}


def test_interrupted_launch_is_completed_by_resume(backend: AwsBackend, spec: Path) -> None:
    seen = []

    def die_on_third_submit(**_: Any) -> None:
        seen.append(1)
        if len(seen) == 3:
            raise KeyboardInterrupt("launch killed")

    backend.api.batch.meta.events.register("before-call.batch.SubmitJob", die_on_third_submit)
    with pytest.raises(KeyboardInterrupt):
        backend.launch(spec)
    backend.api.batch.meta.events.unregister("before-call.batch.SubmitJob", die_on_third_submit)
    keys = [o["Key"] for o in s3_client().list_objects_v2(Bucket=backend.infra.bucket)["Contents"]]
    run_id = keys[0].split("/")[1]
    assert sorted(backend.read_manifest(run_id)["jobs"]) == ["filter", "pre"]
    assert backend.status(run_id)["reason"].startswith("launch incomplete")

    with Calls(backend.api.batch) as calls:
        message = backend.resume(run_id)
    assert calls["SubmitJob"] == 2
    assert message.endswith("submitted calibrate, fbp")
    jobs = backend.read_manifest(run_id)["jobs"]
    assert sorted(jobs) == ["calibrate", "fbp", "filter", "pre"]
    assert backend.status(run_id)["state"] == "SUCCEEDED"

    with Calls(backend.api.batch) as calls:
        assert backend.resume(run_id).endswith("submitted nothing")
    assert calls["SubmitJob"] == 0


def test_resume_adopts_a_job_submitted_but_not_recorded(backend: AwsBackend, spec: Path) -> None:
    run_id = backend.launch(spec)
    doc = backend.read_manifest(run_id)
    fbp = doc["jobs"].pop("fbp")  # as if the launch died between SubmitJob and the manifest write
    backend._write_manifest(doc)
    with Calls(backend.api.batch) as calls:
        backend.resume(run_id)
    assert calls["SubmitJob"] == 0
    assert backend.read_manifest(run_id)["jobs"]["fbp"] == fbp


class Throttle:
    """Answers a share of calls with TooManyRequestsException (HTTP 429) before they are sent."""

    def __init__(self, share: float, seed: int = 7) -> None:
        self.share = share
        self.random = random.Random(seed)
        self.throttled = 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        if self.random.random() >= self.share:
            return None
        self.throttled += 1
        body = json.dumps({"__type": "TooManyRequestsException", "message": "Too Many Requests"}).encode()
        return AWSResponse(request.url, 429, {"x-amzn-ErrorType": "TooManyRequestsException"}, _Body(body))


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def test_throttling_neither_fails_nor_duplicates(backend: AwsBackend, spec: Path) -> None:
    throttle = Throttle(0.3)
    backend.api.batch.meta.events.register("before-send.batch", throttle)
    try:
        run_id = backend.launch(spec)
        doc = backend.status(run_id)
    finally:
        backend.api.batch.meta.events.unregister("before-send.batch", throttle)
    assert throttle.throttled >= 1
    assert doc["state"] == "SUCCEEDED"
    names = Counter(
        job["jobName"]
        for queue in (backend.infra.cpu_queue, backend.infra.gpu_queue)
        for status in ("SUCCEEDED",)
        for job in boto3.client("batch").list_jobs(jobQueue=queue, jobStatus=status)["jobSummaryList"]
        if job["jobName"].startswith(run_id) and ":" not in job["jobId"]  # parents, not array children
    )
    assert names == Counter({f"{run_id}-{s}": 1 for s in ("pre", "filter", "calibrate", "fbp")})


def test_kill_cancels_waiting_jobs_and_terminates_started_ones(infra_file: Path) -> None:
    """moto finishes jobs at submit, so the job states come from botocore's Stubber here."""
    run_id = "four-20261128-120000-abcd"
    backend, api = stubbed(
        infra_file,
        {
            "run_id": run_id,
            "pipeline": "four",
            "steps": [{"name": n} for n in ("pre", "filter", "calibrate", "fbp")],
            "jobs": {"pre": "j-pre", "filter": "j-filter", "calibrate": "j-cal", "fbp": "j-fbp"},
        },
    )
    with Stubber(api.batch) as stub:
        stub.add_response(
            "describe_jobs",
            {
                "jobs": [
                    described("j-pre", "SUCCEEDED", {"SUCCEEDED": 4}),
                    described("j-filter", "PENDING", {"RUNNING": 2, "RUNNABLE": 2}),
                    described("j-cal", "PENDING"),
                    described("j-fbp", "PENDING", {"PENDING": 3}),
                ]
            },
            {"jobs": ["j-pre", "j-filter", "j-cal", "j-fbp"]},
        )
        stub.add_response("terminate_job", {}, {"jobId": "j-filter", "reason": "killed by user"})
        stub.add_response("cancel_job", {}, {"jobId": "j-cal", "reason": "killed by user"})
        stub.add_response("cancel_job", {}, {"jobId": "j-fbp", "reason": "killed by user"})
        message = backend.kill(run_id)
        stub.assert_no_pending_responses()
    assert message == f"{run_id}: terminated filter; cancelled calibrate; cancelled fbp"


def test_kill_of_a_finished_run_changes_nothing(backend: AwsBackend, spec: Path) -> None:
    run_id = backend.launch(spec)
    with Calls(backend.api.batch) as calls:
        assert backend.kill(run_id) == f"{run_id}: nothing left to stop"
    assert calls == Counter({"DescribeJobs": 1})


def test_logs_from_cloudwatch(backend: AwsBackend, spec: Path) -> None:
    run_id = backend.launch(spec)
    doc = backend.read_manifest(run_id)
    child = f"{doc['jobs']['pre']}:2"
    stream = backend.api.describe([child])[child]["container"]["logStreamName"]
    logs = boto3.client("logs")
    logs.create_log_stream(logGroupName=backend.infra.log_group, logStreamName=stream)
    logs.put_log_events(
        logGroupName=backend.infra.log_group,
        logStreamName=stream,
        logEvents=[{"timestamp": int(time.time() * 1000) + i, "message": f"line {i}"} for i in range(3)],
    )
    text = b"".join(backend.logs(run_id, "pre", 2, follow=False)).decode()
    assert text == "line 0\nline 1\nline 2\n"

    with pytest.raises(Exception, match="step 'nope' is not in run"):
        list(backend.logs(run_id, "nope", None, follow=False))


def test_list_and_cli_with_infra_file(
    backend: AwsBackend, spec: Path, infra_file: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    launched = subprocess.run(
        [OPSCTL, "launch", str(spec), "--backend", "aws", "--infra", str(infra_file), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert launched.returncode == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]
    # Launched here: found again without flags.
    status = subprocess.run(
        [OPSCTL, "status", run_id, "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert json.loads(status.stdout)["state"] == "SUCCEEDED"
    # Any machine (a fresh OPSCTL_HOME) finds it from the manifest with --backend aws --infra.
    fresh = {**env, "OPSCTL_HOME": str(tmp_path / "elsewhere")}
    watched = subprocess.run(
        [OPSCTL, "watch", run_id, "--backend", "aws", "--infra", str(infra_file), "--json"],
        env=fresh,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert watched.returncode == 0 and json.loads(watched.stdout)["run_id"] == run_id
    other = backend.launch(spec)
    rows = backend.list_runs()
    assert [r["run_id"] for r in rows][:2] in ([other, run_id], [run_id, other])
    assert {r["backend"] for r in rows} == {"aws"}


def test_logs_of_a_job_that_never_started(infra_file: Path) -> None:
    """A job that never ran has no log stream; moto starts every job, so the Stubber answers."""
    run_id = "four-20261128-120000-beef"
    backend, api = stubbed(
        infra_file,
        {
            "run_id": run_id,
            "pipeline": "four",
            "steps": [{"name": "fbp", "array_size": 3}],
            "jobs": {"fbp": "j-fbp"},
        },
    )
    never = described("j-fbp:1", "FAILED", statusReason="Dependent Job failed")
    with Stubber(api.batch) as stub:
        stub.add_response("describe_jobs", {"jobs": [never]}, {"jobs": ["j-fbp:1"]})
        with pytest.raises(
            OpsctlError, match=r"no log stream: the job never started \(reason: Dependent Job failed\)"
        ):
            list(backend.logs(run_id, "fbp", 1, follow=False))


def test_status_warns_about_jobs_stuck_runnable(infra_file: Path) -> None:
    run_id = "four-20261128-120000-cafe"
    step = {"name": "fbp", "queue": "gpu", "array_size": 3, "commands": 3}
    backend, api = stubbed(
        infra_file,
        {"run_id": run_id, "pipeline": "four", "created": "x", "steps": [step], "jobs": {"fbp": "j-fbp"}},
    )
    twenty_minutes_ago = int((time.time() - 20 * 60) * 1000)
    waiting = described("j-fbp", "PENDING", {"RUNNABLE": 3}, createdAt=twenty_minutes_ago)
    with Stubber(api.batch) as stub:
        for _ in range(2):
            stub.add_response("describe_jobs", {"jobs": [waiting]}, {"jobs": ["j-fbp"]})
        [warning] = backend.status(run_id)["warnings"]
        assert backend.status(run_id, stuck_after=30 * 60)["warnings"] == []
    assert warning.startswith("step 'fbp' has been RUNNABLE for 20 min")
    assert "no GPU instance types" in warning and "maxvCpus" in warning


def test_failures_name_reason_exit_code_and_log_tail(infra_file: Path) -> None:
    backend, api = stubbed(infra_file, {"run_id": "r", "pipeline": "four", "steps": [], "jobs": {}})
    child = described(
        "j-pre:1",
        "FAILED",
        statusReason="Essential container in task exited",
        arrayProperties={"index": 1},
        container={
            "exitCode": 1,
            "reason": "OutOfMemoryError: Container killed",
            "logStreamName": "d/default/x1",
        },
    )
    logs = boto3.client("logs")
    logs.create_log_stream(logGroupName=backend.infra.log_group, logStreamName="d/default/x1")
    logs.put_log_events(
        logGroupName=backend.infra.log_group,
        logStreamName="d/default/x1",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "MemoryError in fbp"}],
    )
    doc = {"steps": [{"name": "pre", "state": "FAILED", "job_id": "j-pre", "array_size": 4}]}
    with Stubber(api.batch) as stub:
        stub.add_response(
            "list_jobs",
            {"jobSummaryList": [{"jobId": "j-pre:1", "jobName": "pre"}]},
            {"arrayJobId": "j-pre", "jobStatus": "FAILED", "maxResults": 10},
        )
        stub.add_response("describe_jobs", {"jobs": [child]}, {"jobs": ["j-pre:1"]})
        lines = backend.failures("r", doc)
    assert lines == [
        "pre[1] failed: Essential container in task exited "
        "(container: OutOfMemoryError: Container killed, exit code 1)",
        "    MemoryError in fbp",
    ]


def test_a_resume_that_died_after_submitting_is_not_repeated(infra_file: Path) -> None:
    run_id = "four-20261128-120000-dead"
    manifest = {
        "run_id": run_id,
        "pipeline": "four",
        "steps": [
            {
                "name": "fbp",
                "queue": "gpu",
                "array_size": 1,
                "list_uri": "s3://b/l",
                "split": "contiguous",
                "depends_on": [],
                "retries": 0,
                "timeout": 60,
                "vcpus": None,
                "memory": None,
                "gpus": None,
                "env": {},
            }
        ],
        "jobs": {"fbp": "0ldj0b1d-0000"},
    }
    backend, api = stubbed(infra_file, manifest)
    renamed = f"{run_id}-fbp-0ldj0b1d"
    gpu_queue = backend.infra.gpu_queue
    name_filter = {"jobQueue": gpu_queue, "filters": [{"name": "JOB_NAME", "values": [renamed]}]}
    writes = []
    real_write = backend._write_manifest

    def write_then_die(doc: dict[str, Any]) -> None:
        writes.append(doc)
        raise KeyboardInterrupt("resume killed before recording the job id")

    with Stubber(api.batch) as stub:
        failed = described("0ldj0b1d-0000", "FAILED")
        stub.add_response("describe_jobs", {"jobs": [failed]}, {"jobs": ["0ldj0b1d-0000"]})
        stub.add_response("list_jobs", {"jobSummaryList": []}, name_filter)
        stub.add_response("submit_job", {"jobName": renamed, "jobId": "n3w"})
        backend._write_manifest = write_then_die  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            backend.resume(run_id)
        backend._write_manifest = real_write  # type: ignore[method-assign]
        assert writes[0]["jobs"] == {"fbp": "n3w"}, "it died just after SubmitJob"

        # The manifest still names the failed job; the second resume finds the first one's job.
        stub.add_response("describe_jobs", {"jobs": [failed]}, {"jobs": ["0ldj0b1d-0000"]})
        stub.add_response(
            "list_jobs", {"jobSummaryList": [{"jobId": "n3w", "jobName": renamed}]}, name_filter
        )
        assert backend.resume(run_id) == f"{run_id} resumed: submitted nothing"
        stub.assert_no_pending_responses()
    assert backend.read_manifest(run_id)["jobs"] == {"fbp": "n3w"}
