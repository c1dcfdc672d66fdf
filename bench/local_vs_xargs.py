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
import tempfile
import time
from pathlib import Path

from _localrun import BIN, launch_and_wait

TARGET = 1.15
TMPFS = "/dev/shm"  # noqa: S108 - only ever used through mkdtemp: a private, randomly named folder


def time_xargs(list_file: Path) -> float:
    started = time.perf_counter()
    with list_file.open() as stdin:
        subprocess.run(["xargs", "-P2", "-I{}", "sh", "-c", "{}"], stdin=stdin, check=True)
    return time.perf_counter() - started


def time_opsctl(spec: Path, commands: int, env: dict[str, str]) -> float:
    elapsed, run_id = launch_and_wait(spec, env, max_parallel=2)
    status = json.loads(
        subprocess.run(
            [BIN / "opsctl", "status", run_id, "--json"], env=env, capture_output=True, check=True
        ).stdout
    )
    done = status["steps"][0]["commands"]["done"]
    if done != commands:
        raise SystemExit(f"bench run did not succeed: {done} of {commands} commands done")
    return elapsed


def file_create_us(where: str | None, files: int = 1000) -> float:
    """Microseconds to create one marker-sized file beside a process start, as a worker does.

    Measured just before each place's rounds and printed with them: on some VMs it swings
    tenfold from one minute to the next (35 µs to 600 µs on ext4 here), and it is what
    separates the disk and tmpfs rows.
    """
    spent = 0.0
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        for k in range(files):
            subprocess.run(["true"], check=True)
            started = time.perf_counter()
            staged = f"{tmp}/.tmp-{k}"
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b'{"exit_code": 0, "index": %d, "seconds": 0.001}' % k)
            os.close(fd)
            os.replace(staged, f"{tmp}/{k}")  # noqa: PTH105 - the worker's own calls, like for like
            spent += time.perf_counter() - started
    return spent / files * 1e6


def measure(commands: int, rounds: int, where: str | None) -> tuple[list[float], list[float]]:
    """xargs and opsctl, alternating, with the list file and run directories under `where`."""
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        work = Path(tmp)
        list_file = work / "list.txt"
        list_file.write_text("true\n" * commands)
        spec = work / "bench.yaml"
        spec.write_text(
            "name: bench\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 2\n    commands: list.txt\n"
        )
        os.environ["OPSCTL_HOME"] = str(work / "home")
        env = dict(os.environ)
        xargs_runs, opsctl_runs = [], []
        for _ in range(rounds):
            # Each timed run starts with the previous one's files written back, so neither
            # runner pays for the other's dirty pages.
            os.sync()
            xargs_runs.append(time_xargs(list_file))
            os.sync()
            opsctl_runs.append(time_opsctl(spec, commands, env))
    return xargs_runs, opsctl_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="xargs and opsctl alternate; medians are shown")
    args = parser.parse_args()

    # The default temp dir is on disk; /dev/shm (tmpfs) shows what is left without the
    # file-system cost of creating 10,000 marker files.
    places = [("disk", None)] + ([("tmpfs", TMPFS)] if Path(TMPFS).is_dir() else [])
    print(
        f"{'runner':<36}{'median s':>10}{'ms/command':>12}   "
        f"({args.commands} x `true`, 2 at a time, {args.rounds} rounds)"
    )
    results = []
    for label, where in places:
        probe = file_create_us(where)
        xargs_runs, opsctl_runs = measure(args.commands, args.rounds, where)
        xargs_s, opsctl_s = statistics.median(xargs_runs), statistics.median(opsctl_runs)
        ratio = statistics.median(o / x for o, x in zip(opsctl_runs, xargs_runs, strict=True))
        print(f"{f'xargs -P2 sh -c ({label})':<36}{xargs_s:>10.2f}{xargs_s / args.commands * 1000:>12.3f}")
        print(
            f"{f'opsctl local, 2 children ({label})':<36}{opsctl_s:>10.2f}"
            f"{opsctl_s / args.commands * 1000:>12.3f}   rounds: "
            + ", ".join(f"{o:.2f}" for o in opsctl_runs)
            + f"; one marker file here: {probe:.0f} µs"
        )
        name = "local_vs_xargs" if label == "disk" else f"local_vs_xargs_{label}"
        results.append(f"RESULT {name} {ratio:.2f} ratio target <= {TARGET}")
    print("\n".join(results))


if __name__ == "__main__":
    main()
