"""API calls of an AWS launch and of one watch poll on a finished run: opsctl against one job per
command.

4 steps x 10,000 commands (arrays of 100 children). The run really runs: AWS Batch is played by
tests/batch_player.py with real `opsctl-worker` processes, S3 and CloudWatch Logs are a moto
server on 127.0.0.1. opsctl's calls are counted with botocore event hooks on the launch and,
once every child has ended and all 40,000 done markers are written, on two status polls: the
first one also records each step's final state in the manifest, the second is a steady poll.
The first poll that sees a step end counts its markers once (a LIST page per 1,000) and records
the figures; every later poll of the finished run is DescribeJobs alone, within issue 16's target
(ceil(steps/100) DescribeJobs plus, per step, 1 + ceil(children/1000) storage requests).

The peer is the one-job-per-command approach other tools take: 40,000 SubmitJob calls, which
AWS Batch's fixed 50 TPS limit makes at least 800 s, and 400 DescribeJobs calls (100 ids a call)
for every poll. Its figures follow from those limits; submitting 40,000 jobs is not run.

Usage: python bench/aws_calls.py [--commands 10000]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import moto_env  # noqa: E402 - after the path is set
from tests.batch_player import playing  # noqa: E402

STEPS, CHILDREN = 4, 100
SUBMIT_TPS = 50  # AWS Batch SubmitJob rate limit


def spec_text(commands: int) -> str:
    lines = ["name: bench", "steps:"]
    for k in range(STEPS):
        lines += [
            f"  - name: s{k}",
            "    queue: cpu",  # the played hosts have no GPU for a gpu step's --preflight-gpu
            f"    array_size: {CHILDREN}",
            f"    commands: {{template: 'true {{i}}', range: {commands}}}",
        ]
        if k:
            lines.append(f"    depends_on: [s{k - 1}]")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=10_000, help="commands per step")
    commands = parser.parse_args().commands
    proc, endpoint = moto_env.start_server()
    try:
        moto_env.point_boto3_at(endpoint)
        import boto3

        from opsctl.backends.aws.backend import AwsBackend
        from opsctl.infra import load_outputs
        from opsctl_contract.storage import s3_client

        outputs = {**moto_env.create_batch_env(endpoint), "bucket": "opsctl-bench"}
        boto3.client("s3").create_bucket(Bucket="opsctl-bench")
        with tempfile.TemporaryDirectory() as tmp, playing(Path(tmp) / "player", outputs) as player:
            player.capacity = 16  # children at once on this machine
            backend = AwsBackend(load_outputs(player.infra))
            spec = Path(tmp) / "bench.yaml"
            spec.write_text(spec_text(commands))
            calls = moto_env.counting(backend.api.batch, s3_client())
            started = time.perf_counter()
            run_id = backend.launch(spec)
            launch_s = time.perf_counter() - started
            launch = Counter(calls)
            player.wait_until(player.idle, timeout=3600)
            run_s = time.perf_counter() - started
            calls.clear()
            first = backend.status(run_id)
            first_poll = Counter(calls)
            calls.clear()
            backend.status(run_id)
            poll = Counter(calls)
    finally:
        moto_env.stop_server(proc)

    done = sum(s["commands"]["done"] for s in first["steps"])
    ours_poll = sum(poll.values())
    peer_submit = STEPS * commands
    peer_poll = math.ceil(peer_submit / 100)
    target_poll = math.ceil(STEPS / 100) + STEPS * (1 + math.ceil(CHILDREN / 1000))
    print(f"{STEPS} steps x {commands} commands, arrays of {CHILDREN}; {first['state']}, {done} done markers")
    print(f"{'approach':<30}{'SubmitJob':>10}{'S3 PUT':>8}{'calls/poll':>12}{'submit time at 50 TPS':>24}")
    print(
        f"{'opsctl (one job per step)':<30}{launch['SubmitJob']:>10}{launch['PutObject']:>8}{ours_poll:>12}"
        f"{launch['SubmitJob'] / SUBMIT_TPS:>22.2f} s"
    )
    peer_time = peer_submit / SUBMIT_TPS
    print(f"{'one job per command':<30}{peer_submit:>10}{'-':>8}{peer_poll:>12}{peer_time:>22.0f} s")
    print(f"launch: {dict(launch)} in {launch_s:.2f} s; every child ended after {run_s:.0f} s")
    print(f"first poll of the finished run: {dict(first_poll)}")
    print(f"steady poll of the finished run: {dict(poll)}")
    print(f"RESULT submit_calls_vs_per_command {launch['SubmitJob'] / peer_submit:.6f} ratio target <= 0.001")
    print(f"RESULT poll_calls_vs_per_command {ours_poll / peer_poll:.4f} ratio target <= 0.02")
    print(f"RESULT poll_calls_finished_run {ours_poll} calls target <= {target_poll}")


if __name__ == "__main__":
    main()
