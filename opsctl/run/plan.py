"""What a launch and a resume write before any child starts: the rule of every backend.

`stage` writes a new run's list files and first work packs and makes its manifest record;
`plan_resume` says which steps run again and in which generation, and `restage` writes their
packs for it; `write_work` writes a step's
work pack for a generation (which commands each child owns), so that workers skip what is done.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from opsctl.run.manifest import manifest
from opsctl.run.states import JobState
from opsctl_contract import work
from opsctl_contract.listfile import parse_commands, render_commands
from opsctl_contract.markers import DONE, FAILED, Markers
from opsctl_contract.storage import NotFound, Store

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
    """Commands generation `generation` of a dynamic step left running: in each claim, the first
    command with neither a done nor a failed marker; and those it was given flagged and did not
    finish. Nothing when that generation had no pack.

    A shard's claims are a chain (worker/claims.py): each ends where the next begins, so only a
    shard's last claim is read, and only where a command after its start has no marker."""
    owned = {child: commands for child, commands in work.read_pack_whole(state, step, generation)}
    flagged = {c.index for commands in owned.values() for c in commands if c.rerun}
    folder = f"{step}/claims/{generation}"
    starts: dict[int, list[int]] = {}
    for key in state.list(folder):
        shard_name, start_name = key.rsplit("/", 2)[1:]
        if shard_name.isdigit() and start_name.isdigit() and int(shard_name) in owned:
            starts.setdefault(int(shard_name), []).append(int(start_name))
    settled = done | failed
    for shard, firsts in starts.items():
        commands = owned[shard]
        firsts.sort()
        for start, stop in zip(firsts, [*firsts[1:], None], strict=True):
            span = range(start, min(stop or len(commands), len(commands)))
            first = next((p for p in span if commands[p].index not in settled), None)
            if first is None:
                continue
            if stop is None:  # the last claim: was that command in it, or never claimed?
                stop = _claim_stop(state, f"{folder}/{shard}/{start}", len(commands))
            if first < stop:
                flagged.add(commands[first].index)
    return flagged - done


def _claim_stop(state: Store, key: str, length: int) -> int:
    """Where the claim `key` ends; the shard's end where it does not read as a claim (a damaged
    claim must not hide a command left in flight: flagging one too many only counts it)."""
    try:
        record = json.loads(state.read(key))
        stop = record["positions"][1]
    except (NotFound, ValueError, TypeError, KeyError, IndexError):
        return length
    return stop if isinstance(stop, int) else length
