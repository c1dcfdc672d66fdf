"""A run's log files as `opsctl logs` and the failure lines read them, on engines that write
each child's output to its own file (the local backend, a Slurm cluster's shared directory).

`read_logs` reads a MiB at a time, the bytes exactly as logged, each read ending on a character
boundary (`_whole`), so a reader decoding them gets whole characters even as children
interleave; `tail` reads only a log's end for the failure lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from pathlib import Path

from opsctl.records import StatusStep
from opsctl.run.service import ChildStory, FailedStep
from opsctl.run.states import DEPENDENCY_FAILED, JobState
from opsctl.visible import visible

LOG_CHUNK = 1 << 20  # bytes read at a time: memory stays flat however long a log grows
LOG_TAIL = 10  # lines of a failed child's log in the failure summary, as on AWS (batch.LOG_TAIL)
LOG_WINDOW = 40  # lines read for them: the worker's accounting events are left out


def failed_from_files(step: StatusStep, log_path: Callable[[str, int], Path]) -> FailedStep:
    """What an engine that keeps each failed child (`failed_children`: its reason, attempt and
    exit code) and its log file (`log_path(step, index)`) says of a failed step: each child with
    its log's last lines; a step with none, its reason (but not a dependent's: the failed step it
    depends on is told already)."""
    children = step.get("failed_children") or []
    reason = step["reason"]
    said = step["state"] == JobState.FAILED and not children and reason != DEPENDENCY_FAILED
    return FailedStep(
        said=reason if said else None,
        children=[
            ChildStory(
                child["index"],
                f"{child['reason']} (attempt {child['attempt']}, exit code {_or_dash(child['exit_code'])})",
                tail(log_path(step["name"], child["index"]), LOG_WINDOW),
                LOG_TAIL,
            )
            for child in children
        ],
    )


def _or_dash(value: object) -> str:
    """A figure as the failure lines show it: `-` where there is none (a killed child has no
    exit code of its own), as on AWS."""
    return "-" if value is None else str(value)


def read_logs(
    path_of: Callable[[int], Path], offsets: dict[int, int], *, last: bool
) -> Generator[bytes, None, None]:
    """Each child's log (`path_of(index)`) from its offset in `offsets`, which it advances; a
    character still being written is left for the next pass, unless this is the `last`."""
    for i in offsets:
        try:
            log = path_of(i).open("rb")
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
