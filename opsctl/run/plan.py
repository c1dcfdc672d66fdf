"""What a launch and a resume write before any child starts: the rule of every backend.

`stage` writes a new run's list files and first work packs and makes its manifest record;
`plan_resume` says which steps run again and in which generation, and `restage` writes their
packs for it; `write_work` writes a step's
work pack for a generation (which commands each child owns), so that workers skip what is done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from opsctl.run.manifest import manifest
from opsctl.run.states import JobState
from opsctl_contract import work
from opsctl_contract.listfile import parse_commands, render_commands
from opsctl_contract.markers import DONE, FAILED, Markers
from opsctl_contract.storage import Store

if TYPE_CHECKING:  # the supervisor imports this module; the YAML parser is not its
    from opsctl.records import BackendValue, ManifestStep, RunManifest
    from opsctl.spec_model import Pipeline


def stage(
    pipe: Pipeline, run_id: str, backend: BackendValue, state: Store, put_list: Callable[[str, bytes], str]
) -> RunManifest:
    """Write a new run's list files (`put_list(step, text)` stores one and returns its URI, as
    the workers will read it: OPSCTL_LIST_URI) and generation 1's work packs (in `state`, the
    markers' store), and return its manifest record, which the backend completes with what its
    engine needs and saves. Nothing is submitted yet."""
    uris = {step.name: put_list(step.name, render_commands(step.commands).encode()) for step in pipe.steps}
    doc = manifest(pipe, run_id, backend, uris)
    for step, recorded in zip(pipe.steps, doc["steps"], strict=True):
        write_work(state, recorded, step.commands, 1)
    return doc


def plan_resume(
    steps: Sequence[ManifestStep], states: Mapping[str, JobState | None], generation: int
) -> tuple[list[str], int]:
    """What `opsctl resume` runs again, and in which generation: the rule of both backends.

    `states` holds each step's settled state (`opsctl.run.states.settle`), or None for a step that
    was never submitted. A step runs again when it was never submitted or ended FAILED; a step
    still running is left alone, and a SUCCEEDED one is done. Its dependents need no rule of
    their own: a failed step fails them ("dependency failed"), so they are FAILED too.

    Anything to run starts a new generation, which the caller records before any child of it
    starts: a dynamic-split child of generation g+1 then claims again every command that was
    claimed in generation g but never done (worker/claims.py). Reusing g would let it skip them.
    """
    redo = [s["name"] for s in steps if states.get(s["name"]) in (None, JobState.FAILED)]
    return redo, generation + 1 if redo else generation


def restage(
    steps: Sequence[ManifestStep],
    redo: Sequence[str],
    generation: int,
    state: Store,
    read_list: Callable[[str], str],
) -> None:
    """Write the work pack of generation `generation` for each step in `redo` (of the manifest's
    `steps`), from its list file (`read_list(step)` returns its text): what a resume writes once
    it recorded the new generation, before any child of it starts."""
    for step in steps:
        if step["name"] in redo:
            write_work(state, step, parse_commands(read_list(step["name"])), generation)


def write_work(state: Store, step: ManifestStep, commands: Sequence[str], generation: int) -> None:
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
