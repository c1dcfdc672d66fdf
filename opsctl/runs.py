"""Run ids, where runs live on this machine, the run manifest and the worker environment.

The manifest is the pipeline as launched (steps in order, with everything a backend needs to
run them), so a run can be watched, resumed or killed later without the original spec.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.errors import BadInput, brief
from opsctl.states import JobState

if TYPE_CHECKING:  # the supervisor and the worker import this module; the YAML parser is not theirs
    from opsctl.pipeline import Pipeline, Step


# `<pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>`, the pipeline name being 1..40 of [a-z0-9-].
RUN_ID = re.compile(r"[a-z0-9-]{1,40}-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")


def check_run_id(run_id: str) -> str:
    """`run_id` if it has the form opsctl gives run ids; `BadInput` before any path or key is
    built from it (a `../` or an absolute path would reach another run, or another home)."""
    if not RUN_ID.fullmatch(run_id):
        raise BadInput(
            f"run id {brief(run_id)} is not one opsctl makes: <pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>, "
            "at most 61 characters of a-z, 0-9 and '-' (`opsctl list` shows the runs)"
        )
    return run_id


def new_run_id(pipeline_name: str, now: datetime | None = None) -> str:
    """`<pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>`: sortable by time, unique enough per second."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    # os.urandom, which `secrets` wraps: importing `secrets` loads hashlib, 5 ms of every command.
    return f"{pipeline_name}-{stamp}-{os.urandom(2).hex()}"


def opsctl_home() -> Path:
    """`$OPSCTL_HOME`, else the XDG state directory (`~/.local/state/opsctl`)."""
    if home := os.environ.get("OPSCTL_HOME"):
        return Path(home)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "opsctl"


def manifest(pipeline: Pipeline, run_id: str, backend: str, list_uris: dict[str, str]) -> dict[str, Any]:
    """The record of a launched run; list files are referenced by URI, never inlined."""
    return {
        "run_id": run_id,
        "pipeline": pipeline.name,
        "backend": backend,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": str(pipeline.spec_path),
        "spec_text": pipeline.spec_path.read_text(encoding="utf-8"),  # the record outlives the file
        "steps": [step_record(step, list_uris[step.name]) for step in pipeline.steps],
    }


def step_record(step: Step, list_uri: str) -> dict[str, Any]:
    """A step as the manifest keeps it: everything a backend needs to run it, as plain JSON."""
    return {
        "name": step.name,
        "queue": step.queue.value,
        "array_size": step.array_size,
        "commands": len(step.commands),
        "list_uri": list_uri,
        "split": step.split.value,
        "depends_on": [{"step": d.step, "n_to_n": d.n_to_n} for d in step.depends_on],
        "retries": step.retries,
        "timeout": step.timeout,
        "vcpus": step.vcpus,
        "memory": step.memory,
        "gpus": step.gpus,
        "env": dict(step.env),
    }


def contract_environment(
    step: dict[str, Any], run_id: str, run_uri: str, generation: int = 1
) -> dict[str, str]:
    """The worker contract (docs/worker.md) that opsctl sets for every child of a step.

    `run_uri` is where the run lives (a directory or s3://…): commands keep their data under
    OPSCTL_RUN_URI, and the markers live under its state/. AWS Batch adds
    AWS_BATCH_JOB_ARRAY_INDEX and AWS_BATCH_JOB_ATTEMPT itself (and refuses overrides of
    AWS_BATCH_* names); the local backend adds them in `local_environment`.
    """
    return {
        **step["env"],
        "ARRAY_SIZE": str(step["array_size"]),
        "LIST_FILE_S3_PATH": step["list_uri"],
        "OPSCTL_RUN_ID": run_id,
        "OPSCTL_STEP": step["name"],
        "OPSCTL_RUN_URI": run_uri,
        "OPSCTL_STATE_URI": f"{run_uri}/state",
        "OPSCTL_SPLIT": step["split"],
        "OPSCTL_GENERATION": str(generation),
    }


def local_environment(
    step: dict[str, Any], run_id: str, run_uri: str, index: int, attempt: int, generation: int = 1
) -> dict[str, str]:
    """The contract plus what AWS Batch would have set: the child's index and attempt."""
    env = {
        **contract_environment(step, run_id, run_uri, generation),
        "AWS_BATCH_JOB_ATTEMPT": str(attempt),
    }
    if step["array_size"] > 1:  # Batch sets the index for array children only
        env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
    return env


def plan_resume(
    steps: list[dict[str, Any]], states: Mapping[str, JobState | None], generation: int
) -> tuple[list[str], int]:
    """What `opsctl resume` runs again, and in which generation: the rule of both backends.

    `states` holds each step's settled state (`opsctl.states.settle`), or None for a step that
    was never submitted. A step runs again when it was never submitted or ended FAILED; a step
    still running is left alone, and a SUCCEEDED one is done. Its dependents need no rule of
    their own: a failed step fails them ("dependency failed"), so they are FAILED too.

    Anything to run starts a new generation, which the caller records before any child of it
    starts: a dynamic-split child of generation g+1 then claims again every command that was
    claimed in generation g but never done (worker/claims.py). Reusing g would let it skip them.
    """
    redo = [s["name"] for s in steps if states.get(s["name"]) in (None, JobState.FAILED)]
    return redo, generation + 1 if redo else generation
