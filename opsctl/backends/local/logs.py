"""What a local run printed: a step's logs as they grow, and each failed child's story.

A child's output goes to its own file in the run directory (logs/<step>/<index>.log); `logs`
reads them a MiB at a time, and `failures` tells what `watch` and `report` print about each
failed child: its failed command and stderr (from its marker and the work pack), its reason,
attempt and exit code, and its log's last lines.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from pathlib import Path

from opsctl.backends.local.dag import DEPENDENCY_FAILED
from opsctl.backends.local.state import LocalRun
from opsctl.records import StatusDocument
from opsctl.run.failures import child_failure, failed_indices, list_file_text, log_lines, summary
from opsctl.run.states import TERMINAL, JobState
from opsctl.visible import visible
from opsctl_contract.errors import BadInput
from opsctl_contract.storage import LocalStore

LOG_CHUNK = 1 << 20  # bytes read at a time: memory stays flat however long a log grows
LOG_TAIL = 10  # lines of a failed child's log in the failure summary, as on AWS (batch.LOG_TAIL)
LOG_WINDOW = 40  # lines read for them: the worker's accounting events are left out


def logs(run_id: str, step: str, index: int | None, *, follow: bool, poll: float = 0.5) -> Iterator[bytes]:
    """A step's logs (one child's, or all), as they grow while `follow` and the step runs.

    Read a MiB at a time, the bytes exactly as logged; each read ends on a character boundary
    (`_whole`), so a reader decoding them gets whole characters even as children interleave."""
    run = LocalRun.find(run_id)
    sizes = {s["name"]: s["array_size"] for s in run.manifest["steps"]}
    if step not in sizes:
        raise BadInput(f"step '{step}' is not in run {run_id} (steps: {', '.join(sizes)})")
    if index is not None and index >= sizes[step]:
        raise BadInput(f"--index {index}: step '{step}' has children 0..{sizes[step] - 1}")
    offsets = dict.fromkeys([index] if index is not None else range(sizes[step]), 0)
    while True:
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
        if last:
            return
        time.sleep(poll)


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


def failures(run_id: str, doc: StatusDocument) -> list[str]:
    """Each failed child's failed command, its stderr, its reason and its log's last lines
    (opsctl/run/failures.py); a failed step with no failed child, its reason."""
    run = LocalRun.find(run_id)
    store = LocalStore(run.path / "state")
    recorded = {s["name"]: s for s in run.manifest["steps"]}
    generation = run.run_row()["generation"] if any(s["failed_children"] for s in doc["steps"]) else 1
    lines = []
    for step in doc["steps"]:
        reason = step["reason"]
        if step["state"] == JobState.FAILED and not step["failed_children"] and reason != DEPENDENCY_FAILED:
            lines.append(f"{step['name']}: {reason}")
        failed = failed_indices(store, step["name"]) if step["failed_children"] else []
        text_of = functools.partial(list_file_text, run.path / "lists" / f"{step['name']}.txt")
        for child in step["failed_children"]:
            index, code = child["index"], _or_dash(child["exit_code"])
            lines += summary(
                f"{step['name']}[{index}]",
                f"{child['reason']} (attempt {child['attempt']}, exit code {code})",
                child_failure(store, recorded[step["name"]], index, generation, failed, text_of),
                log_lines(tail(run.log_path(step["name"], index), LOG_WINDOW), LOG_TAIL),
                f"opsctl logs {run_id} {step['name']} --index {index}",
            )
    return [visible(line) for line in lines]  # reasons too: text read back from the run's database


def _or_dash(value: object) -> str:
    """A figure as the failure lines show it: `-` where there is none (a killed child has no
    exit code of its own), as on AWS."""
    return "-" if value is None else str(value)
