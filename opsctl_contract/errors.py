"""The errors a user can act on, on both sides of the contract.

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
