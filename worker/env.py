"""The worker environment contract (docs/worker.md): what a container is told about its work.

AWS Batch sets the array index and attempt; opsctl sets the rest when it submits the step, and
the local backend sets all of them the same way, so the worker cannot tell the two apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from opsctl_contract import environment as names
from opsctl_contract.environment import INDEX_VARS, SIZE_VARS
from opsctl_contract.errors import BadInput

SPLITS = ("contiguous", "dynamic")
MAX_ARRAY_SIZE = 10_000
STEP_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class WorkerEnv:
    index: int
    array_size: int
    list_uri: str
    attempt: int
    run_id: str
    step: str
    state_uri: str
    split: str
    generation: int = 1  # bumped by each `opsctl resume`: claims of older generations are void

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WorkerEnv:
        """Read and check the contract; any bad value is `BadInput` (worker exit code 2)."""
        size = _int(environ, SIZE_VARS, default=1, low=1, high=MAX_ARRAY_SIZE)
        index = _int(environ, INDEX_VARS, default=0, low=0, high=size - 1, hint=f" (array size {size})")
        attempt = _int(environ, (names.ATTEMPT,), default=1, low=1, high=None)
        generation = _int(environ, (names.GENERATION,), default=1, low=1, high=None)
        split = environ.get(names.SPLIT, "contiguous")
        if split not in SPLITS:
            raise BadInput(f"environment: {names.SPLIT}={split!r} is not one of {' | '.join(SPLITS)}")
        step = _required(environ, names.STEP)
        if not STEP_NAME.fullmatch(step):
            raise BadInput(f"environment: {names.STEP}={step!r} must be 1..128 of A-Z a-z 0-9 _ -")
        return cls(
            index=index,
            array_size=size,
            list_uri=_required(environ, names.LIST_FILE),
            attempt=attempt,
            run_id=environ.get(names.RUN_ID, ""),
            step=step,
            state_uri=_required(environ, names.STATE_URI),
            split=split,
            generation=generation,
        )


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise BadInput(f"environment: {name} is not set (required by the worker contract)")
    return value


def _int(
    environ: Mapping[str, str],
    names: tuple[str, ...],
    *,
    default: int,
    low: int,
    high: int | None,
    hint: str = "",
) -> int:
    """The first of `names` that is set, as an integer within low..high."""
    for name in names:
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        limit = f"{low}..{high}" if high is not None else f">= {low}"
        try:
            value = int(raw)
        except ValueError:
            raise BadInput(f"environment: {name}={raw!r} is not an integer ({limit})") from None
        if value < low or (high is not None and value > high):
            raise BadInput(f"environment: {name}={value} is outside {limit}{hint}")
        return value
    return default
