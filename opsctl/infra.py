"""The infra outputs: what `terraform output -json` says of the applied stack, as the backends
read it from the infra file.

`opsctl infra apply|output` runs Terraform and writes `terraform output -json` to
`.opsctl/infra.json`; the AWS backend reads it from there or from `--infra FILE`.

Apart from the Terraform driving (opsctl/terraform.py, opsctl/stack.py) because every AWS run
command loads this module: it needs only the standard library and the contract.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from opsctl_contract.errors import BadInput, brief
from opsctl_contract.files import INFRA_LIMIT, read_text

DEFAULT_INFRA_FILE = Path(".opsctl/infra.json")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
# Docker's tag grammar, which ECR enforces: 1..128 characters, not starting with '.' or '-'.
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
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


def check_image_tag(tag: str, source: str) -> str:
    """`tag` if ECR would take it; `BadInput` naming `source` (an option) otherwise."""
    if not IMAGE_TAG.fullmatch(tag):
        raise BadInput(
            f"{source} {brief(tag)}: an image tag is 1..128 letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'"
        )
    return tag
