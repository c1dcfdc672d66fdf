"""Shared fixtures: a scratch $OPSCTL_HOME, a real moto server over HTTP on 127.0.0.1, isolated
AWS settings."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import moto_env as moto
from tests.batch_player import BatchPlayer, playing
from tests.moto_env import ROOT, write_infra

__all__ = ["ROOT"]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start moto on a free 127.0.0.1 port for the session; point boto3 at it; stop it after."""
    proc, endpoint = moto.start_server()
    saved = dict(os.environ)
    moto.point_boto3_at(endpoint)
    try:
        yield endpoint
    finally:
        os.environ.clear()
        os.environ.update(saved)
        moto.stop_server(proc)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch folder whose `home/` is $OPSCTL_HOME for the test and every command it starts,
    so that no run of the developer's is read or touched; returns the scratch folder."""
    monkeypatch.setenv("OPSCTL_HOME", str(tmp_path / "home"))
    return tmp_path


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
    return moto.create_batch_env(moto_endpoint)


@pytest.fixture
def infra_file(batch_env: dict[str, str], bucket: str, tmp_path: Path) -> Path:
    """The infra outputs, in the shape of `terraform output -json`, with a fresh bucket."""
    return write_infra(tmp_path / "infra.json", {**batch_env, "bucket": bucket})


@pytest.fixture
def player(batch_env: dict[str, str], bucket: str, tmp_path: Path) -> Iterator[BatchPlayer]:
    """AWS Batch played with real worker processes (tests/batch_player.py), S3 and Logs on moto;
    `player.infra` is an infra file naming its queues and job definitions."""
    with playing(tmp_path / "player", {**batch_env, "bucket": bucket}) as played:
        yield played


def released_together(argvs: list[list[str]], timeout: float = 300) -> list[str]:
    """Run processes that each print `ready` when set up and then wait for a line on stdin;
    release them all at once, and return each one's remaining stdout. Races start together."""
    procs = [
        subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for argv in argvs
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0
        outputs.append(out)
    return outputs
