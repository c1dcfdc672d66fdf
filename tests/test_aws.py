"""The AWS Batch backend, against three stand-ins for AWS, each where it is faithful:

- a moto server (S3, CloudWatch Logs, and Batch in moto's no-Docker mode) for what opsctl sends:
  moto checks SubmitJob requests against its queues and definitions, but marks every job
  SUCCEEDED at once and runs nothing;
- tests/batch_player.py for what Batch does over time: real worker processes as the children,
  retries by the submitted retryStrategy, array parents that read PENDING while children run,
  reclaimed hosts and jobs past retention;
- DescribeJobs answers shaped as the AWS Batch API Reference documents them
  (tests/fixtures/batch/*.json, each naming its doc section), through botocore's Stubber, for
  states neither can produce on demand (100 children in mixed states, a timed-out attempt).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from opsctl.backends.aws.api import BatchAPI
from opsctl.backends.aws.backend import AwsBackend
from opsctl.backends.aws.batch import RETRY_RULES
from opsctl.errors import LaunchIncomplete
from opsctl.infra import load_outputs
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.markers import DONE, Markers
from opsctl_contract.storage import s3_client
from tests.batch_player import BatchPlayer
from tests.helpers import WORKER, by_name, cli, one_line
from tests.moto_env import write_infra

FIXTURES = Path(__file__).parent / "fixtures" / "batch"

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

# What the player runs: CPU steps only (a GPU step's --preflight-gpu needs a GPU).
THREE_STEPS = """
name: three
defaults: {{retries: 2, timeout: 900}}
steps:
  - name: pre
    queue: cpu
    array_size: 3
    commands: {{template: "echo pre {{i}}", range: {n}}}
  - name: filter
    queue: cpu
    array_size: 3
    commands: {{template: "echo filter {{i}}", range: {n}}}
    depends_on: [{{step: pre, type: N_TO_N}}]
  - name: calibrate
    queue: cpu
    command: echo calibrate
    depends_on: [filter]
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "four.yaml"
    path.write_text(FOUR_STEPS.format(n=12))
    return path


@pytest.fixture
def three(tmp_path: Path) -> Path:
    path = tmp_path / "three.yaml"
    path.write_text(THREE_STEPS.format(n=9))
    return path


@pytest.fixture
def backend(infra_file: Path) -> AwsBackend:
    return AwsBackend(load_outputs(infra_file))


@pytest.fixture
def played(player: BatchPlayer) -> AwsBackend:
    """The backend, its Batch calls answered by the player."""
    return AwsBackend(load_outputs(player.infra))


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


def fixture(name: str) -> dict[str, Any]:
    """A DescribeJobs answer from tests/fixtures/batch/, without its `_doc` note."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    data.pop("_doc")
    return data


def a_step(name: str, **fields: Any) -> dict[str, Any]:
    """A step as the manifest records it."""
    return {
        "name": name,
        "queue": "cpu",
        "array_size": 1,
        "commands": 1,
        "list_uri": "s3://b/l",
        "split": "contiguous",
        "depends_on": [],
        "retries": 0,
        "timeout": 60,
        "vcpus": None,
        "memory": None,
        "gpus": None,
        "env": {},
        **fields,
    }


def stubbed(
    infra_file: Path, run_id: str, steps: list[dict[str, Any]], jobs: dict[str, str]
) -> tuple[AwsBackend, BatchAPI]:
    """A backend whose Batch client a test stubs, with the run's manifest in the (moto) bucket."""
    api = BatchAPI("us-east-1")
    backend = AwsBackend(load_outputs(infra_file), api=api)
    doc = {
        "run_id": run_id,
        "pipeline": "four",
        "backend": "aws",
        "created": "2026-11-28T12:00:00+00:00",
        "steps": steps,
        "jobs": jobs,
    }
    backend.store(run_id).write("manifest.json", json.dumps(doc).encode())
    for step in steps:  # resume reads them to write the next generation's work pack
        backend.store(run_id).write(f"lists/{step['name']}.txt", b"true\n" * step["commands"])
    return backend, api


def wait_for(
    backend: AwsBackend, run_id: str, states: tuple[str, ...] = ("SUCCEEDED", "FAILED")
) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        doc = backend.status(run_id)
        if doc["state"] in states:
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.1)


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


# --- what opsctl sends (moto) -------------------------------------------------------------------


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
    assert doc["generation"] == 1

    env = {e["name"]: e["value"] for e in by_step["calibrate"]["container"]["environment"]}
    assert env["MODE"] == "fast" and env["ARRAY_SIZE"] == "1" and env["OPSCTL_STEP"] == "calibrate"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1" and env["OPSCTL_GENERATION"] == "1"
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


def test_launch_checks_queues_and_definitions_before_uploading(
    batch_env: dict[str, str], bucket: str, spec: Path, tmp_path: Path
) -> None:
    wrong = batch_env["cpu_queue"].replace("opsctl-test-cpu", "no-such-queue")
    infra = write_infra(tmp_path / "wrong.json", {**batch_env, "bucket": bucket, "cpu_queue": wrong})
    with pytest.raises(BadInput, match=f"job queue {wrong}: not found or not usable") as raised:
        AwsBackend(load_outputs(infra)).launch(spec)
    assert str(infra) in str(raised.value)
    assert "Contents" not in s3_client().list_objects_v2(Bucket=bucket), "nothing was uploaded"


def test_launch_checks_the_images_are_in_ecr_before_uploading(
    batch_env: dict[str, str], bucket: str, spec: Path, tmp_path: Path
) -> None:
    unpushed = batch_env["gpu_image"].replace(":test", ":0123abcd")
    infra = write_infra(tmp_path / "unpushed.json", {**batch_env, "bucket": bucket, "gpu_image": unpushed})
    line = one_line(cli("launch", str(spec), "--backend", "aws", "--infra", str(infra)), 2)
    assert line == (
        f"opsctl: {unpushed}: not in ECR, so every child would fail to pull it; `make push` builds and "
        "pushes the worker images and applies the stack with their tag"
    )
    assert "Contents" not in s3_client().list_objects_v2(Bucket=bucket), "nothing was uploaded"
    elsewhere = {
        **batch_env,
        "bucket": bucket,
        "gpu_image": "public.ecr.aws/someone/gpu:1",
        "cpu_image": "ubuntu:24.04",
    }
    AwsBackend(load_outputs(write_infra(tmp_path / "public.json", elsewhere))).launch(
        spec
    )  # not ECR's to check


def test_launch_and_poll_call_counts_on_a_finished_run(backend: AwsBackend, tmp_path: Path) -> None:
    """Poll cost on a run whose markers are all written: a LIST page per 1,000 markers."""
    spec = tmp_path / "big.yaml"
    spec.write_text(
        FOUR_STEPS.format(n=4).replace(
            'commands: {template: "echo pre {i}", range: 4}',
            "commands: {template: 'echo pre {i}', range: 2500}",
        )
    )
    with Calls(backend.api.batch, backend.api.ecr, s3_client()) as launch_calls:
        run_id = backend.launch(spec)
    # The queues, definitions and both images checked; 4 list files, 4 work packs, the
    # manifest, then once per submit.
    assert launch_calls == Counter(
        {
            "DescribeJobQueues": 1,
            "DescribeJobDefinitions": 1,
            "DescribeImages": 2,
            "SubmitJob": 4,
            "PutObject": 13,
        }
    )
    doc = backend.read_manifest(run_id)
    store = backend.state_store(run_id)
    for step in doc["steps"]:  # as each child's worker writes them (moto runs no containers)
        markers = Markers(store, step["name"])
        for k in range(step["commands"]):
            markers.mark(DONE, k, {"index": k, "exit_code": 0})
    with Calls(backend.api.batch, s3_client()) as first_poll:
        status = backend.status(run_id)
    assert status["state"] == "SUCCEEDED"
    # The first poll to see the steps ended counts them exactly, once: per step its ledgers,
    # done (a page per 1,000: 3 for `pre`), failed and rerun markers; then records them.
    assert first_poll == Counter(
        {"GetObject": 1, "DescribeJobs": 1, "ListObjectsV2": 6 + 4 + 4 + 4, "PutObject": 1}
    )
    with Calls(backend.api.batch, s3_client()) as poll_calls:
        backend.status(run_id)
    assert poll_calls == Counter({"DescribeJobs": 1}), "a steady poll of an ended run lists nothing"
    assert backend.read_manifest(run_id)["state"] == "SUCCEEDED"


def test_batch_success_without_done_markers_is_failure(backend: AwsBackend, spec: Path) -> None:
    """moto's Batch calls every job SUCCEEDED; only the markers say what ran."""
    run_id = backend.launch(spec)
    doc = backend.read_manifest(run_id)
    pre = backend.api.describe([doc["jobs"]["pre"]])[doc["jobs"]["pre"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSCTL_", "AWS_BATCH_"))}
    env.update({e["name"]: e["value"] for e in pre["container"]["environment"]})
    for index in (0, 2):  # two of the four children, as Batch would run them
        subprocess.run(
            [WORKER, "run"], env={**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index)}, check=True, timeout=60
        )
    status = backend.status(run_id)
    steps = by_name(status)
    assert steps["pre"]["commands"] == {"total": 12, "done": 6, "failed": 0, "reexecuted": 0}
    assert steps["pre"]["counts"] == {"SUCCEEDED": 4}, "Batch's own view of the children"
    assert steps["pre"]["state"] == "FAILED"
    assert (
        steps["pre"]["reason"] == f"6 of 12 commands have no done marker; `opsctl resume {run_id}` runs them"
    )
    assert status["state"] == "FAILED"
    assert set(status) >= {"run_id", "pipeline", "backend", "state", "steps"}
    assert set(steps["fbp"]) >= {"name", "state", "array_size", "counts", "commands"}


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

    with pytest.raises(BadInput, match="step 'nope' is not in run"):
        list(backend.logs(run_id, "nope", None, follow=False))


# --- what Batch does over time (the player) -----------------------------------------------------


def test_a_running_array_reads_running_and_kill_terminates_it(
    played: AwsBackend, player: BatchPlayer, tmp_path: Path
) -> None:
    spec = tmp_path / "slow.yaml"
    spec.write_text(
        "name: slow\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 4\n"
        "    commands: {template: 'sleep 30 # {i}', range: 4}\n"
    )
    run_id = played.launch(spec)
    doc = wait_for(played, run_id, ("RUNNING",))
    [step] = doc["steps"]
    assert step["state"] == "RUNNING" and step["counts"] == {"RUNNING": 4}
    parent = played.api.describe([step["job_id"]])[step["job_id"]]
    assert parent["status"] == "PENDING", "Batch itself says PENDING for a running array"
    assert played.kill(run_id) == f"{run_id}: terminated s (4 of 4 children running)"
    doc = wait_for(played, run_id)
    assert doc["state"] == "FAILED" and by_name(doc)["s"]["counts"] == {"FAILED": 4}


DYNAMIC = """
name: dyn
steps:
  - name: s
    queue: cpu
    array_size: 2
    split: dynamic
    retries: 0
    commands:
      - echo zero
      - echo one
      - test -e {flag}
      - echo three
"""


def test_resume_of_a_dynamic_step_runs_what_its_claims_left_undone(
    played: AwsBackend, player: BatchPlayer, tmp_path: Path
) -> None:
    """Command 2 fails; after resume it must run again, in a new generation.

    Reusing the claims' generation, the resubmitted children would find command 2 claimed,
    skip it and exit 0: Batch would call the step SUCCEEDED with a command never done.
    """
    flag = tmp_path / "flag"
    spec = tmp_path / "dyn.yaml"
    spec.write_text(DYNAMIC.format(flag=flag))
    run_id = played.launch(spec)
    doc = wait_for(played, run_id)
    assert doc["state"] == "FAILED"
    assert by_name(doc)["s"]["commands"] == {"total": 4, "done": 3, "failed": 1, "reexecuted": 0}

    flag.touch()
    assert played.resume(run_id) == f"{run_id} resumed: submitted s (generation 2)"
    request = player.submitted[-1]
    env = {e["name"]: e["value"] for e in request["containerOverrides"]["environment"]}
    assert env["OPSCTL_GENERATION"] == "2"
    doc = wait_for(played, run_id)
    assert doc["state"] == "SUCCEEDED", doc
    # Command 2 ran again because it failed, not because a runner died with it in flight: a
    # retry of a failure, which is not counted as a re-execution (as on the contiguous split).
    assert by_name(doc)["s"]["commands"] == {"total": 4, "done": 4, "failed": 0, "reexecuted": 0}


def test_interrupted_launch_is_completed_by_resume(
    played: AwsBackend, player: BatchPlayer, three: Path
) -> None:
    seen = []

    def die_on_third_submit(**_: Any) -> None:
        seen.append(1)
        if len(seen) == 3:
            raise KeyboardInterrupt("launch killed")

    played.api.batch.meta.events.register("before-call.batch.SubmitJob", die_on_third_submit)
    with pytest.raises(KeyboardInterrupt):
        played.launch(three)
    played.api.batch.meta.events.unregister("before-call.batch.SubmitJob", die_on_third_submit)
    keys = [o["Key"] for o in s3_client().list_objects_v2(Bucket=played.infra.bucket)["Contents"]]
    run_id = keys[0].split("/")[1]
    assert sorted(played.read_manifest(run_id)["jobs"]) == ["filter", "pre"]
    assert played.status(run_id)["reason"] == f"launch incomplete: `opsctl resume {run_id}` submits the rest"

    with Calls(played.api.batch) as calls:
        message = played.resume(run_id)
    assert calls["SubmitJob"] == 1
    assert message == f"{run_id} resumed: submitted calibrate (generation 2)"
    assert wait_for(played, run_id)["state"] == "SUCCEEDED"
    with Calls(played.api.batch) as calls:
        assert played.resume(run_id) == f"{run_id} already SUCCEEDED; nothing to resume"
    assert calls["SubmitJob"] == 0


def test_a_launch_refused_part_way_names_the_run_and_resume_finishes_it(
    player: BatchPlayer, three: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    player.refuse("submitjob", "Dependent job xyz not found.", after=2)
    result = cli("launch", str(three), "--backend", "aws", "--infra", str(player.infra), env=env)
    line = one_line(result, 2)
    run_id = line.split()[1].rstrip(":")
    assert line.startswith(
        f"opsctl: {run_id}: launch stopped after submitting pre, filter: AWS Batch refused"
    )
    assert line.endswith(f"`opsctl resume {run_id}` submits the rest")
    player.allow()
    resumed = cli("resume", run_id, env=env)  # remembered: no --backend or --infra needed
    assert resumed.returncode == 0, resumed.stderr
    watched = cli("watch", run_id, "--json", "--interval", "0.2", env=env)
    assert watched.returncode == 0 and json.loads(watched.stdout)["state"] == "SUCCEEDED"


def test_resume_adopts_a_job_submitted_but_not_recorded(
    played: AwsBackend, player: BatchPlayer, three: Path
) -> None:
    run_id = played.launch(three)
    wait_for(played, run_id)
    record = played.manifest(run_id)
    calibrate = record.doc["jobs"]["calibrate"]
    record.update(lambda d: d["jobs"].pop("calibrate"))  # died between SubmitJob and recording it
    with Calls(played.api.batch) as calls:
        played.resume(run_id)
    assert calls["SubmitJob"] == 0
    assert played.read_manifest(run_id)["jobs"]["calibrate"] == calibrate


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


def test_throttling_neither_fails_nor_duplicates(
    played: AwsBackend, player: BatchPlayer, three: Path
) -> None:
    throttle = Throttle(0.3)
    played.api.batch.meta.events.register("before-send.batch", throttle)
    try:
        run_id = played.launch(three)
        doc = wait_for(played, run_id)
    finally:
        played.api.batch.meta.events.unregister("before-send.batch", throttle)
    assert throttle.throttled >= 1
    assert doc["state"] == "SUCCEEDED"
    assert Counter(r["jobName"] for r in player.submitted) == Counter(
        {f"{run_id}-{s}": 1 for s in ("pre", "filter", "calibrate")}
    )


def test_kill_of_a_finished_run_changes_nothing(played: AwsBackend, three: Path) -> None:
    run_id = played.launch(three)
    wait_for(played, run_id)
    with Calls(played.api.batch) as calls:
        assert played.kill(run_id) == f"{run_id}: nothing left to stop"
    assert calls == Counter({"DescribeJobs": 1})


def test_logs_follow_the_newest_attempt(played: AwsBackend, player: BatchPlayer, tmp_path: Path) -> None:
    """Each attempt writes its own log stream; --follow moves to the new one from its start.

    CloudWatch's nextToken belongs to one stream (GetLogEvents), so the first read of a new
    stream must carry none; moto forgives a foreign token, so the requests are checked too.
    """
    marker = tmp_path / "tried"
    spec = tmp_path / "retry.yaml"
    spec.write_text(
        "name: retry\nsteps:\n  - name: s\n    queue: cpu\n    retries: 1\n"
        f"    command: if test -e {marker}; then echo second attempt; else touch {marker}; echo first; "
        "seq 1 50; sleep 1; exit 1; fi\n"
    )
    run_id = played.launch(spec)
    reads: list[dict[str, Any]] = []
    played.api.logs.meta.events.register(
        "provide-client-params.logs.GetLogEvents", lambda params, **_: reads.append(dict(params))
    )
    chunks: list[bytes] = []
    follower = threading.Thread(
        target=lambda: chunks.extend(played.logs(run_id, "s", None, follow=True, poll=0.1)), daemon=True
    )
    follower.start()
    follower.join(timeout=60)
    assert not follower.is_alive()
    text = b"".join(chunks).decode()
    assert "first" in text and "second attempt" in text, text
    assert text.index("first") < text.index("50\n") < text.index("second attempt")
    streams = list(dict.fromkeys(r["logStreamName"] for r in reads))
    assert len(streams) == 2, "one stream per attempt"
    for stream in streams:
        first_read = next(r for r in reads if r["logStreamName"] == stream)
        assert "nextToken" not in first_read, f"{stream} was first read with another stream's token"


def test_list_and_cli_with_infra_file(
    played: AwsBackend, player: BatchPlayer, three: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    launched = cli("launch", str(three), "--backend", "aws", "--infra", str(player.infra), "--json", env=env)
    assert launched.returncode == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]
    # Launched here: found again without flags.
    status = cli("status", run_id, "--json", env=env)
    assert json.loads(status.stdout)["run_id"] == run_id
    # Any machine (a fresh OPSCTL_HOME) finds it from the manifest with --backend aws --infra.
    fresh = {**env, "OPSCTL_HOME": str(tmp_path / "elsewhere")}
    watched = cli("watch", run_id, "--backend", "aws", "--infra", str(player.infra), "--json", env=fresh)
    assert watched.returncode == 0 and json.loads(watched.stdout)["state"] == "SUCCEEDED"
    other = played.launch(three)
    # A manifest's `created`, like a run id, has the resolution of a second, and two launches can
    # share one. The run launched last, made an hour older: only an order by time passes.
    manifest = json.loads(played.store(other).read("manifest.json"))
    created = json.loads(played.store(run_id).read("manifest.json"))["created"]
    manifest["created"] = (datetime.fromisoformat(created) - timedelta(hours=1)).isoformat(timespec="seconds")
    played.store(other).write("manifest.json", json.dumps(manifest).encode())
    rows = played.list_runs()
    assert [r["run_id"] for r in rows] == [run_id, other], "newest first"
    assert [r["created"] for r in rows] == [created, manifest["created"]]
    assert {r["backend"] for r in rows} == {"aws"}
    assert {r["run_id"]: r["state"] for r in rows}[run_id] == "SUCCEEDED", "recorded by the watch"


def test_a_run_past_batch_retention_reads_from_its_manifest(
    played: AwsBackend, player: BatchPlayer, three: Path
) -> None:
    run_id = played.launch(three)
    before = wait_for(played, run_id)  # this poll records each step's final state
    assert before["state"] == "SUCCEEDED"
    for job_id in played.read_manifest(run_id)["jobs"].values():
        player.forget(job_id)
    fresh = AwsBackend(played.infra)
    after = fresh.status(run_id)
    assert after["state"] == "SUCCEEDED"
    for old, new in zip(before["steps"], after["steps"], strict=True):
        assert new["gone"] and (new["state"], new["counts"], new["commands"]) == (
            old["state"],
            old["counts"],
            old["commands"],
        )
    message = fresh.kill(run_id)
    assert message.startswith(f"{run_id}: nothing left to stop; jobs unknown to AWS Batch")
    assert "calibrate" in message
    # A one-job step's log stream is in the final record.
    assert b"calibrate\n" in b"".join(fresh.logs(run_id, "calibrate", None, follow=False))
    with pytest.raises(OpsctlError, match="is unknown to AWS Batch"):
        list(fresh.logs(run_id, "pre", 1, follow=False))
    assert fresh.resume(run_id) == f"{run_id} already SUCCEEDED; nothing to resume"


def test_an_unrecorded_job_past_retention_ends_watch_and_resume_reruns_it(
    player: BatchPlayer, three: Path, tmp_path: Path
) -> None:
    """Never polled before Batch forgot it: the markers decide, and watch does not wait forever."""
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    backend = AwsBackend(load_outputs(player.infra))
    run_id = backend.launch(three)
    player.wait_until(player.idle)
    doc = backend.read_manifest(run_id)
    # Commands of `filter` lost their markers (say, expired), and Batch forgot every job.
    for key in backend.state_store(run_id).list("filter/done")[:2]:
        s3_client().delete_object(Bucket=backend.infra.bucket, Key=f"runs/{run_id}/state/{key}")
    for job_id in doc["jobs"].values():
        player.forget(job_id)
    record = backend.manifest(run_id)
    record.update(lambda d: d.update(submitted_at=dict.fromkeys(d["jobs"], time.time() - 3600)))

    watched = cli("watch", run_id, "--backend", "aws", "--infra", str(player.infra), env=env)
    assert watched.returncode == 1
    assert f"filter: job {doc['jobs']['filter']} is unknown to AWS Batch" in watched.stderr
    assert "2 of 9 commands have no done marker" in watched.stderr
    status = by_name(backend.status(run_id))
    assert status["pre"]["state"] == "SUCCEEDED" and status["filter"]["state"] == "FAILED"

    assert backend.resume(run_id) == f"{run_id} resumed: submitted filter (generation 2)"
    filter_request = player.submitted[-1]
    assert "dependsOn" not in filter_request, "pre succeeded and its job is gone: nothing to wait for"
    assert wait_for(backend, run_id)["state"] == "SUCCEEDED"


# --- states only documented answers can give (fixtures) -----------------------------------------


def test_status_of_a_running_array_and_kill_decision(infra_file: Path) -> None:
    run_id = "tomo-20261128-120000-abcd"
    running = fixture("array_running")["jobs"][0]
    waiting = fixture("array_runnable")["jobs"][0]
    steps = [
        a_step("process", array_size=100, commands=1000),
        a_step("reconstruct", array_size=100, commands=1000),
    ]
    jobs = {"process": running["jobId"], "reconstruct": waiting["jobId"]}
    backend, api = stubbed(infra_file, run_id, steps, jobs)
    ids = {"jobs": list(jobs.values())}
    with Stubber(api.batch) as stub:
        stub.add_response("describe_jobs", {"jobs": [running, waiting]}, ids)
        doc = backend.status(run_id, stuck_after=10**12)
        stub.add_response("describe_jobs", {"jobs": [running, waiting]}, ids)
        # TerminateJob for both: it cancels what has not started as well (API Reference).
        stub.add_response("terminate_job", {}, {"jobId": running["jobId"], "reason": "killed by user"})
        stub.add_response("terminate_job", {}, {"jobId": waiting["jobId"], "reason": "killed by user"})
        message = backend.kill(run_id)
        stub.assert_no_pending_responses()
    process, reconstruct = doc["steps"]
    assert process["state"] == "RUNNING" and process["counts"] == {
        "RUNNING": 97,
        "STARTING": 1,
        "RUNNABLE": 2,
    }
    assert reconstruct["state"] == "RUNNABLE" and reconstruct["counts"] == {"RUNNABLE": 100}
    assert doc["state"] == "RUNNING"
    assert message == (
        f"{run_id}: terminated process (98 of 100 children running); "
        "terminated reconstruct (0 of 100 children running)"
    )


def test_a_timed_out_job_reads_failed_with_batch_reason(infra_file: Path) -> None:
    run_id = "tomo-20261128-120000-abcd"
    answer = fixture("timed_out")
    job = answer["jobs"][0]
    backend, api = stubbed(infra_file, run_id, [a_step("calibrate")], {"calibrate": job["jobId"]})
    logs = boto3.client("logs")
    stream = job["container"]["logStreamName"]
    logs.create_log_stream(logGroupName=backend.infra.log_group, logStreamName=stream)
    logs.put_log_events(
        logGroupName=backend.infra.log_group,
        logStreamName=stream,
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "opsctl-worker: stopped by SIGTERM"}],
    )
    with Stubber(api.batch) as stub:
        stub.add_response("describe_jobs", answer, {"jobs": [job["jobId"]]})
        doc = backend.status(run_id)
        stub.add_response("describe_jobs", answer, {"jobs": [job["jobId"]]})
        lines = backend.failures(run_id, doc)
    [step] = doc["steps"]
    assert (step["state"], step["reason"], step["elapsed"]) == (
        "FAILED",
        "Job attempt duration exceeded timeout",
        90.0,
    )
    assert lines == [
        "calibrate[0] failed: Job attempt duration exceeded timeout (container: -, exit code 137)",
        "    opsctl-worker: stopped by SIGTERM",
    ]


def test_a_job_past_retention_without_a_record_within_the_grace_is_submitted(infra_file: Path) -> None:
    """DescribeJobs may not list a job submitted a moment ago: SUBMITTED, not gone, for 60 s."""
    run_id = "tomo-20261128-120000-abcd"
    backend, api = stubbed(infra_file, run_id, [a_step("calibrate")], {"calibrate": "j-new"})
    record = backend.manifest(run_id)
    record.update(lambda d: d.update(submitted_at={"calibrate": time.time()}))
    with Stubber(api.batch) as stub:
        stub.add_response("describe_jobs", fixture("past_retention"), {"jobs": ["j-new"]})
        [step] = backend.status(run_id)["steps"]
    assert (step["state"], step["gone"]) == ("SUBMITTED", False)


def test_logs_of_a_job_that_never_started(infra_file: Path) -> None:
    """A job that never ran has no log stream."""
    run_id = "four-20261128-120000-beef"
    backend, api = stubbed(infra_file, run_id, [a_step("fbp", array_size=3)], {"fbp": "j-fbp"})
    never = {**fixture("array_runnable")["jobs"][0], "jobId": "j-fbp:1", "status": "FAILED"}
    never.pop("arrayProperties")
    never.pop("container")
    never["statusReason"] = "Dependent Job failed"
    with Stubber(api.batch) as stub:
        stub.add_response("describe_jobs", {"jobs": [never]}, {"jobs": ["j-fbp:1"]})
        with pytest.raises(
            OpsctlError, match=r"no log stream: the job never started \(reason: Dependent Job failed\)"
        ):
            list(backend.logs(run_id, "fbp", 1, follow=False))


def test_status_warns_about_jobs_stuck_runnable(infra_file: Path) -> None:
    run_id = "four-20261128-120000-cafe"
    waiting = {**fixture("array_runnable")["jobs"][0], "createdAt": int((time.time() - 20 * 60) * 1000)}
    backend, api = stubbed(
        infra_file,
        run_id,
        [a_step("fbp", queue="gpu", array_size=100, commands=100)],
        {"fbp": waiting["jobId"]},
    )
    with Stubber(api.batch) as stub:
        for _ in range(2):
            stub.add_response("describe_jobs", {"jobs": [waiting]}, {"jobs": [waiting["jobId"]]})
        [warning] = backend.status(run_id)["warnings"]
        assert backend.status(run_id, stuck_after=30 * 60)["warnings"] == []
    assert warning.startswith("step 'fbp' has been RUNNABLE for 20 min")
    assert "no GPU instance types" in warning and "maxvCpus" in warning


def test_failures_name_reason_exit_code_and_log_tail(infra_file: Path) -> None:
    backend, api = stubbed(infra_file, "r", [], {})
    child = {
        **fixture("timed_out")["jobs"][0],
        "jobId": "j-pre:1",
        "statusReason": "Essential container in task exited",
        "arrayProperties": {"index": 1},
        "container": {
            "exitCode": 1,
            "reason": "OutOfMemoryError: Container killed",
            "logStreamName": "d/default/x1",
        },
    }
    logs = boto3.client("logs")
    logs.create_log_stream(logGroupName=backend.infra.log_group, logStreamName="d/default/x1")
    logs.put_log_events(
        logGroupName=backend.infra.log_group,
        logStreamName="d/default/x1",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "MemoryError in fbp"}],
    )
    doc = {"steps": [{"name": "pre", "state": "FAILED", "job_id": "j-pre", "array_size": 4, "gone": False}]}
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
    failed = {**fixture("timed_out")["jobs"][0], "jobId": "0ldj0b1d-0000"}
    backend, api = stubbed(infra_file, run_id, [a_step("fbp", queue="gpu")], {"fbp": failed["jobId"]})
    renamed = f"{run_id}-fbp-0ldj0b1d"
    name_filter = {
        "jobQueue": backend.infra.gpu_queue,
        "filters": [{"name": "JOB_NAME", "values": [renamed]}],
    }

    def die_after_submit(**_: Any) -> None:
        raise KeyboardInterrupt("resume killed before recording the job id")

    queue = {
        "jobQueueName": "opsctl-test-gpu",
        "jobQueueArn": backend.infra.gpu_queue,
        "state": "ENABLED",
        "priority": 1,
        "computeEnvironmentOrder": [],
    }
    definition = {
        "jobDefinitionName": "opsctl-test-gpu",
        "jobDefinitionArn": backend.infra.gpu_job_definition,
        "revision": int(backend.infra.gpu_job_definition.rsplit(":", 1)[1]),
        "status": "ACTIVE",
        "type": "container",
    }

    def definitions_checked(stub: Stubber) -> None:
        """What resume asks before submitting: the queue, and the definition the stack has now."""
        stub.add_response(
            "describe_job_queues", {"jobQueues": [queue]}, {"jobQueues": [queue["jobQueueArn"]]}
        )
        stub.add_response(
            "describe_job_definitions",
            {"jobDefinitions": [definition]},
            {"jobDefinitions": [definition["jobDefinitionArn"]]},
        )

    with Stubber(api.batch) as stub:
        stub.add_response("describe_jobs", {"jobs": [failed]}, {"jobs": [failed["jobId"]]})
        definitions_checked(stub)
        stub.add_response("list_jobs", {"jobSummaryList": []}, name_filter)
        stub.add_response("submit_job", {"jobName": renamed, "jobId": "n3w"})
        api.batch.meta.events.register("after-call.batch.SubmitJob", die_after_submit)
        with pytest.raises(KeyboardInterrupt):
            backend.resume(run_id)
        api.batch.meta.events.unregister("after-call.batch.SubmitJob", die_after_submit)
        assert backend.read_manifest(run_id)["jobs"] == {"fbp": failed["jobId"]}, "died before recording"

        # The manifest still names the failed job; the second resume finds the first one's job.
        stub.add_response("describe_jobs", {"jobs": [failed]}, {"jobs": [failed["jobId"]]})
        definitions_checked(stub)
        stub.add_response(
            "list_jobs", {"jobSummaryList": [{"jobId": "n3w", "jobName": renamed}]}, name_filter
        )
        assert backend.resume(run_id) == f"{run_id} resumed: submitted nothing (generation 3)"
        stub.assert_no_pending_responses()
    assert backend.read_manifest(run_id)["jobs"] == {"fbp": "n3w"}


# --- AWS failures: one line each ------------------------------------------------------------------


def test_no_credentials_is_one_line(infra_file: Path, spec: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL"}
    env.update(
        OPSCTL_HOME=str(tmp_path / "home"),
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",  # never ask 169.254.169.254
    )
    line = one_line(cli("launch", str(spec), "--backend", "aws", "--infra", str(infra_file), env=env), 2)
    assert line.startswith("opsctl: no usable AWS credentials (Unable to locate credentials)")


def test_an_unreachable_endpoint_during_watch_is_one_line(infra_file: Path, tmp_path: Path) -> None:
    from tests.moto_env import free_port

    run_id = "four-20261128-120000-abcd"
    stubbed(infra_file, run_id, [a_step("calibrate")], {"calibrate": "j1"})
    env = {**os.environ, "AWS_ENDPOINT_URL_BATCH": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "2"}
    line = one_line(cli("watch", run_id, "--backend", "aws", "--infra", str(infra_file), env=env), 1)
    assert line.startswith("opsctl: cannot reach AWS Batch at http://127.0.0.1:")
    assert line.endswith("jobs already submitted keep running on AWS Batch")


def test_access_denied_names_the_missing_permission(player: BatchPlayer, three: Path) -> None:
    denied = "User: arn:aws:iam::123456789012:user/x is not authorized to perform: batch:SubmitJob"
    player.refuse("submitjob", denied, kind="AccessDeniedException", status=403)
    line = one_line(cli("launch", str(three), "--backend", "aws", "--infra", str(player.infra)), 2)
    assert "launch stopped after submitting no step: AWS Batch: access denied" in line
    assert "batch:SubmitJob" in line


def test_a_service_failing_after_retries_is_one_line(player: BatchPlayer, three: Path) -> None:
    player.refuse("describejobqueues", "Internal error", kind="ServerException", status=500)
    env = {**os.environ, "AWS_MAX_ATTEMPTS": "2"}
    line = one_line(cli("launch", str(three), "--backend", "aws", "--infra", str(player.infra), env=env), 1)
    assert "AWS Batch kept failing on job queues" in line and "ServerException" in line


def test_a_missing_bucket_or_log_group_is_bad_input(
    batch_env: dict[str, str], bucket: str, backend: AwsBackend, spec: Path, tmp_path: Path
) -> None:
    no_bucket = write_infra(tmp_path / "b.json", {**batch_env, "bucket": "no-such-bucket-4f2a"})
    line = one_line(cli("launch", str(spec), "--backend", "aws", "--infra", str(no_bucket)), 2)
    assert line == "opsctl: s3://no-such-bucket-4f2a: bucket does not exist"
    bad_name = write_infra(tmp_path / "n.json", {**batch_env, "bucket": "Not A Bucket"})
    assert "invalid value" in one_line(
        cli("launch", str(spec), "--backend", "aws", "--infra", str(bad_name)), 2
    )

    run_id = backend.launch(spec)
    no_group = write_infra(
        tmp_path / "g.json", {**batch_env, "bucket": bucket, "log_group": "/no/such/group"}
    )
    line = one_line(cli("logs", run_id, "pre", "--backend", "aws", "--infra", str(no_group)), 2)
    assert line == "opsctl: CloudWatch Logs: log group /no/such/group does not exist (infra output log_group)"


def test_an_unknown_region_is_bad_input() -> None:
    from botocore.exceptions import EndpointConnectionError

    from opsctl_contract.awsclient import AwsUnavailable, translate

    error = EndpointConnectionError(endpoint_url="https://batch.xx-nowhere-9.amazonaws.com/v1/describejobs")
    assert isinstance(translate(error, "AWS Batch", "jobs", "xx-nowhere-9"), BadInput)
    assert isinstance(translate(error, "AWS Batch", "jobs", "eu-west-1"), AwsUnavailable)


def test_launch_incomplete_keeps_the_cause_exit_code() -> None:
    assert LaunchIncomplete("r", [], BadInput("x")).exit_code == 2
    assert LaunchIncomplete("r", ["a"], OpsctlError("x")).exit_code == 1


def test_a_poll_of_a_running_step_lists_its_ledgers_not_its_markers(infra_file: Path) -> None:
    """100 children, 2,500 commands done: one LIST of the ledgers, however many are done."""
    from opsctl_contract.markers import Ledger

    run_id = "tomo-20261128-120000-abcd"
    running = fixture("array_running")["jobs"][0]
    backend, api = stubbed(
        infra_file,
        run_id,
        [a_step("process", array_size=100, commands=10_000)],
        {"process": running["jobId"]},
    )
    store = backend.state_store(run_id)
    markers = Markers(store, "process")
    for child in range(100):
        ledger = Ledger(store, "process", child, 1, 1)
        for k in range(child * 25, child * 25 + 25):
            markers.mark(DONE, k, {"index": k})
            ledger.note(DONE)
        ledger.save()
    with Stubber(api.batch) as stub, Calls(s3_client()) as calls:
        stub.add_response("describe_jobs", {"jobs": [running]}, {"jobs": [running["jobId"]]})
        [step] = backend.status(run_id, stuck_after=10**12)["steps"]
    assert calls == Counter({"GetObject": 1, "ListObjectsV2": 1}), "the manifest, then one ledger listing"
    assert step["commands"] == {"total": 10_000, "done": 2500, "failed": 0, "reexecuted": 0}


def test_list_reads_only_the_manifests(backend: AwsBackend, spec: Path) -> None:
    first, second = backend.launch(spec), backend.launch(spec)
    markers = Markers(backend.state_store(first), "pre")
    for k in range(1500):  # what a run leaves: many objects besides its manifest
        markers.mark(DONE, k, {"index": k})
    assert backend.status(second)["state"] == "FAILED"  # moto ends its jobs; no command is done
    with Calls(s3_client(), backend.api.batch) as calls:
        rows = backend.list_runs()
    assert {r["run_id"] for r in rows} >= {first, second}
    assert calls["ListObjectsV2"] == 1 and calls["GetObject"] == len(rows)
    assert calls["DescribeJobs"] == 0, "states come from the manifests' final records"
    states = {r["run_id"]: r["state"] for r in rows}
    assert (states[first], states[second]) == (None, "FAILED"), "none recorded before a poll saw it end"


# --- what AWS refuses, as the player plays it (issue 25) -----------------------------------------


def test_the_player_refuses_what_aws_refuses(player: BatchPlayer) -> None:
    """A jobName outside SubmitJob's pattern and an INACTIVE revision are ClientExceptions in
    AWS's words; container overrides over ECS's 8,192 characters are accepted, and then every
    child ends FAILED with AWS's status reason and no attempt."""
    from botocore.exceptions import ClientError

    batch = boto3.client("batch")  # AWS_ENDPOINT_URL_BATCH: the player
    queue, definition = next(iter(player.queues)), next(iter(player.definitions))
    ok = {"jobQueue": queue, "jobDefinition": definition, "containerOverrides": {"command": ["run"]}}
    with pytest.raises(ClientError, match="Job name should match valid pattern") as bad_name:
        batch.submit_job(jobName="-tomo-20261201-120000-abcd-pre", **ok)
    assert bad_name.value.response["Error"]["Code"] == "ClientException"
    player.deploy("cpu")
    with pytest.raises(ClientError, match=f"JobDefinition {definition} is not in ACTIVE status"):
        batch.submit_job(jobName="tomo-pre", **ok)

    newest = batch.describe_job_definitions(jobDefinitionName="player-cpu", status="ACTIVE")
    [active] = newest["jobDefinitions"]
    assert active["revision"] == 2
    big = {"name": "BIG", "value": "v" * 8_000}
    job_id = batch.submit_job(
        jobName="tomo-pre",
        jobQueue=queue,
        jobDefinition=active["jobDefinitionArn"],
        arrayProperties={"size": 2},
        containerOverrides={"command": ["run"], "environment": [big]},
    )["jobId"]
    player.wait_until(player.idle, timeout=30)
    jobs = {j["jobId"]: j for j in batch.describe_jobs(jobs=[job_id, f"{job_id}:0", f"{job_id}:1"])["jobs"]}
    for child in (f"{job_id}:0", f"{job_id}:1"):
        assert jobs[child]["status"] == "FAILED"
        assert jobs[child]["statusReason"] == "Container Overrides length must be at most 8192"
        assert jobs[child]["attempts"] == []
    assert jobs[job_id]["status"] == "FAILED"


def _widest_env() -> int:
    """The most `env` characters validate lets step `s` of WIDE (a 2-child cpu array) carry."""
    from opsctl import pipeline
    from opsctl.errors import SpecError

    low, high = 0, 10_000
    while low < high:
        middle = (low + high + 1) // 2
        try:
            pipeline.parse(WIDE.format(env="v" * middle), "wide.yaml", Path())
            low = middle
        except SpecError:
            high = middle - 1
    return low


WIDE = """
name: wide
steps:
  - name: s
    queue: cpu
    array_size: 2
    retries: 0
    commands: [echo a, echo b]
    env: {{BIG: {env}}}
"""


def test_validate_refuses_the_env_ecs_would_refuse_and_no_less(player: BatchPlayer, tmp_path: Path) -> None:
    """The most env validate accepts runs on Batch as played (every child SUCCEEDED, its
    overrides within 8,192 characters as ECS counts them); one character more is refused by
    `launch` at the step's line, before anything is uploaded or submitted."""
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    most = _widest_env()
    spec = tmp_path / "wide.yaml"
    spec.write_text(WIDE.format(env="v" * (most + 1)))
    line = one_line(cli("launch", str(spec), "--backend", "aws", "--infra", str(player.infra), env=env), 2)
    assert line.startswith(f"opsctl: {spec}:4: step 's': its container overrides as ECS receives them")
    assert "over ECS RunTask's 8,192" in line
    assert player.submitted == [] and "Contents" not in s3_client().list_objects_v2(
        Bucket=player_bucket(player)
    )

    spec.write_text(WIDE.format(env="v" * most))
    launched = cli("launch", str(spec), "--backend", "aws", "--infra", str(player.infra), "--json", env=env)
    assert launched.returncode == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]
    watched = cli("watch", run_id, "--json", "--interval", "0.2", env=env)
    assert watched.returncode == 0, watched.stderr
    assert by_name(json.loads(watched.stdout))["s"]["counts"] == {"SUCCEEDED": 2}


def player_bucket(player: BatchPlayer) -> str:
    return load_outputs(player.infra).bucket


DEPLOYED = """
name: deployed
steps:
  - name: pre
    queue: cpu
    array_size: 2
    commands: [echo a, echo b]
  - name: s
    queue: cpu
    retries: 0
    command: test -e {flag}
    depends_on: [pre]
"""


def test_resume_after_a_deploy_submits_under_the_stacks_new_definition(
    player: BatchPlayer, tmp_path: Path
) -> None:
    """A deploy registered revision 2 and deregistered the run's revision 1 (which the infra
    file still names): resume submits under revision 2 and says so."""
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    flag = tmp_path / "flag"
    spec = tmp_path / "deployed.yaml"
    spec.write_text(DEPLOYED.format(flag=flag))
    launched = cli("launch", str(spec), "--backend", "aws", "--infra", str(player.infra), "--json", env=env)
    run_id = json.loads(launched.stdout)["run_id"]
    assert cli("watch", run_id, "--json", "--interval", "0.2", env=env).returncode == 1
    launched_under = player.submitted[-1]["jobDefinition"]
    assert launched_under.endswith("/player-cpu:1")

    now = player.deploy("cpu")
    flag.touch()
    resumed = cli("resume", run_id, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == (
        f"{run_id} resumed: submitted s (generation 2); "
        "s now under job definition player-cpu:2 (was player-cpu:1)"
    )
    assert player.submitted[-1]["jobDefinition"] == now
    watched = cli("watch", run_id, "--json", "--interval", "0.2", env=env)
    assert watched.returncode == 0 and json.loads(watched.stdout)["state"] == "SUCCEEDED"


def test_launch_from_an_infra_file_a_deploy_made_stale(
    player: BatchPlayer, three: Path, tmp_path: Path
) -> None:
    """Every operator's infra file names the revision of the last `opsctl infra output`; after a
    CI deploy replaced it, launch runs under the newest ACTIVE revision of the same name. With
    no ACTIVE revision left, it is one line, exit 2, before anything is uploaded."""
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    player.deploy("cpu")
    now = player.deploy("cpu")  # two deploys since the infra file was written
    launched = cli("launch", str(three), "--backend", "aws", "--infra", str(player.infra), "--json", env=env)
    assert launched.returncode == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]
    assert {r["jobDefinition"] for r in player.submitted} == {now}
    watched = cli("watch", run_id, "--json", "--interval", "0.2", env=env)
    assert watched.returncode == 0 and json.loads(watched.stdout)["state"] == "SUCCEEDED"

    player.definitions[now] = "INACTIVE"  # the stack's definition deregistered, none registered
    stale = load_outputs(player.infra).cpu_job_definition
    line = one_line(cli("launch", str(three), "--backend", "aws", "--infra", str(player.infra), env=env), 2)
    assert line.startswith(f"opsctl: {player.infra}: job definition {stale}: not found or not usable")


def test_kill_stops_children_that_start_while_it_runs(player: BatchPlayer, tmp_path: Path) -> None:
    """The children are RUNNABLE when kill describes the job and start before its next call:
    TerminateJob stops them (CancelJob would succeed and leave them running to the end)."""
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    spec = tmp_path / "late.yaml"
    spec.write_text(
        "name: late\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 3\n    retries: 0\n"
        "    commands: {template: 'sleep 4 # {i}', range: 3}\n"
    )
    player.hold()
    player.start_on("canceljob", "terminatejob")
    launched = cli("launch", str(spec), "--backend", "aws", "--infra", str(player.infra), "--json", env=env)
    run_id = json.loads(launched.stdout)["run_id"]
    played = AwsBackend(load_outputs(player.infra))
    assert by_name(wait_for(played, run_id, ("RUNNABLE",)))["s"]["counts"] == {"RUNNABLE": 3}
    killed = cli("kill", run_id, env=env)
    assert killed.returncode == 0, killed.stderr
    assert killed.stdout.strip() == f"{run_id}: terminated s (0 of 3 children running)"
    player.wait_until(player.idle, timeout=30)
    children = [j for j in player.jobs.values() if j.index is not None]
    assert [(c.status, c.reason) for c in children] == [("FAILED", "killed by user")] * 3
    # Each started (an attempt) before the kill's call, and was stopped, not left to finish.
    assert [len(c.attempts) for c in children] == [1, 1, 1]
    assert all(c.attempts[0]["container"]["exitCode"] != 0 for c in children)


def test_watch_prints_the_last_lines_of_a_long_failed_log(player: BatchPlayer, tmp_path: Path) -> None:
    """12,000 lines, more than GetLogEvents' first page (10,000 events): watch shows the end."""
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    spec = tmp_path / "long.yaml"
    spec.write_text(
        "name: long\nsteps:\n  - name: s\n    queue: cpu\n    retries: 0\n    command: seq 1 12000; exit 3\n"
    )
    launched = cli("launch", str(spec), "--backend", "aws", "--infra", str(player.infra), "--json", env=env)
    run_id = json.loads(launched.stdout)["run_id"]
    watched = cli("watch", run_id, "--interval", "0.2", env=env)
    assert watched.returncode == 1
    shown = [line for line in watched.stderr.splitlines() if line.startswith("    ")]
    assert len(shown) == 10, watched.stderr
    assert "    11999" in shown and "    12000" in shown, shown
    assert shown[-1] == "    [worker] finished: ran 1, failed 1, skipped 0", (
        "the worker's last event ends the stream"
    )


class DenyPut:
    """S3 answers 403 AccessDenied, as AWS words it, to a PutObject of a key ending in one of
    `suffixes` (botocore's before-send: the real error path, which moto, enforcing no IAM here,
    cannot give); or another refusal, `code` with `status`."""

    def __init__(self, *suffixes: str, code: str = "AccessDenied", status: int = 403) -> None:
        self.suffixes = suffixes
        self.code, self.status = code, status
        self.denied: list[str] = []

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        from urllib.parse import urlparse

        path = urlparse(request.url).path
        if request.method != "PUT" or not path.endswith(self.suffixes):
            return None
        self.denied.append(path)
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{self.code}</Code><Message>User: '
            "arn:aws:iam::123456789012:user/reader is not authorized to perform: s3:PutObject on "
            f'resource: "arn:aws:s3:::{path.lstrip("/")}" because no identity-based policy allows '
            "the s3:PutObject action</Message></Error>"
        ).encode()
        return AWSResponse(request.url, self.status, {"Content-Type": "application/xml"}, _Body(body))


@contextlib.contextmanager
def denied_puts(*suffixes: str, code: str = "AccessDenied", status: int = 403) -> Iterator[DenyPut]:
    deny = DenyPut(*suffixes, code=code, status=status)
    s3_client().meta.events.register("before-send.s3.PutObject", deny)
    try:
        yield deny
    finally:
        s3_client().meta.events.unregister("before-send.s3.PutObject", deny)


def test_a_reader_who_may_not_write_still_reads_the_run(
    player: BatchPlayer, three: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status, watch and report record a finished run's final state and attempts beside its
    manifest; without s3:PutObject they still answer, with one warning naming the permission."""
    from opsctl.cli import main

    run_id = AwsBackend(load_outputs(player.infra)).launch(three)
    player.wait_until(player.idle)
    infra = ["--backend", "aws", "--infra", str(player.infra)]

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exited:
            main([*args, *infra])
        out, err = capsys.readouterr()
        return int(exited.value.code or 0), out, err

    with denied_puts("/manifest.json", "/attempts.json") as deny:
        code, out, err = run("status", run_id, "--json")
        assert (code, err) == (0, "")
        doc = json.loads(out)
        assert doc["state"] == "SUCCEEDED"
        [warning] = doc["warnings"]
        assert warning.startswith(
            "the final state of pre, filter, calibrate was not recorded: S3: access denied"
        )
        assert (
            f"s3:PutObject on s3://{player_bucket(player)}/runs/{run_id}/manifest.json records it" in warning
        )

        backend = AwsBackend(load_outputs(player.infra))  # a watch: one process, many polls
        first, second = backend.status(run_id), backend.status(run_id)
        assert len(deny.denied) == 2, "one try per process"
        assert first["warnings"] == second["warnings"] == [warning]

        code, out, err = run("report", run_id, "--json")
        assert code == 0 and json.loads(out)["state"] == "SUCCEEDED"
        warned = [line for line in err.splitlines() if line.startswith("opsctl: warning: ")]
        assert len(warned) == 2, err  # the final state, and the attempts
        assert f"s3:PutObject on s3://{player_bucket(player)}/runs/{run_id}/attempts.json keeps" in warned[1]
    assert "final" not in AwsBackend(load_outputs(player.infra)).read_manifest(run_id)


def test_only_a_denied_record_is_shrugged_off(player: BatchPlayer, three: Path) -> None:
    """A read goes on without the permission to record, and nothing else: another refusal of
    the same write fails `status`; and resume, which must write the new generation before it
    submits, fails when denied, naming the permission AWS names."""
    backend = AwsBackend(load_outputs(player.infra))
    run_id = backend.launch(three)
    player.wait_until(player.idle)
    with (
        denied_puts("/manifest.json", code="InvalidRequest", status=400),
        pytest.raises(BadInput, match="InvalidRequest"),
    ):
        AwsBackend(load_outputs(player.infra)).status(run_id)
    record = backend.manifest(run_id)
    record.update(lambda d: d["jobs"].pop("calibrate"))
    with denied_puts("/manifest.json"), pytest.raises(BadInput, match="s3:PutObject"):
        AwsBackend(load_outputs(player.infra)).resume(run_id)


def test_a_stack_definition_with_too_many_tags_is_refused_at_launch(
    batch_env: dict[str, str], bucket: str, spec: Path, tmp_path: Path
) -> None:
    """With propagateTags, a job whose tags and its definition's pass 50 ends FAILED (botocore
    batch model, SubmitJob propagateTags): launch says so before uploading anything."""
    crowded = boto3.client("batch").register_job_definition(
        jobDefinitionName="opsctl-test-crowded",
        type="container",
        containerProperties={
            "image": batch_env["cpu_image"],
            "command": ["run"],
            "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}],
        },
        tags={f"team:{k}": "x" for k in range(48)},
    )["jobDefinitionArn"]
    infra = write_infra(
        tmp_path / "crowded.json", {**batch_env, "bucket": bucket, "cpu_job_definition": crowded}
    )
    line = one_line(cli("launch", str(spec), "--backend", "aws", "--infra", str(infra)), 2)
    assert line == (
        f"opsctl: {infra}: job definition opsctl-test-crowded:1 has 48 tags; with opsctl's 3 on each "
        "job, step 'pre' would carry 51, over the 50 AWS Batch allows a job, and every job would end "
        "FAILED: remove tags from the stack's job definitions"
    )
    assert "Contents" not in s3_client().list_objects_v2(Bucket=bucket), "nothing was uploaded"


# --- state of the wrong shape (issue 27) ---------------------------------------------------------


@pytest.mark.parametrize("text", ["{}", "null", "[1]", '{"steps": 5}', "{", "shape of another run"])
def test_a_manifest_in_s3_of_the_wrong_shape_is_one_line_naming_it(
    played: AwsBackend, player: BatchPlayer, three: Path, tmp_path: Path, text: str
) -> None:
    run_id = played.launch(three)
    wait_for(played, run_id)
    store = played.store(run_id)
    if text == "shape of another run":
        doc = played.read_manifest(run_id)
        doc["steps"][0]["queue"] = "tpu"
        text = json.dumps(doc)
    store.write("manifest.json", text.encode())
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    where = f"{store.uri}/manifest.json"
    for verb in (["status"], ["report", "--json"], ["resume"], ["kill"], ["logs", "pre"]):
        args = [verb[0], run_id, *verb[1:], "--backend", "aws", "--infra", str(player.infra)]
        line = one_line(cli(*args, env=env), 2)
        assert line.startswith(f"opsctl: run {run_id}: its manifest {where} is not "), (verb, line)
    listed = {r["run_id"]: r for r in played.list_runs()}
    assert listed[run_id]["state"] is None and listed[run_id]["problem"].startswith(
        f"run {run_id}: its manifest"
    )


def test_an_attempts_record_of_the_wrong_shape_is_read_again_from_batch(
    played: AwsBackend, three: Path
) -> None:
    run_id = played.launch(three)
    wait_for(played, run_id)
    kept = played.attempts(run_id)  # keeps them beside the manifest
    store = played.store(run_id)
    record = json.loads(store.read("attempts.json"))
    for bent in ({"jobs": record["jobs"], "attempts": [{"step": "pre"}]}, [1], {"jobs": 5}):
        store.write("attempts.json", json.dumps(bent).encode())
        assert AwsBackend(played.infra).attempts(run_id) == kept
