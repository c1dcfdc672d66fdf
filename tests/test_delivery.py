"""Images and deploys: the Dockerfiles and GitHub workflows, read as files (docker and GitHub
are not here). The linters (hadolint, actionlint, the workflow schema) run in `make static`;
hadolint runs here too, since its verdict is part of the contract.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
DOCKERFILES = [ROOT / "images" / "cpu" / "Dockerfile", ROOT / "images" / "gpu" / "Dockerfile"]
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*$")


def workflow(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return data


def test_both_workflows_exist() -> None:
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "deploy.yml"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_full_commit_sha(path: Path) -> None:
    uses = [line.split("uses:", 1)[1].strip() for line in path.read_text().splitlines() if "uses:" in line]
    assert uses
    for use in uses:
        assert SHA_PIN.match(use), f"{path.name}: {use} is not pinned to a commit SHA with its version"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_access_keys_and_minimal_permissions(path: Path) -> None:
    text = path.read_text()
    assert "aws-access-key-id" not in text and "aws-secret-access-key" not in text
    assert "AWS_ACCESS_KEY_ID" not in text
    data = yaml.safe_load(text)
    assert data["permissions"] in ({}, {"contents": "read"}), "workflow-level permissions are minimal"
    for name, job in data["jobs"].items():
        granted = job.get("permissions", {})
        assert set(granted.items()) <= {("id-token", "write"), ("contents", "read")}, name


def test_deploy_uses_oidc_and_never_races() -> None:
    deploy = workflow("deploy.yml")
    assert deploy[True] == {"push": {"branches": ["main"]}}  # YAML 1.1 reads the `on` key as True
    assert deploy["concurrency"] == {"group": "deploy", "cancel-in-progress": False}
    images = deploy["jobs"]["images"]
    assert images["permissions"] == {"id-token": "write", "contents": "read"}
    assert images["strategy"]["matrix"]["image"] == ["cpu", "gpu"]
    steps = {step.get("uses", "").split("@")[0]: step for step in images["steps"]}
    credentials = steps["aws-actions/configure-aws-credentials"]["with"]
    assert credentials["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
    build = steps["docker/build-push-action"]["with"]
    assert build["file"] == "images/${{ matrix.image }}/Dockerfile"
    assert build["tags"].endswith(":${{ github.sha }}")
    assert "type=gha" in build["cache-from"] and "type=gha" in build["cache-to"]
    roll = deploy["jobs"]["roll"]
    assert roll["needs"] == "images"
    run = roll["steps"][-1]
    assert run["env"]["IMAGE_TAG"] == "${{ github.sha }}"
    # Every other variable is the administrator's, stored next to the state: a TF_VAR_ here
    # would be one more thing a merge resets (and the stored value ranks above it anyway).
    assert not [name for name in run["env"] if name.startswith("TF_VAR_")]
    command = " ".join(run["run"].replace("\\\n", " ").split())
    assert (
        ".venv/bin/opsctl infra apply --yes --roll-only --require-stored-vars "
        '--backend-config backend.hcl --image-tag "$IMAGE_TAG"'
    ) in command


def test_the_state_key_is_one_setting() -> None:
    """deploy.yml's key is the repository variable TF_STATE_KEY or its default, and the
    backend.hcl the README has the administrator write names that same default."""
    run = workflow("deploy.yml")["jobs"]["roll"]["steps"][-1]
    default = re.fullmatch(r"\$\{\{ vars\.TF_STATE_KEY \|\| '([^']+)' \}\}", run["env"]["TF_STATE_KEY"])
    assert default, run["env"]["TF_STATE_KEY"]
    assert "tfstate" not in run["run"] and '"$TF_STATE_KEY"' in run["run"], "no key but TF_STATE_KEY"
    readme = (ROOT / "README.md").read_text()
    assert f'key    = "{default[1]}"   # the workflow\'s TF_STATE_KEY' in readme
    assert f"| `TF_STATE_KEY` | optional: the state's key in that bucket (default `{default[1]}`)" in readme


def test_ci_runs_the_project_checks_and_terraform() -> None:
    ci = workflow("ci.yml")
    assert set(ci[True]) == {"pull_request", "push"}
    assert "bash .ci/run" in str(ci["jobs"]["checks"]["steps"])
    terraform = [step.get("run", "") for step in ci["jobs"]["terraform"]["steps"]]
    assert "terraform fmt -check -recursive" in terraform and "terraform validate" in terraform


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_is_lint_clean_and_ends_non_root(path: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(path)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout
    lines = [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) == 2, "multi-stage: build the environment, then copy it whole"
    for base in froms:
        image = base.split()[1]
        assert ":" in image and not image.endswith(":latest"), f"{image} is pinned to a version tag"
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] == "USER 10001", "the final user is not root"
    # The worker isolated, so that a step's PYTHONPATH reaches its commands only.
    assert lines[-2] == 'ENTRYPOINT ["/opt/venv/bin/python", "-I", "-m", "worker"]'
    assert lines[-1].startswith('CMD ["run"')
    for ignore in [line for line in path.read_text().splitlines() if "hadolint ignore" in line]:
        assert "DL3008" in ignore  # explained once in the file: distro packages follow security updates


def test_the_example_own_image_builds_on_the_worker_image_and_keeps_its_contract() -> None:
    """examples/tomo/Dockerfile: a user's image FROM the stack's worker image (docs/worker.md)."""
    path = ROOT / "examples" / "tomo" / "Dockerfile"
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(path)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout
    lines = [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert lines[:2] == ["ARG BASE=opsctl-cpu:local", "FROM ${BASE}"]
    assert lines[-1] == "USER 10001", "still the non-root user"
    assert not [line for line in lines if line.startswith(("ENTRYPOINT", "CMD"))], (
        "the worker image's entry point stays"
    )
    for line in lines:
        if line.startswith("COPY "):
            source = line.split()[-2]
            assert (ROOT / source).is_dir() and source in (ROOT / ".dockerignore").read_text(), source


def test_gpu_image_sets_up_opencl_for_nvidia() -> None:
    text = (ROOT / "images" / "gpu" / "Dockerfile").read_text()
    assert 'echo "libnvidia-opencl.so.1" > /etc/OpenCL/vendors/nvidia.icd' in text
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text
    assert "NVIDIA_VISIBLE_DEVICES=all" in text
    assert "ocl-icd-libopencl1" in text
    assert "['optional-dependencies']['gpu']" in text, "pyopencl and numpy"
    assert 'CMD ["run", "--preflight-gpu"]' in text


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for name in (".git", ".venv", "tests", "terraform"):
        assert name in ignored


def test_deploy_role_trusts_only_this_repository_main() -> None:
    options = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
    module = ROOT / "terraform" / "modules" / "github_oidc" / "main.tf"
    parsed = hcl2.loads(module.read_text(), serialization_options=options)
    documents = {
        name: body
        for entry in parsed["data"]
        for kind, named in entry.items()
        for name, body in named.items()
    }
    [trust] = documents["trust"]["statement"]
    assert trust["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    conditions = {c["variable"]: c for c in trust["condition"]}
    sub = conditions["${local.issuer}:sub"]
    assert (sub["test"], sub["values"]) == (
        "StringEquals",
        ["repo:${var.github_repository}:ref:refs/heads/main"],
    )
    assert conditions["${local.issuer}:aud"]["values"] == ["sts.amazonaws.com"]
    deploy = documents["deploy"]["statement"]
    for statement in deploy:
        assert "*" not in statement["actions"], "no bare * action"
        assert not any(action.endswith(":*") for action in statement["actions"]), statement["sid"]
    stars = [s["sid"] for s in deploy if s["resources"] == ["*"] and s.get("effect", "Allow") == "Allow"]
    assert stars == ["EcrLogin", "RefreshWhatAwsAuthorisesOnStarOnly"], "calls AWS authorises on * alone"
