"""Run ids, and where this machine keeps its runs (opsctl's home).

A run id names a run on every backend and is built into paths, S3 keys and job names, so it is
checked before any of them is made from it.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

from opsctl_contract.errors import BadInput, brief

# `<pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>`, the pipeline name being 1..40 of [a-z0-9_-] starting
# with a letter or digit (opsctl.pipeline.PIPELINE_NAME): so no run id starts with '-', which
# AWS Batch refuses at the start of a job name and a command line would read as an option.
RUN_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")


def check_run_id(run_id: str) -> str:
    """`run_id` if it has the form opsctl gives run ids; `BadInput` before any path or key is
    built from it (a `../` or an absolute path would reach another run, or another home)."""
    if not RUN_ID.fullmatch(run_id):
        raise BadInput(
            f"run id {brief(run_id)} is not one opsctl makes: <pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>, "
            "at most 61 characters of a-z, 0-9, '-' and '_', starting with a letter or digit "
            "(`opsctl list` shows the runs)"
        )
    return run_id


def new_run_id(pipeline_name: str, now: datetime | None = None) -> str:
    """`<pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>`: sortable by time, unique enough per second."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    # os.urandom, which `secrets` wraps: importing `secrets` loads hashlib, 5 ms of every command.
    return f"{pipeline_name}-{stamp}-{os.urandom(2).hex()}"


def opsctl_home() -> Path:
    """`$OPSCTL_HOME`, else the XDG state directory (`~/.local/state/opsctl`), made absolute: the
    run directories, and the OPSCTL_RUN_URI and OPSCTL_STATE_URI of every child, are built from
    it, and a command that changes directory must still find its run. A home that exists but is
    not a directory is `BadInput` for every command."""
    if home := os.environ.get("OPSCTL_HOME"):
        path, source = Path(home).absolute(), "OPSCTL_HOME"
    else:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        path, source = Path(state).absolute() / "opsctl", "opsctl's home; OPSCTL_HOME moves it"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return path  # made by the first launch
    except OSError as e:
        raise BadInput(f"{path} ({source}): cannot be used: {e.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise BadInput(f"{path} ({source}) is not a directory: opsctl keeps its runs in a directory there")
    return path
