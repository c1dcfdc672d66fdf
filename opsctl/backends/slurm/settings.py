"""The Slurm backend's settings: `OPSCTL_SLURM_*` variables, each with the default that suits a
cluster whose partitions are named like the spec's queues (docs/slurm.md has the table).

Read when a command builds the backend, and checked then: a bad value is one line naming the
variable, before anything is submitted.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from opsctl.run.ids import opsctl_home
from opsctl_contract.errors import BadInput

PREFIX = "OPSCTL_SLURM_"
QUEUES = ("cpu", "gpu")


@dataclass(frozen=True)
class SlurmSettings:
    """Where a cluster's runs live and how each queue's steps are submitted."""

    root: Path  # the runs' directories: a filesystem every node mounts at the same path
    partitions: Mapping[str, str]  # queue → partition
    extra: Mapping[str, tuple[str, ...]]  # queue → more sbatch options, as the site needs
    account: str | None
    qos: str | None
    gpu_preflight: bool  # gpu steps prove their GPU works before any command
    python: str  # the interpreter the worker runs under on the nodes

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SlurmSettings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value.strip() or None if value is not None else None

        root = Path(get("DIR") or opsctl_home() / "slurm").expanduser()
        if not root.is_absolute():
            raise BadInput(
                f"{PREFIX}DIR={root}: not an absolute path (every node must find it at the same one)"
            )
        preflight = (get("GPU_PREFLIGHT") or "1").lower()
        if preflight not in ("0", "1", "yes", "no", "true", "false"):
            raise BadInput(f"{PREFIX}GPU_PREFLIGHT={preflight}: not one of 1, 0, yes, no, true, false")
        extra = {}
        for queue in QUEUES:
            text = get(f"SBATCH_{queue.upper()}") or ""
            try:
                extra[queue] = tuple(shlex.split(text))
            except ValueError as e:
                raise BadInput(f"{PREFIX}SBATCH_{queue.upper()}={text}: {e}") from None
            if any(not option.startswith("-") for option in extra[queue][:1]):
                raise BadInput(f"{PREFIX}SBATCH_{queue.upper()}={text}: sbatch options start with '-'")
        return cls(
            root=root,
            partitions={queue: get(f"PARTITION_{queue.upper()}") or queue for queue in QUEUES},
            extra=extra,
            account=get("ACCOUNT"),
            qos=get("QOS"),
            gpu_preflight=preflight in ("1", "yes", "true"),
            python=get("PYTHON") or sys.executable,
        )
