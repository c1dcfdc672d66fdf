"""moto for tests and benchmarks: a server on a free 127.0.0.1 port and the Batch set-up.

Shared by the pytest fixtures (tests/conftest.py) and bench/aws_calls.py, so both measure the
same thing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    """moto (tests/moto_serial.py) on a free port: the process and its endpoint URL."""
    for _ in range(3):  # the port may be taken between choosing and binding it
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "moto_serial.py"), str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        endpoint = f"http://127.0.0.1:{port}"
        if _wait_until_up(f"{endpoint}/moto-api/", proc, time.monotonic() + 30):
            return proc, endpoint
        proc.kill()
        proc.wait()
    raise RuntimeError("moto server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def point_boto3_at(endpoint: str) -> None:
    """Send every boto3 client in this process (and its children) to moto, with fake keys."""
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


def create_batch_env(endpoint: str) -> dict[str, str]:
    """Batch resources in moto's no-Docker mode (submitted jobs succeed at once), as infra outputs.

    VPC, subnet, security group, roles, CPU and GPU compute environments, queues, job
    definitions and the log group: what `make infra` creates, minus the bucket.
    """
    import boto3

    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1 only
        f"{endpoint}/moto-api/config",
        data=json.dumps({"batch": {"use_docker": False}}).encode(),
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
    trust = json.dumps(
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


def write_infra(path: Path, outputs: dict[str, str]) -> Path:
    """Infra outputs in the shape of `terraform output -json`."""
    path.write_text(
        json.dumps(
            {key: {"sensitive": False, "type": "string", "value": value} for key, value in outputs.items()}
        )
    )
    return path
