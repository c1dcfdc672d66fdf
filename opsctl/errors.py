"""The errors a user can act on.

Everything the CLI and the worker print for a failure goes through these classes, so that bad
input always becomes exit code 2 and one line, and an operation that failed becomes exit code 1,
never a traceback.
"""

from __future__ import annotations


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
