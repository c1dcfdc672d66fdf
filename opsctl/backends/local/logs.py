"""What a local run printed: a step's logs as they grow, and its failed children.

A child's output goes to its own file in the run directory (logs/<step>/<index>.log);
`log_pass` reads them a MiB at a time, and `failed` gives the run service (opsctl/run/service.py)
each failed child's reason, attempt and exit code and its log's last lines, which it tells with
the child's failed command and stderr.
"""

from __future__ import annotations

from opsctl.backends.local.state import LocalRun
from opsctl.records import StatusStep
from opsctl.run.failures import list_file_text
from opsctl.run.logfiles import failed_from_files, read_logs
from opsctl.run.service import FailedStep, LogPass, Recorded
from opsctl.run.states import TERMINAL
from opsctl_contract.errors import BadInput


def log_pass(
    run_id: str, step: str, index: int | None, offsets: dict[int, int] | None, *, follow: bool
) -> LogPass:
    """One pass over a step's logs (one child's, or all) from `offsets` (each child's, None: the
    start); returns the offsets reached and whether this was the last pass (not `follow`ing, the
    step ended, or no supervisor is left to write more).

    Read as opsctl/run/logfiles.py `read_logs` reads them: a MiB at a time, whole characters."""
    run = LocalRun.find(run_id)
    if offsets is None:
        sizes = {s["name"]: s["array_size"] for s in run.manifest["steps"]}
        if step not in sizes:
            raise BadInput(f"step '{step}' is not in run {run_id} (steps: {', '.join(sizes)})")
        if index is not None and index >= sizes[step]:
            raise BadInput(f"--index {index}: step '{step}' has children 0..{sizes[step] - 1}")
        offsets = dict.fromkeys([index] if index is not None else range(sizes[step]), 0)
    # Read the state before the files: whatever was written before the step ended is then
    # printed by this pass, so the last lines are never lost.
    with run.db() as conn:
        ended = conn.execute("SELECT state FROM step WHERE name = ?", (step,)).fetchone()[0] in TERMINAL
    last = not follow or ended or not run.supervised()
    yield from read_logs(lambda i: run.log_path(step, i), offsets, last=last)
    return offsets, last


def failed(run_id: str, step: StatusStep) -> FailedStep:
    """The failed children the supervisor recorded, each with its log's last lines."""
    return failed_from_files(step, LocalRun.find(run_id).log_path)


def recorded(run_id: str) -> Recorded:
    """The run's manifest steps and generation; a command's text from its list file."""
    run = LocalRun.find(run_id)
    return Recorded(
        {s["name"]: s for s in run.manifest["steps"]},
        run.run_row()["generation"],
        lambda step, k: list_file_text(run.path / "lists" / f"{step}.txt", k),
    )
