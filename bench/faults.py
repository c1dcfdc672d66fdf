"""Fault injection, many rounds: kill -9 children (and the local supervisor, or a whole step on
the AWS path) at random moments, recover until done, and count lost commands (must be 0) and
re-executions (at most the commands in flight at the kills).

The harness is tests/faults/harness.py (CI runs 5 local and 3 S3 rounds of it). Each round: 40
commands of log-normal duration over 4 children, 3 kills; splits alternate between dynamic and
contiguous. Local rounds run the local backend and `opsctl resume`; S3 rounds run opsctl's own
`launch`, `status`, `kill` and `resume --backend aws` with the state in a moto S3 server on
127.0.0.1 and AWS Batch played by tests/batch_player.py with real workers (a reclaimed host's
child retried by the submitted retryStrategy; a killed run resumed in its next generation).

Usage: python bench/faults.py [--rounds 50] [--s3-rounds 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import moto_env
from tests.batch_player import playing
from tests.faults.harness import Round, run_batch_round, run_round


def campaign(name: str, rounds: int, one_round: Callable[[Path, int, str], Round]) -> None:
    lost = reexecuted = bound = seconds = 0.0
    kills: Counter[str] = Counter()
    over_bound = 0
    for seed in range(rounds):
        split = "dynamic" if seed % 2 == 0 else "contiguous"
        with tempfile.TemporaryDirectory() as tmp:
            result = one_round(Path(tmp), seed, split)
        lost += result.lost
        reexecuted += result.reexecutions
        bound += result.in_flight_at_kills
        seconds += result.seconds
        kills.update(result.kills)
        over_bound += result.reexecutions > result.in_flight_at_kills
    print(f"{name}: {rounds} rounds, {rounds * 40} commands, kills: {dict(kills)}, {seconds:.0f} s of runs")
    print(
        f"  lost commands: {lost:.0f}; re-executions: {reexecuted:.0f} "
        f"(commands in flight at the kills: {bound:.0f}); "
        f"rounds with more re-executions than commands in flight: {over_bound}"
    )
    print(f"RESULT faults_{name}_lost_commands {lost:.0f} commands target <= 0")
    ratio = reexecuted / max(bound, 1)
    print(f"RESULT faults_{name}_reexecutions_per_in_flight {ratio:.2f} ratio target <= 1.0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="rounds on the local backend")
    parser.add_argument("--s3-rounds", type=int, default=20, help="rounds with the state on moto S3")
    args = parser.parse_args()
    campaign("local", args.rounds, run_round)
    if not args.s3_rounds:
        return
    proc, endpoint = moto_env.start_server()
    try:
        moto_env.point_boto3_at(endpoint)
        import boto3

        bucket = f"opsctl-faults-{uuid.uuid4().hex[:12]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        outputs = {**moto_env.create_batch_env(endpoint), "bucket": bucket}

        def one_round(work: Path, seed: int, split: str) -> Round:
            with playing(work / "player", outputs) as player:
                return run_batch_round(work, player, seed, split)

        campaign("s3", args.s3_rounds, one_round)
    finally:
        moto_env.stop_server(proc)


if __name__ == "__main__":
    main()
