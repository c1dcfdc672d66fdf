"""What a local run printed: a step's logs as they grow, and its failed children.

A child's output goes to its own file in the run directory (logs/<step>/<index>.log);
`log_pass` reads them a MiB at a time, and `failed` gives the run service (opsctl/run/service.py)
each failed child's reason, attempt and exit code and its log's last lines, which it tells with
the child's failed command and stderr.
"""

from __future__ import annotations

from opsctl.backends.local.dag import DEPENDENCY_FAILED
from opsctl.backends.local.state import LocalRun
from opsctl.records import StatusStep
from opsctl.run.failures import list_file_text
from opsctl.run.logfiles import LOG_TAIL, LOG_WINDOW, read_logs, tail
from opsctl.run.service import ChildStory, FailedStep, LogPass, Recorded
from opsctl.run.states import TERMINAL, JobState
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
    """The failed children the supervisor recorded (`failed_children`), each with its reason,
    attempt and exit code and its log's last lines; a failed step with none, its reason (but
    not a dependent's: the failed step it depends on is told already)."""
    children = step.get("failed_children") or []
    reason = step["reason"]
    said = step["state"] == JobState.FAILED and not children and reason != DEPENDENCY_FAILED
    run = LocalRun.find(run_id) if children else None
    return FailedStep(
        said=reason if said else None,
        children=[
            ChildStory(
                child["index"],
                f"{child['reason']} (attempt {child['attempt']}, exit code {_or_dash(child['exit_code'])})",
                tail(run.log_path(step["name"], child["index"]), LOG_WINDOW) if run else [],
                LOG_TAIL,
            )
            for child in children
        ],
    )


def recorded(run_id: str) -> Recorded:
    """The run's manifest steps and generation; a command's text from its list file."""
    run = LocalRun.find(run_id)
    return Recorded(
        {s["name"]: s for s in run.manifest["steps"]},
        run.run_row()["generation"],
        lambda step, k: list_file_text(run.path / "lists" / f"{step}.txt", k),
    )


def _or_dash(value: object) -> str:
    """A figure as the failure lines show it: `-` where there is none (a killed child has no
    exit code of its own), as on AWS."""
    return "-" if value is None else str(value)
