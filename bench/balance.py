"""Work balance: 200 commands of log-normal duration (about 60 s of work in all) over 8
children with 8 slots on the local backend, split contiguously and dynamically, timed in the
same run against the lower bound max(total / 8, longest command).

Usage: python bench/balance.py [--commands 200] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from pathlib import Path

from localrun import launch_and_wait

TARGET = 1.10


def makespan(spec: Path, env: dict[str, str]) -> float:
    return launch_and_wait(spec, env, max_parallel=8)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="total work")
    args = parser.parse_args()
    rng = random.Random(11)
    raw = [rng.lognormvariate(0.0, 1.0) for _ in range(args.commands)]
    durations = [d * args.seconds / sum(raw) for d in raw]
    bound = max(sum(durations) / 8, max(durations))

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OPSCTL_HOME"] = str(Path(tmp) / "home")
        listing = "".join(f"      - sleep {d:.3f}\n" for d in durations)
        for split in ("contiguous", "dynamic"):
            spec = Path(tmp) / f"{split}.yaml"
            spec.write_text(
                f"name: balance\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 8\n    split: {split}\n"
                f"    commands:\n{listing}"
            )
            results[split] = makespan(spec, dict(os.environ))

    print(
        f"{args.commands} commands, {sum(durations):.1f} s of work, "
        f"longest {max(durations):.2f} s, 8 children x 8 slots"
    )
    print(f"{'split':<14}{'makespan s':>12}{'x bound':>10}")
    print(f"{'lower bound':<14}{bound:>12.2f}{1.0:>10.2f}")
    for split, seconds in results.items():
        print(f"{split:<14}{seconds:>12.2f}{seconds / bound:>10.2f}")
    print(f"RESULT balance_dynamic_vs_bound {results['dynamic'] / bound:.2f} ratio target <= {TARGET}")
    print(f"RESULT balance_contiguous_vs_bound {results['contiguous'] / bound:.2f} ratio target <= {TARGET}")


if __name__ == "__main__":
    main()
