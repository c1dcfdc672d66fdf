"""Run ids, where runs live on this machine, the run manifest, and the resume rule.

The manifest is the pipeline as launched (steps in order, with everything a backend needs to
run them), so a run can be watched, resumed or killed later without the original spec.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.limits import ENV_NAME, MAX_ARRAY_SIZE, MAX_GPUS, MAX_INTEGER, MAX_RETRIES, MIN_TIMEOUT, STEP_NAME
from opsctl.states import JobState
from opsctl_contract import work
from opsctl_contract.errors import BadInput, brief
from opsctl_contract.markers import DONE, FAILED, WIDTH, Markers
from opsctl_contract.shapes import Int, ListOf, MapOf, Maybe, OneOf, Text, problem
from opsctl_contract.storage import Store

if TYPE_CHECKING:  # the supervisor and the worker import this module; the YAML parser is not theirs
    from opsctl.pipeline import Pipeline


# `<pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>`, the pipeline name being 1..40 of [a-z0-9_-] starting
# with a letter or digit (opsctl.pipeline.PIPELINE_NAME): so no run id starts with '-', which
# AWS Batch refuses at the start of a job name and a command line would read as an option.
RUN_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")


def check_run_id(run_id: str) -> str:
    """`run_id` if it has the form opsctl gives run ids; `BadInput` before any path or key is
    built from it (a `../` or an absolute path would reach another run, or another home)."""
    if not RUN_ID.fullmatch(run_id):
        raise BadInput(
            f"run id {brief(run_id)} is not one opsctl makes: <pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>, "
            "at most 61 characters of a-z, 0-9, '-' and '_', starting with a letter or digit "
            "(`opsctl list` shows the runs)"
        )
    return run_id


def new_run_id(pipeline_name: str, now: datetime | None = None) -> str:
    """`<pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>`: sortable by time, unique enough per second."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    # os.urandom, which `secrets` wraps: importing `secrets` loads hashlib, 5 ms of every command.
    return f"{pipeline_name}-{stamp}-{os.urandom(2).hex()}"


def opsctl_home() -> Path:
    """`$OPSCTL_HOME`, else the XDG state directory (`~/.local/state/opsctl`), made absolute: the
    run directories, and the OPSCTL_RUN_URI and OPSCTL_STATE_URI of every child, are built from
    it, and a command that changes directory must still find its run. A home that exists but is
    not a directory is `BadInput` for every command."""
    if home := os.environ.get("OPSCTL_HOME"):
        path, source = Path(home).absolute(), "OPSCTL_HOME"
    else:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        path, source = Path(state).absolute() / "opsctl", "opsctl's home; OPSCTL_HOME moves it"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return path  # made by the first launch
    except OSError as e:
        raise BadInput(f"{path} ({source}): cannot be used: {e.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise BadInput(f"{path} ({source}) is not a directory: opsctl keeps its runs in a directory there")
    return path


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


# What a manifest holds, as `manifest` and the backends write it (opsctl_contract/shapes.py),
# checked whenever one is read back: every value a backend indexes, calls or builds a path from.
_COUNT = Int(0, 10**WIDTH - 1)
_STATE = OneOf(tuple(s.value for s in JobState))
_COMMANDS = {"total": _COUNT, "done": _COUNT, "failed": _COUNT, "reexecuted": _COUNT}
_STEP = {
    "name": Text(STEP_NAME),
    "queue": OneOf(("cpu", "gpu")),
    "array_size": Int(1, MAX_ARRAY_SIZE),
    "commands": Int(1, 10**WIDTH - 1),
    "list_uri": str,
    "split": OneOf(("contiguous", "dynamic")),
    "depends_on": ListOf({"step": Text(STEP_NAME), "n_to_n": bool}),
    "retries": Int(0, MAX_RETRIES),
    "timeout": Int(MIN_TIMEOUT, MAX_INTEGER),
    "vcpus": Maybe(Int(1, MAX_INTEGER)),
    "memory": Maybe(Int(4, MAX_INTEGER)),
    "gpus": Maybe(Int(0, MAX_GPUS)),
    "env": MapOf(Text(re.compile(r"[^\x00]*")), keys=ENV_NAME),
    "image": Maybe(str),
    "job_definition": Maybe(str),  # AWS: the revision its jobs are submitted under
}
_FINAL = {  # AWS: a step's job as a poll saw it end (AwsBackend._record_final)
    "job_id": str,
    "state": _STATE,
    "reason": Maybe(str),
    "counts": Maybe(MapOf(_COUNT)),
    "cancelled": Maybe(_COUNT),  # of counts' FAILED, children that never started
    "attempts": Maybe({"total": _COUNT, "retried": _COUNT}),  # states.Attempts
    "commands": Maybe(_COMMANDS),
    "requests": Maybe(MapOf(_COUNT)),
    "started_at": Maybe(float),
    "stopped_at": Maybe(float),
    "log_stream": Maybe(str),
}
MANIFEST = {
    "run_id": Text(RUN_ID),
    "pipeline": str,
    "backend": OneOf(("local", "aws")),
    "created": str,
    "steps": ListOf(_STEP),
    "engine": Maybe(str),  # local, --containers: the container engine
    "no_gpus": Maybe(bool),  # local, --containers --no-gpus
    "generation": Maybe(Int(1, MAX_INTEGER)),  # AWS; a local run keeps it in run.db
    "jobs": Maybe(MapOf(str, keys=STEP_NAME)),  # AWS: each step's current job id
    "replaced": Maybe(ListOf(MapOf(str, keys=STEP_NAME))),
    "final": Maybe(MapOf(_FINAL, keys=STEP_NAME)),
    "state": Maybe(_STATE),
    "launch_requests": Maybe(MapOf(_COUNT)),
}


class BadState(BadInput):
    """A state file opsctl wrote that reads back as something else: exit 2, one line naming it."""


def read_manifest(data: bytes | str, run_id: str, where: str) -> dict[str, Any]:
    """The manifest of run `run_id` from the bytes of `where` (a path or a URI), checked for
    shape (MANIFEST): a file that is not JSON, not a manifest, or another run's is `BadState`."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise BadState(f"run {run_id}: its manifest {where} is not JSON ({e})") from None
    found = problem(doc, MANIFEST) or _order_problem(doc["steps"])
    if found is None and doc["run_id"] != run_id:
        found = f"run_id: {brief(doc['run_id'])} is another run's"
    if found is not None:
        raise BadState(f"run {run_id}: its manifest {where} is not one opsctl wrote: {found}")
    return doc  # type: ignore[no-any-return]


def _order_problem(steps: list[dict[str, Any]]) -> str | None:
    """Steps as a launch records them: at least one, names unique, each after those it depends
    on (the supervisor and the submit order rely on it)."""
    if not steps:
        return "steps: none"
    seen: set[str] = set()
    for i, step in enumerate(steps):
        if step["name"] in seen:
            return f"steps[{i}].name: {step['name']!r} appears twice"
        if late := next((d["step"] for d in step["depends_on"] if d["step"] not in seen), None):
            return f"steps[{i}].depends_on: {late!r} is not a step before it"
        seen.add(step["name"])
    return None


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
