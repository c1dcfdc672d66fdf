"""Work balance: 200 commands of log-normal duration (about 60 s of work in all) over 8 children
with 8 slots, in three list orders (as drawn, heaviest first, lightest first), split
contiguously and dynamically, against the greedy floor of each draw.

The greedy floor is self-scheduling on paper: each free slot takes the next command in list
order, at no cost at all (Graham's list scheduling). It is the best a schedule that cannot see
durations does without knowing more than the list, and on a list sorted heaviest first it is
within 4/3 of the optimum; the lower bound max(total / 8, longest command) is printed beside it,
but no duration-blind schedule reaches that when one long command comes late.

Each draw also runs on paper as the dynamic split's own protocol (worker/claims.py: strided
shards, chains of claims sized by `block_size`, thieves by `worth_visit`) with no overheads and
exact knowledge of what is left ("ideal"): ideal / greedy is the protocol's price, measured /
ideal opsctl's own costs.

Measured, on the local backend and with `--on s3` on a moto S3 server on 127.0.0.1 (8 real
workers started at once, claims with `If-None-Match: *`): a run's makespan is the span of its
commands, from the first one's start to the last one's end as the workers logged them, against
the greedy floor of the same slots, each free from when its worker logged its start. That
leaves out what no split changes, the workers' start-up and exit (the "step" column: the
dynamic local run's elapsed time as `opsctl status` reports it, first child started to last
ended), and it keeps what a split does with children that start late.

The figures are means over `--seeds` draws: single draws land anywhere from 0.9 to 1.2 of the
greedy floor for one algorithm, because schedules that differ anywhere end differently.

Usage: python bench/balance.py [--commands 200] [--seconds 60] [--seeds 10] [--on local s3]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from _localrun import BIN, launch_and_wait

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opsctl.backends.local import LocalRun
from opsctl.run.plan import write_work
from opsctl_contract import work
from opsctl_contract.storage import open_store
from worker.claims import block_size, worth_visit

TARGET = 1.05
SLOTS = 8
ORDERS = {
    "random": lambda durations: durations,
    "heaviest_first": lambda durations: sorted(durations, reverse=True),
    "lightest_first": sorted,
}


def greedy_floor(durations: list[float], slots: int = SLOTS, free: list[float] | None = None) -> float:
    """List scheduling in list order at zero overhead, the yardstick: each command to the slot
    free first, every slot free from 0 or from `free`'s time."""
    heap = sorted(free) if free is not None else [0.0] * slots
    for duration in durations:
        heapq.heappush(heap, heapq.heappop(heap) + duration)
    return max(heap)


def ideal_dynamic(durations: list[float], children: int = SLOTS) -> float:
    """Makespan of the dynamic split's protocol (worker/claims.py) when claiming, starting and
    ending cost nothing and every thief knows exactly what is left where: each child claims its
    own shard's chain from the front, `block_size` commands at a time at its pace on that shard
    (on a visit, the owner's until it ran some), then visits the started shard with most left
    per thief that `worth_visit` allows and claims at that chain's end. A pace is known once a
    claim has ended, as in a ledger."""
    n = len(durations)
    shards = work.shards(n, range(n), "dynamic", children)
    front = [0] * children  # each chain's end
    thieves = [0] * children
    on: list[int | None] = list(range(children))  # the shard each child claims in; None: done
    ran, busy = [0] * children, [0.0] * children  # per child, the claims that ended
    here = [(0, 0.0)] * children  # per child, what it ran of the shard it is on
    events = [(0.0, i, 0, 0.0) for i in range(children)]  # (time free, child, its claim's size, seconds)
    end = 0.0

    def pace_ms(child: int) -> int:
        return round(1000 * busy[child] / ran[child]) if ran[child] else 0

    def claim(now: float, child: int, shard: int, owner_ms: int = 0) -> None:
        count, seconds = here[child]
        estimate = seconds / count if count else (owner_ms / 1000 if owner_ms else None)
        size = block_size(len(shards[shard]) - front[shard], estimate)
        took = sum(durations[k] for k in shards[shard][front[shard] : front[shard] + size])
        front[shard] += size
        heapq.heappush(events, (now + took, child, size, took))

    def share(j: int) -> int:
        return (len(shards[j]) - front[j]) // (thieves[j] + 1)

    while events:
        now, child, size, took = heapq.heappop(events)
        ran[child] += size
        busy[child] += took
        count, seconds = here[child]
        here[child] = (count + size, seconds + took)
        shard = on[child]
        if shard is not None and front[shard] < len(shards[shard]):
            claim(now, child, shard)
            continue
        if shard is not None and shard != child:
            thieves[shard] -= 1
        paces = {j: pace_ms(j) or pace_ms(child) for j in range(children)}
        candidates = [
            j for j in range(children) if j != child and worth_visit(share(j), paces[j], thieves[j])
        ]
        if not candidates:
            on[child] = None
            end = max(end, now)
            continue
        j = max(candidates, key=share)
        on[child], here[child] = j, (0, 0.0)
        thieves[j] += 1
        claim(now, child, j, paces[j])
    return end


@dataclass
class Measured:
    """One real run: its commands' span, the greedy floor of its slots, and its step's elapsed
    time as `opsctl status` reports it (local runs)."""

    span: float
    floor: float
    between: float  # seconds between a worker's commands, a command: recording, claiming
    step: float = 0.0


def measured(logs: list[str], durations: list[float]) -> Measured:
    """From each worker's log (JSON events): the span of the commands, and the greedy floor of
    slots each free from when its worker logged its start (`shard`), relative to the first
    command's start."""
    starts, spans, idle = [], [], 0.0
    for log in logs:
        events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        at = {e["event"]: _time(e) for e in events}
        mine = [(_time(e) - e["seconds"], _time(e)) for e in events if e["event"] == "command"]
        if mine:
            idle += (
                max(end for _, end in mine) - min(start for start, _ in mine) - sum(e - s for s, e in mine)
            )
        spans.extend(mine)
        starts.append(at["shard"])
    if len(spans) != len(durations):
        raise SystemExit(f"bench: {len(spans)} commands logged, {len(durations)} given")
    first = min(start for start, _ in spans)
    floor = greedy_floor(durations, free=[max(0.0, start - first) for start in starts])
    return Measured(max(end for _, end in spans) - first, floor, idle / len(spans))


def _time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def local_run(tmp: Path, name: str, split: str, durations: list[float]) -> Measured:
    listing = "".join(f"      - sleep {d:.3f}\n" for d in durations)
    spec = tmp / f"{name}.yaml"
    spec.write_text(
        f"name: balance\nsteps:\n  - name: s\n    queue: cpu\n    array_size: {SLOTS}\n"
        f"    split: {split}\n    commands:\n{listing}"
    )
    _, run_id = launch_and_wait(spec, dict(os.environ), max_parallel=SLOTS)
    run = LocalRun.find(run_id)
    with sqlite3.connect(run.path / "run.db") as db:
        started, finished = db.execute("SELECT started, finished FROM step").fetchone()
    logs = [run.log_path("s", i).read_text() for i in range(SLOTS)]
    result = measured(logs, durations)
    result.step = float(finished - started)
    return result


def s3_run(bucket: str, durations: list[float]) -> Measured:
    """The dynamic step run by 8 real workers started at once, its state on moto S3."""
    place = f"s3://{bucket}/{uuid.uuid4().hex[:8]}"
    commands = [f"sleep {d:.3f}" for d in durations]
    store = open_store(place)
    store.write("lists/s.txt", ("\n".join(commands) + "\n").encode())
    step = {"name": "s", "split": "dynamic", "array_size": SLOTS}
    write_work(open_store(f"{place}/state"), step, commands, 1)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_BATCH_", "OPSCTL_"))}
    contract = {
        "LIST_FILE_S3_PATH": f"{place}/lists/s.txt",
        "OPSCTL_STATE_URI": f"{place}/state",
        "OPSCTL_STEP": "s",
        "OPSCTL_SPLIT": "dynamic",
        "ARRAY_SIZE": str(SLOTS),
    }
    workers = [
        subprocess.Popen(
            [BIN / "opsctl-worker", "run"],
            env={**base, **contract, "AWS_BATCH_JOB_ARRAY_INDEX": str(i)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(SLOTS)
    ]
    logs = []
    for proc in workers:
        _, stderr = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"bench worker exited {proc.returncode}: {stderr[-2000:]}")
        logs.append(stderr)
    return measured(logs, durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="total work")
    parser.add_argument("--seeds", type=int, default=10, help="independent draws of the durations")
    parser.add_argument(
        "--on", nargs="+", choices=["local", "s3"], default=["local"], help="where to run the draws"
    )
    args = parser.parse_args()

    local, s3 = "local" in args.on, "s3" in args.on
    columns = ["greedy", "ideal", *(["contiguous", "dynamic"] if local else []), *(["s3"] if s3 else [])]
    columns += ["step"] if local else []
    print(f"{args.commands} commands, {args.seconds:.0f} s of work a draw, {SLOTS} children x {SLOTS} slots")
    print("seconds (x greedy floor: on paper; for real runs, of the same slots as they started)")
    print("ideal: the dynamic protocol on paper; step: the dynamic local run as `opsctl status` times it")
    bucket, server = "", None
    if s3:
        from tests import moto_env

        server, endpoint = moto_env.start_server()
        moto_env.point_boto3_at(endpoint)
        import boto3

        bucket = f"opsctl-balance-{uuid.uuid4().hex[:12]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["OPSCTL_HOME"] = str(Path(tmp) / "home")
            for order, arrange in ORDERS.items():
                print(f"\n{order}")
                print(f"{'seed':<6}{'longest':>9}{'bound':>8}" + "".join(f"{c:>16}" for c in columns))
                ratios: dict[str, list[float]] = {c: [] for c in columns}
                between: dict[str, list[float]] = {}
                for seed in range(11, 11 + args.seeds):
                    rng = random.Random(seed)
                    raw = [rng.lognormvariate(0.0, 1.0) for _ in range(args.commands)]
                    durations = arrange([round(d * args.seconds / sum(raw), 3) for d in raw])
                    bound = max(sum(durations) / SLOTS, max(durations))
                    paper = {"greedy": greedy_floor(durations), "ideal": ideal_dynamic(durations)}
                    runs = {
                        split: local_run(Path(tmp), f"{order}-{split}-{seed}", split, durations)
                        for split in (("contiguous", "dynamic") if local else ())
                    }
                    if s3:
                        runs["s3"] = s3_run(bucket, durations)
                    cells = {name: (value, value / paper["greedy"]) for name, value in paper.items()}
                    cells |= {name: (run.span, run.span / run.floor) for name, run in runs.items()}
                    if local:
                        cells["step"] = (runs["dynamic"].step, runs["dynamic"].step / paper["greedy"])
                    for name in columns:
                        ratios[name].append(cells[name][1])
                    for name, run in runs.items():
                        between.setdefault(name, []).append(run.between)
                    row = "".join(f"{f'{cells[c][0]:.2f} ({cells[c][1]:.2f})':>16}" for c in columns)
                    print(f"{seed:<6}{max(durations):>9.2f}{bound:>8.2f}{row}")
                results[order] = {name: statistics.mean(values) for name, values in ratios.items()}
                print("means x greedy floor: " + ", ".join(f"{n} {v:.3f}" for n, v in results[order].items()))
                gaps = ", ".join(f"{n} {1000 * statistics.mean(v):.1f}" for n, v in between.items())
                print(f"ms between a worker's commands, a command (recording, claiming): {gaps}")
    finally:
        if server is not None:
            from tests import moto_env

            moto_env.stop_server(server)
    print()
    for order, means in results.items():
        for where, column in (("", "dynamic"), ("s3_", "s3")):
            if column in means:
                figure = f"{means[column]:.3f} ratio target <= {TARGET}"
                print(f"RESULT balance_{where}dynamic_vs_greedy_floor_{order} {figure}")
        print(f"the protocol on paper ({order}): {means['ideal']:.3f} x greedy floor")
        if local:
            print(f"contiguous ({order}): {means['contiguous']:.3f} x greedy floor")


if __name__ == "__main__":
    main()
