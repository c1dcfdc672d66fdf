"""Shared by the local-backend benchmarks: launch a spec and time it until the run is over."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def launch_and_wait(spec: Path, env: dict[str, str], max_parallel: int) -> tuple[float, str]:
    """Seconds from `opsctl launch` until the supervisor exits, and the run id.

    The supervisor is not our child, so it is waited for through a pidfd: no polling that would
    take CPU from the run, and no polling delay in the figure.
    """
    from opsctl.backends.local import LocalRun

    started = time.perf_counter()
    launched = subprocess.run(
        [BIN / "opsctl", "launch", str(spec), "--json", "--max-parallel", str(max_parallel)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    run = LocalRun.find(json.loads(launched.stdout)["run_id"])
    pidfd = os.pidfd_open(run.run_row()["supervisor_pid"])
    try:
        select.select([pidfd], [], [])
    finally:
        os.close(pidfd)
    elapsed = time.perf_counter() - started
    state = run.run_row()["state"]
    if state != "SUCCEEDED":
        raise SystemExit(f"bench run {run.run_id} ended {state}")
    return elapsed, run.run_id
