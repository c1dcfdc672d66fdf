"""The run service over a scheduler played by the test: what a new engine gets from the port alone.

The engine here is the outside world (a scheduler that says what state each step is in and what
its children logged); the markers are real, in a real LocalStore, and everything opsctl makes of
them (the status document, the failure lines, the followed log) is the service's own
(opsctl/run/service.py, opsctl/run/status.py). docs/architecture.md lists the port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsctl.records import AttemptRecord, ListRow, StatusDocument, StatusStep
from opsctl.run.service import ChildStory, FailedStep, LogPass, Recorded, RunService
from opsctl.run.states import JobState
from opsctl.run.status import RunView, StepView
from opsctl_contract.markers import DONE, FAILED, Markers
from opsctl_contract.storage import LocalStore

RUN = "played-20261203-120000-abcdef"
# A child's log as read: its first attempt's output, then its second's (local logs hold both).
LOG = ("gone", "== x a[0] attempt 2 ==", "boom")


def record(name: str, commands: int, size: int = 1) -> dict[str, Any]:
    """A step as a manifest records it (opsctl/run/manifest.py `_STEP`)."""
    return {
        "name": name,
        "queue": "cpu",
        "array_size": size,
        "commands": commands,
        "list_uri": f"lists/{name}.txt",
        "split": "contiguous",
        "depends_on": [],
        "retries": 0,
        "timeout": 60,
    }


class PlayedEngine(RunService):
    """A scheduler of the port's methods only: each step's state as the test sets it, a log
    that grows by one chunk a pass. What changes a run is not this test's subject."""

    name = "local"
    priced = False
    log_poll = 0.0

    def __init__(self, root: Path, steps: list[StepView], chunks: list[bytes]) -> None:
        self.warnings: list[str] = []
        self.store = LocalStore(root)
        self.steps = steps
        self.chunks = chunks
        self.kept: list[list[str]] = []  # the steps `ended` was given, by state, each poll
        self.run_state: JobState | None = None  # None: the engine keeps none (rolled up)

    def view(self, run_id: str, *, stuck_after: float) -> RunView:
        return RunView(run_id, "played", "local", "2026-12-03T12:00:00+00:00", self.steps, self.run_state)

    def state_store(self, run_id: str) -> LocalStore:
        return self.store

    def ended(self, view: RunView, steps: list[StatusStep]) -> None:
        self.kept.append([s["state"] for s in steps])

    def failed(self, run_id: str, step: StatusStep) -> FailedStep:
        if step["state"] != "FAILED":
            return FailedStep()
        return FailedStep(children=[ChildStory(0, "exit 3 (attempt 2)", [*LOG], 10)])

    def recorded(self, run_id: str) -> Recorded:
        return Recorded({s.step["name"]: dict(s.step) for s in self.steps}, 1)

    def log_pass(self, run_id: str, step: str, index: int | None, cursor: Any, *, follow: bool) -> LogPass:
        at = cursor or 0
        if at < len(self.chunks):
            yield self.chunks[at]
        return at + 1, at + 1 >= len(self.chunks)

    def launch(self, spec_path: Path, max_parallel: int | None = None, *, containers: Any = None) -> str:
        raise NotImplementedError("not this test's subject")

    def launched(self, run_id: str) -> tuple[str | None, dict[str, str] | None]:
        return None, None

    def resume(self, run_id: str) -> str:
        raise NotImplementedError("not this test's subject")

    def kill(self, run_id: str) -> str:
        raise NotImplementedError("not this test's subject")

    def list_runs(self) -> list[ListRow]:
        return []

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        return []

    def cost(
        self, run_id: str, doc: StatusDocument, attempts: list[AttemptRecord], by_hand: Any
    ) -> dict[str, Any] | None:
        return None

    def notes(self, doc: StatusDocument) -> list[str]:
        return []


def done(store: LocalStore, step: str, *indices: int) -> None:
    for k in indices:
        Markers(store, step).mark(DONE, k, {})


def test_the_engines_word_is_held_to_the_markers(tmp_path: Path) -> None:
    """A step the engine calls SUCCEEDED with a command not done is FAILED, and so is the run;
    a step the engine forgot is judged by its markers; `ended` sees the settled states."""
    steps = [
        StepView(record("a", 4), JobState.SUCCEEDED, ended=True),
        StepView(record("b", 2), JobState.FAILED, ended=True, forgotten="job 9 is unknown"),
        StepView(record("c", 3), JobState.RUNNING),
    ]
    engine = PlayedEngine(tmp_path, steps, [])
    done(engine.store, "a", 0, 1, 2)
    done(engine.store, "b", 0, 1)
    doc = engine.status(RUN)
    a, b, c = doc["steps"]
    assert (a["state"], a["reason"]) == (
        "FAILED",
        f"1 of 4 commands have no done marker; `opsctl resume {RUN}` runs them",
    )
    assert a["commands"] == {"total": 4, "done": 3, "failed": 0, "reexecuted": 0}
    assert (b["state"], b["reason"]) == ("SUCCEEDED", "job 9 is unknown: every command has a done marker")
    assert c["state"] == "RUNNING" and c["attempts"] == {"total": 0, "retried": 0}
    assert doc["state"] == "RUNNING", "rolled up: a step still runs"
    assert engine.kept == [["FAILED", "SUCCEEDED", "RUNNING"]]
    engine.run_state = JobState.SUCCEEDED  # an engine that keeps the run's state is held too
    held = engine.status(RUN)
    assert (held["state"], held["reason"]) == ("FAILED", f"step 'a': {a['reason']}")
    engine.run_state = None

    done(engine.store, "a", 3)
    engine.steps[2] = StepView(record("c", 3), JobState.SUCCEEDED, ended=True)
    done(engine.store, "c", 0, 1, 2)
    assert engine.status(RUN)["state"] == "SUCCEEDED"


def test_failure_lines_tell_the_failed_command_from_its_marker(tmp_path: Path) -> None:
    steps = [StepView(record("a", 3), JobState.FAILED, reason="Essential container exited", ended=True)]
    engine = PlayedEngine(tmp_path, steps, [])
    done(engine.store, "a", 0)
    Markers(engine.store, "a").mark(FAILED, 1, {"exit_code": 3, "stderr_tail": "no such file\n", "child": 0})
    lines = engine.failures(RUN, engine.status(RUN))
    assert lines == [
        "a[0] command 1 failed (exit 3): (text not found)",
        "  its stderr:",
        "    no such file",
        "  a[0] failed: exit 3 (attempt 2)",
        f"  its log, last lines (opsctl logs {RUN} a --index 0):",
        "    == x a[0] attempt 2 ==",
        "    boom",
    ]


@pytest.mark.parametrize("follow", [True, False])
def test_logs_are_followed_until_the_engine_says_the_output_ended(tmp_path: Path, follow: bool) -> None:
    engine = PlayedEngine(tmp_path, [], [b"one\n", b"two\n", b"three\n"])
    read: Iterator[bytes] = engine.logs(RUN, "a", 0, follow=follow)
    assert b"".join(read) == (b"one\ntwo\nthree\n" if follow else b"one\n")
