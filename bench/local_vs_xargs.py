"""10,000 trivial commands on the local backend against `xargs -P2`, timed in the same run.

Both run the same list of `true` commands two at a time: xargs with `sh -c` per command, opsctl
as one step of 2 children (each a worker that runs its slice, writes a marker per command and
logs an event per command). opsctl is timed from `opsctl launch` until the run's state is
SUCCEEDED, so launch, the supervisor and both workers' start-up are inside the figure.

Usage: python bench/local_vs_xargs.py [--commands N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TARGET = 1.15


def time_xargs(list_file: Path) -> float:
    started = time.perf_counter()
    with list_file.open() as stdin:
        subprocess.run(["xargs", "-P2", "-I{}", "sh", "-c", "{}"], stdin=stdin, check=True)
    return time.perf_counter() - started


def time_opsctl(spec: Path, commands: int, env: dict[str, str]) -> float:
    from opsctl.backends.local import LocalRun

    started = time.perf_counter()
    launched = subprocess.run(
        [BIN / "opsctl", "launch", str(spec), "--json", "--max-parallel", "2"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    run = LocalRun.find(json.loads(launched.stdout)["run_id"])
    # Poll the run's state row (a cheap query), not `opsctl watch`: the figure is the run's
    # own time, not that of a display refreshing beside it.
    while run.run_row()["state"] not in ("SUCCEEDED", "FAILED"):
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    status = json.loads(
        subprocess.run(
            [BIN / "opsctl", "status", run.run_id, "--json"], env=env, capture_output=True, check=True
        ).stdout
    )
    done = status["steps"][0]["commands"]["done"]
    if status["state"] != "SUCCEEDED" or done != commands:
        raise SystemExit(f"bench run did not succeed: {status['state']}, {done} commands done")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="xargs and opsctl alternate; medians are shown")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        list_file = work / "list.txt"
        list_file.write_text("true\n" * args.commands)
        spec = work / "bench.yaml"
        spec.write_text(
            "name: bench\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 2\n    commands: list.txt\n"
        )
        os.environ["OPSCTL_HOME"] = str(work / "home")
        env = dict(os.environ)
        xargs_runs, opsctl_runs = [], []
        for _ in range(args.rounds):
            xargs_runs.append(time_xargs(list_file))
            opsctl_runs.append(time_opsctl(spec, args.commands, env))

    xargs_s, opsctl_s = statistics.median(xargs_runs), statistics.median(opsctl_runs)
    ratio = statistics.median(o / x for o, x in zip(opsctl_runs, xargs_runs, strict=True))
    print(
        f"{'runner':<28}{'median s':>10}{'ms/command':>12}   "
        f"({args.commands} x `true`, 2 at a time, {args.rounds} rounds)"
    )
    print(f"{'xargs -P2 sh -c':<28}{xargs_s:>10.2f}{xargs_s / args.commands * 1000:>12.3f}")
    print(f"{'opsctl local, 2 children':<28}{opsctl_s:>10.2f}{opsctl_s / args.commands * 1000:>12.3f}")
    print(f"RESULT local_vs_xargs {ratio:.2f} ratio target <= {TARGET}")


if __name__ == "__main__":
    main()
