"""The AWS infrastructure as opsctl sees it: the outputs of `terraform output -json`.

`opsctl infra apply|output` (Terraform) will write them to `.opsctl/infra.json`; the AWS backend
reads them from there or from `--infra FILE`. Terraform itself is driven from here too once the
infrastructure issue lands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from opsctl.errors import BadInput

DEFAULT_INFRA_FILE = Path(".opsctl/infra.json")
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


def load_outputs(path: Path | None = None) -> InfraOutputs:
    """Read the infra file; every missing or malformed piece is `BadInput` naming it."""
    path = path or DEFAULT_INFRA_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(
            f"{path}: infra outputs file not found "
            "(write it with `opsctl infra output`, or pass --infra FILE)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: cannot read the infra outputs file: {e}") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}:{e.lineno}: not JSON ({e.msg}); expected `terraform output -json`") from None
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
            raise BadInput(f"{path}: output '{key}' = {value!r} must be a non-empty string")
        values[key] = value
    return InfraOutputs(**values, source=str(path))
