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
from tests.helpers import OPSCTL, one_line

TERRAFORM = ROOT / "terraform"
MODULES = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
HCL_FILES = sorted(TERRAFORM.rglob("*.tf")) + sorted((ROOT / "images").rglob("*.pkr.hcl"))


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
    from opsctl.backends.aws.batch import RETRY_RULES

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


# Settings AWS keeps once per account and region, not per resource: a stack that managed one
# would change it for every other user of the account (an ENHANCED Inspector scan downgraded to
# BASIC, say), two stacks would fight over it, and a destroy would reset it.
ACCOUNT_WIDE = {
    "aws_ebs_default_kms_key",
    "aws_ebs_encryption_by_default",
    "aws_ec2_image_block_public_access",
    "aws_ec2_serial_console_access",
    "aws_ecr_account_setting",
    "aws_ecr_registry_policy",
    "aws_ecr_registry_scanning_configuration",
    "aws_ecr_replication_configuration",
    "aws_iam_account_alias",
    "aws_iam_account_password_policy",
    "aws_inspector2_enabler",
    "aws_s3_account_public_access_block",
}


def test_the_stack_sets_no_account_wide_setting() -> None:
    kinds = {
        name.split(".")[0]
        for path in TERRAFORM.rglob("*.tf")
        if ".terraform" not in path.parts
        for name in blocks(path, "resource")
    }
    assert "aws_ecr_repository" in kinds, "the modules were read"
    assert not kinds & ACCOUNT_WIDE
    # Scanning stays per repository, where it is the stack's own.
    repository = blocks(TERRAFORM / "modules" / "ecr" / "main.tf", "resource")["aws_ecr_repository.image"]
    assert repository["image_scanning_configuration"][0]["scan_on_push"] is True
    # And the deploy role may not change one either: no registry-level ECR action.
    oidc = blocks(TERRAFORM / "modules" / "github_oidc" / "main.tf", "data")["aws_iam_policy_document.deploy"]
    actions = [a for statement in oidc["statement"] for a in statement["actions"]]
    assert actions and not [a for a in actions if "Registry" in a or a.startswith("ecr:PutAccount")]


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
    assert [Path(s).name for s in scripts] == [
        "ecs-gpu-config.sh",
        "check-gpu.sh",
        "prepull-image.sh",
        "clear-ecs-state.sh",
    ]
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
# A stand-in for terraform: records its argv (and the content of each -var-file it is given), and
# answers like Terraform 1.10. Its plan ranks variables as Terraform does: the declared defaults
# (TF_DEFAULTS), then each -var-file in order (JSON ones here); `show -json` describes that plan.
import json, os, sys
args = sys.argv[1:]
var_files = [a.split("=", 1)[1] for a in args if a.startswith("-var-file=")]
with open(os.environ["TF_RECORD"], "a") as f:
    record = {{"argv": args, "cwd": os.getcwd(), "var_files": [json.load(open(v)) for v in var_files]}}
    f.write(json.dumps(record) + "\\n")
defaults = json.loads(os.environ["TF_DEFAULTS"])
if args[:2] == ["version", "-json"]:
    print(json.dumps({{"terraform_version": os.environ.get("TF_VERSION", "1.10.4")}}))
elif args[:2] == ["output", "-json"]:
    print({outputs})
elif args and args[0] == os.environ.get("TF_FAIL"):
    print("Error: creating Batch compute environment: AccessDenied", file=sys.stderr)
    sys.exit(1)
elif args and args[0] == "plan":
    variables = dict(defaults)
    for v in var_files:
        variables.update(json.load(open(v)))
    for out in [a.split("=", 1)[1] for a in args if a.startswith("-out=")]:
        with open(out, "w") as f:
            json.dump(variables, f)
    print("Plan: 30 to add, 0 to change, 0 to destroy.")
    sys.exit(int(os.environ.get("TF_PLAN_EXIT", "2")))
elif args and args[0] == "show":
    plan = {{
        "format_version": "1.2",
        "variables": {{k: {{"value": v}} for k, v in json.load(open(args[-1])).items()}},
        "configuration": {{
            "root_module": {{"variables": {{k: {{"default": v}} for k, v in defaults.items()}}}}
        }},
        "resource_changes": json.loads(os.environ.get("TF_CHANGES", "[]")),
    }}
    print(json.dumps(plan))
elif args and args[0] == "apply" and os.environ.get("TF_MEANWHILE"):
    # Another apply stores its variables while this one runs.
    import boto3
    bucket, key = os.environ["TF_MEANWHILE"].split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b'{{"name": "theirs"}}')
"""

# The stack's declared defaults (terraform/variables.tf), as the stand-in's plans use them.
DEFAULTS = {
    name: body.get("default") for name, body in blocks(TERRAFORM / "variables.tf", "variable").items()
}


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
        **{k: v for k, v in os.environ.items() if not k.startswith("TF_VAR_")},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TF_RECORD": str(record),
        "TF_DEFAULTS": json.dumps(DEFAULTS),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    return {"env": env, "module": module, "record": record, "tmp": tmp_path}


def infra(
    stand_in: dict[str, Any], *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPSCTL, "infra", *args, "--dir", str(stand_in["module"])],
        env={**stand_in["env"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=stand_in["tmp"],
        input=stdin or "",
    )


def recorded(stand_in: dict[str, Any]) -> list[dict[str, Any]]:
    """Every terraform call but the version probe: argv, working directory, -var-file contents."""
    if not stand_in["record"].exists():
        return []
    lines = stand_in["record"].read_text().splitlines()
    found = [json.loads(line) for line in lines if '"version", "-json"' not in line]
    assert {r["cwd"] for r in found} <= {str(stand_in["module"])}, "working_dir, never a directory argument"
    return found


def calls(stand_in: dict[str, Any]) -> list[list[str]]:
    """The argv of every terraform call but the version probe."""
    return [r["argv"] for r in recorded(stand_in)]


INIT = ["init", "-no-color", "-input=false", "-reconfigure", "-backend=true"]


def work(stand_in: dict[str, Any], name: str) -> str:
    """A file opsctl hands Terraform, in the module's .terraform/opsctl/."""
    return str(stand_in["module"] / ".terraform" / "opsctl" / name)


def planned(stand_in: dict[str, Any], *var_files: str) -> list[str]:
    """The argv of `terraform plan` saving its plan, with these -var-files in this order."""
    return [
        "plan",
        *(f"-var-file={f}" for f in var_files),
        "-no-color",
        "-input=false",
        f"-out={work(stand_in, 'plan.tfplan')}",
        "-detailed-exitcode",
    ]


def applied_plan(stand_in: dict[str, Any]) -> list[list[str]]:
    """`show -json` of the saved plan, then `apply` of exactly that plan: no variables with it."""
    plan = work(stand_in, "plan.tfplan")
    return [
        ["show", "-json", "-no-color", plan],
        ["apply", "-no-color", "-input=false", "-auto-approve=true", plan],
    ]


def test_apply_initialises_plans_applies_that_plan_and_writes_the_infra_file(
    stand_in: dict[str, Any],
) -> None:
    result = infra(stand_in, "apply", "--yes", "--infra", "out/infra.json")
    assert result.returncode == 0, result.stderr
    assert calls(stand_in) == [INIT, planned(stand_in), *applied_plan(stand_in), ["output", "-json"]]
    written = stand_in["tmp"] / "out" / "infra.json"
    assert "infra outputs written to out/infra.json" in result.stdout
    assert load_outputs(written).bucket == "opsctl-runs-20261128"
    # A local state's variables are stored beside it: nothing was set but the defaults, so only
    # the image tag (always stored) is there; the files handed to Terraform are gone.
    stored = stand_in["module"] / "terraform.tfstate.tfvars.json"
    assert f"stored variables: none yet at {stored}" in result.stdout
    assert json.loads(stored.read_text()) == {"image_tag": "latest"}
    assert not list((stand_in["module"] / ".terraform" / "opsctl").iterdir())


def test_apply_without_yes_asks_before_applying_the_saved_plan(stand_in: dict[str, Any]) -> None:
    refused = infra(stand_in, "apply", "--infra", "infra.json", stdin="no\n")
    assert one_line(refused, 1) == "opsctl: apply cancelled: nothing was changed"
    assert "Apply the plan above? Only 'yes' applies it" in refused.stdout
    assert [c[0] for c in calls(stand_in)] == ["init", "plan", "show"], "nothing applied"
    assert not (stand_in["module"] / "terraform.tfstate.tfvars.json").exists(), "nothing stored"
    stand_in["record"].unlink()
    assert infra(stand_in, "apply", "--infra", "infra.json", stdin="yes\n").returncode == 0
    assert [c[0] for c in calls(stand_in)] == ["plan", "show", "apply", "output"]
    stand_in["record"].unlink()
    # Nothing to change: nothing to ask (and no input to read).
    assert infra(stand_in, "apply", "--infra", "infra.json", TF_PLAN_EXIT="0").returncode == 0
    assert [c[0] for c in calls(stand_in)] == ["plan", "show", "apply", "output"]


def test_plan_destroy_output_and_var_files(stand_in: dict[str, Any]) -> None:
    var_file = stand_in["tmp"] / "prod.tfvars.json"
    var_file.write_text('{"name": "prod"}\n')
    assert infra(stand_in, "plan", "--var-file", str(var_file)).returncode == 0, (
        "exit 2 = changes, not failure"
    )
    assert infra(stand_in, "destroy", "--yes").returncode == 0
    output = infra(stand_in, "output", "--infra", "o.json")
    assert output.returncode == 0 and output.stdout.strip() == "o.json"
    assert calls(stand_in) == [
        INIT,
        planned(stand_in, str(var_file)),
        ["show", "-json", "-no-color", work(stand_in, "plan.tfplan")],
        ["destroy", "-no-color", "-input=false", "-auto-approve"],
        ["output", "-json"],
    ]


def test_the_stored_variables_rank_below_var_files_and_image_tag(stand_in: dict[str, Any]) -> None:
    """Precedence, lowest first: stored, each --var-file in order, --image-tag; what an apply
    stores is what it applied, less the variables at their declared defaults."""
    admin = stand_in["tmp"] / "admin.tfvars.json"
    admin.write_text(json.dumps({"name": "prod", "cpu_max_vcpus": 64, "tags": {}}))
    assert infra(stand_in, "apply", "--yes", "--var-file", str(admin)).returncode == 0
    stored = stand_in["module"] / "terraform.tfstate.tfvars.json"
    first = {"cpu_max_vcpus": 64, "image_tag": "latest", "name": "prod"}
    assert json.loads(stored.read_text()) == first, "tags = {} is its default: not stored"
    stand_in["record"].unlink()

    later = stand_in["tmp"] / "later.tfvars.json"
    later.write_text(json.dumps({"cpu_max_vcpus": 8, "image_tag": "old"}))
    again = infra(stand_in, "apply", "--yes", "--var-file", str(later), "--image-tag", "new1")
    assert again.returncode == 0, again.stderr
    [plan] = [r for r in recorded(stand_in) if r["argv"][0] == "plan"]
    layers = [work(stand_in, "stored.tfvars.json"), str(later), work(stand_in, "image-tag.tfvars.json")]
    assert plan["argv"] == planned(stand_in, *layers)
    assert plan["var_files"] == [first, {"cpu_max_vcpus": 8, "image_tag": "old"}, {"image_tag": "new1"}]
    assert f"stored variables from {stored}" in again.stdout and "  cpu_max_vcpus = 64" in again.stdout
    assert json.loads(stored.read_text()) == {"cpu_max_vcpus": 8, "image_tag": "new1", "name": "prod"}


def test_a_var_file_cannot_change_the_stored_image_tag(stand_in: dict[str, Any]) -> None:
    """What CI or `push` rolled out stays unless --image-tag says otherwise."""
    assert infra(stand_in, "apply", "--yes", "--image-tag", "abc123").returncode == 0
    old = stand_in["tmp"] / "old.tfvars.json"
    old.write_text('{"image_tag": "latest"}')
    stand_in["record"].unlink()
    refused = infra(stand_in, "apply", "--yes", "--var-file", str(old))
    assert refused.returncode == 2
    stored = stand_in["module"] / "terraform.tfstate.tfvars.json"
    assert one_line(refused, 2) == (
        "opsctl: image_tag = 'latest' from a --var-file would change the image tag the stack runs, "
        f"'abc123' (stored in {stored} by the last deploy or push); nothing was applied: pass "
        "--image-tag latest to change it on purpose, or drop image_tag from the --var-file"
    )
    assert [c[0] for c in calls(stand_in)] == ["plan", "show"], "refused before applying"
    assert json.loads(stored.read_text()) == {"image_tag": "abc123"}
    # Without the var file, an apply keeps the stored tag; with --image-tag it changes it.
    assert infra(stand_in, "apply", "--yes").returncode == 0
    assert json.loads(stored.read_text()) == {"image_tag": "abc123"}
    assert infra(stand_in, "apply", "--yes", "--var-file", str(old), "--image-tag", "latest").returncode == 0
    assert json.loads(stored.read_text()) == {"image_tag": "latest"}


GPU_REPLACED = {
    "address": "module.batch.aws_batch_compute_environment.gpu",
    "mode": "managed",
    "type": "aws_batch_compute_environment",
    "change": {"actions": ["create", "delete"], "replace_paths": [["compute_resources", 0, "instance_type"]]},
    "action_reason": "replace_because_cannot_update",
}
QUEUE_DESTROYED = {
    "address": 'module.batch.aws_batch_job_queue.queue["cpu"]',
    "mode": "managed",
    "type": "aws_batch_job_queue",
    "change": {"actions": ["delete"]},
}
DEFINITION_REPLACED = {  # every image roll replaces the job definitions: never refused
    "address": 'module.batch.aws_batch_job_definition.worker["cpu"]',
    "mode": "managed",
    "type": "aws_batch_job_definition",
    "change": {"actions": ["delete", "create"], "replace_paths": [["container_properties"]]},
}


LIFECYCLE_UPDATED = {  # a merge that edits the bucket: not the deploy role's to change
    "address": "module.storage.aws_s3_bucket_lifecycle_configuration.runs",
    "mode": "managed",
    "type": "aws_s3_bucket_lifecycle_configuration",
    "change": {"actions": ["update"]},
}
READ_ONLY = {  # a data source read during the plan: no change
    "address": "data.aws_caller_identity.current",
    "mode": "data",
    "type": "aws_caller_identity",
    "change": {"actions": ["read"]},
}


def test_roll_only_stops_anything_but_the_image_roll(stand_in: dict[str, Any]) -> None:
    changes = json.dumps([DEFINITION_REPLACED, READ_ONLY, LIFECYCLE_UPDATED])
    refused = infra(stand_in, "apply", "--yes", "--roll-only", TF_CHANGES=changes)
    assert one_line(refused, 2) == (
        "opsctl: --roll-only: the plan says module.storage.aws_s3_bucket_lifecycle_configuration.runs "
        "will be updated in-place; a deploy only rolls the job definitions to a new image, so nothing "
        "was applied: an administrator applies this change, without --roll-only"
    )
    assert [c[0] for c in calls(stand_in)] == ["init", "plan", "show"]


def test_roll_only_stops_a_replacement_naming_what_it_would_lose_first(stand_in: dict[str, Any]) -> None:
    changes = json.dumps([LIFECYCLE_UPDATED, DEFINITION_REPLACED, GPU_REPLACED, QUEUE_DESTROYED])
    refused = infra(stand_in, "apply", "--yes", "--roll-only", TF_CHANGES=changes)
    assert refused.returncode == 2
    assert one_line(refused, 2) == (
        "opsctl: --roll-only: the plan says module.batch.aws_batch_compute_environment.gpu must "
        "be replaced (because of compute_resources[0].instance_type), which would end the jobs "
        'running on its instances; module.batch.aws_batch_job_queue.queue["cpu"] will be destroyed, '
        "which would cancel the jobs waiting in it; "
        "module.storage.aws_s3_bucket_lifecycle_configuration.runs will be updated in-place; "
        "a deploy only rolls the job definitions to a new "
        "image, so nothing was applied: an administrator applies this change, without --roll-only"
    )
    assert [c[0] for c in calls(stand_in)] == ["init", "plan", "show"]
    # `plan` gives the same verdict; an image roll alone passes; without the flag, it applies.
    assert infra(stand_in, "plan", "--roll-only", TF_CHANGES=changes).returncode == 2
    rolled = infra(stand_in, "apply", "--yes", "--roll-only", TF_CHANGES=json.dumps([DEFINITION_REPLACED]))
    assert rolled.returncode == 0, rolled.stderr
    assert infra(stand_in, "apply", "--yes", TF_CHANGES=changes).returncode == 0


def test_bad_image_tag_is_one_line(stand_in: dict[str, Any]) -> None:
    result = infra(stand_in, "apply", "--yes", "--image-tag", "v1 beta")
    assert one_line(result, 2) == (
        "opsctl: --image-tag 'v1 beta': an image tag is 1..128 letters, digits, '_', '.' and '-', "
        "not starting with '.' or '-'"
    )
    assert calls(stand_in) == []


def test_missing_terraform_is_bad_input(stand_in: dict[str, Any]) -> None:
    result = infra(stand_in, "apply", PATH=str(stand_in["tmp"] / "nothing-here"))
    assert result.returncode == 2
    assert "terraform not found on PATH: install Terraform >= 1.10" in one_line(result, 2)


def test_old_terraform_is_bad_input(stand_in: dict[str, Any]) -> None:
    result = infra(stand_in, "plan", TF_VERSION="1.9.8")
    assert "is Terraform 1.9.8; opsctl needs >= 1.10" in one_line(result, 2)


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
    assert not (stand_in["module"] / "terraform.tfstate.tfvars.json").exists(), (
        "a failed apply stores nothing"
    )


# --- the S3 state: stored variables next to it (moto) ---------------------------------------------


@pytest.fixture
def s3_state(stand_in: dict[str, Any], moto_endpoint: str, bucket: str) -> dict[str, Any]:
    """The stand-in with S3 on moto, a state bucket and a --backend-config file naming it."""
    config = stand_in["tmp"] / "backend.hcl"
    config.write_text(
        f'bucket = "{bucket}"  # the state bucket\nkey    = "prod/terraform.tfstate"\n'
        'region = "us-east-1"\nendpoints = {\n  s3 = "http://127.0.0.1"\n  key = "not-this"\n}\n'
    )
    env = {**stand_in["env"], "AWS_ENDPOINT_URL": moto_endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    return {**stand_in, "env": env, "bucket": bucket, "config": config}


def s3_object(bucket: str, key: str) -> Any:
    import boto3

    return json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def test_s3_backend_with_lock_file(s3_state: dict[str, Any]) -> None:
    config = s3_state["config"]
    result = infra(s3_state, "plan", "--backend-config", str(config))
    assert result.returncode == 0, result.stderr
    assert calls(s3_state)[0] == [
        "init",
        "-no-color",
        "-input=false",
        f"-backend-config={config}",
        "-reconfigure",
        "-backend=true",
    ]
    backend = parse(s3_state["module"] / "s3_backend.tf")["terraform"][0]["backend"][0]["s3"]
    assert backend["use_lockfile"] is True
    where = f"s3://{s3_state['bucket']}/prod/terraform.tfstate.tfvars.json"
    assert f"stored variables: none yet at {where}" in result.stdout


def test_stored_variables_live_next_to_the_s3_state(s3_state: dict[str, Any]) -> None:
    """The administrator's apply stores them; the deploy workflow's, with no variables but the
    image tag, applies them and records its tag; both printed as read."""
    bucket, config = s3_state["bucket"], str(s3_state["config"])
    admin = s3_state["tmp"] / "admin.tfvars.json"
    admin.write_text(json.dumps({"name": "prod", "use_custom_gpu_ami": True, "subnet_ids": ["subnet-1"]}))
    first = infra(s3_state, "apply", "--yes", "--var-file", str(admin), "--backend-config", config)
    assert first.returncode == 0, first.stderr
    key = "prod/terraform.tfstate.tfvars.json"
    admins = {"image_tag": "latest", "name": "prod", "subnet_ids": ["subnet-1"], "use_custom_gpu_ami": True}
    assert s3_object(bucket, key) == admins
    assert f"stored variables written to s3://{bucket}/{key}: image_tag, name, subnet_ids" in first.stdout

    s3_state["record"].unlink()
    ci = infra(
        s3_state,
        "apply",
        "--yes",
        "--roll-only",
        "--require-stored-vars",
        "--backend-config",
        config,
        "--image-tag",
        "0123abcd",
        TF_VAR_name="ignored",
    )
    assert ci.returncode == 0, ci.stderr
    [plan] = [r for r in recorded(s3_state) if r["argv"][0] == "plan"]
    assert plan["var_files"] == [admins, {"image_tag": "0123abcd"}]
    assert f"stored variables from s3://{bucket}/{key}" in ci.stdout
    assert "  use_custom_gpu_ami = true" in ci.stdout and '  subnet_ids = ["subnet-1"]' in ci.stdout
    assert "note: TF_VAR_name is not used: the stored name ranks above it" in ci.stdout
    assert s3_object(bucket, key) == {**admins, "image_tag": "0123abcd"}

    # A module initialised with the S3 backend keeps using it, and its stored variables, when a
    # later command is run without --backend-config (Terraform's record of the last init).
    (s3_state["module"] / ".terraform" / "terraform.tfstate").write_text(
        json.dumps(
            {
                "version": 3,
                "backend": {"type": "s3", "config": {"bucket": bucket, "key": "prod/terraform.tfstate"}},
            }
        )
    )
    s3_state["record"].unlink()
    assert infra(s3_state, "plan").returncode == 0
    [plan] = [r for r in recorded(s3_state) if r["argv"][0] == "plan"]
    assert plan["var_files"] == [{**admins, "image_tag": "0123abcd"}]


def test_require_stored_vars_refuses_to_apply_the_defaults(s3_state: dict[str, Any]) -> None:
    result = infra(
        s3_state, "apply", "--yes", "--require-stored-vars", "--backend-config", str(s3_state["config"])
    )
    assert result.returncode == 2
    where = f"s3://{s3_state['bucket']}/prod/terraform.tfstate.tfvars.json"
    assert one_line(result, 2) == (
        f"opsctl: {where}: no stored variables (--require-stored-vars); an administrator's "
        "`opsctl infra apply --var-file FILE --backend-config FILE` stores them, and applying "
        "without them would reset the stack's variables to their defaults"
    )
    assert calls(s3_state) == [], "refused before terraform init"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"name = prod", ":1: not JSON (Expecting value); expected the JSON object of Terraform variables"),
        (b'["name"]', ": a JSON array; expected the JSON object"),
        (b'{"a b": 1}', ": 'a b' is not a Terraform variable name"),
        (b"\xff", ": not UTF-8 text (byte 0)"),
        (
            b'{"x": "' + b"y" * 300_000 + b'"}',
            ": 300009 bytes, over the 262144 bytes a stored variables object",
        ),
    ],
    ids=["not-json", "array", "bad-name", "not-utf8", "too-big"],
)
def test_a_malformed_stored_object_is_one_line(s3_state: dict[str, Any], body: bytes, says: str) -> None:
    import boto3

    key = "prod/terraform.tfstate.tfvars.json"
    boto3.client("s3").put_object(Bucket=s3_state["bucket"], Key=key, Body=body)
    result = infra(s3_state, "plan", "--backend-config", str(s3_state["config"]))
    assert result.returncode == 2
    assert one_line(result, 2).startswith(f"opsctl: s3://{s3_state['bucket']}/{key}{says}")
    assert calls(s3_state) == []


def test_a_missing_state_bucket_or_backend_file_is_one_line(s3_state: dict[str, Any]) -> None:
    config = s3_state["tmp"] / "other.hcl"
    config.write_text('bucket = "no-such-state-bucket"\nkey = "opsctl/terraform.tfstate"\n')
    result = infra(s3_state, "apply", "--yes", "--backend-config", str(config))
    assert one_line(result, 2) == (
        "opsctl: s3://no-such-state-bucket: bucket does not exist "
        f"(the state bucket of --backend-config {config})"
    )
    missing = infra(s3_state, "apply", "--backend-config", "nowhere.hcl")
    assert one_line(missing, 2) == "opsctl: nowhere.hcl: --backend-config file not found"
    config.write_text('bucket = "state"\nregion = "us-east-1"\n')
    keyless = infra(s3_state, "plan", "--backend-config", str(config))
    assert one_line(keyless, 2) == (
        f'opsctl: {config}: no `key = "..."` line; a --backend-config file names the state\'s bucket '
        'and key (and region), one `name = "value"` a line'
    )
    assert calls(s3_state) == []


def test_terraform_and_opsctl_must_read_the_same_backend(s3_state: dict[str, Any]) -> None:
    """If Terraform reads another key from the file than opsctl does, nothing runs past init."""
    dot = s3_state["module"] / ".terraform"
    dot.mkdir()
    (dot / "terraform.tfstate").write_text(
        json.dumps({"backend": {"type": "s3", "config": {"bucket": s3_state["bucket"], "key": "other"}}})
    )
    result = infra(s3_state, "plan", "--backend-config", str(s3_state["config"]))
    assert result.returncode == 2
    assert "Terraform reads bucket" in one_line(result, 2) and "key 'other'" in result.stderr
    assert [c[0] for c in calls(s3_state)] == ["init"]


def test_an_apply_does_not_overwrite_what_another_stored_meanwhile(s3_state: dict[str, Any]) -> None:
    bucket, key = s3_state["bucket"], "prod/terraform.tfstate.tfvars.json"
    config = str(s3_state["config"])
    assert infra(s3_state, "apply", "--yes", "--backend-config", config).returncode == 0
    result = infra(
        s3_state,
        "apply",
        "--yes",
        "--backend-config",
        config,
        "--image-tag",
        "t2",
        TF_MEANWHILE=f"{bucket}/{key}",
    )
    assert result.returncode == 1
    assert one_line(result, 1) == (
        "opsctl: the apply succeeded, but the variables it applied were not stored: "
        f"s3://{bucket}/{key}: another apply stored its variables while this one ran; see what "
        "differs with `opsctl infra plan` (it reads the other's) and apply again"
    )
    assert s3_object(bucket, key) == {"name": "theirs"}


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
    # The tag is the apply's --image-tag: stored with the variables, next to the (here local) state.
    assert json.loads((docker["module"] / "terraform.tfstate.tfvars.json").read_text()) == {
        "image_tag": "0123abcd4567"
    }
    assert not (docker["module"] / "image-tag.auto.tfvars.json").exists()
    [plan] = [r for r in recorded(docker) if r["argv"][0] == "plan"]
    assert plan["var_files"] == [{"image_tag": "0123abcd4567"}]
    assert [c[0] for c in calls(docker)] == ["init", "plan", "show", "apply", "output"]


def test_push_without_docker_or_engine_is_one_line(docker: dict[str, Any]) -> None:
    infra_file = str(docker["tmp"] / "infra.json")
    down = infra(docker, "push", "--tag", "t1", "--infra", infra_file, DOCKER_EXIT_INFO="1")
    assert down.returncode == 2 and down.stderr.strip().splitlines() == [
        "opsctl: no Docker engine answers (`docker info` failed): start Docker and run `make push` again"
    ]
    (docker["tmp"] / "bin" / "docker").unlink()
    # Only the stand-ins' folder: a machine with Docker has one in /usr/bin or /usr/local/bin.
    gone = infra(docker, "push", "--tag", "t1", "--infra", infra_file, PATH=str(docker["tmp"] / "bin"))
    assert gone.returncode == 2 and "docker not found on PATH" in gone.stderr


def test_the_default_tag_is_the_commit_of_a_clean_tree(tmp_path: Path) -> None:
    """Needs git, as `opsctl infra push` does for its default tag; skipped without it."""
    from opsctl.images import commit_tag
    from opsctl_contract.errors import BadInput

    if shutil.which("git") is None:
        pytest.skip("no git on PATH: the default image tag is the commit git names")
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
