"""Fault injection, many rounds: kill -9 children and the supervisor of local runs at random
moments, resume until SUCCEEDED, and count lost commands (must be 0) and re-executions.

The harness is tests/faults/harness.py (CI runs 5 rounds of it). Each round: 40 commands of
log-normal duration over 4 children, 3 kills; splits alternate between dynamic and contiguous.

Usage: python bench/faults.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults.harness import run_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    lost = reexecuted = bound = seconds = 0.0
    kills: Counter[str] = Counter()
    over_bound = 0
    for seed in range(args.rounds):
        split = "dynamic" if seed % 2 == 0 else "contiguous"
        with tempfile.TemporaryDirectory() as tmp:
            result = run_round(Path(tmp), seed, split)
        lost += result.lost
        reexecuted += result.reexecutions
        bound += result.in_flight_at_kills
        seconds += result.seconds
        kills.update(result.kills)
        over_bound += result.reexecutions > result.in_flight_at_kills
    print(f"{args.rounds} rounds, {args.rounds * 40} commands, kills: {dict(kills)}, {seconds:.0f} s of runs")
    print(
        f"lost commands: {lost:.0f}; re-executions: {reexecuted:.0f} "
        f"(commands in flight at the kills: {bound:.0f})"
    )
    print(f"rounds with more re-executions than commands in flight: {over_bound}")
    print(f"RESULT faults_lost_commands {lost:.0f} commands target <= 0")
    print(f"RESULT faults_reexecutions_per_in_flight {reexecuted / max(bound, 1):.2f} ratio target <= 1.0")


if __name__ == "__main__":
    main()
