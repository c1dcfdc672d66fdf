"""The DAG of a local run in memory: each child's and step's state, and what a child's change
of state means for its step and the steps downstream (releases, step ends, failures).

Apart from supervisor.py, which starts, times and reaps the workers and runs the tick whose
transaction these changes are written in: this is the bookkeeping alone, with no process in it.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opsctl.backends.local.state import LocalRun
from opsctl.run.states import DEPENDENCY_FAILED, TERMINAL, JobState, settle
from opsctl_contract.markers import Markers
from opsctl_contract.storage import LocalStore, NotFound
from opsctl_contract.work import DamagedWork, Pack

if TYPE_CHECKING:
    from opsctl.records import Dependency


class Dag:
    """A run's steps and children, their states and rows, and the dependencies between them:
    the Supervisor's state, each change written through the tick's connection."""

    # The Supervisor's: children whose worker runs, which a failed dependency leaves to end.
    running: Mapping[tuple[str, int], object]

    def __init__(
        self, run: LocalRun, generation: int, children: list[sqlite3.Row], steps: list[sqlite3.Row]
    ) -> None:
        self.run = run
        self.steps = {s["name"]: s for s in run.manifest["steps"]}
        self.markers = LocalStore(run.path / "state")
        self.generation = generation
        self.children = {(r["step"], r["idx"]): dict(r) for r in children}
        self.step_rows = {r["name"]: dict(r) for r in steps}
        self.step_state = {name: JobState(r["state"]) for name, r in self.step_rows.items()}
        # What each tick looks at is kept up to date as children change, so that a tick costs
        # O(children that changed), not O(children): a 10,000-child step ticks every 20 ms.
        self.position = {name: i for i, name in enumerate(self.steps)}
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in self.steps}
        self.waiting: dict[str, set[int]] = {name: set() for name in self.steps}
        self.runnable: list[tuple[int, int, str]] = []  # a heap: upstream steps first, then index
        for (name, index), row in self.children.items():
            self._track(name, index, None, row["state"])
        self.empty = {name: self._empty_children(name) for name in self.steps}
        self.dependents: dict[str, list[tuple[str, bool]]] = {name: [] for name in self.steps}
        for name, step in self.steps.items():
            for dep in step["depends_on"]:
                self.dependents[dep["step"]].append((name, dep["n_to_n"]))
        self.started = False  # the first tick releases whatever waits with its dependencies met

    def _empty_children(self, name: str) -> frozenset[int]:
        """The children of step `name` whose shard of this generation's work pack is empty.

        They would start a worker that finds nothing to do and exits 0, a Python process each
        (a step of 1,000 children for one command took 59 s): they are counted SUCCEEDED when
        their dependencies are met, with no attempt and no log. A step that ended, or a pack
        that is missing or damaged (the workers say so, exit 2), leaves every child to start."""
        step = self.steps[name]
        if self.step_state[name] in TERMINAL:
            return frozenset()
        try:
            sizes = Pack(self.markers, name, self.generation).sizes(step["array_size"])
        except (NotFound, DamagedWork):
            return frozenset()
        return frozenset(i for i, size in enumerate(sizes) if not size)

    def _set_child(self, conn: sqlite3.Connection, key: tuple[str, int], **fields: Any) -> None:
        before = self.children[key]["state"]
        self.children[key].update(fields)
        assignments = ", ".join(f"{name} = ?" for name in fields)
        conn.execute(f"UPDATE child SET {assignments} WHERE step = ? AND idx = ?", (*fields.values(), *key))  # noqa: S608 - names are ours
        after = self.children[key]["state"]
        if after != before:
            self._track(*key, before, after)
            self._changed(conn, *key, after)

    def _track(self, name: str, index: int, before: str | None, after: str) -> None:
        """Keep the per-step counts, the waiting sets and the runnable heap in step with a child."""
        if before is not None:
            self.counts[name][before] -= 1
        self.counts[name][after] += 1
        if after in (JobState.SUBMITTED, JobState.PENDING):
            self.waiting[name].add(index)
        else:
            self.waiting[name].discard(index)
        if after == JobState.RUNNABLE:
            heapq.heappush(self.runnable, (self.position[name], index, name))

    def _changed(self, conn: sqlite3.Connection, name: str, index: int, state: str) -> None:
        """What a child's new state means for its step and the steps that depend on it."""
        if state == JobState.SUCCEEDED:
            for dependent, n_to_n in self.dependents[name]:
                if n_to_n and index in self.waiting[dependent]:
                    self._release(conn, dependent, [index])
        step_state = self.step_state[name]
        if step_state in TERMINAL:
            return
        counts = self.counts[name]
        size = self.steps[name]["array_size"]
        if counts[JobState.SUCCEEDED] + counts[JobState.FAILED] == size:
            self._finish_step(conn, name)
            return
        # Like a Batch array parent: the most advanced state among its live children.
        live = next((s for s in (JobState.RUNNING, JobState.RUNNABLE) if counts[s]), JobState.PENDING)
        if live != step_state:
            self._set_step(conn, name, live)

    def _finish_step(self, conn: sqlite3.Connection, name: str) -> None:
        failed = self.counts[name][JobState.FAILED]
        size = self.steps[name]["array_size"]
        # Counted exactly once, here, from the markers: status reads these, not the markers.
        done, failed_commands, rerun = Markers(self.markers, name).scan()
        conn.execute(
            "UPDATE step SET done = ?, failed = ?, reexecuted = ? WHERE name = ?",
            (len(done), len(failed_commands), len(rerun), name),
        )
        if failed:
            self._set_step(conn, name, JobState.FAILED, f"{failed} of {size} children failed")
        else:
            # Every child exited 0; the step succeeded only if every command is done.
            settled = settle(JobState.SUCCEEDED, len(done), self.steps[name]["commands"], self.run.run_id)
            self._set_step(conn, name, *settled)
        if self.step_state[name] is JobState.SUCCEEDED:
            for dependent, n_to_n in self.dependents[name]:
                if not n_to_n:
                    self._release(conn, dependent, list(self.waiting[dependent]))
        else:
            self._fail_dependents(conn, name)

    def _fail_dependents(self, conn: sqlite3.Connection, name: str) -> None:
        """A failed step fails every step downstream, without running what has not started."""
        for dependent, _ in self.dependents[name]:
            if self.step_state[dependent] in TERMINAL:
                continue
            self._set_step(conn, dependent, JobState.FAILED, DEPENDENCY_FAILED)
            for index in range(self.steps[dependent]["array_size"]):
                key = (dependent, index)
                if self.children[key]["state"] not in TERMINAL and key not in self.running:
                    self._set_child(conn, key, state=JobState.FAILED, reason=DEPENDENCY_FAILED)
            self._fail_dependents(conn, dependent)

    def _first_pass(self, conn: sqlite3.Connection) -> None:
        """At start: fail what depends on a failed step, release what waits with its dependencies met."""
        self.started = True
        for name in self.steps:
            if self.step_state[name] is JobState.FAILED:
                self._fail_dependents(conn, name)
        for name in self.steps:
            if self.step_state[name] not in TERMINAL:
                self._release(conn, name, sorted(self.waiting[name]))
                counts = self.counts[name]
                ended = counts[JobState.SUCCEEDED] + counts[JobState.FAILED] == self.steps[name]["array_size"]
                if ended and self.step_state[name] not in TERMINAL:  # not already by its last release
                    self._finish_step(conn, name)

    def _release(self, conn: sqlite3.Connection, name: str, indices: list[int]) -> None:
        """Waiting children of `name` whose dependencies are met become RUNNABLE; the rest PENDING."""
        if self.step_state[name] in TERMINAL:
            return
        deps = self.steps[name]["depends_on"]
        for index in indices:
            ready = all(self._dependency_met(d, index) for d in deps)
            if ready and index in self.empty[name]:
                # Nothing to run (`_empty_children`): done, without a process or a slot.
                self._set_child(conn, (name, index), state=JobState.SUCCEEDED, finished=time.time())
                continue
            new = JobState.RUNNABLE if ready else JobState.PENDING
            if new != self.children[(name, index)]["state"]:
                self._set_child(conn, (name, index), state=new)

    def _dependency_met(self, dep: Dependency, index: int) -> bool:
        if dep["n_to_n"]:
            return bool(self.children[(dep["step"], index)]["state"] == JobState.SUCCEEDED)
        return self.step_state[dep["step"]] is JobState.SUCCEEDED

    def _set_step(
        self, conn: sqlite3.Connection, name: str, state: JobState, reason: str | None = None
    ) -> None:
        self.step_state[name] = state
        now = time.time()
        row = self.step_rows[name]
        # started: when its first child started running; finished: when it ended.
        if row["started"] is None and state is JobState.RUNNING:
            row["started"] = now
        row.update(state=state.value, reason=reason, finished=now if state in TERMINAL else None)
        conn.execute(
            "UPDATE step SET state = ?, reason = ?, started = ?, finished = ? WHERE name = ?",
            (row["state"], row["reason"], row["started"], row["finished"], name),
        )
