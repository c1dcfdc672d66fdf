"""moto for tests and benchmarks: a server on a free 127.0.0.1 port and the Batch set-up.

Shared by the pytest fixtures (tests/conftest.py) and bench/aws_calls.py, so both measure the
same thing.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], deadline: float, ca: Path | None = None) -> bool:
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):  # noqa: S310 - 127.0.0.1 only
                return True
        except OSError:
            time.sleep(0.1)
    return False


def start_server(
    tls: tuple[Path, Path] | None = None, record: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """moto (tests/moto_serial.py) on a free port: the process and its endpoint URL.

    With `tls` (certificate, key: see `certificate`) it serves HTTPS; with `record`, it appends
    every request it answers to that file (tests/iam/requests.py reads it).
    """
    for _ in range(3):  # the port may be taken between choosing and binding it
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "moto_serial.py"),
                str(port),
                *map(str, tls or ()),
                *(["--record", str(record)] if record else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        if _wait_until_up(f"{endpoint}/moto-api/", proc, time.monotonic() + 30, tls[0] if tls else None):
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


def configure(endpoint: str, ca: Path | None, config: dict[str, Any]) -> None:
    """Set moto's own options (`/moto-api/config`), e.g. Batch without Docker."""
    _moto_api(endpoint, "config", json.dumps(config).encode(), "application/json", ca)


def enforce_iam(endpoint: str, ca: Path | None = None) -> None:
    """From the next request on, moto authorises every request with its signer's IAM policies
    (`/moto-api/reset-auth` with INITIAL_NO_AUTH_ACTION_COUNT = 0)."""
    _moto_api(endpoint, "reset-auth", b"0", "text/plain", ca)  # not a form: moto reads the raw body


def _moto_api(endpoint: str, path: str, body: bytes, content_type: str, ca: Path | None) -> None:
    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1 only
        f"{endpoint}/moto-api/{path}", data=body, method="POST", headers={"Content-Type": content_type}
    )
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(request, timeout=10, context=context):  # noqa: S310 - 127.0.0.1 only
        pass


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

    configure(endpoint, None, {"batch": {"use_docker": False}})
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
    job_role = iam.create_role(RoleName="opsctl-test-job", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.create_instance_profile(InstanceProfileName="opsctl-test-ecs")
    profile = iam.get_instance_profile(InstanceProfileName="opsctl-test-ecs")["InstanceProfile"]["Arn"]
    batch = boto3.client("batch")
    ecr = boto3.client("ecr")
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
        # The pushed image the job definition runs (launch checks that it is there).
        ecr.create_repository(repositoryName=f"opsctl-{queue}")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
        ecr.put_image(repositoryName=f"opsctl-{queue}", imageManifest=json.dumps(manifest), imageTag="test")
        # Shaped as terraform/modules/batch registers it: what a derived definition must keep.
        values[f"{queue}_job_definition"] = batch.register_job_definition(
            jobDefinitionName=f"opsctl-test-{queue}",
            type="container",
            platformCapabilities=["EC2"],
            propagateTags=True,
            containerProperties={
                "image": image,
                "command": ["run", "--preflight-gpu"] if queue == "gpu" else ["run"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "2048"},
                    *([{"type": "GPU", "value": "1"}] if queue == "gpu" else []),
                ],
                "jobRoleArn": job_role,
                "readonlyRootFilesystem": False,
                "privileged": False,
                "linuxParameters": {"initProcessEnabled": True},
                "environment": [],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": "/aws/batch/job", "awslogs-stream-prefix": queue},
                },
            },
            retryStrategy={
                "attempts": 3,
                "evaluateOnExit": [
                    {"onStatusReason": "Host EC2*", "action": "RETRY"},
                    {"onReason": "*", "action": "EXIT"},
                ],
            },
            timeout={"attemptDurationSeconds": 86400},
            tags={"project": "opsctl-test"},
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


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files.

    The certificate is its own CA: give it to clients as their CA bundle (AWS_CA_BUNDLE).
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsctl test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def counting(*clients: Any) -> Counter[str]:
    """Calls the boto3 `clients` make from now on, by operation name (botocore event hooks)."""
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    for client in clients:
        client.meta.events.register("before-call", count)
    return calls
