"""Infrastructure as code, tested for what can be tested here (no terraform, packer or provider):
every file parses, the structure and the security baseline hold, and `opsctl infra` drives a
stand-in `terraform` with exactly the arguments Terraform >= 1.10 expects.

checkov runs over terraform/ from the Makefile (`make checkov`, part of `make test`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

from opsctl.infra import KEYS, load_outputs
from tests.conftest import ROOT

TERRAFORM = ROOT / "terraform"
MODULES = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
HCL_FILES = sorted(TERRAFORM.rglob("*.tf")) + sorted((ROOT / "images").rglob("*.pkr.hcl"))
OPSCTL = str(Path(sys.executable).parent / "opsctl")


# Plain values: strings without their quotes, blocks as lists of bodies (python-hcl2 >= 8).
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)


def parse(path: Path) -> dict[str, Any]:
    parsed: dict[str, Any] = hcl2.loads(path.read_text(), serialization_options=OPTIONS)
    return parsed


def blocks(path: Path, kind: str) -> dict[str, Any]:
    """{"type.name": body} for resources/data, {"name": body} for variables/outputs."""
    found: dict[str, Any] = {}
    for entry in parse(path).get(kind, []):
        for key, value in entry.items():
            if kind in ("resource", "data"):
                for name, body in value.items():
                    found[f"{key}.{name}"] = body
            else:
                found[key] = value
    return found


@pytest.mark.parametrize("path", HCL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_parses(path: Path) -> None:
    assert isinstance(parse(path), dict)


@pytest.mark.parametrize("module", [TERRAFORM, *MODULES], ids=lambda p: p.name)
def test_standard_module_structure(module: Path) -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        assert (module / name).is_file(), f"{module.name} lacks {name}"
    versions = parse(module / "versions.tf")["terraform"][0]
    assert versions["required_version"] == ">= 1.10"
    assert "aws" in versions["required_providers"][0]
    # Every version the pin allows validates: before 5.81 the OIDC provider's thumbprint_list
    # is required, and the stack sets none.
    assert versions["required_providers"][0]["aws"]["version"] == ">= 5.81, < 6.0"


@pytest.mark.parametrize(
    "path",
    [*(m / "variables.tf" for m in [TERRAFORM, *MODULES]), ROOT / "images" / "ami" / "gpu.pkr.hcl"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_variable_has_a_type_and_a_description(path: Path) -> None:
    variables = blocks(path, "variable")
    assert variables
    for name, body in variables.items():
        assert body.get("type"), f"{name} has no type"
        assert body.get("description"), f"{name} has no description"


def test_root_outputs_are_the_infra_keys() -> None:
    outputs = blocks(TERRAFORM / "outputs.tf", "output")
    assert set(KEYS) <= set(outputs)
    for name, body in outputs.items():
        assert body.get("description"), f"output {name} has no description"


BATCH = TERRAFORM / "modules" / "batch" / "main.tf"


def test_job_definitions_carry_the_retry_rules() -> None:
    definition = blocks(BATCH, "resource")["aws_batch_job_definition.worker"]
    retry = definition["retry_strategy"][0]
    assert retry["dynamic"][0]["evaluate_on_exit"]["for_each"] == "${local.retry_rules}"
    rules = parse(BATCH)["locals"][0]["retry_rules"]
    spelled = [(r["action"], r["on_status_reason"] or r["on_reason"] or r["on_exit_code"]) for r in rules]
    assert spelled == [
        ("RETRY", "Host EC2*"),
        ("EXIT", "CannotPullContainerError*"),
        ("EXIT", "2"),
        ("RETRY", "*"),
        ("EXIT", "*"),
    ]
    from opsctl.backends.batch import RETRY_RULES

    sent = [
        (r["action"], r.get("onStatusReason") or r.get("onReason") or r.get("onExitCode"))
        for r in RETRY_RULES
    ]
    assert sent == spelled, "SubmitJob and the job definitions retry alike"
    assert definition["propagate_tags"] is True
    assert "attempt_duration_seconds" in definition["timeout"][0]
    properties = definition["container_properties"]
    assert "awslogs" in properties and "jobRoleArn" in properties and "GPU" in properties


def test_launch_templates_require_imdsv2_and_encrypted_gp3() -> None:
    template = blocks(BATCH, "resource")["aws_launch_template.worker"]
    metadata = template["metadata_options"][0]
    assert metadata["http_tokens"] == "required"
    assert metadata["http_put_response_hop_limit"] == 1
    ebs = template["block_device_mappings"][0]["ebs"][0]
    assert (ebs["volume_type"], ebs["encrypted"]) == ("gp3", True)


def test_compute_environments() -> None:
    resources = blocks(BATCH, "resource")
    cpu = resources["aws_batch_compute_environment.cpu"]
    gpu = resources["aws_batch_compute_environment.gpu"]
    cpu_resources = cpu["compute_resources"][0]
    assert (cpu_resources["type"], cpu_resources["allocation_strategy"]) == (
        "SPOT",
        "SPOT_PRICE_CAPACITY_OPTIMIZED",
    )
    assert cpu_resources["min_vcpus"] == 0 and gpu["compute_resources"][0]["min_vcpus"] == 0
    ec2 = gpu["compute_resources"][0]["ec2_configuration"][0]
    assert ec2["image_type"] == "ECS_AL2023_NVIDIA"
    assert "data.aws_ami.gpu_worker" in ec2["image_id_override"]
    for environment in (cpu, gpu):
        assert "compute_environment_name_prefix" in environment
        lifecycle = environment["lifecycle"][0]
        assert lifecycle["create_before_destroy"] is True
        assert lifecycle["ignore_changes"] == ["${compute_resources[0].desired_vcpus}"]
        assert environment["depends_on"] == ["${var.service_role_attachment}"]
    queue = resources["aws_batch_job_queue.queue"]
    limit = queue["dynamic"][0]["job_state_time_limit_action"]["content"][0]
    assert (limit["state"], limit["action"]) == ("RUNNABLE", "CANCEL")


def test_bucket_is_tls_only() -> None:
    storage = TERRAFORM / "modules" / "storage" / "main.tf"
    [statement] = blocks(storage, "data")["aws_iam_policy_document.tls_only"]["statement"]
    assert statement["effect"] == "Deny" and statement["actions"] == ["s3:*"]
    assert statement["principals"][0]["identifiers"] == ["*"]
    [condition] = statement["condition"]
    assert (condition["test"], condition["variable"], condition["values"]) == (
        "Bool",
        "aws:SecureTransport",
        ["false"],
    )
    resources = blocks(storage, "resource")
    assert resources["aws_s3_bucket_public_access_block.runs"]["restrict_public_buckets"] is True
    assert resources["aws_s3_bucket_versioning.runs"]["versioning_configuration"][0]["status"] == "Enabled"
    ownership = resources["aws_s3_bucket_ownership_controls.runs"]["rule"][0]["object_ownership"]
    assert ownership == "BucketOwnerEnforced"


def test_job_role_is_scoped_to_the_runs_prefix() -> None:
    iam = TERRAFORM / "modules" / "iam" / "main.tf"
    data = blocks(iam, "data")
    assert data["aws_iam_policy_document.trust_ecs_tasks"]["statement"][0]["principals"][0][
        "identifiers"
    ] == ["ecs-tasks.amazonaws.com"]
    statements = {s["sid"]: s for s in data["aws_iam_policy_document.job"]["statement"]}
    for statement in statements.values():
        assert statement.get("effect", "Allow") == "Allow"
        assert all(
            "*" not in action.split(":")[1] or action.endswith("*") is False
            for action in statement["actions"]
        )
        assert "*" not in statement["resources"], f"{statement['sid']} allows every resource"
    assert statements["ReadWriteRuns"]["actions"] == ["s3:GetObject", "s3:PutObject"]
    assert statements["ReadWriteRuns"]["resources"] == ["${var.bucket_arn}/runs/*"]
    assert statements["ListRuns"]["condition"][0]["values"] == ["runs/*"]
    actions = [a for s in statements.values() for a in s["actions"]]
    assert not [a for a in actions if a.endswith(":*") or a == "*"], "no wildcard actions"


def test_every_checkov_skip_says_why() -> None:
    skips = [
        (path, line)
        for path in TERRAFORM.rglob("*.tf")
        for line in path.read_text().splitlines()
        if "checkov:skip=" in line
    ]
    assert skips
    for path, line in skips:
        check, _, reason = line.split("checkov:skip=", 1)[1].partition(":")
        assert check.startswith("CKV") and len(reason.split()) >= 4, f"{path}: {line.strip()}"


GPU_FAMILY = re.search(r'regex\("(\^\(g4dn[^"]+)"', (TERRAFORM / "modules/batch/variables.tf").read_text())
GPU_OK = ("g4dn", "g5", "g5.2xlarge", "g6", "g6e.xlarge", "gr6", "p4d.24xlarge", "p5", "p5en")
GPU_NOT = ("g3", "g3s.xlarge", "p2", "p3", "p3.2xlarge", "p3dn", "g4ad", "g5g.xlarge", "c6i", "")


@pytest.mark.parametrize(
    ("instance", "ok"),
    [
        *[(t, True) for t in GPU_OK],
        *[(t, False) for t in GPU_NOT],
    ],
)
def test_gpu_families_are_those_ecs_al2023_nvidia_runs(instance: str, ok: bool) -> None:
    assert GPU_FAMILY is not None
    pattern = GPU_FAMILY.group(1).replace("\\\\", "\\")  # HCL string escaping
    assert bool(re.fullmatch(pattern, instance)) is ok


def test_packer_template() -> None:
    template = parse(ROOT / "images" / "ami" / "gpu.pkr.hcl")
    source = template["source"][0]["amazon-ebs"]["gpu_worker"]
    ami_filter = source["source_ami_filter"][0]
    assert ami_filter["owners"] == ["amazon"] and ami_filter["most_recent"] is True
    # EC2 name filters match the whole name, with * and ? as wildcards.
    pattern = ami_filter["filters"]["name"]
    for name in (
        "al2023-ami-ecs-gpu-hvm-2023.0.20240109-kernel-6.1-x86_64-ebs",
        "al2023-ami-ecs-gpu-hvm-2023.0.20260805-kernel-6.1-x86_64-ebs",
        "al2023-ami-ecs-gpu-hvm-2023.0.20251030-kernel-6.12-x86_64-ebs",
    ):
        assert fnmatch.fnmatchcase(name, pattern), name
    for name in (
        "al2023-ami-ecs-gpu-hvm-2023.0.20260805-kernel-6.1-arm64-ebs",  # Arm: not our x86_64 image
        "al2023-ami-ecs-hvm-2023.0.20260805-kernel-6.1-x86_64",  # no GPU driver
        "al2023-ami-ecs-neuron-hvm-2023.0.20260805-kernel-6.1-x86_64",  # Inferentia/Trainium
        "amzn2-ami-ecs-gpu-hvm-2.0.20240109-x86_64-ebs",  # Amazon Linux 2
    ):
        assert not fnmatch.fnmatchcase(name, pattern), name
    assert source["metadata_options"][0]["http_tokens"] == "required"
    assert source["launch_block_device_mappings"][0]["volume_type"] == "gp3"
    assert source["tags"]["opsctl:ami"] == "gpu-worker", "the tag Terraform's data.aws_ami filters on"
    gpu_ami = blocks(BATCH, "data")["aws_ami.gpu_worker"]
    assert gpu_ami["filter"][0] == {"name": "tag:opsctl:ami", "values": ["gpu-worker"]}
    build = template["build"][0]
    scripts = [p["shell"]["script"] for p in build["provisioner"]]
    assert [Path(s).name for s in scripts] == ["ecs-gpu-config.sh", "check-gpu.sh", "prepull-image.sh"]
    for script in scripts:
        path = ROOT / "images" / "ami" / script.replace("${path.root}/", "")
        text = path.read_text()
        assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "manifest" in build["post-processor"][0]
    config = (ROOT / "images" / "ami" / "scripts" / "ecs-gpu-config.sh").read_text()
    assert "ECS_ENABLE_GPU_SUPPORT=true" in config
    check = (ROOT / "images" / "ami" / "scripts" / "check-gpu.sh").read_text()
    assert "nvidia-smi" in check and "clinfo" in check


# --- `opsctl infra` with a stand-in terraform -----------------------------------------------------

OUTPUTS = {
    "region": "eu-west-1",
    "bucket": "opsctl-runs-20261128",
    "cpu_queue": "arn:aws:batch:eu-west-1:123456789012:job-queue/opsctl-cpu",
    "gpu_queue": "arn:aws:batch:eu-west-1:123456789012:job-queue/opsctl-gpu",
    "cpu_job_definition": "arn:aws:batch:eu-west-1:123456789012:job-definition/opsctl-cpu:3",
    "gpu_job_definition": "arn:aws:batch:eu-west-1:123456789012:job-definition/opsctl-gpu:3",
    "cpu_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/opsctl/cpu:abc123",
    "gpu_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/opsctl/gpu:abc123",
    "log_group": "/aws/batch/opsctl",
    "instance_profile": "opsctl-ecs-instance-2026",
}

STAND_IN = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["TF_RECORD"], "a") as f:
    f.write(json.dumps({{"argv": args, "cwd": os.getcwd()}}) + "\\n")
if args[:2] == ["version", "-json"]:
    print(json.dumps({{"terraform_version": os.environ.get("TF_VERSION", "1.10.4")}}))
elif args[:2] == ["output", "-json"]:
    print({outputs})
elif args and args[0] == os.environ.get("TF_FAIL"):
    print("Error: creating Batch compute environment: AccessDenied", file=sys.stderr)
    sys.exit(1)
elif args and args[0] == "plan":
    print("Plan: 30 to add, 0 to change, 0 to destroy.")
    sys.exit(2)
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> dict[str, Any]:
    """A `terraform` on PATH that records its argv and answers like Terraform 1.10."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    terraform = bin_dir / "terraform"
    wrapped = {k: {"sensitive": False, "type": "string", "value": v} for k, v in OUTPUTS.items()}
    terraform.write_text(STAND_IN.format(python=sys.executable, outputs=repr(json.dumps(wrapped))))
    terraform.chmod(0o755)
    module = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, module, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    record = tmp_path / "argv.jsonl"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TF_RECORD": str(record),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    return {"env": env, "module": module, "record": record, "tmp": tmp_path}


def infra(stand_in: dict[str, Any], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPSCTL, "infra", *args, "--dir", str(stand_in["module"])],
        env={**stand_in["env"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=stand_in["tmp"],
    )


def calls(stand_in: dict[str, Any]) -> list[list[str]]:
    """The argv of every terraform call but the version probe."""
    lines = stand_in["record"].read_text().splitlines()
    records = [json.loads(line) for line in lines if '"version"' not in line]
    assert {r["cwd"] for r in records} == {str(stand_in["module"])}, "working_dir, never a directory argument"
    return [r["argv"] for r in records]


def test_apply_initialises_applies_and_writes_the_infra_file(stand_in: dict[str, Any]) -> None:
    result = infra(stand_in, "apply", "--yes", "--infra", "out/infra.json")
    assert result.returncode == 0, result.stderr
    assert calls(stand_in) == [
        ["init", "-no-color", "-input=false", "-reconfigure", "-backend=true"],
        ["apply", "-no-color", "-input=false", "-auto-approve=true"],
        ["output", "-json"],
    ]
    written = stand_in["tmp"] / "out" / "infra.json"
    assert "infra outputs written to out/infra.json" in result.stdout
    assert load_outputs(written).bucket == "opsctl-runs-20261128"


def test_apply_without_yes_lets_terraform_ask(stand_in: dict[str, Any]) -> None:
    assert infra(stand_in, "apply", "--infra", "infra.json").returncode == 0
    assert calls(stand_in)[1] == ["apply", "-no-color", "-input=true", "-auto-approve=false"]


def test_plan_destroy_output_and_var_files(stand_in: dict[str, Any]) -> None:
    var_file = stand_in["tmp"] / "prod.tfvars"
    var_file.write_text('name = "prod"\n')
    assert infra(stand_in, "plan", "--var-file", str(var_file)).returncode == 0, (
        "exit 2 = changes, not failure"
    )
    assert infra(stand_in, "destroy", "--yes").returncode == 0
    output = infra(stand_in, "output", "--infra", "o.json")
    assert output.returncode == 0 and output.stdout.strip() == "o.json"
    assert calls(stand_in) == [
        ["init", "-no-color", "-input=false", "-reconfigure", "-backend=true"],
        ["plan", f"-var-file={var_file}", "-no-color", "-input=false", "-detailed-exitcode"],
        ["init", "-no-color", "-input=false", "-reconfigure", "-backend=true"],
        ["destroy", "-no-color", "-input=false", "-auto-approve"],
        ["init", "-no-color", "-input=false", "-reconfigure", "-backend=true"],
        ["output", "-json"],
    ]


def test_s3_backend_with_lock_file(stand_in: dict[str, Any]) -> None:
    config = stand_in["tmp"] / "backend.hcl"
    config.write_text('bucket = "my-state"\nkey = "opsctl.tfstate"\nregion = "eu-west-1"\n')
    assert infra(stand_in, "plan", "--backend-config", str(config)).returncode == 0
    assert calls(stand_in)[0] == [
        "init",
        "-no-color",
        "-input=false",
        f"-backend-config={config}",
        "-reconfigure",
        "-backend=true",
    ]
    backend = parse(stand_in["module"] / "s3_backend.tf")["terraform"][0]["backend"][0]["s3"]
    assert backend["use_lockfile"] is True


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_missing_terraform_is_bad_input(stand_in: dict[str, Any]) -> None:
    result = infra(stand_in, "apply", PATH=str(stand_in["tmp"] / "nothing-here"))
    assert result.returncode == 2
    assert "terraform not found on PATH: install Terraform >= 1.10" in one_line(result)


def test_old_terraform_is_bad_input(stand_in: dict[str, Any]) -> None:
    result = infra(stand_in, "plan", TF_VERSION="1.9.8")
    assert result.returncode == 2 and "is Terraform 1.9.8; opsctl needs >= 1.10" in one_line(result)


def test_missing_credentials_is_bad_input(stand_in: dict[str, Any]) -> None:
    env = {
        k: v
        for k, v in stand_in["env"].items()
        if not k.startswith("AWS_ACCESS") and k != "AWS_SECRET_ACCESS_KEY"
    }
    result = subprocess.run(
        [OPSCTL, "infra", "apply", "--dir", str(stand_in["module"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=stand_in["tmp"],
    )
    assert result.returncode == 2 and "no AWS credentials found" in result.stderr.splitlines()[-1]


def test_failed_apply_is_exit_1_and_writes_nothing(stand_in: dict[str, Any]) -> None:
    result = infra(stand_in, "apply", "--yes", "--infra", "infra.json", TF_FAIL="apply")
    assert result.returncode == 1
    assert "AccessDenied" in result.stderr, "terraform's own output is streamed"
    assert (
        result.stderr.splitlines()[-1] == "opsctl: terraform apply failed (exit 1); its output above says why"
    )
    assert not (stand_in["tmp"] / "infra.json").exists()


def test_make_ami_without_packer_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "images" / "ami" / "build.py")],
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == "make ami: packer not found on PATH: install Packer >= 1.10 and run it again\n"


# --- `opsctl infra push` with a stand-in docker ---------------------------------------------------

DOCKER = """#!{python}
import json, os, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if "--password-stdin" in args else None
with open(os.environ["DOCKER_RECORD"], "a") as f:
    f.write(json.dumps({{"argv": args, "stdin": stdin}}) + "\\n")
sys.exit(int(os.environ.get("DOCKER_EXIT_" + args[0].upper(), "0")))
"""


@pytest.fixture
def docker(stand_in: dict[str, Any], moto_endpoint: str) -> dict[str, Any]:
    """A `docker` on PATH that records its argv (and the password given on stdin); ECR on moto."""
    script = stand_in["tmp"] / "bin" / "docker"
    script.write_text(DOCKER.format(python=sys.executable))
    script.chmod(0o755)
    record = stand_in["tmp"] / "docker.jsonl"
    (stand_in["tmp"] / "infra.json").write_text(
        json.dumps({k: {"sensitive": False, "type": "string", "value": v} for k, v in OUTPUTS.items()})
    )
    env = {**stand_in["env"], "DOCKER_RECORD": str(record), "AWS_ENDPOINT_URL": moto_endpoint}
    return {**stand_in, "env": env, "docker_record": record}


def test_push_builds_logs_in_pushes_and_applies_with_the_tag(docker: dict[str, Any]) -> None:
    result = infra(
        docker, "push", "--tag", "0123abcd4567", "--yes", "--infra", str(docker["tmp"] / "infra.json")
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in docker["docker_record"].read_text().splitlines()]
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    [info, login, *builds] = records
    assert info["argv"] == ["info"]
    assert login["argv"][:4] == ["login", "--username", "AWS", "--password-stdin"]
    assert login["argv"][4].endswith(registry) and login["stdin"], "the password goes on stdin"
    assert login["stdin"] not in result.stdout + result.stderr, "and is never printed"
    root = docker["module"].parent
    assert [r["argv"] for r in builds] == [
        [
            "build",
            "-f",
            str(root / "images/cpu/Dockerfile"),
            "-t",
            f"{registry}/opsctl/cpu:0123abcd4567",
            str(root),
        ],
        ["push", f"{registry}/opsctl/cpu:0123abcd4567"],
        [
            "build",
            "-f",
            str(root / "images/gpu/Dockerfile"),
            "-t",
            f"{registry}/opsctl/gpu:0123abcd4567",
            str(root),
        ],
        ["push", f"{registry}/opsctl/gpu:0123abcd4567"],
    ]
    assert json.loads((docker["module"] / "image-tag.auto.tfvars.json").read_text()) == {
        "image_tag": "0123abcd4567"
    }
    assert [c[0] for c in calls(docker)] == ["init", "apply", "output"]


def test_push_without_docker_or_engine_is_one_line(docker: dict[str, Any]) -> None:
    infra_file = str(docker["tmp"] / "infra.json")
    down = infra(docker, "push", "--tag", "t1", "--infra", infra_file, DOCKER_EXIT_INFO="1")
    assert down.returncode == 2 and down.stderr.strip().splitlines() == [
        "opsctl: no Docker engine answers (`docker info` failed): start Docker and run `make push` again"
    ]
    (docker["tmp"] / "bin" / "docker").unlink()
    gone = infra(
        docker, "push", "--tag", "t1", "--infra", infra_file, PATH=f"{docker['tmp'] / 'bin'}:/usr/bin:/bin"
    )
    assert gone.returncode == 2 and "docker not found on PATH" in gone.stderr


def test_the_default_tag_is_the_commit_of_a_clean_tree(tmp_path: Path) -> None:
    from opsctl.images import commit_tag
    from opsctl_contract.errors import BadInput

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f").write_text("a")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert commit_tag(tmp_path) == head
    (tmp_path / "f").write_text("b")
    with pytest.raises(BadInput, match="uncommitted changes"):
        commit_tag(tmp_path)


def test_readme_names_every_variable_and_output() -> None:
    readme = (ROOT / "README.md").read_text()
    names = [*blocks(TERRAFORM / "variables.tf", "variable"), *blocks(TERRAFORM / "outputs.tf", "output")]
    assert len(names) > 20
    missing = [name for name in names if f"`{name}`" not in readme]
    assert not missing, f"README 'Deploying to AWS' does not name {missing}"
