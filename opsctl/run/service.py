"""One run service over a scheduler port: what every backend does the same, written once.

A backend is a `RunService` whose subclass is the scheduler of one engine. The service owns
the run's status (assembled from the engine's view: opsctl/run/status.py), the failure lines
of `watch` and `report`, and the loop that follows a child's log. The scheduler implements the
port below, the abstract methods, each of which knows only its engine:

- `view`: the run as the engine sees it, each step's state, children and times (`RunView`);
- `state_store`: where the run's markers are;
- `failed`: a failed step's children that ran, each with the engine's reason and its log's last lines;
- `recorded`: the run's manifest steps and generation, to find a failed child's commands;
- `log_pass`: one pass over a child's log from a cursor, and whether the child's output ended;
- `launch`, `launched`, `resume`, `kill`, `list_runs`, `attempts`, `cost`, `notes`
  (opsctl.backends.base.Backend says what each does);
- `ended`: keep what the engine will forget of a step that ended.

and the attributes `name`, `priced`, `warnings`, `calls`, `log_poll`, `poll_every`,
`poll_ceiling`. The engine's limits on a step are not asked of a built backend: `opsctl
validate` reads them from the spec alone (opsctl/backends/__init__.py `LIMITS`).
"""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.run.failures import child_failure, failed_indices, log_lines, summary
from opsctl.run.states import STUCK_AFTER
from opsctl.run.status import RunView, assemble
from opsctl.visible import visible
from opsctl_contract.storage import Store

if TYPE_CHECKING:
    from opsctl.backends.options import Containers
    from opsctl.costs import HandPrices
    from opsctl.records import AttemptRecord, ListRow, ManifestStep, StatusDocument, StatusStep


@dataclass(frozen=True)
class ChildStory:
    """A failed child that ran, as its engine tells it."""

    index: int
    reason: str  # the engine's words: its reasons, the attempt, the exit code
    log: list[str]  # its log's last lines, as read
    keep: int  # of them, how many the summary shows (after the worker's events are made short)


@dataclass(frozen=True)
class FailedStep:
    """What a step's engine says of its failure: the children to tell of, and a line for the
    step itself where there is no child to tell it (a forgotten job, a step that never ran)."""

    said: str | None = None
    children: list[ChildStory] = field(default_factory=list)


@dataclass(frozen=True)
class Recorded:
    """What the run's manifest says a failed child's commands are found by."""

    steps: dict[str, ManifestStep]  # the manifest's step records, by name
    generation: int
    # A command's text from the step's list file, where reading it is cheap (a local file).
    text_of: Callable[[str, int], str | None] | None = None


# What a log pass returns: where to go on from, and whether the child's output has ended.
LogPass = Generator[bytes, None, tuple[Any, bool]]


class RunService(ABC):
    """A backend: the service's methods over one engine's port (the abstract methods)."""

    name: str
    priced: bool  # prices a run by itself (`watch`'s header); else only by hand
    warnings: list[str]  # what a read could not record, each said once
    log_poll: float  # seconds between passes over a log while it is followed
    # `watch`'s polls: every this many seconds by default, doubling while nothing changes up to
    # `poll_ceiling` (opsctl/cli/runs.py `Pace`); a ceiling equal to the pace is no backoff.
    poll_every = 1.0
    poll_ceiling = 1.0

    @property
    def calls(self) -> Counter[str] | None:
        """The calls this process made to the engine's services, by operation, or None."""
        return None

    # --- the service --------------------------------------------------------------------

    def status(self, run_id: str, *, stuck_after: float = STUCK_AFTER) -> StatusDocument:
        """The status document (opsctl/records.py `StatusDocument`); its `warnings` name steps
        waiting for capacity for over `stuck_after` seconds, where the engine can tell."""
        return self.status_of(self.view(run_id, stuck_after=stuck_after))

    def status_of(self, view: RunView) -> StatusDocument:
        doc = assemble(view, self.state_store(view.run_id), priced=self.priced)
        self.ended(view, doc["steps"])
        doc["warnings"] += self.warnings  # what recording could not write
        return doc

    def failures(self, run_id: str, doc: StatusDocument) -> list[str]:
        """Each failed child's failed command and its stderr (from its marker and the work
        pack: opsctl/run/failures.py), the engine's reasons, and its log's last lines; a failed
        step with no child to tell of, its reason."""
        store = self.state_store(run_id)
        recorded: Recorded | None = None
        lines = []
        for step in doc["steps"]:
            told = self.failed(run_id, step)
            if told.said is not None:
                lines.append(f"{step['name']}: {told.said}")
            failed = failed_indices(store, step["name"]) if told.children else []
            if failed and recorded is None:
                recorded = self.recorded(run_id)  # read once there are failed commands to find
            for child in told.children:
                failure = None
                if failed and recorded is not None and step["name"] in recorded.steps:
                    text_of = recorded.text_of
                    failure = child_failure(
                        store,
                        recorded.steps[step["name"]],
                        child.index,
                        recorded.generation,
                        failed,
                        functools.partial(text_of, step["name"]) if text_of else None,
                    )
                lines += summary(
                    f"{step['name']}[{child.index}]",
                    child.reason,
                    failure,
                    log_lines(child.log, child.keep),
                    f"opsctl logs {run_id} {step['name']} --index {child.index}",
                )
        return [visible(line) for line in lines]  # log lines and reasons: shown, never obeyed

    def logs(
        self, run_id: str, step: str, index: int | None, *, follow: bool, poll: float | None = None
    ) -> Iterator[bytes]:
        """A step's logs, bytes as logged, passes `poll` seconds apart while `follow`ing, until
        the engine says the child's output ended."""
        cursor: Any = None
        while True:
            cursor, ended = yield from self.log_pass(run_id, step, index, cursor, follow=follow)
            if ended or not follow:
                return
            time.sleep(self.log_poll if poll is None else poll)

    # --- the port -----------------------------------------------------------------------

    @abstractmethod
    def view(self, run_id: str, *, stuck_after: float) -> RunView:
        """The run as the engine sees it; `warnings` for steps waiting over `stuck_after` s."""

    @abstractmethod
    def state_store(self, run_id: str) -> Store:
        """Where the run's markers are (OPSCTL_STATE_URI)."""

    @abstractmethod
    def ended(self, view: RunView, steps: list[StatusStep]) -> None:
        """Keep what the engine will forget of the steps that ended (`steps`, settled)."""

    @abstractmethod
    def failed(self, run_id: str, step: StatusStep) -> FailedStep:
        """What the engine says of step `step`'s failure (nothing where it did not fail)."""

    @abstractmethod
    def recorded(self, run_id: str) -> Recorded:
        """The run's manifest steps and generation."""

    @abstractmethod
    def log_pass(self, run_id: str, step: str, index: int | None, cursor: Any, *, follow: bool) -> LogPass:
        """One pass over child `index`'s log of `step` (all children's, or the first, as the
        engine keeps them) from `cursor` (None: the start): yields its new bytes; returns
        where the next pass starts and whether the output ended (`follow` False: this is the
        last pass, read all)."""

    @abstractmethod
    def launch(
        self, spec_path: Path, max_parallel: int | None = None, *, containers: Containers | None = None
    ) -> str:
        """Start a run (nothing left running that must stay); its id."""

    @abstractmethod
    def launched(self, run_id: str) -> tuple[str | None, dict[str, str] | None]:
        """After a launch made `run_id` (complete or not): a line for the operator, and what
        this machine must keep to find the run again without flags (`remember` keeps it), each
        None where there is none."""

    @abstractmethod
    def resume(self, run_id: str) -> str:
        """Run again what did not succeed, in a new generation; what was done."""

    @abstractmethod
    def kill(self, run_id: str) -> str:
        """Stop every job of the run; what was done."""

    @abstractmethod
    def list_runs(self) -> list[ListRow]:
        """The runs the engine can see, newest first."""

    @abstractmethod
    def attempts(self, run_id: str) -> list[AttemptRecord]:
        """Every child attempt (opsctl/records.py `AttemptRecord`)."""

    @abstractmethod
    def cost(
        self, run_id: str, doc: StatusDocument, attempts: list[AttemptRecord], by_hand: HandPrices | None
    ) -> dict[str, Any] | None:
        """The estimate of opsctl.costs for `attempts`, or None where there is no price."""

    @abstractmethod
    def notes(self, doc: StatusDocument) -> list[str]:
        """Lines the status table shows under itself, about how the run's steps run."""
