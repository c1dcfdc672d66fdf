"""The AWS infrastructure: Terraform in terraform/, and its outputs as the backends read them.

`opsctl infra apply|output` runs Terraform and writes `terraform output -json` to
`.opsctl/infra.json`; the AWS backend reads it from there or from `--infra FILE`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsctl_contract.errors import BadInput, OpsctlError, brief
from opsctl_contract.files import INFRA_LIMIT, read_text

DEFAULT_INFRA_FILE = Path(".opsctl/infra.json")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
KEYS = (
    "region",
    "bucket",
    "cpu_queue",
    "gpu_queue",
    "cpu_job_definition",
    "gpu_job_definition",
    "cpu_image",
    "gpu_image",
    "log_group",
)


@dataclass(frozen=True)
class InfraOutputs:
    region: str
    bucket: str
    cpu_queue: str
    gpu_queue: str
    cpu_job_definition: str
    gpu_job_definition: str
    cpu_image: str
    gpu_image: str
    log_group: str
    source: str  # the file they came from, for messages

    def queue(self, queue: str) -> str:
        return self.gpu_queue if queue == "gpu" else self.cpu_queue

    def job_definition(self, queue: str) -> str:
        return self.gpu_job_definition if queue == "gpu" else self.cpu_job_definition

    def image(self, queue: str) -> str:
        return self.gpu_image if queue == "gpu" else self.cpu_image


def load_outputs(path: Path | None = None) -> InfraOutputs:
    """Read the infra file; every missing or malformed piece is `BadInput` naming it."""
    path = path or DEFAULT_INFRA_FILE
    if not path.exists() and not path.is_symlink():
        raise BadInput(
            f"{path}: infra outputs file not found "
            "(write it with `opsctl infra output`, or pass --infra FILE)"
        )
    text = read_text(path, INFRA_LIMIT, "infra outputs file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}:{e.lineno}: not JSON ({e.msg}); expected `terraform output -json`") from None
    except RecursionError:
        raise BadInput(f"{path}: nested too deeply to be `terraform output -json`") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object as written by `terraform output -json`")
    values = {}
    for key in KEYS:
        if key not in data:
            raise BadInput(f"{path}: output '{key}' is missing (needed: {', '.join(KEYS)})")
        entry = data[key]
        # `terraform output -json` wraps each value: {"sensitive": false, "type": "string", "value": ...}
        value = entry.get("value") if isinstance(entry, dict) else entry
        if not isinstance(value, str) or not value:
            raise BadInput(f"{path}: output '{key}' = {brief(value)} must be a non-empty string")
        values[key] = value
    if not REGION.fullmatch(values["region"]):
        raise BadInput(f"{path}: output 'region' = {brief(values['region'])} is not an AWS region name")
    return InfraOutputs(**values, source=str(path))


# --- Terraform ----------------------------------------------------------------------------------

MIN_TERRAFORM = (1, 10)  # the S3 backend's use_lockfile
S3_BACKEND_FILE = "s3_backend.tf"
S3_BACKEND = """\
# Written by `opsctl infra ... --backend-config FILE`: state in S3, locked by a lock file next to
# it (Terraform >= 1.10). Bucket, key and region come from the -backend-config file.
terraform {
  backend "s3" {
    use_lockfile = true
    encrypt      = true
  }
}
"""


class Terraform:
    """`terraform` through python-terraform, in one root module, with output streamed to the user.

    python-terraform 0.10.1 predates Terraform 0.15: it gets `working_dir` and never a
    directory argument, `-force` is replaced by `-auto-approve`, and its habit of passing an
    empty `-var-file` is turned off with `var=None` (tests check the exact argv).
    """

    def __init__(self, directory: Path, var_files: list[Path] | None = None) -> None:
        if not (directory / "main.tf").is_file():
            raise BadInput(f"{directory}: no Terraform root module here (expected main.tf); pass --dir")
        self.directory = directory
        self.binary = _terraform_binary()
        from python_terraform import Terraform as _Terraform

        # It logs a warning with Terraform's (here uncaptured) stderr on every failure; ours says
        # it once, after Terraform's own output.
        logging.getLogger("python_terraform").setLevel(logging.CRITICAL)

        for f in var_files or []:
            if not f.is_file():
                raise BadInput(f"--var-file {f}: file not found")
        # Variables go to plan, apply and destroy only: `init` takes no -var-file.
        self.var_file = [str(f.resolve()) for f in var_files or []] or None
        self.tf = _Terraform(working_dir=str(directory), terraform_bin_path=self.binary)

    def _check(self, verb: str, code: int, ok: tuple[int, ...] = (0,)) -> None:
        if code not in ok:
            raise OpsctlError(f"terraform {verb} failed (exit {code}); its output above says why")

    def init(self, backend_config: Path | None = None) -> None:
        """`terraform init` when the module was never initialised or a backend is given."""
        if backend_config is not None:
            if not backend_config.is_file():
                raise BadInput(f"--backend-config {backend_config}: file not found")
            (self.directory / S3_BACKEND_FILE).write_text(S3_BACKEND)
        elif (self.directory / ".terraform").is_dir():
            return
        code, _, _ = self.tf.init(
            capture_output=False,
            var=None,
            backend_config=str(backend_config.resolve()) if backend_config else None,
        )
        self._check("init", code)

    def plan(self) -> bool:
        """True if there are changes (exit code 2 of -detailed-exitcode)."""
        _require_credentials()
        code, _, _ = self.tf.plan(capture_output=False, var=None, var_file=self.var_file)
        self._check("plan", code, ok=(0, 2))
        return bool(code == 2)

    def apply(self, *, yes: bool) -> None:
        """Without `yes`, Terraform shows the plan and asks before changing anything."""
        _require_credentials()
        code, _, _ = self.tf.apply(
            capture_output=False, var=None, var_file=self.var_file, skip_plan=yes, input=not yes
        )
        self._check("apply", code)

    def destroy(self, *, yes: bool) -> None:
        _require_credentials()
        from python_terraform import IsFlagged

        code, _, _ = self.tf.destroy(
            capture_output=False,
            var=None,
            var_file=self.var_file,
            force=None,
            auto_approve=IsFlagged if yes else None,
            input=not yes,
        )
        self._check("destroy", code)

    def outputs(self) -> dict[str, Any]:
        outputs = self.tf.output()
        if not isinstance(outputs, dict) or not outputs:
            raise OpsctlError("terraform output -json gave no outputs: run `opsctl infra apply` first")
        return outputs


def write_outputs(outputs: dict[str, Any], path: Path | None = None) -> Path:
    """Save `terraform output -json` as the infra file, after checking it has every key."""
    path = path or DEFAULT_INFRA_FILE
    missing = [key for key in KEYS if key not in outputs]
    if missing:
        raise OpsctlError(f"terraform outputs lack {', '.join(missing)}: is --dir the opsctl module?")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outputs, indent=2) + "\n")
    return path


def _terraform_binary() -> str:
    binary = shutil.which("terraform")
    if binary is None:
        raise BadInput(
            "terraform not found on PATH: install Terraform >= 1.10 "
            "(developer.hashicorp.com/terraform/install) and run the command again"
        )
    try:
        raw = subprocess.run([binary, "version", "-json"], capture_output=True, text=True, timeout=60).stdout
        version = str(json.loads(raw)["terraform_version"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        raise BadInput(f"{binary}: `terraform version -json` did not answer; is it Terraform?") from None
    numbers = tuple(int(part) for part in version.split("-")[0].split(".")[:2] if part.isdigit())
    if numbers < MIN_TERRAFORM:
        raise BadInput(f"{binary} is Terraform {version}; opsctl needs >= 1.10 (S3 state lock files)")
    return binary


def _require_credentials() -> None:
    """Fail before Terraform does, with what to do: its own error is a page of provider output."""
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise BadInput(
            "no AWS credentials found: set AWS_PROFILE (after `aws sso login` or `aws configure`), "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
