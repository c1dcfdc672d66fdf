"""Shared fixtures: a real moto server over HTTP on 127.0.0.1, isolated AWS settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - 127.0.0.1 only
                return True
        except OSError:
            time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start moto on a free 127.0.0.1 port for the session; point boto3 at it; stop it after."""
    for _ in range(3):  # the port may be taken between choosing and binding it
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "moto_serial.py"), str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        endpoint = f"http://127.0.0.1:{port}"
        if _wait_until_up(f"{endpoint}/moto-api/", proc, time.monotonic() + 30):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("moto server did not start")
    saved = dict(os.environ)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            # Never read a developer's real profile or credentials.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    try:
        yield endpoint
    finally:
        os.environ.clear()
        os.environ.update(saved)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    """A new, empty bucket on the moto server."""
    import boto3

    name = f"opsctl-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def batch_env(moto_endpoint: str) -> dict[str, str]:
    """Batch resources in moto (no-Docker mode: submitted jobs succeed at once), once a session.

    VPC, subnet, security group, roles, CPU and GPU compute environments, queues, job
    definitions and the log group: what `make infra` creates, as infra output values.
    """
    import json as _json

    import boto3

    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1 only
        f"{moto_endpoint}/moto-api/config",
        data=_json.dumps({"batch": {"use_docker": False}}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - 127.0.0.1 only
        pass
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="opsctl-test", Description="egress only", VpcId=vpc)[
        "GroupId"
    ]
    iam = boto3.client("iam")
    trust = _json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "batch.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    service_role = iam.create_role(RoleName="opsctl-test-batch", AssumeRolePolicyDocument=trust)["Role"][
        "Arn"
    ]
    iam.create_instance_profile(InstanceProfileName="opsctl-test-ecs")
    profile = iam.get_instance_profile(InstanceProfileName="opsctl-test-ecs")["InstanceProfile"]["Arn"]
    batch = boto3.client("batch")
    values = {"region": "us-east-1", "log_group": "/aws/batch/job"}
    for queue, family in (("cpu", "c5"), ("gpu", "g5")):
        env = batch.create_compute_environment(
            computeEnvironmentName=f"opsctl-test-{queue}",
            type="MANAGED",
            state="ENABLED",
            computeResources={
                "type": "SPOT" if queue == "cpu" else "EC2",
                "minvCpus": 0,
                "maxvCpus": 64,
                "instanceTypes": [family],
                "subnets": [subnet],
                "securityGroupIds": [group],
                "instanceRole": profile,
            },
            serviceRole=service_role,
        )["computeEnvironmentArn"]
        values[f"{queue}_queue"] = batch.create_job_queue(
            jobQueueName=f"opsctl-test-{queue}",
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}],
        )["jobQueueArn"]
        image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/opsctl-{queue}:test"
        values[f"{queue}_image"] = image
        values[f"{queue}_job_definition"] = batch.register_job_definition(
            jobDefinitionName=f"opsctl-test-{queue}",
            type="container",
            containerProperties={
                "image": image,
                "command": ["run"],
                "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}],
            },
        )["jobDefinitionArn"]
    boto3.client("logs").create_log_group(logGroupName="/aws/batch/job")
    return values


@pytest.fixture
def infra_file(batch_env: dict[str, str], bucket: str, tmp_path: Path) -> Path:
    """The infra outputs, in the shape of `terraform output -json`, with a fresh bucket."""
    import json as _json

    outputs = {**batch_env, "bucket": bucket}
    path = tmp_path / "infra.json"
    path.write_text(
        _json.dumps(
            {key: {"sensitive": False, "type": "string", "value": value} for key, value in outputs.items()}
        )
    )
    return path
