"""Where a run executes: `local` (this machine, the default), `aws` (AWS Batch) or `slurm` (a
Slurm cluster); and each
engine's limits on a step, which the spec layer asks here.

The registry that builds a backend is base.py; the limits are apart from it so that checking
a spec imports no backend (only its limits module: aws/limits.py is the request sizes and the
name rules), and nothing the spec layer imports leads back to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any


class BackendName(StrEnum):
    LOCAL = "local"
    AWS = "aws"
    SLURM = "slurm"


def _aws_limits(pipeline: str, step: Mapping[str, Any]) -> str | None:
    from opsctl.backends.aws.limits import step_problem

    return step_problem(pipeline, step)


# Each engine's reason to refuse a step of pipeline `pipeline` (as the manifest records it), or
# None. A local child runs whatever the spec allows, so the local backend has none.
LIMITS: dict[BackendName, Callable[[str, Mapping[str, Any]], str | None]] = {BackendName.AWS: _aws_limits}


def step_problem(pipeline: str, step: Mapping[str, Any]) -> str | None:
    """The first engine's reason to refuse `step`, or None: a spec that validates runs on every
    backend, so a step any engine would refuse fails `opsctl validate` at its line."""
    return next((found for limits in LIMITS.values() if (found := limits(pipeline, step))), None)
