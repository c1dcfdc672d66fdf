"""Work balance: 200 commands of log-normal duration (about 60 s of work in all) over 8
children with 8 slots on the local backend, split contiguously and dynamically, timed in the
same run against the lower bound max(total / 8, longest command).

Each draw of durations is run both ways; the figures are means over `--seeds` draws (one draw
is luck: the same algorithm lands anywhere from 1.07 to 1.25 of the bound on single draws).

Usage: python bench/balance.py [--commands 200] [--seconds 60] [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
from pathlib import Path

from _localrun import launch_and_wait

TARGET = 1.10


def makespan(spec: Path, env: dict[str, str]) -> float:
    return launch_and_wait(spec, env, max_parallel=8)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="total work")
    parser.add_argument("--seeds", type=int, default=3, help="independent draws of the durations")
    args = parser.parse_args()

    ratios: dict[str, list[float]] = {"contiguous": [], "dynamic": []}
    print(f"{args.commands} commands, {args.seconds:.0f} s of work each draw, 8 children x 8 slots")
    print(f"{'seed':<6}{'longest s':>10}{'bound s':>9}{'contiguous s':>14}{'dynamic s':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OPSCTL_HOME"] = str(Path(tmp) / "home")
        for seed in range(11, 11 + args.seeds):
            rng = random.Random(seed)
            raw = [rng.lognormvariate(0.0, 1.0) for _ in range(args.commands)]
            durations = [d * args.seconds / sum(raw) for d in raw]
            bound = max(sum(durations) / 8, max(durations))
            listing = "".join(f"      - sleep {d:.3f}\n" for d in durations)
            seconds = {}
            for split in ("contiguous", "dynamic"):
                spec = Path(tmp) / f"{split}-{seed}.yaml"
                spec.write_text(
                    f"name: balance\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 8\n"
                    f"    split: {split}\n    commands:\n{listing}"
                )
                seconds[split] = makespan(spec, dict(os.environ))
                ratios[split].append(seconds[split] / bound)
            times = f"{seconds['contiguous']:>14.2f}{seconds['dynamic']:>11.2f}"
            print(f"{seed:<6}{max(durations):>10.2f}{bound:>9.2f}{times}")
    for split, values in ratios.items():
        print(f"{split}: x bound {', '.join(f'{v:.2f}' for v in values)}; mean {statistics.mean(values):.2f}")
    means = {split: statistics.mean(values) for split, values in ratios.items()}
    print(f"RESULT balance_dynamic_vs_bound {means['dynamic']:.2f} ratio target <= {TARGET}")
    print(f"RESULT balance_contiguous_vs_bound {means['contiguous']:.2f} ratio target <= {TARGET}")


if __name__ == "__main__":
    main()
