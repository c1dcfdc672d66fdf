"""What a Slurm run printed: each child's log in the run's directory, and its failed children.

The batch script sends a child's output to `logs/<step>/<index>.log` (all its attempts, each after
a header line); Slurm's own words about the job (a time limit, a cancel) go beside it, to
`logs/<step>/slurm-<job>_<task>.out`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from opsctl.backends.slurm.job import TIMED_OUT, exits
from opsctl.backends.slurm.status import UNSEEN_GRACE, Seen
from opsctl.records import StatusStep
from opsctl.run.failures import list_file_text
from opsctl.run.logfiles import failed_from_files, read_logs
from opsctl.run.service import FailedStep, LogPass, Recorded
from opsctl_contract.errors import BadInput

if TYPE_CHECKING:
    from opsctl.backends.slurm.backend import SlurmBackend

ASK_EVERY = 10.0  # seconds between polls of Slurm for a followed log (its exit records are read every pass)


def log_pass(
    backend: SlurmBackend, run_id: str, step: str, index: int | None, at: Following | None, *, follow: bool
) -> LogPass:
    """One pass over a step's logs (one child's, or all) from `at`; the last once every child
    followed has its final exit record, or Slurm holds none of the step's jobs live."""
    run = backend.run(run_id)
    if at is None:
        steps = {s["name"]: s for s in run.doc["steps"]}
        if step not in steps:
            raise BadInput(f"step '{step}' is not in run {run_id} (steps: {', '.join(steps)})")
        size = steps[step]["array_size"]
        if index is not None and index >= size:
            raise BadInput(f"--index {index}: step '{step}' has children 0..{size - 1}")
        at = Following(dict.fromkeys([index] if index is not None else range(size), 0))
    ended = not follow or _ended(backend, run_id, step, set(at.offsets), at)
    yield from read_logs(lambda i: run.log_path(step, i), at.offsets, last=ended)
    return at, ended


class Following:
    """Where a followed log goes on from: each child's offset, and when Slurm was last asked."""

    def __init__(self, offsets: dict[int, int]) -> None:
        self.offsets = offsets
        self.asked = 0.0


def _ended(backend: SlurmBackend, run_id: str, step: str, followed: set[int], at: Following) -> bool:
    """Whether the children followed write no more: each has its final exit record (success, a
    timeout, or its last attempt), or, asked of Slurm at most every ASK_EVERY s, none of the
    step's jobs is live any more (cancelled, killed, or never started)."""
    run = backend.run(run_id)
    record = next(s for s in run.doc["steps"] if s["name"] == step)
    tries = record["retries"] + 1
    final = {
        e.index
        for e in exits(run.exits, step)
        if e.generation == run.doc["generation"]
        and e.exit_code is not None
        and (e.exit_code in (0, TIMED_OUT) or e.attempt >= tries)
    }
    if followed <= final:
        return True
    if time.monotonic() - at.asked < ASK_EVERY:
        return False
    at.asked = time.monotonic()
    jobs = {a["job"] for a in run.doc["arrays"].get(step, [])}
    seen = Seen.poll(backend.client, run)
    if not any(seen.rows.get(job) for job in jobs) and (
        time.time() - run.doc["submitted_at"].get(step, 0.0) < UNSEEN_GRACE
    ):
        return False  # just submitted: sacct records a job a few seconds after sbatch
    return bool(jobs) and not any(
        row.state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED")
        for job in jobs
        for row in seen.rows.get(job, [])
    )


def failed(backend: SlurmBackend, run_id: str, step: StatusStep) -> FailedStep:
    """The failed children that ran (status.py keeps them), each with its log's last lines."""
    return failed_from_files(step, backend.run(run_id).log_path)


def recorded(backend: SlurmBackend, run_id: str) -> Recorded:
    run = backend.run(run_id)
    return Recorded(
        {s["name"]: s for s in run.doc["steps"]},
        run.doc["generation"],
        lambda step, k: list_file_text(run.path / "lists" / f"{step}.txt", k),
    )
