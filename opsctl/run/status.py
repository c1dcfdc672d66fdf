"""The status document, assembled once for every engine from what its scheduler says.

A scheduler (opsctl/run/service.py) tells only what its engine knows: each step's state as the
engine gives it, its children by state, its times, its reasons (`StepView`), and the run's
(`RunView`). What makes that a status is the same everywhere and is done here: a step's
command figures from its markers (exactly once it ended, from its children's ledgers while it
runs), its state held to those markers (`settle`), a step the engine forgot judged by its
markers alone, the run's state rolled up from its steps', and the storage requests summed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opsctl.records import (
    BackendValue,
    Commands,
    FailedChild,
    ManifestStep,
    Requests,
    State,
    StatusDocument,
    StatusStep,
    commands_of,
    requests_of,
    state_of,
)
from opsctl.run.states import Attempts, JobState, attempts_of, roll_up, settle
from opsctl_contract.markers import Entry, ledgers, step_figures
from opsctl_contract.storage import Store, request_cost


@dataclass(frozen=True)
class Counted:
    """A step's figures as recorded when it ended: read back, not counted again."""

    commands: Commands
    requests: Requests
    attempts: Attempts | None  # None: recorded before opsctl kept attempts


@dataclass(frozen=True)
class StepView:
    """One step as its engine sees it, before its markers are counted."""

    step: ManifestStep  # its manifest record
    state: JobState  # the engine's word: SUBMITTED while the engine has not seen it
    reason: str | None = None
    counts: dict[State, int] = field(default_factory=dict)  # children by state
    cancelled: int = 0  # of counts' FAILED: children that never started
    elapsed: float | None = None
    # Its children write no more markers: count them exactly (else from the ledgers).
    ended: bool = False
    # Hold the engine's state to the done markers (`settle`): not for a step never submitted,
    # nor for a state read back from the step's own final record.
    settled: bool = True
    counted: Counted | None = None  # figures recorded when it ended: no listing
    attempts: Attempts | None = None  # None: from its children's ledgers (the same listing)
    # The engine forgot the step and nothing recorded its end: this says so, and the state is
    # the markers' (SUCCEEDED when every command is done, else FAILED).
    forgotten: str | None = None
    failed_children: list[FailedChild] | None = None  # where the engine keeps them (local)
    extra: dict[str, Any] = field(default_factory=dict)  # keys only this backend writes


@dataclass
class RunView:
    """A run as its engine sees it: its steps, and what the engine keeps of the run itself."""

    run_id: str
    pipeline: str
    backend: BackendValue
    created: str  # ISO 8601
    steps: list[StepView]
    state: JobState | None = None  # kept by the engine (the local supervisor); None: rolled up
    reason: str | None = None
    elapsed: float | None = None
    submitted: bool = True  # every step was submitted (a launch may stop half way)
    warnings: list[str] = field(default_factory=list)
    launch_requests: dict[str, int] = field(default_factory=dict)  # the launch's own, counted
    extra: dict[str, Any] = field(default_factory=dict)  # keys only this backend writes


def assemble(view: RunView, store: Store, *, priced: bool) -> StatusDocument:
    """The status document of `view`, its steps counted from the markers in `store`.

    `priced`: the requests are priced at S3 Standard's request prices (`requests.dollars`)."""
    steps = [step_status(view.run_id, store, s) for s in view.steps]
    state, reason = view.state, view.reason
    if state is None:
        state = roll_up([JobState(s["state"]) for s in steps], submitted=view.submitted)
    short = [s for s in steps if s["state"] != JobState.SUCCEEDED.value]
    if state is JobState.SUCCEEDED and short:  # the engine said so, the markers do not
        state, reason = JobState.FAILED, f"step '{short[0]['name']}': {short[0]['reason']}"
    total = Counter(view.launch_requests)
    for s in steps:
        total.update(s["requests"])
    requests = requests_of(total)
    if priced:
        requests["dollars"] = round(request_cost(total), 6)
    doc: StatusDocument = {
        "run_id": view.run_id,
        "pipeline": view.pipeline,
        "backend": view.backend,
        **view.extra,  # type: ignore[typeddict-item]  # keys only this backend writes
        "state": state_of(state),
        "reason": reason,
        "created": view.created,
        "elapsed": view.elapsed,
        "steps": steps,
        "warnings": list(view.warnings),
        "requests": requests,
    }
    return doc


def step_status(run_id: str, store: Store, view: StepView) -> StatusStep:
    """One step's entry of the status document: `view` with its figures from the markers."""
    step = view.step
    total = step["commands"]
    if view.counted is not None:
        commands, requests, attempts = view.counted.commands, view.counted.requests, view.counted.attempts
    else:
        # A running step is counted from its children's ledgers: one LIST, a page per 1,000
        # children, however much is done; the same listing gives its attempts.
        listed = ListedOnce(store)
        figures, counted = step_figures(listed, step["name"], total, exact=view.ended)
        commands, requests = commands_of(figures), requests_of(counted)
        attempts = (
            view.attempts if view.attempts is not None else ledger_attempts(ledgers(listed, step["name"]))
        )
    state, reason = view.state, view.reason
    if view.forgotten is not None:
        missing = total - commands["done"]
        state = JobState.FAILED if missing else JobState.SUCCEEDED
        reason = view.forgotten + (
            f": {missing} of {total} commands have no done marker; `opsctl resume {run_id}` runs them"
            if missing
            else ": every command has a done marker"
        )
    elif view.settled:
        state, short = settle(state, commands["done"], total, run_id)
        reason = short or reason
    entry: StatusStep = {
        "name": step["name"],
        "queue": step["queue"],
        "image": step.get("image"),
        "state": state_of(state),
        "reason": reason,
        "array_size": step["array_size"],
        "counts": view.counts,
        "cancelled": view.cancelled,
        "attempts": attempts,
        "elapsed": view.elapsed,
        "commands": commands,
        "requests": requests,
    }
    if view.failed_children is not None:
        entry["failed_children"] = view.failed_children
    entry.update(view.extra)  # type: ignore[typeddict-item]
    return entry


def not_counted(step: ManifestStep) -> Counted:
    """The figures of a step that never ran: nothing done, nothing asked of storage."""
    return Counted({"total": step["commands"], "done": 0, "failed": 0, "reexecuted": 0}, {}, attempts_of([]))


def ledger_attempts(entries: list[Entry]) -> Attempts:
    """A step's attempts from its children's ledgers (one per child attempt that ran the
    worker): each child's attempt number in its newest generation. An attempt that ended
    before the worker ran (an image not pulled, a failed GPU preflight) counts once a later
    attempt of its child has run."""
    newest: dict[int, tuple[int, int]] = {}
    for e in entries:
        newest[e.child] = max(newest.get(e.child, (0, 0)), (e.generation, e.attempt))
    return attempts_of(attempt for _, attempt in newest.values())


def elapsed(started: float | None, ended: float | None, *, per_second: float = 1.0) -> float | None:
    """Seconds from one time to another (`per_second` units a second: 1000 for Batch's epoch
    milliseconds), never below 0: two clocks may disagree, or one be set back between them
    (NTP, a VM restored), and a step would read as running for minus a day. None before it
    started; until now while it runs."""
    if not started:
        return None
    end = ended or time.time() * per_second
    return max(0.0, round((end - started) / per_second, 1))


class ListedOnce:
    """A store whose listings are made once: the ledger listing that counts a running step's
    commands (markers.step_figures) gives its attempts too (`ledger_attempts`), no second LIST."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.uri = store.uri
        self.usage = store.usage
        self._listed: dict[tuple[str, str, str], list[str]] = {}

    def list(self, folder: str = "", *, after: str = "", upto: str = "") -> list[str]:
        key = (folder, after, upto)
        if key not in self._listed:
            self._listed[key] = self.store.list(folder, after=after, upto=upto)
        return list(self._listed[key])

    def read(self, key: str) -> bytes:
        return self.store.read(key)

    def write(self, key: str, data: bytes) -> None:
        self.store.write(key, data)

    def exists(self, key: str) -> bool:
        return self.store.exists(key)

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        return self.store.read_range(key, start, stop)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def create(self, key: str, data: bytes) -> bool:
        return self.store.create(key, data)

    def sweep(self, stale: Callable[[str], bool] = lambda _writer: True) -> tuple[int, int]:
        return self.store.sweep(stale)
