"""Slurm commands of a launch and of one status poll at 10,000 children: opsctl against one job
per child polled one by one.

A real one-node Slurm (tests/slurm_cluster.py) takes a run of one step of 10,000 children
(MaxArraySize 10001: one array), throttled to 2 running at once so that the poll sees a live
array: a few running, most pending. opsctl's calls are counted by its client (`calls`) on the
launch and on 5 polls, and each poll (in this process: no interpreter start-up) is timed beside
one `squeue` of the same run, the floor any poll of it pays; a watch polls every few seconds, so
the target is 100 ms a poll. The peer is the per-job polling other tools fall into
(a `squeue -j` or `sacct -j` per job): 10,000 commands a poll; its figure follows from the
count, it is not run. The run is killed at the end.

`--accounting`: the cluster keeps accounting (slurmdbd and MariaDB), so that a poll is one
`sacct` of the run, timed beside the same `sacct` from the shell.

Usage: python bench/slurm_calls.py [--children 10000] [--accounting]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.slurm_cluster import SlurmCluster, missing  # noqa: E402 - after the path is set

POLLS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=10_000, help="children of the one step")
    parser.add_argument("--accounting", action="store_true", help="a cluster with slurmdbd: polls by sacct")
    args = parser.parse_args()
    children, accounting = args.children, args.accounting
    why = missing(accounting=accounting)
    if why is not None:
        raise SystemExit(f"bench/slurm_calls.py: {why}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        cluster = SlurmCluster(root / "slurm", max_array_size=10_001, accounting=accounting).start()
        try:
            os.environ.update(SLURM_CONF=str(cluster.conf), OPSCTL_HOME=str(root / "home"))
            from opsctl.backends.slurm.backend import SlurmBackend

            spec = root / "wide.yaml"
            spec.write_text(
                "name: wide\nsteps:\n  - name: s\n    queue: cpu\n"
                f"    array_size: {children}\n"
                f"    commands: {{template: 'sleep 1 # {{i}}', range: {children}}}\n"
            )
            backend = SlurmBackend()
            began = time.perf_counter()
            run_id = backend.launch(spec, max_parallel=2)
            launch_s = time.perf_counter() - began
            launched = dict(backend.calls)
            time.sleep(5)  # let a few children start, and slurmdbd record them
            job = backend.run(run_id).doc["arrays"]["s"][0]["job"]
            peer_argv = (
                [
                    "sacct",
                    "-n",
                    "-P",
                    "-X",
                    f"--name=opsctl-{run_id}",
                    f"--jobs={job}",
                    "--format=JobID,State,Reason",
                ]
                if accounting
                else ["squeue", "-h", "--states=all", f"--name=opsctl-{run_id}", "--format=%F|%K|%T|%r"]
            )
            polls, peers = [], []
            for _ in range(POLLS):
                polling = SlurmBackend()
                began = time.perf_counter()
                doc = polling.status(run_id)
                polls.append(time.perf_counter() - began)
                began = time.perf_counter()
                subprocess.run(peer_argv, env=cluster.env, capture_output=True, check=True)
                peers.append(time.perf_counter() - began)
            poll_calls = sum(polling.calls.values())
            counts = doc["steps"][0]["counts"]
            SlurmBackend().kill(run_id)
        finally:
            cluster.stop()
    poll, peer = statistics.median(polls), statistics.median(peers)
    print(f"launch of {children} children: {launched} in {launch_s:.2f} s")
    print(f"one poll: {dict(polling.calls)}; children by state then: {counts}")
    command = "sacct" if accounting else "squeue"
    print(f"poll median {poll * 1000:.0f} ms; one {command} of the run from the shell {peer * 1000:.0f} ms")
    print("| approach | Slurm commands a poll | poll ms |")
    print("|---|---|---|")
    print(f"| opsctl (one {command} --name a run) | {poll_calls} | {poll * 1000:.0f} |")
    print(f"| one {command} a job | {children} | - |")
    print(f"RESULT slurm_commands_per_poll {poll_calls} calls target <= 1")
    if accounting:  # the floor is sacct's own, a database query: the target is opsctl's part
        print(f"RESULT sacct_poll_vs_one_sacct {poll / peer:.2f} target <= 2.0")
    else:
        print(f"poll against one squeue of the run: {poll / peer:.2f}")
        print(f"RESULT poll_ms_at_{children}_children {poll * 1000:.0f} ms target <= 100")


if __name__ == "__main__":
    main()
