"""Run ids, where runs live on this machine, the run manifest, and the resume rule.

The manifest is the pipeline as launched (steps in order, with everything a backend needs to
run them), so a run can be watched, resumed or killed later without the original spec.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.states import JobState
from opsctl_contract import work
from opsctl_contract.errors import BadInput, brief
from opsctl_contract.markers import DONE, FAILED, Markers
from opsctl_contract.storage import Store

if TYPE_CHECKING:  # the supervisor and the worker import this module; the YAML parser is not theirs
    from opsctl.pipeline import Pipeline


# `<pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>`, the pipeline name being 1..40 of [a-z0-9-] starting
# with a letter or digit (opsctl.pipeline.PIPELINE_NAME): so no run id starts with '-', which
# AWS Batch refuses at the start of a job name and a command line would read as an option.
RUN_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")


def check_run_id(run_id: str) -> str:
    """`run_id` if it has the form opsctl gives run ids; `BadInput` before any path or key is
    built from it (a `../` or an absolute path would reach another run, or another home)."""
    if not RUN_ID.fullmatch(run_id):
        raise BadInput(
            f"run id {brief(run_id)} is not one opsctl makes: <pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>, "
            "at most 61 characters of a-z, 0-9 and '-', starting with a letter or digit "
            "(`opsctl list` shows the runs)"
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


def write_work(state: Store, step: Mapping[str, Any], commands: Sequence[str], generation: int) -> None:
    """Write the work pack of `step` (as the manifest records it) for `generation`, before any
    of its children starts (opsctl_contract/work.py).

    Generation 1 owns every command. A later one owns only the commands without a done marker,
    found with one listing of `done/` here rather than by every child; on the dynamic split the
    commands the previous generation left in flight are flagged, so that running them again is
    counted as a re-execution.
    """
    name, split = step["name"], step["split"]
    total = len(commands)
    remaining: Sequence[int] = range(total)
    reruns: frozenset[int] = frozenset()
    if generation > 1:
        markers = Markers(state, name)
        done = markers.indices(DONE)
        remaining = [k for k in range(total) if k not in done]
        if split == "dynamic":
            reruns = frozenset(_left_in_flight(state, name, generation - 1, done, markers.indices(FAILED)))
    owned = work.shards(total, remaining, split, step["array_size"])
    state.write(work.work_key(name, generation), work.pack(commands, owned, reruns))


def _left_in_flight(state: Store, step: str, generation: int, done: set[int], failed: set[int]) -> set[int]:
    """Commands generation `generation` of a dynamic step left running: in each claimed block,
    the first command with neither a done nor a failed marker; and those it was given flagged
    and did not finish. Nothing when that generation had no pack."""
    owned = {child: commands for child, commands in work.read_pack_whole(state, step, generation)}
    flagged = {c.index for commands in owned.values() for c in commands if c.rerun}
    for key in state.list(f"{step}/claims/{generation}"):
        shard, start = key.rsplit("/", 2)[1:]
        if not (shard.isdigit() and start.isdigit() and int(shard) in owned):
            continue
        commands = owned[int(shard)]
        block = next((b for b in work.blocks(len(commands)) if b.start == int(start)), range(0))
        unfinished = (commands[p].index for p in block)
        first = next((k for k in unfinished if k not in done and k not in failed), None)
        if first is not None:
            flagged.add(first)
    return flagged - done
