"""What a run's SQLite database (run.db) holds: its tables, the migration of one an older opsctl
made, and the shape of the rows opsctl writes, checked in SQL wherever they are read.

Apart from state.py, which creates, opens and locks a run: this is the database's contract,
shared by the supervisor that writes it, every command that reads it, and the tests that hold
the SQL check (`fits`) and the walker's shapes (ROWS) to the same verdict.
"""

from __future__ import annotations

import functools
import sqlite3

from opsctl.limits import MAX_ARRAY_SIZE, MAX_INTEGER, STEP_NAME
from opsctl.run.ids import RUN_ID
from opsctl.run.states import JobState
from opsctl_contract.markers import WIDTH
from opsctl_contract.shapes import Int, Maybe, OneOf, Text

SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    id TEXT PRIMARY KEY, pipeline TEXT, state TEXT, reason TEXT,
    created REAL, finished REAL, supervisor_pid INTEGER, max_parallel INTEGER,
    generation INTEGER DEFAULT 1
);
CREATE TABLE IF NOT EXISTS step (
    name TEXT PRIMARY KEY, position INTEGER, state TEXT, reason TEXT, started REAL, finished REAL,
    done INTEGER, failed INTEGER, reexecuted INTEGER
);
CREATE TABLE IF NOT EXISTS child (
    step TEXT, idx INTEGER, state TEXT, attempt INTEGER, pid INTEGER,
    exit_code INTEGER, reason TEXT, started REAL, finished REAL,
    PRIMARY KEY (step, idx)
);
-- Every attempt of every child, for `opsctl report`: `child` keeps only the latest. cpu is the
-- worker's and its commands' user + system seconds (wait4's rusage).
CREATE TABLE IF NOT EXISTS attempt (
    step TEXT, idx INTEGER, generation INTEGER, attempt INTEGER, started REAL, finished REAL,
    exit_code INTEGER, reason TEXT, cpu REAL,
    PRIMARY KEY (step, idx, generation, attempt)
);
"""


# The rows of run.db as opsctl writes them (opsctl_contract/shapes.py), checked where they are
# read (`LocalRun.rows`): a value edited in, or written by another tool, is one line naming the
# database and the value, not a traceback in arithmetic or a path built from it.
_STATE = OneOf(tuple(s.value for s in JobState))
_TIME = Maybe(float)  # seconds since the epoch
_COUNT = Maybe(Int(0, 10**WIDTH - 1))
ROWS: dict[str, dict[str, object]] = {
    "run": {
        "id": Text(RUN_ID),
        "pipeline": str,
        "state": _STATE,
        "reason": Maybe(str),
        "created": float,
        "finished": _TIME,
        "supervisor_pid": Maybe(Int(1, 2**31 - 1)),
        "max_parallel": Int(1, MAX_ARRAY_SIZE),
        "generation": Int(1, MAX_INTEGER),
    },
    "step": {
        "name": Text(STEP_NAME),
        "position": Int(0, MAX_INTEGER),
        "state": _STATE,
        "reason": Maybe(str),
        "started": _TIME,
        "finished": _TIME,
        "done": _COUNT,
        "failed": _COUNT,
        "reexecuted": _COUNT,
    },
    "child": {
        "step": Text(STEP_NAME),
        "idx": Int(0, MAX_ARRAY_SIZE - 1),
        "state": _STATE,
        "attempt": Int(0, MAX_INTEGER),
        "pid": Maybe(Int(1, 2**31 - 1)),
        "exit_code": Maybe(Int(-(2**31), 2**31 - 1)),
        "reason": Maybe(str),
        "started": _TIME,
        "finished": _TIME,
    },
    "attempt": {
        "step": Text(STEP_NAME),
        "idx": Int(0, MAX_ARRAY_SIZE - 1),
        "generation": Int(1, MAX_INTEGER),
        "attempt": Int(1, MAX_INTEGER),
        "started": _TIME,
        "finished": _TIME,
        "exit_code": Maybe(Int(-(2**31), 2**31 - 1)),
        "reason": Maybe(str),
        "cpu": Maybe(float),
    },
}


def _sql_check(shape: object, column: str) -> str:
    """`problem(value, shape) is None` as an SQL expression over `column`, for the scalar shapes
    a row holds: SQLite checks a table's rows in C, where the walker costs 17 µs a row (a status
    of 30,000 children reads every row at each poll). A Text shape (a regular expression) is
    true here and checked on the column's distinct values instead (`fits`)."""
    if isinstance(shape, Maybe):
        return f"({column} IS NULL OR {_sql_check(shape.shape, column)})"
    if isinstance(shape, Int):
        return f"(typeof({column}) = 'integer' AND {column} BETWEEN {shape.low} AND {shape.high})"
    if isinstance(shape, OneOf) and all(isinstance(v, str) and "'" not in v for v in shape.values):
        return f"(typeof({column}) = 'text' AND {column} IN ({', '.join(repr(v) for v in shape.values)}))"
    if shape is float:  # SQLite stores no NaN (it becomes NULL); an infinity is out of this range
        return f"(typeof({column}) IN ('integer', 'real') AND abs({column}) <= 1.7976931348623157e308)"
    if shape is str or isinstance(shape, Text):
        return f"(typeof({column}) = 'text')"
    raise TypeError(f"no SQL check for {shape!r}")


@functools.cache
def _row_checks(table: str, columns: tuple[str, ...]) -> tuple[str, tuple[tuple[str, Text], ...]] | None:
    """ROWS[table] for the columns the database has, compiled once per process: a query that
    finds a row out of shape, and the Text columns to match on their distinct values. None when
    a column the shape needs is missing, so that every row is out of shape."""
    shape = ROWS[table]
    if any(k not in columns and not isinstance(v, Maybe) for k, v in shape.items()):
        return None
    present = [(k, v) for k, v in shape.items() if k in columns]
    query = " AND ".join(_sql_check(v, k) for k, v in present)
    texts = tuple((k, t) for k, v in present if isinstance(t := v.shape if isinstance(v, Maybe) else v, Text))
    return f"SELECT EXISTS (SELECT 1 FROM {table} WHERE NOT coalesce({query}, 0))", texts  # noqa: S608


def fits(conn: sqlite3.Connection, table: str, columns: tuple[str, ...]) -> bool:
    """Whether every row of `table` has the shape ROWS gives it, asked of SQLite."""
    checks = _row_checks(table, columns)
    if checks is None:
        return False
    query, texts = checks
    (out_of_shape,) = conn.execute(query).fetchone()
    return not out_of_shape and all(
        value is None or (isinstance(value, str) and shape.pattern.fullmatch(value))
        for column, shape in texts
        for (value,) in conn.execute(f"SELECT DISTINCT {column} FROM {table}")  # noqa: S608 - fixed names
    )


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a run's database made by an older opsctl to this schema (the step's command counts,
    the attempt table)."""
    conn.executescript(SCHEMA[SCHEMA.index("-- Every attempt") :])
    columns = {row[1] for row in conn.execute("PRAGMA table_info(step)")}
    for column in ("done", "failed", "reexecuted"):
        if column not in columns:
            conn.execute(f"ALTER TABLE step ADD COLUMN {column} INTEGER")
