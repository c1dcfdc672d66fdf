"""The failure summary of `watch` and `report`, the same on every backend.

A failed child is first of all a failed command: what a user needs is that command's text and
what it wrote on stderr, not the worker's events around it. A child's log (a local log file, a
CloudWatch stream) holds the worker's JSON events interleaved with every command's output, and
its events name a failed command by index only, so the summary does not read it from there: the
worker's `failed/<k>` marker (opsctl_contract/markers.py) holds the command's exit code and the
tail of its own stderr, and which child and attempt ran it; the step's work pack
(opsctl_contract/work.py) holds the command's text, in the child's shard, two ranged reads away.
Each child then reads: the failed command and its stderr, the reason the backend gives (exit
codes, Batch's status reason), and the last lines of its log with the worker's events made short.

A child with no failed command on record (a timeout or a kill stops the command in flight
without a marker; bad input, a failed GPU preflight or an image that cannot be pulled end the
attempt before any command) reads as before: the reason, then the log's last lines.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl_contract.errors import OpsctlError
from opsctl_contract.listfile import BOM, command_of
from opsctl_contract.markers import FAILED, Markers
from opsctl_contract.split import contiguous_slice
from opsctl_contract.storage import NotFound, Store
from opsctl_contract.work import Pack

READS = 20  # failed markers read for one child at most: a child that failed 10,000 commands costs 20
STDERR_LINES = 10  # lines of a failed command's stderr shown
MORE_SHOWN = 5  # indices of a child's other failed commands listed
TEXT_CHARS = 300  # characters of a command shown (a command may be 128 KiB)
# The local log's line before each attempt's output (supervisor.py, `_spawn`).
ATTEMPT_HEADER = re.compile(r"== \S+ \S+\[\d+\] attempt \d+ ==")
# What every worker event carries (worker/cli.py binds them), said once by the child's label.
_BOUND = frozenset({"event", "level", "timestamp", "run_id", "step", "child", "attempt"})


@dataclass(frozen=True)
class FailedCommand:
    """One failed command as its marker records it, with its text from the work pack."""

    index: int  # k, its index in the step's list file
    text: str | None  # None: not in the child's shard of any work pack (a run before packs)
    exit_code: int | None
    stderr: tuple[str, ...]  # the last lines of its own stderr


@dataclass(frozen=True)
class ChildFailure:
    """What a failed child's failed commands were: the first in full, the others by index."""

    first: FailedCommand
    others: tuple[int, ...] = field(default=())


def failed_indices(store: Store, step: str) -> list[int]:
    """The step's commands that failed and have no done marker, sorted: two listings (on S3, a
    request per 1,000 markers each), once per failed step."""
    markers = Markers(store, step)
    return sorted(markers.indices(FAILED) - markers.indices("done"))


def child_failure(
    store: Store,
    step: Mapping[str, Any],
    child: int,
    generation: int,
    failed: Sequence[int],
    text_of: Callable[[int], str | None] | None = None,
) -> ChildFailure | None:
    """The failed commands child `child` of `step` (its manifest record) ran, from `failed`
    (`failed_indices`); None when none is on record. Reads the child's shard of the newest work
    pack (2 ranged reads) and at most READS failed markers.

    Contiguous split: a child's commands lie in its seed slice in every generation, so its
    failures are found without reading a marker first. Dynamic split: a child may have run
    commands of another's shard, so each marker's `child` says whose failure it is, those of its
    own shard read first; the text of one it took from another shard is `text_of`'s (the local
    backend reads its list file; on AWS that would be the whole list, so it is not shown)."""
    texts = _shard_texts(store, step["name"], child, generation)
    if step["split"] == "contiguous":
        own = contiguous_slice(step["commands"], child, step["array_size"])
        candidates = list(
            failed[bisect.bisect_left(failed, own.start) : bisect.bisect_left(failed, own.stop)]
        )
    else:
        candidates = [k for k in failed if k in texts] + [k for k in failed if k not in texts]
    markers = Markers(store, step["name"])
    found: list[FailedCommand] = []
    for k in candidates[:READS]:
        try:
            record = markers.read(FAILED, k)
        except (NotFound, ValueError):  # done meanwhile, or a marker that is not JSON
            continue
        if not isinstance(record, dict) or record.get("child", child) != child:
            continue  # a thief's failure (dynamic split)
        text = texts[k] if k in texts else text_of(k) if text_of else None
        found.append(_command(k, text, record))
        if step["split"] == "contiguous":
            break  # every other candidate is this child's: listed by index, unread
    if not found:
        return None
    others = [c.index for c in found[1:]]
    if step["split"] == "contiguous":
        others = [k for k in candidates if k != found[0].index]
    return ChildFailure(found[0], tuple(others))


def _command(index: int, text: str | None, record: dict[str, Any]) -> FailedCommand:
    """A marker's record, which comes from a state file: values of another type are unknown."""
    code = record.get("exit_code")
    tail = record.get("stderr_tail")
    lines = tail.removesuffix("\n").split("\n") if isinstance(tail, str) and tail else []
    return FailedCommand(
        index=index,
        text=text,
        exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        stderr=tuple(lines[-STDERR_LINES:]),
    )


def _shard_texts(store: Store, step: str, child: int, generation: int) -> dict[int, str]:
    """The commands of child `child`'s shard in the newest work pack of `step` at or before
    `generation`, by index: a resume writes a pack for the steps it runs again only, and each
    holds every command not done, so the newest holds a failed command still not done."""
    for g in range(generation, 0, -1):
        try:
            return {c.index: c.text for c in Pack(store, step, g).shard(child)}
        except NotFound:
            continue
        except OpsctlError:  # a damaged pack: the summary goes on without texts
            return {}
    return {}


def list_file_text(path: Path, index: int) -> str | None:
    """Command `index` of a list file on this machine, read a line at a time (a list file may
    hold 10^6 commands), as opsctl_contract.listfile counts them; None past its end."""
    seen = 0
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f):
                line = raw.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
                command = command_of(line.removeprefix(BOM) if number == 0 else line)
                if command is None:
                    continue
                if seen == index:
                    return command
                seen += 1
    except OSError:
        return None
    return None


def summary(
    label: str, reason: str, failure: ChildFailure | None, log: Sequence[str], logs: str
) -> list[str]:
    """A failed child's lines: `label` (`step[index]`), the failed command, its stderr, the
    reason (`reason`: the backend's words, exit codes), then the last lines of its log (`log`,
    from `log_lines`) and the command that prints the whole of it (`logs`). Not yet made
    visible: the caller passes every line through opsctl.visible."""
    if failure is None:
        return [f"{label} failed: {reason}", *(f"    {line}" for line in log)]
    first = failure.first
    text = "(text not found)" if first.text is None else _shortened(first.text)
    code = "" if first.exit_code is None else f" (exit {first.exit_code})"
    out = [f"{label} command {first.index} failed{code}: {text}"]
    if first.stderr:
        out.append("  its stderr, last lines:" if len(first.stderr) > 1 else "  its stderr:")
        out.extend(f"    {line}" for line in first.stderr)
    else:
        out.append("  its stderr: (empty)")
    if failure.others:
        listed = ", ".join(map(str, failure.others[:MORE_SHOWN]))
        more = ", ..." if len(failure.others) > MORE_SHOWN else ""
        out.append(f"  {len(failure.others)} more of its commands failed: {listed}{more}")
    out.append(f"  {label} failed: {reason}")
    if log:
        out.append(f"  its log, last lines ({logs}):")
        out.extend(f"    {line}" for line in log)
    return out


def _shortened(text: str) -> str:
    if len(text) <= TEXT_CHARS:
        return text
    return f"{text[:TEXT_CHARS]}... ({len(text)} characters)"


def log_lines(lines: Sequence[str], keep: int) -> list[str]:
    """The last `keep` lines of a child's log as the summary shows them: from the latest
    attempt's header on (a local log holds every attempt), each worker event made one short
    line (`worker_line`), its accounting event ("first command") left out."""
    starts = [i for i, line in enumerate(lines) if ATTEMPT_HEADER.fullmatch(line)]
    shown = [worker_line(line) for line in lines[starts[-1] if starts else 0 :]]
    return [line for line in shown if line is not None][-keep:]


def worker_line(line: str) -> str | None:
    """A worker event (a structlog JSON object: `event`, `level`, `timestamp`) as a short line,
    `[worker] command 3 failed (exit 4, 0.2 s)`; None for the accounting event; any other line
    (a command's output) as it is."""
    if not line.startswith("{"):
        return line
    try:
        event = json.loads(line)
    except ValueError:
        return line
    if not isinstance(event, dict) or not {"event", "level", "timestamp"} <= event.keys():
        return line
    name = event["event"]
    level = "" if event["level"] == "info" else f"{event['level']}: "
    if name == "first command":
        return None
    if name == "command":
        facts = [f"exit {event['exit_code']}"] if "exit_code" in event else []
        facts += [f"{event['seconds']} s"] if "seconds" in event else []
        detail = f" ({', '.join(facts)})" if facts else ""
        reason = f": {event['reason']}" if event.get("reason") else ""
        return f"[worker] command {event.get('index')} {event.get('outcome')}{detail}{reason}"
    rest = [
        f"{key} {value}"
        for key, value in event.items()
        if key not in _BOUND and not isinstance(value, dict | list)
    ]
    return f"[worker] {level}{name}" + (f": {', '.join(rest)}" if rest else "")
