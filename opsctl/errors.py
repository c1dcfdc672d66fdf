"""The errors a user can act on.

Everything the CLI and the worker print for a failure goes through these classes, so that bad
input always becomes exit code 2 and one line, and an operation that failed becomes exit code 1,
never a traceback.
"""

from __future__ import annotations

import reprlib
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxdict = _REPR.maxset = _REPR.maxtuple = 4
_REPR.maxlevel = 2


def brief(value: Any) -> str:
    """A value as an error message shows it: its repr, cut short. A user's value can be
    megabytes long, or a YAML alias graph that would expand without end."""
    return _REPR.repr(value)


class OpsctlError(Exception):
    """An operation failed for a reason we can state in one line (exit code 1)."""

    exit_code = 1

    def __str__(self) -> str:
        # One line, whatever the message was built from: multi-line messages from libraries
        # (YAML, botocore) are folded so a shell user sees them whole.
        return " ".join(super().__str__().split())


class BadInput(OpsctlError):
    """The user's input is wrong (spec, list file, environment, config): exit code 2.

    Not worth retrying: the same input fails the same way.
    """

    exit_code = 2


class SpecError(BadInput):
    """A pipeline spec problem, located at a file and (where known) a line."""

    def __init__(self, message: str, source: str, line: int | None = None) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line
        self.reason = message


class LaunchIncomplete(OpsctlError):
    """A launch that recorded its run but could not submit every step.

    The run exists (its manifest names what was submitted), so the CLI still remembers it and
    the message says how to finish it; the exit code is that of the error that stopped it.
    """

    def __init__(self, run_id: str, submitted: list[str], cause: OpsctlError) -> None:
        super().__init__(
            f"{run_id}: launch stopped after submitting {', '.join(submitted) or 'no step'}: {cause}. "
            f"The run is recorded; `opsctl resume {run_id}` submits the rest"
        )
        self.run_id = run_id
        self.exit_code = cause.exit_code
