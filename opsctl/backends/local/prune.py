"""`opsctl prune`: the local runs' housekeeping, a dry run unless asked.

Two kinds of leftovers: finished runs older than a given age (their whole directory), and files
a killed writer left staged (`.opsctl-staging/`, opsctl_contract/storage.py) in any run that is
not running. A run is looked at only while its lock is held here, so no supervisor can start in
it meanwhile; a running run, or one whose state cannot be read, is left alone and named.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from opsctl.backends.local.state import BrokenRun, LocalRun, Running, read_only, runs_dir, writable
from opsctl.run.ids import check_run_id
from opsctl.run.states import TERMINAL, JobState
from opsctl_contract.errors import BadInput
from opsctl_contract.storage import STAGING, LocalStore

BUILDING_GRACE = 3600.0  # a launch builds its run directory in well under this


@dataclass(frozen=True)
class Leftover:
    path: Path
    what: str  # for the user: which run and why
    size: int
    remove: Callable[[], object]


def prune(older_than_days: float, *, apply: bool, say: Callable[[str], None]) -> tuple[int, int]:
    """List (and with `apply`, remove) what is left over; (items, bytes) found."""
    cutoff = time.time() - older_than_days * 86400
    found = list(_leftovers(cutoff, say, apply))
    for item in found:
        say(f"{'deleted' if apply else 'would delete'} {item.what}: {_size(item.size)}")
        if apply:
            item.remove()
    total = sum(item.size for item in found)
    if not found:
        say("nothing to prune")
    elif apply:
        say(f"removed {len(found)} item{'s' if len(found) != 1 else ''}, {_size(total)}")
    else:
        say(f"dry run: {len(found)} item{'s' if len(found) != 1 else ''}, {_size(total)}; --yes removes them")
    return len(found), total


def _leftovers(cutoff: float, say: Callable[[str], None], apply: bool) -> Iterator[Leftover]:
    base = runs_dir()
    if apply and base.is_dir() and not writable(base):
        raise read_only(base, "prune --yes")
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if path.name.startswith(".building-"):
            if path.stat().st_mtime < time.time() - BUILDING_GRACE:
                yield Leftover(path, f"{path.name} (a launch that never finished)", _du(path), _rmtree(path))
            continue
        try:
            run = LocalRun(check_run_id(path.name), path)
        except BadInput:
            continue  # not a run
        if not writable(run.path):  # a dry run in a run it could not prune anyway
            if run.supervised():
                say(f"skipped {run.run_id}: running")
            else:
                yield from _of_run(run, cutoff, say)
            continue
        try:
            lock = run.lock()
        except Running:
            say(f"skipped {run.run_id}: running")
            continue
        try:  # the lock is held until this run's leftovers have been dealt with
            yield from _of_run(run, cutoff, say)
        finally:
            os.close(lock)


def _of_run(run: LocalRun, cutoff: float, say: Callable[[str], None]) -> Iterator[Leftover]:
    try:
        row = run.run_row()
        state, finished = row["state"], row["finished"]
    except (BrokenRun, OSError) as e:
        say(f"skipped {run.run_id}: {e}")
        return
    if state in {s.value for s in TERMINAL} and finished and finished < cutoff:
        age = (time.time() - finished) / 86400
        what = f"run {run.run_id} ({JobState(state).value}, ended {age:.0f} days ago)"
        yield Leftover(run.path, what, _du(run.path), _rmtree(run.path))
        return
    for staging in _staging_folders(run.path):
        files = [e for e in os.scandir(staging) if e.is_file(follow_symlinks=False)]
        if files:
            size = sum(e.stat(follow_symlinks=False).st_size for e in files)
            what = f"{len(files)} staged file{'s' if len(files) != 1 else ''} in {staging}"
            yield Leftover(staging, what, size, LocalStore(staging.parent).sweep)


def _staging_folders(run_dir: Path) -> Iterator[Path]:
    """Every staging folder in a run: its state's, and those of stores the commands opened."""
    for folder, subdirs, _files in os.walk(run_dir):
        if STAGING in subdirs:
            yield Path(folder) / STAGING
        subdirs[:] = [d for d in subdirs if d != STAGING]


def _du(path: Path) -> int:
    total = 0
    for folder, _subdirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # gone meanwhile
                total += (Path(folder) / name).lstat().st_size
    return total


def _rmtree(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
