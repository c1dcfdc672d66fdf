"""The AWS infrastructure: Terraform in terraform/, the variables it was applied with, and its
outputs as the backends read them.

`opsctl infra apply|output` runs Terraform and writes `terraform output -json` to
`.opsctl/infra.json`; the AWS backend reads it from there or from `--infra FILE`.

Every apply stores the variables it applied next to the state (`<state key>.tfvars.json` in the
state bucket, or `terraform.tfstate.tfvars.json` beside a local state), and every plan, apply
and destroy reads them back as its first -var-file. So the deploy workflow, which passes no
variables but the image tag, applies what the administrator applied, and a later local apply
keeps the image tag the workflow rolled out. See `Stack` for the order of precedence.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from opsctl_contract.errors import BadInput, OpsctlError, brief
from opsctl_contract.files import INFRA_LIMIT, read_file, read_text, size_text

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

# What opsctl hands Terraform for one command (the stored variables as a file, the image tag,
# the saved plan) lives in the module's own .terraform: per module, never committed, and removed
# when the command ends.
WORK_DIR = Path(".terraform") / "opsctl"
LOCAL_STATE = "terraform.tfstate"  # Terraform's local state, in the module directory
STORED_SUFFIX = ".tfvars.json"  # the stored variables: <state>.tfvars.json, next to the state
STORED_LIMIT = 256 * 1024  # the stack's two dozen variables take a few KiB
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Docker's tag grammar, which ECR enforces: 1..128 characters, not starting with '.' or '-'.
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
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
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def check_image_tag(tag: str, source: str) -> str:
    """`tag` if ECR would take it; `BadInput` naming `source` (an option) otherwise."""
    if not IMAGE_TAG.fullmatch(tag):
        raise BadInput(
            f"{source} {brief(tag)}: an image tag is 1..128 letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'"
        )
    return tag


# --- where the state lives ------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
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


def read_backend_config(path: Path) -> Backend:
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
    return Backend(values["bucket"], values["key"], f"--backend-config {path}")


def initialised_backend(directory: Path) -> Backend | None:
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
    return Backend(bucket, key, f"{record} (the last init)")


# --- stored variables -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """The variables the last apply stored; empty, and `found` false, before the first."""

    where: str  # s3://bucket/key or a path, for messages
    values: dict[str, Any]
    found: bool
    version: str | None = None  # the S3 object's ETag: the write after the apply is conditional on it


class VariableStore(Protocol):
    where: str

    def read(self) -> Stored: ...

    def write(self, values: dict[str, Any], previous: Stored) -> None: ...


def parse_stored(data: bytes, where: str) -> dict[str, Any]:
    """A stored variables object as {name: value}; anything else is `BadInput` naming `where`."""
    if len(data) > STORED_LIMIT:
        raise BadInput(
            f"{where}: {size_text(len(data))}, over the {size_text(STORED_LIMIT)} "
            "a stored variables object may have"
        )
    expected = "expected the JSON object of Terraform variables `opsctl infra apply` stores"
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadInput(f"{where}: not UTF-8 text (byte {e.start}); {expected}") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{where}:{e.lineno}: not JSON ({e.msg}); {expected}") from None
    except RecursionError:
        raise BadInput(f"{where}: nested too deeply; {expected}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{where}: a JSON {_JSON_TYPES.get(type(value), 'null')}; {expected}")
    for name in value:
        if not VARIABLE_NAME.fullmatch(name):
            raise BadInput(f"{where}: {brief(name)} is not a Terraform variable name; {expected}")
    return value


def _dump(values: dict[str, Any]) -> bytes:
    return (json.dumps(values, indent=2, sort_keys=True) + "\n").encode()


class S3Variables:
    """The stored variables as one object in the state bucket, `<state key>.tfvars.json`.

    Next to the state because whoever may apply the stack already reads and writes there (the
    deploy role has s3:GetObject and s3:PutObject on the state bucket): no other service, no
    other permission. The bucket's versioning keeps every earlier object.
    """

    def __init__(self, backend: Backend) -> None:
        from opsctl_contract.storage import S3Store

        self.backend = backend
        self.s3 = S3Store(backend.bucket)
        self.where = f"s3://{backend.bucket}/{backend.stored_key}"

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        """S3's refusals (no such bucket, access denied) say which file named the bucket."""
        try:
            yield
        except BadInput as e:
            raise BadInput(f"{e} (the state bucket of {self.backend.source})") from None

    def read(self) -> Stored:
        from opsctl_contract.storage import NotFound

        try:
            with self._named():
                data, etag = self.s3.read_tagged(self.backend.stored_key)
        except NotFound:
            return Stored(self.where, {}, found=False)
        return Stored(self.where, parse_stored(data, self.where), found=True, version=etag)

    def write(self, values: dict[str, Any], previous: Stored) -> None:
        """Replace the object read before the apply, only if it is still that one: an apply that
        started earlier and finished later must not overwrite what a newer one stored."""
        with self._named():
            if previous.found and previous.version:
                written = self.s3.replace(self.backend.stored_key, _dump(values), previous.version)
            else:
                written = self.s3.create_tagged(self.backend.stored_key, _dump(values))
        if written is None:
            raise OpsctlError(
                f"{self.where}: another apply stored its variables while this one ran; see what "
                "differs with `opsctl infra plan` (it reads the other's) and apply again"
            )


class LocalVariables:
    """The stored variables of a local state: `terraform.tfstate.tfvars.json` beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def read(self) -> Stored:
        if not self.path.exists() and not self.path.is_symlink():
            return Stored(self.where, {}, found=False)
        data = read_file(self.path, STORED_LIMIT, "stored variables file")
        return Stored(self.where, parse_stored(data, self.where), found=True)

    def write(self, values: dict[str, Any], previous: Stored) -> None:
        staged = self.path.with_name(self.path.name + ".tmp")
        try:
            staged.write_bytes(_dump(values))
            staged.replace(self.path)  # whole or not at all, like the state file
        except OSError as e:
            raise OpsctlError(f"{self.path}: cannot write the stored variables ({e.strerror})") from None


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


class Stack:
    """The root module, its state and its stored variables: what `opsctl infra` commands act on.

    Terraform gets the variables as -var-files in this order, each overriding those before it
    (and all of them overriding TF_VAR_* and *.auto.tfvars, which Terraform ranks below any
    -var-file):

    1. the stored variables, read from next to the state: what the last apply applied;
    2. each --var-file, in the order given;
    3. --image-tag, when given.

    An apply saves its plan, checks it (an image tag changed by a --var-file is refused, and with
    `roll_only` so is any change but the job definitions' new revisions), applies
    exactly that plan, and then stores the variables it applied.
    """

    def __init__(
        self,
        directory: Path,
        var_files: Sequence[Path] = (),
        backend_config: Path | None = None,
        *,
        image_tag: str | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.tf = Terraform(directory)
        for f in var_files:
            if not f.is_file():
                raise BadInput(f"--var-file {f}: file not found")
        self.var_files = [f.resolve() for f in var_files]
        self.image_tag = None if image_tag is None else check_image_tag(image_tag, "--image-tag")
        self.backend_config = backend_config
        self.backend = (
            read_backend_config(backend_config) if backend_config else initialised_backend(directory)
        )
        self.store: VariableStore = (
            S3Variables(self.backend)
            if self.backend
            else LocalVariables(directory / (LOCAL_STATE + STORED_SUFFIX))
        )
        # Absolute: Terraform runs in the module directory, opsctl wherever it was started.
        self.work = directory.resolve() / WORK_DIR
        self.say = say

    @contextlib.contextmanager
    def _prepared(self, *, require_stored: bool = False) -> Iterator[tuple[Stored, list[Path]]]:
        """The stored variables read and shown, the module initialised, and the -var-files in
        their order; the files written for Terraform are removed afterwards.

        They are read before `init`, so that a missing state bucket is one line of ours rather
        than a page of Terraform's.
        """
        _require_credentials()
        stored = self.store.read()
        self._show(stored)
        if require_stored and not stored.found:
            raise BadInput(
                f"{stored.where}: no stored variables (--require-stored-vars); an administrator's "
                "`opsctl infra apply --var-file FILE --backend-config FILE` stores them, and "
                "applying without them would reset the stack's variables to their defaults"
            )
        self.tf.init(self.backend_config)
        self._check_backend()
        self.work.mkdir(parents=True, exist_ok=True)
        written = [self.work / "stored.tfvars.json", self.work / "image-tag.tfvars.json"]
        try:
            files: list[Path] = []
            if stored.values:
                written[0].write_bytes(_dump(stored.values))
                files.append(written[0])
            files += self.var_files
            if self.image_tag is not None:
                written[1].write_bytes(_dump({"image_tag": self.image_tag}))
                files.append(written[1])
            yield stored, files
        finally:
            for path in (*written, self.work / "plan.tfplan"):
                path.unlink(missing_ok=True)

    def _show(self, stored: Stored) -> None:
        if not stored.found:
            self.say(f"stored variables: none yet at {stored.where} (an apply stores what it applies)")
            return
        self.say(f"stored variables from {stored.where} (--var-file and --image-tag override them):")
        for name, value in sorted(stored.values.items()):
            shown = json.dumps(value)
            self.say(f"  {name} = {shown if len(shown) <= 200 else shown[:197] + '...'}")
        for name in sorted(stored.values):
            if f"TF_VAR_{name}" in os.environ:
                self.say(
                    f"note: TF_VAR_{name} is not used: the stored {name} ranks above it; "
                    "a --var-file overrides the stored value"
                )

    def _check_backend(self) -> None:
        """Terraform's reading of the --backend-config file names the same state as opsctl's."""
        ours, theirs = self.backend, initialised_backend(self.tf.directory)
        if ours is None or theirs is None:
            return
        if (ours.bucket, ours.key) != (theirs.bucket, theirs.key):
            raise BadInput(
                f"{ours.source}: Terraform reads bucket {brief(theirs.bucket)} and key {brief(theirs.key)} "
                f"where opsctl read {brief(ours.bucket)} and {brief(ours.key)}; write each as one "
                '`name = "value"` line'
            )

    def _refuse(self, plan: Plan, stored: Stored, roll_only: bool) -> None:
        """Stop, before anything is applied, what the plan must not do."""
        running, planned = stored.values.get("image_tag"), plan.variables.get("image_tag")
        if self.image_tag is None and running is not None and planned != running:
            raise BadInput(
                f"image_tag = {brief(planned)} from a --var-file would change the image tag the stack "
                f"runs, {brief(running)} (stored in {stored.where} by the last deploy or push); nothing "
                f"was applied: pass --image-tag {planned} to change it on purpose, or drop image_tag "
                "from the --var-file"
            )
        if roll_only and plan.changes:
            lines = "; ".join(c.line() for c in plan.changes)
            raise BadInput(
                f"--roll-only: the plan says {lines}; a deploy only rolls the job definitions to a new "
                "image, so nothing was applied: an administrator applies this change, without --roll-only"
            )

    def plan(self, *, roll_only: bool = False, require_stored: bool = False) -> Plan:
        """Show what `apply` would change, and refuse what `apply` would refuse."""
        with self._prepared(require_stored=require_stored) as (stored, files):
            out = self.work / "plan.tfplan"
            self.tf.plan(files, out)
            plan = self.tf.show(out)
            self._refuse(plan, stored, roll_only)
            return plan

    def apply(
        self,
        *,
        yes: bool,
        confirm: Callable[[], bool],
        roll_only: bool = False,
        require_stored: bool = False,
    ) -> None:
        """Plan, check, ask (`confirm`, unless `yes` or nothing changes), apply that plan, store
        the variables it applied."""
        with self._prepared(require_stored=require_stored) as (stored, files):
            out = self.work / "plan.tfplan"
            changes = self.tf.plan(files, out)
            plan = self.tf.show(out)
            self._refuse(plan, stored, roll_only)
            if changes and not yes and not confirm():
                raise OpsctlError("apply cancelled: nothing was changed")
            self.tf.apply_plan(out)
            values = plan.to_store()
            try:
                self.store.write(values, stored)
            except OpsctlError as e:
                # Say what did happen: the next apply reads the variables stored before this one.
                error = BadInput if isinstance(e, BadInput) else OpsctlError
                raise error(
                    f"the apply succeeded, but the variables it applied were not stored: {e}"
                ) from None
            self.say(
                f"stored variables written to {self.store.where}: {', '.join(values)} "
                "(those at their declared default are left out, to follow it)"
            )

    def destroy(self, *, yes: bool) -> None:
        """Destroy with the stored variables (the region, the name...) under the --var-files.
        The stored object stays: a later apply rebuilds the same stack."""
        with self._prepared() as (_, files):
            self.tf.destroy(files, yes=yes)

    def outputs(self) -> dict[str, Any]:
        self.tf.init(self.backend_config)
        return self.tf.outputs()


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
