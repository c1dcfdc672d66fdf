"""What a local run printed: a step's logs as they grow, and its failed children.

A child's output goes to its own file in the run directory (logs/<step>/<index>.log);
`log_pass` reads them a MiB at a time, and `failed` gives the run service (opsctl/run/service.py)
each failed child's reason, attempt and exit code and its log's last lines, which it tells with
the child's failed command and stderr.
"""

from __future__ import annotations

import os
from pathlib import Path

from opsctl.backends.local.dag import DEPENDENCY_FAILED
from opsctl.backends.local.state import LocalRun
from opsctl.records import StatusStep
from opsctl.run.failures import list_file_text
from opsctl.run.service import ChildStory, FailedStep, LogPass, Recorded
from opsctl.run.states import TERMINAL, JobState
from opsctl.visible import visible
from opsctl_contract.errors import BadInput

LOG_CHUNK = 1 << 20  # bytes read at a time: memory stays flat however long a log grows
LOG_TAIL = 10  # lines of a failed child's log in the failure summary, as on AWS (batch.LOG_TAIL)
LOG_WINDOW = 40  # lines read for them: the worker's accounting events are left out


def log_pass(
    run_id: str, step: str, index: int | None, offsets: dict[int, int] | None, *, follow: bool
) -> LogPass:
    """One pass over a step's logs (one child's, or all) from `offsets` (each child's, None: the
    start); returns the offsets reached and whether this was the last pass (not `follow`ing, the
    step ended, or no supervisor is left to write more).

    Read a MiB at a time, the bytes exactly as logged; each read ends on a character boundary
    (`_whole`), so a reader decoding them gets whole characters even as children interleave."""
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
    for i in offsets:
        try:
            log = run.log_path(step, i).open("rb")
        except FileNotFoundError:
            continue  # the child has not started
        with log:
            log.seek(offsets[i])
            rest = b""
            while chunk := log.read(LOG_CHUNK):
                data = rest + chunk
                # A character still being written is left for the next pass, so that the
                # next child's output never lands inside it; on the last pass, all of it.
                cut = _whole(data)
                rest = data[cut:]
                offsets[i] += cut
                if cut:
                    yield data[:cut]
            if rest and last:
                offsets[i] += len(rest)
                yield rest
    return offsets, last


def _whole(data: bytes) -> int:
    """How much of `data` ends on a UTF-8 character boundary: all of it but a character its
    last bytes begin and do not finish (bytes that are not UTF-8 count as whole)."""
    for back in range(1, min(len(data), 4) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte, of a 2-, 3- or 4-byte character
            size = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if back < size else len(data)
    return len(data)


def tail(path: Path, lines: int = 10, window: int = 16384) -> list[str]:
    """The last lines of a log, reading only its end: logs of long steps run to megabytes."""
    try:
        with path.open("rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - window)
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return []
    if start:  # the window may begin inside a character: its last bytes are not ones to show
        data = data[:3].lstrip(bytes(range(0x80, 0xC0))) + data[3:]
    # Lines end at line feeds only: a carriage return is shown (\x0d), as `opsctl logs` shows it,
    # not taken as a break that lets a line hide what came before it.
    return [visible(line) for line in data.removesuffix(b"\n").split(b"\n")[-lines:] if data]


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
