"""The stack `opsctl infra` acts on: the root module, its state and the variables stored next to
it, and the infra file an apply writes.

Every apply stores the variables it applied next to the state (`<state key>.tfvars.json` in the
state bucket, or `terraform.tfstate.tfvars.json` beside a local state), and every plan, apply
and destroy reads them back as its first -var-file. So the deploy workflow, which passes no
variables but the image tag, applies what the administrator applied, and a later local apply
keeps the image tag the workflow rolled out. See `Stack` for the order of precedence.

Apart from opsctl/terraform.py, which runs the `terraform` binary and reads what it says: this
module decides what each command hands it, and what is kept between commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from opsctl.infra import DEFAULT_INFRA_FILE, KEYS, check_image_tag
from opsctl.terraform import (
    STORED_SUFFIX,
    Plan,
    StateBackend,
    Terraform,
    initialised_backend,
    read_backend_config,
)
from opsctl_contract.errors import BadInput, OpsctlError, brief
from opsctl_contract.files import read_file, size_text

# What opsctl hands Terraform for one command (the stored variables as a file, the image tag,
# the saved plan) lives in the module's own .terraform: per module, never committed, and removed
# when the command ends.
WORK_DIR = Path(".terraform") / "opsctl"
LOCAL_STATE = "terraform.tfstate"  # Terraform's local state, in the module directory
STORED_LIMIT = 256 * 1024  # the stack's two dozen variables take a few KiB
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


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

    def __init__(self, backend: StateBackend) -> None:
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


# --- the stack ------------------------------------------------------------------------------------


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


def _require_credentials() -> None:
    """Fail before Terraform does, with what to do: its own error is a page of provider output."""
    import boto3

    if boto3.session.Session().get_credentials() is None:
        raise BadInput(
            "no AWS credentials found: set AWS_PROFILE (after `aws sso login` or `aws configure`), "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
