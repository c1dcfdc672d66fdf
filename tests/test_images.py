"""A step's own container image: the spec key, the derived job definitions on AWS (moto), their
clean-up (`opsctl infra definitions`), and the local backend's `--containers`."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
from botocore.stub import Stubber

from opsctl.backends.aws.api import BatchAPI
from opsctl.backends.aws.backend import AwsBackend
from opsctl.backends.aws.definitions import DERIVED_FROM, IMAGE_TAG, derive, derived
from opsctl.infra import load_outputs
from tests.helpers import WORKER, cli, one_line
from tests.test_aws import Calls, submitted_requests

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
# What a description may differ in from the stack's: who it is, and the tags that say so.
IDENTITY = ("jobDefinitionName", "jobDefinitionArn", "revision", "status", "tags", "containerProperties")


def pushed(repository: str) -> str:
    """A new tag of `repository` in (moto's) ECR: an image a launch finds there."""
    ecr = boto3.client("ecr")
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=repository)
    tag = uuid.uuid4().hex[:8]
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag)
    return f"{ECR}/{repository}:{tag}"


def own_images(path: Path, cpu: str, gpu: str | None = None) -> Path:
    """A three-step spec: two steps on `cpu` (one by default), one GPU step on `gpu` (or the stack's)."""
    gpu_line = f"    image: {gpu}\n" if gpu else ""
    path.write_text(
        f"""name: own
defaults: {{image: {cpu}}}
steps:
  - name: pre
    queue: cpu
    array_size: 2
    commands: {{template: "echo pre {{i}}", range: 4}}
  - name: calibrate
    queue: cpu
    command: echo calibrate
    depends_on: [pre]
  - name: fbp
    queue: gpu
    gpus: 1
    command: echo fbp
    depends_on: [calibrate]
{gpu_line}"""
    )
    return path


def describe(arn: str) -> dict[str, Any]:
    found: dict[str, Any] = boto3.client("batch").describe_job_definitions(jobDefinitions=[arn])[
        "jobDefinitions"
    ][0]
    return found


def test_a_step_image_runs_under_a_definition_derived_from_the_stacks(
    infra_file: Path, tmp_path: Path
) -> None:
    backend = AwsBackend(load_outputs(infra_file))
    tomo, tomo_gpu = pushed("tomo"), pushed("tomo-gpu")
    spec = own_images(tmp_path / "own.yaml", tomo, tomo_gpu)
    with Calls(backend.api.batch, backend.api.ecr) as calls, submitted_requests(backend) as requests:
        run_id = backend.launch(spec)
    # The stack's two definitions in one call, then per distinct image one look and one register.
    assert calls["DescribeJobDefinitions"] == 1 + 2
    assert calls["RegisterJobDefinition"] == 2
    assert calls["DescribeImages"] == 2, "the steps' own images are checked in ECR, not the unused stack's"

    used = [r["jobDefinition"] for r in requests]
    assert used[0] == used[1] != used[2]
    doc = backend.read_manifest(run_id)
    assert [s["job_definition"] for s in doc["steps"]] == used
    assert [s["image"] for s in doc["steps"]] == [tomo, tomo, tomo_gpu]
    for arn, image, queue in ((used[0], tomo, "cpu"), (used[2], tomo_gpu, "gpu")):
        stack_arn = backend.infra.job_definition(queue)
        ours, stack = describe(arn), describe(stack_arn)
        assert {k: v for k, v in ours.items() if k not in IDENTITY} == {
            k: v for k, v in stack.items() if k not in IDENTITY
        }
        assert ours["containerProperties"] == {**stack["containerProperties"], "image": image}
        assert ours["jobDefinitionName"].startswith(f"{stack['jobDefinitionName']}-")
        assert ours["tags"] == {
            **stack["tags"],
            DERIVED_FROM: f"{stack['jobDefinitionName']}:{stack['revision']}",
            IMAGE_TAG: image,
        }

    # A second launch with the same images registers nothing; a changed image registers one.
    with Calls(backend.api.batch) as again:
        second = backend.launch(spec)
    assert again["RegisterJobDefinition"] == 0
    assert [s["job_definition"] for s in backend.read_manifest(second)["steps"]] == used
    newer = pushed("tomo")
    with Calls(backend.api.batch) as changed:
        backend.launch(own_images(tmp_path / "newer.yaml", newer, tomo_gpu))
    assert changed["RegisterJobDefinition"] == 1


def test_a_step_image_missing_from_ecr_is_refused_before_anything_is_uploaded(
    infra_file: Path, bucket: str, tmp_path: Path
) -> None:
    absent = f"{ECR}/tomo:never-pushed"
    pushed("tomo")  # the repository exists; the tag does not
    spec = own_images(tmp_path / "own.yaml", absent)
    line = one_line(cli("launch", str(spec), "--backend", "aws", "--infra", str(infra_file)), 2)
    assert line.startswith(f"opsctl: {absent}: not in ECR, so every child would fail to pull it")
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=bucket)
    public = own_images(tmp_path / "public.yaml", "python:3.11-slim")  # Batch's to pull, not ours to check
    AwsBackend(load_outputs(infra_file)).launch(public)


def test_infra_definitions_lists_and_deregisters_and_resume_registers_again(
    infra_file: Path, tmp_path: Path
) -> None:
    backend = AwsBackend(load_outputs(infra_file))
    image = pushed("tomo")
    run_id = backend.launch(own_images(tmp_path / "own.yaml", image))
    ours = backend.read_manifest(run_id)["steps"][0]["job_definition"]
    listed = cli("infra", "definitions", "--infra", str(infra_file))
    assert listed.returncode == 0, listed.stderr
    mine = [line for line in listed.stdout.splitlines() if image in line]
    assert len(mine) == 2, listed.stdout  # the image on the CPU and on the GPU stack definition
    assert all(line.endswith("unused") for line in mine), listed.stdout  # moto ends jobs at once
    gone = cli("infra", "definitions", "--deregister", "--infra", str(infra_file))
    assert gone.returncode == 0, gone.stderr
    assert describe(ours)["status"] == "INACTIVE"
    stack = describe(backend.infra.cpu_job_definition)
    assert stack["status"] == "ACTIVE", "the stack's own definitions are never touched"

    # moto called the run SUCCEEDED without markers: status reads it FAILED, resume resubmits,
    # under a definition registered again (the same content, a new revision).
    with submitted_requests(backend) as requests:
        backend.resume(run_id)
    assert requests and requests[0]["jobDefinition"] != ours
    again = describe(requests[0]["jobDefinition"])
    assert again["status"] == "ACTIVE" and again["containerProperties"]["image"] == image
    assert again["jobDefinitionName"] == describe(ours)["jobDefinitionName"]


def test_a_derived_definition_an_active_job_uses_is_kept() -> None:
    """ListJobs answers shaped as the API Reference documents them ("ListJobs", Response Syntax:
    jobSummaryList of JobSummary, which carries jobDefinition), for a job still RUNNING: moto
    ends every job at once."""
    api = BatchAPI("us-east-1")
    stack = {
        "jobDefinitionName": "opsctl-cpu",
        "jobDefinitionArn": "arn:aws:batch:us-east-1:123456789012:job-definition/opsctl-cpu:3",
        "revision": 3,
        "status": "ACTIVE",
        "type": "container",
        "containerProperties": {"image": f"{ECR}/opsctl-cpu:abc", "command": ["run"]},
        "tags": {"project": "opsctl"},
    }
    arns = []
    listed = []
    for n, image in enumerate(("tomo:1", "tomo:2")):
        request = derive(stack, f"{ECR}/{image}")
        arn = f"arn:aws:batch:us-east-1:123456789012:job-definition/{request['jobDefinitionName']}:1"
        arns.append(arn)
        listed.append({**request, "jobDefinitionArn": arn, "revision": 1, "status": "ACTIVE"})
        assert n == 0 or request["jobDefinitionName"] != listed[0]["jobDefinitionName"]
    unrelated = {**stack, "jobDefinitionName": "someone-else", "tags": {}}
    running = {
        "jobArn": "arn:aws:batch:us-east-1:123456789012:job/6f2bd3bd",
        "jobId": "6f2bd3bd-0000-4000-8000-000000000000",
        "jobName": "own-20261128-120000-abcd-pre",
        "createdAt": 1764331200000,
        "status": "RUNNING",
        "jobDefinition": arns[0],
    }
    with Stubber(api.batch) as stub:
        stub.add_response("list_jobs", {"jobSummaryList": []}, {"jobQueue": "q", "jobStatus": "SUBMITTED"})
        stub.add_response("list_jobs", {"jobSummaryList": []}, {"jobQueue": "q", "jobStatus": "PENDING"})
        stub.add_response("list_jobs", {"jobSummaryList": []}, {"jobQueue": "q", "jobStatus": "RUNNABLE"})
        stub.add_response("list_jobs", {"jobSummaryList": []}, {"jobQueue": "q", "jobStatus": "STARTING"})
        stub.add_response(
            "list_jobs", {"jobSummaryList": [running]}, {"jobQueue": "q", "jobStatus": "RUNNING"}
        )
        stub.add_response(
            "describe_job_definitions", {"jobDefinitions": [*listed, unrelated]}, {"status": "ACTIVE"}
        )
        found = derived(api, ["opsctl-cpu"], ["q"])
        stub.assert_no_pending_responses()
    assert [(d.arn, d.jobs) for d in found] == sorted([(arns[0], 1), (arns[1], 0)])
    assert Counter(d.source for d in found) == {"opsctl-cpu:3": 2}


# --- local: --containers, with a stand-in engine that has GPUs --------------------------------
# tests/test_containers.py runs the real images in a real engine; this machine's engine has no
# GPUs, so what a GPU engine is given is played here.

# Plays docker with the NVIDIA runtime: records its arguments; `image inspect` knows the images in
# $ENGINE_IMAGES; `run --entrypoint true` (launch's GPU probe) succeeds; any other `run` plays the
# container: the image's ENTRYPOINT (opsctl-worker) with the arguments after the image, seeing only
# the environment that --env names, as a container would. Its OpenCL is broken whatever this host
# has ($ENGINE_OPENCL_VENDORS: a vendor file naming a library that is not there), so a GPU step's
# preflight fails on a machine with a GPU as on one without.
STANDIN = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["ENGINE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
images = os.environ.get("ENGINE_IMAGES", "").split()
if args[:2] == ["image", "inspect"]:
    if args[2] in images:
        print("[{{}}]")
        sys.exit(0)
    print("Error: No such image: " + args[2], file=sys.stderr)
    sys.exit(1)
if args[0] == "run" and "--entrypoint" in args:
    sys.exit(0)
if args[0] == "run":
    names = [args[i + 1] for i, a in enumerate(args) if a == "--env"]
    env = {{n: os.environ[n] for n in names if n in os.environ}}
    env["PATH"] = "/usr/bin:/bin"  # the image's; commands run with /bin/sh
    env["OCL_ICD_VENDORS"] = os.environ["ENGINE_OPENCL_VENDORS"]
    image = next(i for i, a in enumerate(args) if a in images)
    os.execve({worker!r}, [{worker!r}, *args[image + 1:]], env)
"""

CONTAINED = """name: boxed
defaults: {{retries: 1}}
steps:
  - name: inside
    queue: cpu
    array_size: 2
    image: tomo:1
    env: {{MODE: fast}}
    commands: {{template: "echo $MODE {{i}} >> {out}/inside", range: 4}}
  - name: worker
    queue: cpu
    command: echo worker image >> {out}/outside
    depends_on: [inside]
  - name: fbp
    queue: gpu
    gpus: 1
    command: echo never >> {out}/gpu
    depends_on: [worker]
"""


def engine_env(tmp_path: Path, images: str = "tomo:1 opsctl-cpu:local opsctl-gpu:local") -> dict[str, str]:
    """opsctl's environment with the stand-in engine: a PATH of the stand-in alone, so that no
    docker or podman installed here is found instead of it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    engine = bin_dir / "docker"
    engine.write_text(STANDIN.format(python=sys.executable, worker=WORKER))
    engine.chmod(0o755)
    vendors = tmp_path / "opencl-vendors"
    vendors.mkdir(exist_ok=True)
    (vendors / "broken.icd").write_text("libno-such-opencl.so\n")
    return {
        **os.environ,
        "PATH": str(bin_dir),
        "ENGINE_LOG": str(tmp_path / "engine.log"),
        "ENGINE_OPENCL_VENDORS": str(vendors),
        "ENGINE_IMAGES": images,
        "OPSCTL_HOME": str(tmp_path / "home"),
    }


def test_containers_run_every_child_in_its_image_as_batch_would(tmp_path: Path) -> None:
    spec = tmp_path / "boxed.yaml"
    spec.write_text(CONTAINED.format(out=tmp_path))
    env = engine_env(tmp_path)
    result = cli("launch", str(spec), "--containers", "--watch", "--json", env=env)
    doc = json.loads(result.stdout)
    assert doc["engine"] == str(tmp_path / "bin" / "docker")
    assert [s["image"] for s in doc["steps"]] == ["tomo:1", "opsctl-cpu:local", "opsctl-gpu:local"]
    assert [s["state"] for s in doc["steps"]] == ["SUCCEEDED", "SUCCEEDED", "FAILED"], doc
    assert sorted((tmp_path / "inside").read_text().split("\n")) == [
        "",
        "fast 0",
        "fast 1",
        "fast 2",
        "fast 3",
    ]
    assert (tmp_path / "outside").read_text() == "worker image\n"
    run_dir = tmp_path / "home" / "runs" / doc["run_id"]
    # The played container's OpenCL is broken, so the GPU step's preflight fails every attempt
    # before its command, whatever GPU this host has.
    assert not (tmp_path / "gpu").exists()
    preflight = (run_dir / "logs" / "fbp" / "0.log").read_text()
    assert "UNHEALTHY" in preflight and "names libno-such-opencl.so, which cannot be loaded" in preflight

    calls = [json.loads(line) for line in (tmp_path / "engine.log").read_text().splitlines()]
    assert calls[:3] == [
        ["image", "inspect", image] for image in ("opsctl-cpu:local", "opsctl-gpu:local", "tomo:1")
    ]
    assert calls[3] == ["run", "--rm", "--gpus", "all", "--entrypoint", "true", "opsctl-gpu:local"]
    runs = {c[c.index("--name") + 1]: c for c in calls if c[0] == "run" and "--name" in c}
    assert len(runs) == 3 + 2, "one container per child attempt: 2 + 1, and the GPU step's 2 attempts"
    for name, argv in runs.items():
        step = name.split("-")[-3]
        assert name.startswith(f"opsctl-{doc['run_id']}-")
        assert "--user" not in argv, "the image's own user, as on AWS"
        assert argv[argv.index("--group-add") + 1] == str(run_dir.stat().st_gid)
        assert argv[argv.index("--volume") + 1] == f"{run_dir}:{run_dir}"
        assert "--init" in argv
        names = {argv[i + 1] for i, a in enumerate(argv) if a == "--env"}
        assert {"OPSCTL_RUN_ID", "OPSCTL_STATE_URI", "LIST_FILE_S3_PATH"} <= names
        assert not any("=" in n for n in names), "values travel in the environment, not the command line"
        tail = {"inside": ["tomo:1", "run"], "worker": ["opsctl-cpu:local", "run"]}
        assert (
            argv[-3:] == ["opsctl-gpu:local", "run", "--preflight-gpu"]
            if step == "fbp"
            else argv[-2:] == tail[step]
        )
        assert ("--gpus" in argv) == (step == "fbp")
    assert (run_dir.stat().st_mode & 0o7777, (run_dir / "state").stat().st_mode & 0o7777) == (0o2770, 0o2770)
    assert (run_dir / "lists" / "inside.txt").stat().st_mode & 0o777 == 0o640


def test_containers_refuse_a_missing_engine_image_or_tag_in_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "boxed.yaml"
    spec.write_text(CONTAINED.format(out=tmp_path))
    env = engine_env(tmp_path, images="opsctl-cpu:local opsctl-gpu:local")
    line = one_line(cli("launch", str(spec), "--containers", env=env), 2)
    engine = tmp_path / "bin" / "docker"
    assert line == (
        f"opsctl: image tomo:1 is not available to {engine} (Error: No such image: tomo:1): "
        "pull or build it, then launch again"
    )
    line = one_line(cli("launch", str(spec), "--containers", "--image-tag", "v2", env=env), 2)
    assert line == (
        f"opsctl: image opsctl-cpu:v2 is not available to {engine} (Error: No such image: opsctl-cpu:v2): "
        "`make images` builds it, then launch again"
    )
    for args, extra, origin in (
        (["--image-tag", "-x"], {}, "--image-tag '-x'"),
        ([], {"OPSCTL_IMAGE_TAG": "a" * 129}, f"OPSCTL_IMAGE_TAG '{'a' * 129}'"),
        ([], {"OPSCTL_IMAGE_TAG": "v1:latest"}, "OPSCTL_IMAGE_TAG 'v1:latest'"),
    ):
        line = one_line(cli("launch", str(spec), "--containers", *args, env={**env, **extra}), 2)
        assert (
            line == f"opsctl: {origin} is not an image tag (1 to 128 of A-Z a-z 0-9 _ . -, not first . or -)"
        )
    for option in (["--no-gpus"], ["--image-tag", "v1"]):
        line = one_line(cli("launch", str(spec), *option, env=env), 2)
        assert (
            line == f"opsctl: {option[0]} is an option of --containers: without it, children run on this host"
        )
    (tmp_path / "empty").mkdir()
    line = one_line(cli("launch", str(spec), "--containers", env={**env, "PATH": str(tmp_path / "empty")}), 2)
    assert line == "opsctl: --containers needs docker or podman on PATH; neither was found"
    assert not (tmp_path / "home" / "runs").exists() or not list((tmp_path / "home" / "runs").iterdir())
    line = one_line(cli("launch", str(spec), "--containers", "--backend", "aws", env=env), 2)
    assert "--containers is for the local backend" in line
