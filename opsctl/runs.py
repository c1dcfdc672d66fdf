"""Run ids, where runs live on this machine, the run manifest, and the resume rule.

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

from opsctl.states import JobState
from opsctl_contract.errors import BadInput, brief

if TYPE_CHECKING:  # the supervisor and the worker import this module; the YAML parser is not theirs
    from opsctl.pipeline import Pipeline


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
        "steps": [step.record(list_uris[step.name]) for step in pipeline.steps],
    }


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
