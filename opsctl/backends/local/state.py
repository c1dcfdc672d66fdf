"""A local run on disk: its directory, its SQLite state, and the lock that gives it one supervisor.

Run directory (`$OPSCTL_HOME/runs/<run_id>/`, owner only: 0700, its files 0600; under
`--containers` shared by group with the containers' user, `share_with_containers`):
    run.db           run, step and child states (SQLite, WAL)
    manifest.json    the pipeline as launched
    lists/<step>.txt the commands each step's workers read
    state/           markers (OPSCTL_STATE_URI)
    logs/<step>/<index>.log  each child's stdout and stderr, all attempts
    supervisor.log   the supervisor's own output
    supervisor.lock  held (flock) by the run's supervisor for its whole life

A run directory appears whole or not at all: it is built under a hidden name and renamed into
place, so a full disk or a killed `launch` leaves no half-made run for `list` to trip on.
run.db's tables, their migration and the shape of their rows are schema.py's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from opsctl.backends.local.schema import ROWS, SCHEMA, fits
from opsctl.run.ids import check_run_id, new_run_id, opsctl_home
from opsctl.run.manifest import BadState, read_manifest
from opsctl.run.plan import stage
from opsctl.run.states import KILLED, JobState
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.files import SPEC_LIMIT, read_file
from opsctl_contract.shapes import problem
from opsctl_contract.storage import LocalStore, private_dirs

if TYPE_CHECKING:  # the supervisor process starts without the YAML parser: it reads the manifest
    from opsctl import pipeline as spec
    from opsctl.records import RunManifest

# An attempt `opsctl kill` stopped says so: its exit code alone (143, SIGTERM) reads as a failure.
KILLED_ATTEMPT = f"{KILLED} (opsctl kill)"


class BrokenRun(OpsctlError):
    """A run whose state database cannot be read: it alone is affected."""


class Running(OpsctlError):
    """The run's lock is held: a supervisor runs it."""


MANIFEST_LIMIT = 4 * SPEC_LIMIT  # the spec's text, and a record of each of its steps


def read_only(path: Path, doing: str) -> BadInput:
    """The one line for a command that must write where it cannot (a read-only file system, a
    directory of another user's): what it was doing, and that reads still work there."""
    return BadInput(
        f"{path} is read-only here, and {doing} writes there; status, logs, list and report still read it"
    )


def writable(path: Path) -> bool:
    """Whether this process may create files in `path` (access(2): a read-only mount says no,
    even to root)."""
    return os.access(path, os.W_OK | os.X_OK)


def runs_dir() -> Path:
    return opsctl_home() / "runs"


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create `path` with `mode` (0600: never more, whatever the umask) holding `data`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def open_log(path: Path) -> Any:
    """A log file to append to, created owner-only."""
    private_dirs(path.parent)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600), "ab")


@dataclass(frozen=True)
class LocalRun:
    """One run's directory and database."""

    run_id: str
    path: Path

    @classmethod
    def find(cls, run_id: str) -> LocalRun:
        path = runs_dir() / check_run_id(run_id)
        if not path.is_dir():
            raise BadInput(
                f"run '{run_id}' not found under {runs_dir()} (OPSCTL_HOME); `opsctl list` shows runs"
            )
        return cls(run_id, path)

    @contextlib.contextmanager
    def db(self, timeout: float = 5) -> Iterator[sqlite3.Connection]:
        """A connection whose changes are committed when the block ends without error.

        A database that is missing, truncated, locked past `timeout` or without its tables is
        `BrokenRun`: one line that names it, for this run only.
        """
        path = self.path / "run.db"
        if not path.is_file():
            raise BrokenRun(f"run {self.run_id}: its state database {path} is missing")
        # Where nobody can write, SQLite cannot make the WAL's shared-memory file that readers
        # need: read the file as it is (immutable), which is what it is there.
        where = path if writable(self.path) else f"file:{quote(str(path))}?mode=ro&immutable=1"
        try:
            conn = sqlite3.connect(where, timeout=timeout, uri=where is not path)
        except sqlite3.Error as e:
            raise BrokenRun(f"run {self.run_id}: cannot open its state database {path} ({e})") from None
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        except sqlite3.DatabaseError as e:
            if "readonly" in str(e):
                raise read_only(self.path, "recording the change") from None
            raise BrokenRun(f"run {self.run_id}: its state database {path} cannot be used ({e})") from None
        finally:
            conn.close()

    @functools.cached_property
    def manifest(self) -> RunManifest:
        """The manifest, read once and checked for shape (opsctl.run.manifest.MANIFEST): it never changes
        after the run is created."""
        path = self.path / "manifest.json"
        try:
            data = read_file(path, MANIFEST_LIMIT, "manifest")
        except BadInput as e:
            raise BadState(f"run {self.run_id}: {e}") from None
        return read_manifest(data, self.run_id, str(path))

    def rows(self, conn: sqlite3.Connection, table: str, order: str = "") -> list[sqlite3.Row]:
        """Every row of `table` (one of ROWS), checked for shape; `BadState` naming the first
        value out of place."""
        cursor = conn.execute(f"SELECT * FROM {table} {order}")  # noqa: S608 - fixed names
        rows = cursor.fetchall()
        if fits(conn, table, tuple(c[0] for c in cursor.description)):
            return rows
        for row in rows:  # the walker, for the message
            if found := problem(dict(row), ROWS[table], table):
                raise BadState(
                    f"run {self.run_id}: its state database {self.path / 'run.db'} holds a row opsctl "
                    f"did not write: {found}"
                )
        return rows

    def log_path(self, step: str, index: int) -> Path:
        return self.path / "logs" / step / f"{index}.log"

    def run_row(self) -> sqlite3.Row:
        with self.db() as conn:
            rows = self.rows(conn, "run")
        if len(rows) != 1:
            raise BrokenRun(f"run {self.run_id}: its state database has {len(rows)} run records, not one")
        return rows[0]

    # --- the supervisor's lock --------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        return self.path / "supervisor.lock"

    def lock(self) -> int:
        """An fd holding the run's exclusive lock; `OpsctlError` naming the holder if it is held.

        flock(2) locks die with the last descriptor of their open file, so the lock goes when
        the supervisor goes, however it ends; `start_supervisor` hands this fd to it.
        """
        if not writable(self.path):
            raise read_only(self.path, "taking the run's lock")
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Running(
                f"{self.run_id} is running: its supervisor (pid {self.lock_holder() or '?'}) holds "
                f"{self.lock_path}; `opsctl kill {self.run_id}` stops it"
            ) from None
        return fd

    def lock_holder(self) -> int | None:
        """The pid written into the lock file by the supervisor that holds it."""
        with contextlib.suppress(OSError, ValueError):
            return int(self.lock_path.read_text().strip() or 0) or None
        return None

    def supervised(self) -> bool:
        """True while a supervisor holds the run's lock. A shared lock tests it without writing,
        so this works in a read-only run too (and no lock file: no supervisor ever ran)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def create_run(
    pipe: spec.Pipeline,
    max_parallel: int | None = None,
    *,
    engine: str | None = None,
    images: Mapping[str, str] | None = None,
    gpus: bool = True,
) -> LocalRun:
    """The run directory and database of a new run, every job SUBMITTED; nothing runs yet.
    `engine`: the container engine every child runs under (`--containers`), or None; `images`:
    each step's image there; `gpus`: False when `gpus:` steps run without GPUs (`--no-gpus`)."""
    run_id = new_run_id(pipe.name)
    base = runs_dir()
    building = base / f".building-{run_id}"
    run = LocalRun(run_id, base / run_id)
    try:
        private_dirs(base)
        private_dirs(building / "lists")
        private_dirs(building / "state")
        if engine:
            share_with_containers(building)

        def put_list(step: str, text: bytes) -> str:
            write_private(building / "lists" / f"{step}.txt", text, 0o640 if engine else 0o600)
            return str(run.path / "lists" / f"{step}.txt")  # where the run's directory will be

        record = stage(pipe, run_id, "local", LocalStore(building / "state"), put_list)
        if engine:
            record["engine"] = engine
            for recorded in record["steps"]:
                recorded["image"] = (images or {})[recorded["name"]]
            if not gpus:
                record["no_gpus"] = True
        write_private(building / "manifest.json", json.dumps(record, indent=2).encode())
        write_private(building / "run.db", b"")  # SQLite keeps the mode for its WAL and shm
        conn = sqlite3.connect(building / "run.db")
        try:
            with conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
                conn.execute(
                    "INSERT INTO run VALUES (?, ?, ?, NULL, ?, NULL, NULL, ?, 1)",
                    (run_id, pipe.name, JobState.SUBMITTED, time.time(), max_parallel or os.cpu_count() or 1),
                )
                for position, step in enumerate(pipe.steps):
                    conn.execute(
                        "INSERT INTO step (name, position, state) VALUES (?, ?, ?)",
                        (step.name, position, JobState.SUBMITTED),
                    )
                    conn.executemany(
                        "INSERT INTO child VALUES (?, ?, ?, 0, NULL, NULL, NULL, NULL, NULL)",
                        [(step.name, i, JobState.SUBMITTED) for i in range(step.array_size)],
                    )
        finally:
            conn.close()
        building.rename(run.path)
    except (OSError, sqlite3.Error) as e:
        shutil.rmtree(building, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise read_only(base, "launch") from None
        reason = getattr(e, "strerror", None) or str(e)
        raise OpsctlError(f"cannot create the run under {base}: {reason}; nothing was started") from None
    return run


def share_with_containers(run_dir: Path) -> None:
    """Open a run's directory to its containers' user (uid 10001 in the worker images) by group:
    the directory and its state folder are made setgid and group-writable (2770), its lists
    folder group-readable, and the containers run with the directory's group added
    (containers.command). What the workers and commands create inside stays in that group
    (opsctl_contract.storage's shared mode), so this user still reads and removes all of it;
    nobody else gets in, as the folders above are owner-only."""
    for folder, mode in ((run_dir, 0o2770), (run_dir / "state", 0o2770), (run_dir / "lists", 0o2750)):
        folder.chmod(mode)


def mark_killed(conn: sqlite3.Connection) -> None:
    """Everything not finished ends FAILED, "killed by user"; an attempt cut short says whose kill."""
    conn.execute(
        "UPDATE attempt SET reason = ?, finished = ? WHERE finished IS NULL", (KILLED_ATTEMPT, time.time())
    )
    for table in ("child", "step", "run"):
        conn.execute(
            f"UPDATE {table} SET state = ?, reason = ?, finished = ? WHERE state NOT IN (?, ?)",  # noqa: S608 - fixed names
            (JobState.FAILED, KILLED, time.time(), JobState.SUCCEEDED, JobState.FAILED),
        )
