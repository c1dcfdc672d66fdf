"""Terraform as opsctl drives it: the `terraform` binary (>= 1.10) through python-terraform, the
S3 state backend it is initialised with, and a saved plan as `terraform show -json` describes it.

Apart from opsctl/infra.py, which every AWS run command loads, and from opsctl/stack.py, which
decides what each `opsctl infra` command hands Terraform: this module only speaks Terraform's
command line and formats. python-terraform is imported when a command runs it, not before.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.files import INFRA_LIMIT, read_text

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

STORED_SUFFIX = ".tfvars.json"  # the stored variables: <state>.tfvars.json, next to the state
# The tag the job definitions run is stored even at its default ("latest"): a later apply needs
# it to tell a roll-back from what the stack runs.
ALWAYS_STORED = frozenset({"image_tag"})
# What a deploy does (--roll-only): register a new revision of each job definition, nothing
# else, since the deploy role may do nothing else (terraform/modules/github_oidc). Any other
# change is an administrator's apply; for these, the plan's line also says what it would lose.
ROLLED = "aws_batch_job_definition"
LOSSES = {
    "aws_batch_compute_environment": "which would end the jobs running on its instances",
    "aws_batch_job_queue": "which would cancel the jobs waiting in it",
}
# Terraform's plan actions, in the words of its plan output.
_SAID = {
    ("create",): "will be created",
    ("update",): "will be updated in-place",
    ("delete",): "will be destroyed",
    ("delete", "create"): "must be replaced",
    ("create", "delete"): "must be replaced",
}


# --- where the state lives ------------------------------------------------------------------------


@dataclass(frozen=True)
class StateBackend:
    """The S3 state: its bucket and key, and what named them (for messages). (Its region is
    Terraform's business: S3 answers a request in another region with a redirect boto3 follows.)"""

    bucket: str
    key: str
    source: str

    @property
    def stored_key(self) -> str:
        """The stored variables' key: next to the state, in the same bucket."""
        return self.key + STORED_SUFFIX


# A backend config file is flat HCL: `name = "value"` lines, and maybe a map or block opsctl does
# not need (`endpoints = { s3 = "..." }`), whose lines are skipped. Terraform's own reading of
# the file is compared with this one after `init` (`Stack._check_backend`).
_ASSIGNMENT = re.compile(r'\s*([A-Za-z_][\w-]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:(?:#|//).*)?')
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def read_backend_config(path: Path) -> StateBackend:
    """bucket and key of a -backend-config file; a missing one is `BadInput`."""
    text = read_text(path, INFRA_LIMIT, "--backend-config file")
    values: dict[str, str] = {}
    depth = 0
    for line in text.splitlines():
        if depth == 0 and (match := _ASSIGNMENT.fullmatch(line)):
            values[match[1]] = match[2].replace('\\"', '"').replace("\\\\", "\\")
            continue
        code = _STRING.sub('""', line).split("#", 1)[0].split("//", 1)[0]
        depth += code.count("{") - code.count("}")
    missing = [f'`{name} = "..."`' for name in ("bucket", "key") if not values.get(name)]
    if missing:
        raise BadInput(
            f"{path}: no {' and no '.join(missing)} line; a --backend-config file names the state's "
            'bucket and key (and region), one `name = "value"` a line'
        )
    return StateBackend(values["bucket"], values["key"], f"--backend-config {path}")


def initialised_backend(directory: Path) -> StateBackend | None:
    """The S3 backend of the module's last `terraform init`, as Terraform recorded it
    (.terraform/terraform.tfstate); None for a local state or a module never initialised.

    A module once initialised with --backend-config keeps its state in S3 when a later command
    is run without it, so its stored variables are read from there too.
    """
    record = directory / ".terraform" / "terraform.tfstate"
    if not record.is_file():
        return None
    try:
        data = json.loads(read_text(record, INFRA_LIMIT, "Terraform backend record"))
    except ValueError:
        raise BadInput(
            f"{record}: not the JSON `terraform init` writes; remove {record.parent} and run again"
        ) from None
    backend = data.get("backend") if isinstance(data, dict) else None
    if not isinstance(backend, dict) or backend.get("type") != "s3":
        return None
    config = backend.get("config") or {}
    bucket, key = config.get("bucket"), config.get("key")
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key):
        raise BadInput(
            f"{record}: an S3 backend without bucket and key; run again with --backend-config FILE"
        )
    return StateBackend(bucket, key, f"{record} (the last init)")


# --- plans ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A resource the plan changes other than by the image roll, in the plan's words."""

    address: str  # module.batch.aws_batch_compute_environment.gpu
    action: str  # "must be replaced", "will be destroyed"..., as Terraform's plan says it
    because: tuple[str, ...]  # the attributes that force a replacement (replace_paths)
    loses: str  # what it would cost running work, where it would ("" otherwise)

    def line(self) -> str:
        why = f" (because of {', '.join(self.because)})" if self.because else ""
        loses = f", {self.loses}" if self.loses else ""
        return f"{self.address} {self.action}{why}{loses}"


@dataclass(frozen=True)
class Plan:
    """What `terraform show -json` says of a saved plan, as far as opsctl acts on it."""

    variables: dict[str, Any]  # the value of every root variable in this plan
    defaults: dict[str, Any]  # the declared default of each variable that has one
    changes: tuple[Change, ...]  # of anything but the job definitions, losses first

    def to_store(self) -> dict[str, Any]:
        """What an apply of this plan stores: the variables not at their declared default (the
        others follow the module's defaults as the code changes), and always the image tag."""
        return {
            name: value
            for name, value in sorted(self.variables.items())
            if name in ALWAYS_STORED or name not in self.defaults or value != self.defaults[name]
        }


def read_plan(text: str) -> Plan:
    """The `Plan` of `terraform show -json PLANFILE` output (format 1.x)."""
    try:
        data = json.loads(text)
        variables = {name: entry["value"] for name, entry in data.get("variables", {}).items()}
        declared = data["configuration"]["root_module"].get("variables", {})
        defaults = {name: entry["default"] for name, entry in declared.items() if "default" in entry}
        changes = []
        for change in data.get("resource_changes", []):
            actions = tuple(change["change"]["actions"])
            unchanged = actions in (("no-op",), ("read",))
            if change.get("mode") != "managed" or change["type"] == ROLLED or unchanged:
                continue
            replaced = "delete" in actions
            loses = LOSSES.get(change["type"], "") if replaced else ""
            because = tuple(_path(p) for p in change["change"].get("replace_paths") or [])
            changes.append(Change(change["address"], _SAID.get(actions, "/".join(actions)), because, loses))
        changes.sort(key=lambda c: not c.loses)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise OpsctlError(
            "`terraform show -json` gave no plan opsctl can read; is it Terraform >= 1.10?"
        ) from None
    return Plan(variables, defaults, tuple(changes))


def _path(steps: list[str | int]) -> str:
    """["compute_resources", 0, "instance_type"] as HCL spells it: compute_resources[0].instance_type."""
    spelled = ""
    for step in steps:
        spelled += f"[{step}]" if isinstance(step, int) else f".{step}" if spelled else str(step)
    return spelled


# --- running Terraform ----------------------------------------------------------------------------


class Terraform:
    """`terraform` through python-terraform, in one root module, with output streamed to the user.

    python-terraform 0.10.1 predates Terraform 0.15: it gets `working_dir` and never a
    directory argument, `-force` is replaced by `-auto-approve`, and its habit of passing an
    empty `-var-file` is turned off with `var=None` (tests check the exact argv). Its `var`
    dictionary would also go *before* every `-var-file`, ranking below them; so opsctl passes
    all its variables as files, in the order it means.
    """

    def __init__(self, directory: Path) -> None:
        if not (directory / "main.tf").is_file():
            raise BadInput(f"{directory}: no Terraform root module here (expected main.tf); pass --dir")
        self.directory = directory
        self.binary = _terraform_binary()
        from python_terraform import Terraform as _Terraform

        # It logs a warning with Terraform's (here uncaptured) stderr on every failure; ours says
        # it once, after Terraform's own output.
        logging.getLogger("python_terraform").setLevel(logging.CRITICAL)
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

    def plan(self, var_files: Sequence[Path], out: Path) -> bool:
        """Save the plan in `out`; true if it changes anything (exit 2 of -detailed-exitcode)."""
        code, _, _ = self.tf.plan(
            capture_output=False, var=None, var_file=[str(f) for f in var_files] or None, out=str(out)
        )
        self._check("plan", code, ok=(0, 2))
        return bool(code == 2)

    def show(self, plan: Path) -> Plan:
        """The saved plan as `terraform show -json` describes it."""
        from python_terraform import IsFlagged

        code, out, err = self.tf.cmd("show", str(plan), json=IsFlagged, no_color=IsFlagged)
        if code:
            print(err, end="", file=sys.stderr)  # captured with the JSON: shown before our line
        self._check("show", code)
        return read_plan(out)

    def apply_plan(self, plan: Path) -> None:
        """Apply exactly the saved plan: no variables (Terraform refuses them with a plan file),
        no approval (the plan was approved before)."""
        code, _, _ = self.tf.apply(str(plan), capture_output=False, var=None, input=False, skip_plan=True)
        self._check("apply", code)

    def destroy(self, var_files: Sequence[Path], *, yes: bool) -> None:
        from python_terraform import IsFlagged

        code, _, _ = self.tf.destroy(
            capture_output=False,
            var=None,
            var_file=[str(f) for f in var_files] or None,
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
