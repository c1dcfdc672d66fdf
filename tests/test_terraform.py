"""The whole stack, applied by real Terraform to a moto server over TLS, then used by opsctl.

`opsctl infra apply` (python-terraform driving the real `terraform` binary, the AWS provider
from the machine's filesystem mirror) creates the stack in moto; `opsctl launch --backend aws`
on the outputs it wrote is refused because no image was pushed; `opsctl infra push` builds and
pushes them (a stand-in `docker` records its arguments and, as the registry would, stores each
pushed image's manifest in moto's ECR) and applies the stack with their tag; then the launch
goes through, and `opsctl infra destroy` removes it all.

moto serves HTTPS with a certificate of the test's own (AWS_CA_BUNDLE for boto3 and the
provider), as AWS does. The emulator's gaps are handled where they show, never by editing the
modules: what moto lacks or mishandles (the queues' job state time limits, default tags, which
moto copies into launch template data) is left out with the stack's `emulator` variable; and
moto evaluates the bucket's TLS-only deny (`aws:SecureTransport` = false) as matching even over
HTTPS, so that one statement is removed from the emulator's copy of the policy, with a warning,
after checking that it is the statement that denies.

Skipped, saying why, where no `terraform` >= 1.10 or no mirror of the AWS provider is found.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import moto_env
from tests.conftest import ROOT
from tests.helpers import OPSCTL, environ_set, moto_client, one_line

MIRROR_ROOTS = (
    "/opt/tf-plugins",
    "~/.terraform.d/plugins",
    "/usr/local/share/terraform/plugins",
    "/usr/share/terraform/plugins",
)


def provider_mirror() -> Path | None:
    """A filesystem mirror holding hashicorp/aws (TF_PLUGIN_MIRROR, else the usual places)."""
    for root in filter(None, (os.environ.get("TF_PLUGIN_MIRROR"), *MIRROR_ROOTS)):
        base = Path(root).expanduser()
        if list(base.glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*")):
            return base
    return None


def terraform_ok() -> str | None:
    """Why the test cannot run here, or None."""
    binary = shutil.which("terraform")
    if binary is None:
        return "no terraform on PATH"
    version = json.loads(subprocess.run([binary, "version", "-json"], capture_output=True, text=True).stdout)
    major, minor = (int(x) for x in version["terraform_version"].split(".")[:2])
    if (major, minor) < (1, 10):
        return f"terraform {version['terraform_version']} is older than 1.10"
    if provider_mirror() is None:
        return f"no filesystem mirror of the AWS provider in {', '.join(MIRROR_ROOTS)} (or TF_PLUGIN_MIRROR)"
    return None


def tls_moto(work: Path, record: Path | None = None) -> tuple[Path, subprocess.Popen[bytes], str]:
    """A moto server over TLS with AWS's managed policies loaded (to attach, and to read back):
    its certificate (the clients' CA bundle), process and endpoint."""
    cert, key = moto_env.certificate(work)
    with environ_set("MOTO_IAM_LOAD_MANAGED_POLICIES", "true"):
        proc, endpoint = moto_env.start_server((cert, key), record=record)
    moto_env.configure(endpoint, cert, {"batch": {"use_docker": False}})
    return cert, proc, endpoint


def emulated_module(work: Path) -> Path:
    """A copy of terraform/ in `work` set for the emulator, without changing the modules: a
    Terraform override file (the provider reads its endpoints from AWS_ENDPOINT_URL; path-style
    S3 requests, since a bucket name cannot be a host name under 127.0.0.1), `emulator.tfvars`,
    and `terraformrc`, which installs the AWS provider from the machine's mirror."""
    module = work / "terraform"
    shutil.copytree(
        ROOT / "terraform",
        module,
        ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*", "*.auto.tfvars*"),
    )
    (module / "emulator_override.tf").write_text(
        'provider "aws" {\n  s3_use_path_style       = true\n  skip_metadata_api_check = true\n}\n'
    )
    (work / "emulator.tfvars").write_text("emulator = true\n")
    (work / "terraformrc").write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{provider_mirror()}"\n  }}\n}}\n'
    )
    return module


def emulator_env(work: Path, endpoint: str, cert: Path, docker: str) -> dict[str, str]:
    """The environment of opsctl and Terraform against the emulator: this one's settings with no
    AWS_, OPSCTL_ or TF_ variable of the developer's, the endpoint and its CA, no profile, and a
    stand-in `docker` (the `docker` script, for `python`) first on PATH. No access key: each
    caller signs as whoever it plays."""
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(docker.format(python=sys.executable))
    (bin_dir / "docker").chmod(0o755)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSCTL_", "TF_"))},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CA_BUNDLE": str(cert),
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "TF_CLI_CONFIG_FILE": str(work / "terraformrc"),
        "TF_IN_AUTOMATION": "1",
        "OPSCTL_HOME": str(work / "home"),
    }


DOCKER = """#!{python}
# A stand-in for docker: records its arguments (DOCKER_RECORD); on `push`, stores the image in
# moto's ECR as a push would, and with PUSH_RECORD also records the other calls a registry push
# authorises (ECR User Guide, "IAM permissions for pushing an image": BatchCheckLayerAvailability,
# BatchGetImage, InitiateLayerUpload, UploadLayerPart, CompleteLayerUpload, PutImage), signed by
# whoever runs it, for the permission tests (tests/test_permissions.py).
import json, os, sys
args = sys.argv[1:]
if "DOCKER_RECORD" in os.environ:
    with open(os.environ["DOCKER_RECORD"], "a") as f:
        f.write(json.dumps(args) + "\\n")
if "--password-stdin" in args:
    sys.stdin.read()
if args[0] == "push":
    import boto3
    repository, tag = args[1].split("/", 1)[1].rsplit(":", 1)
    manifest = {{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}}
    boto3.client("ecr").put_image(repositoryName=repository, imageTag=tag, imageManifest=json.dumps(manifest))
    if "PUSH_RECORD" in os.environ:
        with open(os.environ["PUSH_RECORD"], "a") as f:
            for operation in ("BatchCheckLayerAvailability", "BatchGetImage", "InitiateLayerUpload",
                              "UploadLayerPart", "CompleteLayerUpload"):
                call = {{"key": os.environ["AWS_ACCESS_KEY_ID"], "service": "ecr", "operation": operation,
                        "params": {{"repositoryName": repository}},
                        "region": os.environ["AWS_DEFAULT_REGION"]}}
                f.write(json.dumps({{"call": call, "status": 200}}) + "\\n")
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reason = terraform_ok()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("stack")
    cert, proc, endpoint = tls_moto(work)
    module = emulated_module(work)
    shutil.copytree(ROOT / "images", work / "images")
    env = {
        **emulator_env(work, endpoint, cert, DOCKER),
        "AWS_ACCESS_KEY_ID": "testing",
        "DOCKER_RECORD": str(work / "docker.jsonl"),
    }
    try:
        yield {"env": env, "work": work, "module": module, "infra": work / "infra.json", "endpoint": endpoint}
    finally:
        moto_env.stop_server(proc)


def opsctl(stack: dict[str, Any], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPSCTL, *args], env=stack["env"], capture_output=True, text=True, timeout=timeout, cwd=stack["work"]
    )


def infra(stack: dict[str, Any], verb: str, *args: str) -> subprocess.CompletedProcess[str]:
    return opsctl(
        stack,
        "infra",
        verb,
        "--dir",
        str(stack["module"]),
        "--var-file",
        str(stack["work"] / "emulator.tfvars"),
        *args,
    )


def boto(stack: dict[str, Any], service: str) -> Any:
    return moto_client(service, stack["endpoint"], cert=stack["env"]["AWS_CA_BUNDLE"])


def test_real_terraform_applies_the_stack_and_opsctl_runs_on_it(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    applied = infra(stack, "apply", "--yes", "--infra", str(stack["infra"]))
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    assert "Apply complete!" in applied.stdout
    outputs = {k: v["value"] for k, v in json.loads(stack["infra"].read_text()).items()}
    assert outputs["cpu_image"].endswith("/opsctl/cpu:latest")

    # A GPU family ECS_AL2023_NVIDIA cannot run is refused by the variable's validation.
    bad = stack["work"] / "p3.tfvars"
    bad.write_text('gpu_instance_types = ["p3"]\n')
    planned = infra(stack, "plan", "--var-file", str(bad))
    assert planned.returncode == 1 and "ECS_AL2023_NVIDIA supports" in planned.stdout + planned.stderr

    spec = tmp_path / "hello.yaml"
    spec.write_text(
        "name: tf\nsteps:\n  - name: a\n    queue: cpu\n    array_size: 2\n    commands: [echo a, echo b]\n"
    )
    launch = ["launch", str(spec), "--backend", "aws", "--infra", str(stack["infra"])]
    refused = one_line(opsctl(stack, *launch), 2)
    assert refused.startswith(f"opsctl: {outputs['cpu_image']}: not in ECR") and "`make push`" in refused

    pushed = infra(stack, "push", "--tag", "0123abcd4567", "--yes", "--infra", str(stack["infra"]))
    assert pushed.returncode == 0, pushed.stdout[-3000:] + pushed.stderr[-3000:]
    records = [json.loads(line) for line in Path(stack["env"]["DOCKER_RECORD"]).read_text().splitlines()]
    assert [r[0] for r in records] == ["info", "login", "build", "push", "build", "push"]
    outputs = {k: v["value"] for k, v in json.loads(stack["infra"].read_text()).items()}
    assert outputs["cpu_image"].endswith("/opsctl/cpu:0123abcd4567"), "the stack runs the pushed tag now"
    definition = boto(stack, "batch").describe_job_definitions(jobDefinitions=[outputs["cpu_job_definition"]])
    container = definition["jobDefinitions"][0]["containerProperties"]
    assert container["image"] == outputs["cpu_image"]
    # PID 1 is an init that reaps commands' orphans, as under `launch --containers` (--init).
    assert container["linuxParameters"] == {"initProcessEnabled": True}

    _allow_https_despite_motos_secure_transport_gap(stack, outputs["bucket"])
    launched = opsctl(stack, *launch, "--json")
    assert launched.returncode == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]
    status = json.loads(opsctl(stack, "status", run_id, "--json").stdout)
    assert [s["job_id"] is not None for s in status["steps"]] == [True]

    _empty(stack, outputs)
    destroyed = infra(stack, "destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout[-3000:] + destroyed.stderr[-3000:]
    assert "Destroy complete!" in destroyed.stdout
    assert not boto(stack, "s3").list_buckets()["Buckets"]


def _allow_https_despite_motos_secure_transport_gap(stack: dict[str, Any], bucket: str) -> None:
    """moto evaluates `aws:SecureTransport` as false even over HTTPS, so the bucket's TLS-only
    deny blocks every request. Where that happens, drop that one statement from moto's copy."""
    from botocore.exceptions import ClientError

    s3 = boto(stack, "s3")
    try:
        s3.put_object(Bucket=bucket, Key="runs/probe", Body=b"over https")
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("AccessDenied", "403"):
            raise
    else:
        return  # moto evaluates it as AWS does now: nothing to work around
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    tls = [s for s in policy["Statement"] if "aws:SecureTransport" in json.dumps(s.get("Condition", {}))]
    assert len(tls) == 1 and tls[0]["Effect"] == "Deny", "only the TLS-only statement is dropped"
    policy["Statement"] = [s for s in policy["Statement"] if s not in tls]
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    warnings.warn(
        "moto denies HTTPS requests under the bucket's TLS-only statement (aws:SecureTransport); "
        "the test dropped that statement from moto's copy of the policy",
        stacklevel=2,
    )


def _empty(stack: dict[str, Any], outputs: dict[str, str]) -> None:
    """What `opsctl infra destroy` asks of the user first: an empty bucket and repositories."""
    s3 = boto(stack, "s3")
    versions = s3.list_object_versions(Bucket=outputs["bucket"])
    for entry in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
        s3.delete_object(Bucket=outputs["bucket"], Key=entry["Key"], VersionId=entry["VersionId"])
    ecr = boto(stack, "ecr")
    for name in ("cpu", "gpu"):
        repository = outputs[f"{name}_image"].split("/", 1)[1].rsplit(":", 1)[0]
        images = ecr.list_images(repositoryName=repository)["imageIds"]
        if images:
            ecr.batch_delete_image(repositoryName=repository, imageIds=images)


# --- the deploy workflow applies what the administrator applied (S3 state, stored variables) -----

DEPLOY = ROOT / ".github" / "workflows" / "deploy.yml"
STATE_BUCKET = "opsdeploy-tfstate"


def _checkout(stack: dict[str, Any], name: str) -> Path:
    """A fresh copy of terraform/ (a checkout: no .terraform, no state, no local tfvars), with
    the emulator's provider override, under `<work>/<name>/terraform`."""
    module = stack["work"] / name / "terraform"
    shutil.copytree(
        ROOT / "terraform",
        module,
        ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*", "*.auto.tfvars*"),
    )
    shutil.copy(stack["module"] / "emulator_override.tf", module)
    return module


def _deploy_roll(stack: dict[str, Any], checkout: Path, image_tag: str) -> subprocess.CompletedProcess[str]:
    """The roll step of deploy.yml, as GitHub would run it in `checkout` (repository variables
    TF_STATE_BUCKET and AWS_REGION, TF_STATE_KEY left to its default): its own script, less
    `make venv` (the test's opsctl is installed) and plus `use_path_style` in the backend file
    it writes (a bucket cannot be a host name under 127.0.0.1)."""
    import yaml

    [step] = [s for s in yaml.safe_load(DEPLOY.read_text())["jobs"]["roll"]["steps"] if "run" in s]
    script = step["run"]
    assert script.count("make venv\n") == 1 and ".venv/bin/opsctl infra apply" in script
    script = script.replace("make venv\n", "echo 'use_path_style = true' >> backend.hcl\n").replace(
        ".venv/bin/opsctl", OPSCTL
    )
    github = {
        "${{ github.sha }}": image_tag,
        "${{ vars.TF_STATE_BUCKET }}": STATE_BUCKET,
        "${{ vars.TF_STATE_KEY || 'opsctl/terraform.tfstate' }}": "opsctl/terraform.tfstate",
        "${{ vars.AWS_REGION }}": "us-east-1",
    }
    env = {name: github[value] for name, value in step["env"].items()}
    return subprocess.run(
        ["bash", "-e", "-c", script],
        env={**stack["env"], **env},
        capture_output=True,
        text=True,
        timeout=900,
        cwd=checkout.parent,
    )


def _compute_environment(stack: dict[str, Any], prefix: str) -> dict[str, Any]:
    [found] = [
        ce
        for ce in boto(stack, "batch").describe_compute_environments()["computeEnvironments"]
        if ce["computeEnvironmentName"].startswith(prefix)
    ]
    return dict(found)


def test_the_deploy_workflow_applies_what_the_administrator_applied(stack: dict[str, Any]) -> None:
    """State in S3 with the administrator's variables stored next to it; deploy.yml's roll step,
    in a fresh checkout with no variables but the commit, keeps them and rolls the image tag; a
    later local apply cannot roll the tag back; a merge that would replace a compute environment
    stops the workflow's apply before anything changes; a destroy needs no variables either."""
    s3 = boto(stack, "s3")
    s3.create_bucket(Bucket=STATE_BUCKET)
    s3.put_bucket_versioning(Bucket=STATE_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    work = stack["work"]
    # What README "Images and deploys" tells the administrator to write (plus moto's path style).
    backend = work / "backend.hcl"
    backend.write_text(
        f'bucket = "{STATE_BUCKET}"\nkey    = "opsctl/terraform.tfstate"\nregion = "us-east-1"\n'
        "use_path_style = true\n"
    )
    admin_vars = work / "admin.tfvars"
    admin_vars.write_text(
        'emulator = true\nname = "opsdeploy"\ncpu_max_vcpus = 64\n'
        f'github_repository = "octo-org/opsctl"\nterraform_state_bucket = "{STATE_BUCKET}"\n'
    )
    admin = _checkout(stack, "admin")

    def admin_infra(verb: str, *args: str) -> subprocess.CompletedProcess[str]:
        return opsctl(stack, "infra", verb, "--dir", str(admin), "--backend-config", str(backend), *args)

    applied = admin_infra(
        "apply", "--yes", "--var-file", str(admin_vars), "--infra", str(work / "admin.json")
    )
    assert applied.returncode == 0, applied.stdout[-3000:] + applied.stderr[-3000:]
    key = "opsctl/terraform.tfstate.tfvars.json"
    where = f"s3://{STATE_BUCKET}/{key}"
    assert f"stored variables: none yet at {where}" in applied.stdout
    stored = json.loads(s3.get_object(Bucket=STATE_BUCKET, Key=key)["Body"].read())
    assert stored == {
        "cpu_max_vcpus": 64,
        "emulator": True,
        "github_repository": "octo-org/opsctl",
        "image_tag": "latest",
        "name": "opsdeploy",
        "terraform_state_bucket": STATE_BUCKET,
    }, "what was applied, less the defaults"
    assert s3.head_object(Bucket=STATE_BUCKET, Key="opsctl/terraform.tfstate"), "the state, same key"

    rolled = _deploy_roll(stack, _checkout(stack, "ci"), "0123abcd4567")
    assert rolled.returncode == 0, rolled.stdout[-3000:] + rolled.stderr[-3000:]
    assert f"stored variables from {where}" in rolled.stdout and '  name = "opsdeploy"' in rolled.stdout
    batch = boto(stack, "batch")
    [definition] = batch.describe_job_definitions(jobDefinitionName="opsdeploy-cpu", status="ACTIVE")[
        "jobDefinitions"
    ]
    assert definition["containerProperties"]["image"].endswith("/opsdeploy/cpu:0123abcd4567")
    assert _compute_environment(stack, "opsdeploy-cpu-")["computeResources"]["maxvCpus"] == 64, "kept"
    roles = [r["RoleName"] for r in boto(stack, "iam").list_roles()["Roles"]]
    assert [r for r in roles if r.startswith("opsdeploy-deploy-")], "the deploy role is still there"
    stored = json.loads(s3.get_object(Bucket=STATE_BUCKET, Key=key)["Body"].read())
    assert stored["image_tag"] == "0123abcd4567" and stored["cpu_max_vcpus"] == 64

    # The administrator's old var file names the old tag: refused, not rolled back.
    old = work / "old-tag.tfvars"
    old.write_text('image_tag = "latest"\n')
    back = admin_infra("apply", "--yes", "--var-file", str(admin_vars), "--var-file", str(old))
    line = one_line(back, 2)
    assert "image_tag = 'latest' from a --var-file would change the image tag the stack runs" in line
    assert "'0123abcd4567'" in line and "--image-tag latest" in line

    # A merge that changes the GPU instance types (here their default) replaces the GPU compute
    # environment, its service role being the stack's own rather than Batch's service-linked one
    # (no in-place infrastructure update): the workflow's apply stops, and nothing changes.
    checkout = _checkout(stack, "ci-next")
    variables = checkout / "variables.tf"
    assert variables.read_text().count('default     = ["g5", "g6"]') == 1
    variables.write_text(variables.read_text().replace('default     = ["g5", "g6"]', 'default     = ["g6"]'))
    before = _compute_environment(stack, "opsdeploy-gpu-")
    stopped = _deploy_roll(stack, checkout, "89abcdef0123")
    line = one_line(stopped, 2)
    assert line.startswith(
        "opsctl: --roll-only: the plan says module.batch.aws_batch_compute_environment.gpu must be "
        "replaced (because of compute_resources[0].instance_type), which would end the jobs running on "
        "its instances; "
    ), line
    # Its queue follows the new environment: a change too, and named, after the replacement.
    assert 'module.batch.aws_batch_job_queue.queue["gpu"] will be updated in-place' in line
    assert "a deploy only rolls the job definitions to a new image, so nothing was applied" in line
    assert "job_definition" not in line, "the image roll's new job definitions are no reason to stop"
    assert _compute_environment(stack, "opsdeploy-gpu-") == before
    [definition] = batch.describe_job_definitions(jobDefinitionName="opsdeploy-gpu", status="ACTIVE")[
        "jobDefinitions"
    ]
    assert definition["containerProperties"]["image"].endswith("/opsdeploy/gpu:0123abcd4567"), "not rolled"
    stored = json.loads(s3.get_object(Bucket=STATE_BUCKET, Key=key)["Body"].read())
    assert stored["image_tag"] == "0123abcd4567", "nothing stored"

    _empty(stack, {k: v["value"] for k, v in json.loads((work / "admin.json").read_text()).items()})
    destroyed = admin_infra("destroy", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout[-3000:] + destroyed.stderr[-3000:]
    assert "Destroy complete!" in destroyed.stdout
    assert f"stored variables from {where}" in destroyed.stdout, "no --var-file: the stored ones"
    assert not [
        c
        for c in batch.describe_compute_environments()["computeEnvironments"]
        if "opsdeploy" in c["computeEnvironmentName"]
    ]
