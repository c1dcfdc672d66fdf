"""Job states, AWS Batch's names, used by every backend (DESIGN §3.6)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import TypedDict


class JobState(StrEnum):
    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"  # waiting for dependencies
    RUNNABLE = "RUNNABLE"  # dependencies met, waiting for a slot
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED})

# Display order for counts and tables: the life of a job, left to right.
ORDER = tuple(JobState)

STYLE = {
    JobState.SUBMITTED: "dim",
    JobState.PENDING: "dim",
    JobState.RUNNABLE: "yellow",
    JobState.STARTING: "cyan",
    JobState.RUNNING: "cyan",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
}

# FAILED children that never started: cancelled by `opsctl kill`, or never run because a step
# they depend on failed. Batch and the local supervisor both call them FAILED, and `counts`
# keeps their word for it (scripts read it); `status` and `watch` show them apart, under this
# word on both backends, so that a kill of a 100-child step with 2 running reads "failed 2
# cancelled 98", not "failed 100". Not a JobState: no scheduler has such a state.
CANCELLED = "cancelled"
CANCELLED_STYLE = "dim"

# The reason every backend gives what `opsctl kill` ended (a local child, a Batch job).
KILLED = "killed by user"
# The reason of a step, and of its children, that a failed step it depends on ended unrun (AWS
# Batch says "Dependent Job failed" itself).
DEPENDENCY_FAILED = "dependency failed"
# Seconds a step may wait RUNNABLE (dependencies met, no capacity) before `status` warns.
STUCK_AFTER = 15 * 60.0


class Attempts(TypedDict):
    """A step's attempts (`attempts` of each step in `status --json`), so that retries show
    while a run goes on, not only in its report: `total`, the attempts its children have made
    in their latest run (a resume starts a child's count again), and `retried`, how many of its
    children are past their first attempt."""

    total: int
    retried: int


def attempts_of(latest: Iterable[int]) -> Attempts:
    """The step's `Attempts` from each child's latest attempt number (0: not started)."""
    numbers = list(latest)
    return {"total": sum(numbers), "retried": sum(1 for n in numbers if n > 1)}


def settle(state: JobState, done: int, total: int, run_id: str) -> tuple[JobState, str | None]:
    """A step's state once its markers are counted: SUCCEEDED only when every command is done.

    The scheduler's word is not enough. A child can exit 0 without running its share (a worker
    bug, a list file changed under it, claims taken over wrongly), and AWS Batch or the local
    supervisor would then call the step SUCCEEDED while commands never ran. The `done` markers
    are the durable record, so a step whose scheduler says SUCCEEDED but whose markers fall short
    is FAILED, with a reason that says what `opsctl resume` does about it.
    """
    if state is not JobState.SUCCEEDED or done >= total:
        return state, None
    missing = total - done
    return JobState.FAILED, (
        f"{missing} of {total} commands have no done marker; `opsctl resume {run_id}` runs them"
    )


def roll_up(states: Sequence[JobState], *, submitted: bool) -> JobState:
    """A run's state from its steps' settled states, where no process of opsctl's keeps one
    (AWS Batch): SUCCEEDED once every step did, FAILED once every step ended and one failed;
    until then as far along as its most advanced step. `submitted`: every step was submitted
    (a launch that stopped half way reads SUBMITTED until `opsctl resume` submits the rest)."""
    if submitted and all(s is JobState.SUCCEEDED for s in states):
        return JobState.SUCCEEDED
    if any(s is JobState.FAILED for s in states) and all(s in TERMINAL for s in states):
        return JobState.FAILED
    if any(s in (JobState.STARTING, JobState.RUNNING) for s in states):
        return JobState.RUNNING
    if any(s is JobState.RUNNABLE for s in states):
        return JobState.RUNNABLE
    return JobState.PENDING if submitted else JobState.SUBMITTED
