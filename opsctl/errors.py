"""The operator side's own errors: a spec's problem at its line, and a launch stopped part way.

The base classes, and what their exit codes mean, are the contract's (opsctl_contract/errors.py).
"""

from __future__ import annotations

from opsctl_contract.errors import BadInput, OpsctlError


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
