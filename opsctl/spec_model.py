"""The spec's model: `Step`, `Pipeline`, and the limits and defaults a spec is held to.

Frozen objects that opsctl/spec_check.py builds from a checked document; the entry points that
read a spec are opsctl/pipeline.py's (`load`, `parse`), which re-exports these names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opsctl_contract.split import slice_sizes

if TYPE_CHECKING:
    from opsctl.records import ManifestStep

# A container image reference as Docker and ECR read one: [registry[:port]/]path[:tag][@digest],
# path components lowercase. AWS Batch takes up to 255 characters.
_REGISTRY = (
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?"
)
_PATH = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
IMAGE = re.compile(
    rf"(?:{_REGISTRY}/)?{_PATH}(?:/{_PATH})*(?::\w[\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?"
)
MAX_IMAGE = 255

MAX_TEMPLATE_RANGE = 1_000_000
# Names the worker environment contract owns; a step's `env` must not shadow them.
RESERVED_ENV = re.compile(r"(AWS_BATCH_.*|OPSCTL_.*|ARRAY_SIZE|LIST_FILE_S3_PATH)")

# Where a run's data lives is the backend's: a spec that names a place is refused, not ignored.
STORAGE_REFUSED = (
    "storage is not supported: a local run's data lives under $OPSCTL_HOME/runs/<run id> (set "
    "OPSCTL_HOME to move it) and an AWS run's under s3://<the stack's bucket>/runs/<run id>; "
    "remove the key"
)

DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT = 3600


class Queue(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


class Split(StrEnum):
    CONTIGUOUS = "contiguous"
    DYNAMIC = "dynamic"


@dataclass(frozen=True)
class Dependency:
    step: str
    n_to_n: bool = False  # child i waits for child i only (Batch's N_TO_N)


@dataclass(frozen=True)
class Step:
    name: str
    queue: Queue
    array_size: int
    commands: tuple[str, ...]
    source: str  # where the commands came from: a list file path, "inline" or "template"
    split: Split
    depends_on: tuple[Dependency, ...]
    retries: int
    timeout: int
    vcpus: int | None = None
    memory: int | None = None  # MiB
    gpus: int | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    image: str | None = None  # the step's own container image; None: the stack's for its queue
    line: int = 0  # where the step starts in the spec, for later messages

    def record(self, list_uri: str) -> ManifestStep:
        """The step as the run manifest keeps it: all a backend needs to run it, plain JSON."""
        return {
            "name": self.name,
            "queue": self.queue.value,
            "array_size": self.array_size,
            "commands": len(self.commands),
            "list_uri": list_uri,
            "split": self.split.value,
            "depends_on": [{"step": d.step, "n_to_n": d.n_to_n} for d in self.depends_on],
            "retries": self.retries,
            "timeout": self.timeout,
            "vcpus": self.vcpus,
            "memory": self.memory,
            "gpus": self.gpus,
            "env": dict(self.env),
            "image": self.image,
        }


@dataclass(frozen=True)
class Pipeline:
    name: str
    spec_path: Path
    steps: tuple[Step, ...]  # topological order: every step after the steps it depends on

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def plan(self) -> dict[str, Any]:
        """The plan document printed by `opsctl validate --json` (and shown as a table)."""
        steps = []
        notes = []
        for step in self.steps:
            low, high = slice_sizes(len(step.commands), step.array_size)
            if low == 0:
                notes.append(self._idle_note(step))
            steps.append(
                {
                    "name": step.name,
                    "queue": step.queue.value,
                    "array_size": step.array_size,
                    "commands": len(step.commands),
                    "commands_per_child": {"min": low, "max": high},
                    "children_with_work": min(step.array_size, len(step.commands)),
                    "split": step.split.value,
                    "source": step.source,
                    "depends_on": [
                        {"step": d.step, "type": "N_TO_N" if d.n_to_n else "ALL"} for d in step.depends_on
                    ],
                    "retries": step.retries,
                    "timeout": step.timeout,
                    "vcpus": step.vcpus,
                    "memory": step.memory,
                    "gpus": step.gpus,
                    "image": step.image,
                }
            )
        return {
            "pipeline": self.name,
            "spec": str(self.spec_path),
            "steps": steps,
            "notes": notes,
        }

    def _idle_note(self, step: Step) -> str:
        """What `validate` says of a step with more children than commands: how many have
        none, what they cost, and the array size that would do. An N_TO_N dependency ties the
        sizes of the steps it joins (child i waits for child i), so the size that would do is
        the most commands of any of them, and it is said of them all."""
        tied, pending = {step.name}, [step.name]
        while pending:
            name = pending.pop()
            for other in self.steps:
                joined = any(d.n_to_n and d.step == name for d in other.depends_on) or any(
                    d.n_to_n and d.step == other.name for d in self.step(name).depends_on
                )
                if joined and other.name not in tied:
                    tied.add(other.name)
                    pending.append(other.name)
        needed = min(step.array_size, max(len(self.step(name).commands) for name in tied))
        commands = len(step.commands)
        head = (
            f"step '{step.name}' has {step.array_size} children for {commands} "
            f"command{'s' if commands > 1 else ''}: {step.array_size - commands} have none "
            "(the local backend does not start them; AWS Batch starts each, which exits at once)"
        )
        others = ", ".join(sorted(tied - {step.name}))
        if needed == step.array_size:
            return f"{head}; its N_TO_N dependencies ({others}) keep array_size at {needed}"
        if others:
            return f"{head}: array_size: {needed} would do, here and in {others} (N_TO_N)"
        return f"{head}: array_size: {needed} would do"
