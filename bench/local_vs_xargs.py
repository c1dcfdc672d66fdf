"""10,000 trivial commands on the local backend against `xargs -P2`, timed in the same run.

Both run the same list of `true` commands two at a time: xargs with `sh -c` per command, opsctl
as one step of 2 children (each a worker that runs its slice, writes a marker per command and
logs an event per command). The ratio is opsctl's bookkeeping cost per command.

Usage: python bench/local_vs_xargs.py [--commands N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TARGET = 1.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=10_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        list_file = work / "list.txt"
        list_file.write_text("true\n" * args.commands)
        spec = work / "bench.yaml"
        spec.write_text(
            "name: bench\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 2\n    commands: list.txt\n"
        )
        env = {**os.environ, "OPSCTL_HOME": str(work / "home")}

        started = time.perf_counter()
        with list_file.open() as stdin:
            subprocess.run(["xargs", "-P2", "-I{}", "sh", "-c", "{}"], stdin=stdin, check=True)
        xargs_s = time.perf_counter() - started

        started = time.perf_counter()
        launched = subprocess.run(
            [BIN / "opsctl", "launch", str(spec), "--json", "--max-parallel", "2"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        run_id = json.loads(launched.stdout)["run_id"]
        subprocess.run(
            [BIN / "opsctl", "watch", run_id, "--json", "--interval", "0.1"],
            env=env,
            capture_output=True,
            check=True,
        )
        opsctl_s = time.perf_counter() - started

    ratio = opsctl_s / xargs_s
    print(f"{'runner':<28}{'seconds':>10}{'ms/command':>12}   ({args.commands} x `true`, 2 at a time)")
    print(f"{'xargs -P2 sh -c':<28}{xargs_s:>10.2f}{xargs_s / args.commands * 1000:>12.3f}")
    print(f"{'opsctl local, 2 children':<28}{opsctl_s:>10.2f}{opsctl_s / args.commands * 1000:>12.3f}")
    print(f"RESULT local_vs_xargs {ratio:.2f} ratio target <= {TARGET}")


if __name__ == "__main__":
    main()
