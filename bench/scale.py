"""What a run costs as it grows: storage requests per poll, per child start, per command and in
all, against issue 16's targets, and the local supervisor's tick and a local `status` at
3 x 10,000 children.

Each configuration is one real run on the AWS backend: `AwsBackend.launch`, AWS Batch played by
tests/batch_player.py with real `opsctl-worker` processes (16 at a time), S3 on a moto server on
127.0.0.1. Requests are counted where they happen: opsctl's own calls with botocore hooks, each
worker's in its ledger (the sum over the run) and, before its first command, in its log's
"first command" event. Polls are counted while the step runs (about half done) and after it
ended. The 10^6-command / 10,000-child row is projected from the measured per-unit costs.

Usage: python bench/scale.py [--large | --local]   (--large adds 10^5 commands and 1,000 children;
--local measures the local backend's rows only)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import moto_env  # noqa: E402 - after the path is set
from tests.batch_player import playing  # noqa: E402

KIB = 1024


def storage(calls: Counter[str]) -> int:
    return sum(
        n
        for name, n in calls.items()
        if name in ("GetObject", "HeadObject", "PutObject", "ListObjectsV2", "DeleteObject")
    )


def one_run(outputs: dict[str, str], work: Path, commands: int, children: int, split: str) -> dict[str, Any]:
    from opsctl.backends.aws.backend import AwsBackend
    from opsctl.infra import load_outputs
    from opsctl_contract.markers import ledger_totals
    from opsctl_contract.storage import s3_client

    with playing(work / "player", outputs) as player:
        player.capacity = 16
        backend = AwsBackend(load_outputs(player.infra))
        spec = work / "scale.yaml"
        spec.write_text(
            f"name: scale\nsteps:\n  - name: s\n    queue: cpu\n    array_size: {children}\n"
            f"    split: {split}\n    commands: {{template: 'true {{i}}', range: {commands}}}\n"
        )
        calls = moto_env.counting(backend.api.batch, s3_client())
        run_id = backend.launch(spec)
        launch = storage(calls)
        calls.clear()
        started = time.monotonic()
        running_poll: Counter[str] | None = None
        while not player.idle():
            doc = backend.status(run_id)
            step = doc["steps"][0]
            if (
                running_poll is None
                and step["state"] == "RUNNING"
                and step["commands"]["done"] >= commands // 3
            ):
                calls.clear()
                backend.status(run_id)
                running_poll = Counter(calls)
            time.sleep(0.5)
        run_s = time.monotonic() - started
        calls.clear()
        backend.status(run_id)
        first_after = Counter(calls)
        calls.clear()
        backend.status(run_id)
        steady = Counter(calls)
        store = backend.state_store(run_id)
        ledger = ledger_totals(store, "s")
        starts: dict[int, tuple[int, int]] = {}  # child: (requests, bytes) before its first command
        for log in player.workdir.glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if '"first command"' in line:
                    event = json.loads(line)
                    starts[event["child"]] = (sum(event["requests"].values()), event["read_bytes"])
    workers = ledger["put"] + ledger["get"]
    lengths = [len(f"true {k}\n".encode()) for k in range(commands)]
    own = {
        i: sum(lengths[commands * i // children : commands * (i + 1) // children]) for i in range(children)
    }
    download = max((b / (2 * own[i] + 64 * KIB) for i, (_, b) in starts.items()), default=0.0)
    start_total = sum(r for r, _ in starts.values())
    return {
        "commands": commands,
        "children": children,
        "split": split,
        "seconds": run_s,
        "launch": launch,
        "poll_running": storage(running_poll) if running_poll else None,
        "poll_first_after": storage(first_after),
        "poll_steady": storage(steady),
        "start_max": max((r for r, _ in starts.values()), default=0),
        "start_mean": start_total / max(len(starts), 1),
        "download_ratio": download,
        "per_command": (workers - start_total) / commands,
        "total": launch + workers,
    }


def local_costs() -> tuple[float, float, float]:
    """Over 3 steps x 10,000 children: CPU milliseconds of an idle supervisor tick, and of a
    `status` (every row read and checked for shape), beside its peer, the same rows fetched
    from SQLite and nothing else."""
    import os
    import sqlite3

    from opsctl import pipeline
    from opsctl.backends import local

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OPSCTL_HOME"] = tmp
        spec = Path(tmp) / "wide.yaml"
        steps = "".join(
            f"  - name: s{k}\n    queue: cpu\n    array_size: 10000\n"
            f"    commands: {{template: 'true {{i}}', range: 10000}}\n"
            + (f"    depends_on: [s{k - 1}]\n" if k else "")
            for k in range(3)
        )
        spec.write_text(f"name: wide\nsteps:\n{steps}")
        run = local.create_run(pipeline.load(spec), max_parallel=1)
        supervisor = local.Supervisor(run)
        supervisor.max_parallel = 0  # nothing starts: every tick is the idle case
        with supervisor.conn as conn:
            supervisor._tick(conn)
        began = time.process_time()
        ticks = 2000
        for _ in range(ticks):
            with supervisor.conn as conn:
                supervisor._tick(conn)
        tick_ms = (time.process_time() - began) * 1000 / ticks
        supervisor.conn.close()

        def per_call(work: Any, times: int = 10) -> float:
            work()  # the page cache and the compiled row checks warm
            began = time.process_time()
            for _ in range(times):
                work()
            return (time.process_time() - began) * 1000 / times

        def fetch() -> None:
            with sqlite3.connect(run.path / "run.db") as conn:
                conn.row_factory = sqlite3.Row
                for table in ("run", "step", "child"):
                    conn.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - fixed names

        status_ms = per_call(lambda: local.status(run.run_id))
        return tick_ms, status_ms, per_call(fetch)


def empty_children(children: int = 10_000, rounds: int = 3) -> tuple[float, float]:
    """Wall seconds from `opsctl launch` until the run is over, medians of `rounds`: a step of
    `children` children for one command (all but one with nothing to run), against its peer,
    the same command as a single job, alternating in the same run."""
    import os
    import statistics

    sys.path.insert(0, str(ROOT / "bench"))
    from _localrun import launch_and_wait

    wide, one = [], []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OPSCTL_HOME"] = tmp
        specs = {}
        for size in (children, 1):
            specs[size] = Path(tmp) / f"s{size}.yaml"
            specs[size].write_text(
                "name: idle\nsteps:\n  - name: s\n    queue: cpu\n"
                f"    array_size: {size}\n    command: 'true'\n"
            )
        for _ in range(rounds):
            wide.append(launch_and_wait(specs[children], dict(os.environ), max_parallel=2)[0])
            one.append(launch_and_wait(specs[1], dict(os.environ), max_parallel=2)[0])
    return statistics.median(wide), statistics.median(one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="add 10^5 commands and 1,000 children")
    parser.add_argument("--local", action="store_true", help="the local backend's rows only")
    args = parser.parse_args()
    if args.local:
        local_results(*local_costs())
        empty_results(*empty_children())
        return
    configs = [
        (1_000, 100, "contiguous"),
        (1_000, 100, "dynamic"),
        (10_000, 100, "contiguous"),
        (10_000, 100, "dynamic"),
        (10_000, 8, "dynamic"),
        (10_000, 1_000, "dynamic"),
    ]
    if args.large:
        configs += [(100_000, 100, "contiguous"), (100_000, 1_000, "dynamic")]
    proc, endpoint = moto_env.start_server()
    rows = []
    try:
        moto_env.point_boto3_at(endpoint)
        import boto3

        outputs = moto_env.create_batch_env(endpoint)
        for n, (commands, children, split) in enumerate(configs):
            bucket = f"opsctl-scale-{n}"
            boto3.client("s3").create_bucket(Bucket=bucket)
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(one_run({**outputs, "bucket": bucket}, Path(tmp), commands, children, split))
    finally:
        moto_env.stop_server(proc)
    tick_ms, status_ms, fetch_ms = local_costs()

    columns = ("commands", "children", "split", "launch", "poll run", "poll end", "steady", "start max")
    print(" ".join(f"{c:>9}" for c in columns), f"{'per cmd':>8} {'total':>8} {'budget':>8}")
    for r in rows:
        budget = 2.2 * r["commands"] + 10 * r["children"]
        values = (r["commands"], r["children"], r["split"], r["launch"], r["poll_running"] or "-")
        values += (r["poll_first_after"], r["poll_steady"], r["start_max"])
        print(" ".join(f"{v:>9}" for v in values), f"{r['per_command']:>8.3f} {r['total']:>8} {budget:>8.0f}")
    # Projection to 10^6 commands over 10,000 children from the largest measured run per split.
    for split in ("contiguous", "dynamic"):
        largest = max((r for r in rows if r["split"] == split), key=lambda r: (r["commands"], r["children"]))
        n, c = 1_000_000, 10_000
        total = largest["per_command"] * n + largest["start_mean"] * c + largest["launch"]
        print(
            f"projected {split}, 10^6 commands / 10,000 children: a poll {1 + math.ceil(c / 1000)} storage "
            f"requests (ledger pages); {total:,.0f} requests in all ({total / (2.2 * n + 10 * c):.2f} of "
            f"2.2N + 10C), ${total / 1000 * 0.005:,.2f} at most at S3's PUT price"
        )
    for r in rows:
        name = f"{r['split']}_{r['commands']}_{r['children']}"
        limit = 1 + math.ceil(r["children"] / 1000)
        if r["poll_running"] is not None:
            print(f"RESULT scale_poll_running_{name} {r['poll_running']} requests target <= {limit}")
        print(f"RESULT scale_poll_ended_{name} {r['poll_steady']} requests target <= {limit}")
        print(f"RESULT scale_child_start_{name} {r['start_max']} requests target <= 4")
        print(f"RESULT scale_child_download_{name} {r['download_ratio']:.2f} ratio target <= 1.0")
        if r["split"] == "dynamic":
            print(f"RESULT scale_per_command_{name} {r['per_command']:.3f} requests target <= 2.0")
        ratio = r["total"] / (2.2 * r["commands"] + 10 * r["children"])
        print(f"RESULT scale_total_{name} {ratio:.2f} ratio target <= 1.0")
    local_results(tick_ms, status_ms, fetch_ms)


def local_results(tick_ms: float, status_ms: float, fetch_ms: float) -> None:
    print(f"local supervisor: {tick_ms:.3f} ms of CPU per idle tick over 3 x 10,000 children")
    print(f"RESULT scale_local_tick_ms {tick_ms:.3f} ms target <= 1.0")
    print(
        f"local status over 3 x 10,000 children: {status_ms:.1f} ms of CPU, "
        f"the same rows fetched alone {fetch_ms:.1f} ms"
    )
    print(f"RESULT scale_local_status_vs_fetch {status_ms / fetch_ms:.2f} ratio target <= 3.0")


def empty_results(wide_s: float, one_s: float) -> None:
    print(
        f"local run of 10,000 children for 1 command: {wide_s:.2f} s from launch to its end; "
        f"the command as one job: {one_s:.2f} s"
    )
    print(f"RESULT scale_local_empty_children_vs_one_job {wide_s / one_s:.2f} ratio target <= 2.0")


if __name__ == "__main__":
    main()
