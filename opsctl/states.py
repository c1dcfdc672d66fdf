"""Job states, AWS Batch's names, used by every backend (DESIGN §3.6)."""

from __future__ import annotations

from enum import StrEnum


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
