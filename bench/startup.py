"""Start-up time of `opsctl --help` against a bare `python -c pass`, in the same run.

Every status poll and every shell completion pays the CLI's start-up, so it must stay small
next to the interpreter's own. `validate --json` is a whole command: option parsing, the spec
and its list file, the plan. The worker's start-up is shown too: every array child pays it.

Usage: python bench/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 8.0  # opsctl --help within 8x a bare interpreter start


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "opsctl --help": [str(BIN / "opsctl"), "--help"],
        "opsctl validate --json": [
            str(BIN / "opsctl"),
            "validate",
            str(ROOT / "examples" / "hello.yaml"),
            "--json",
        ],
        "opsctl-worker --help": [str(BIN / "opsctl-worker"), "--help"],
    }
    for argv in cases.values():  # warm the file cache once
        timed(argv)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved, so load changes hit every case alike
        for name, argv in cases.items():
            samples[name].append(timed(argv))

    base = statistics.median(samples["python -c pass"])
    print(f"{'command':<24}{'median ms':>10}{'min ms':>10}{'ratio':>8}   ({args.runs} runs each)")
    for name, times in samples.items():
        median = statistics.median(times)
        print(f"{name:<24}{median * 1000:>10.1f}{min(times) * 1000:>10.1f}{median / base:>8.2f}")
    ratio = statistics.median(samples["opsctl --help"]) / base
    print(f"RESULT help_vs_python {ratio:.2f} ratio target <= {TARGET_RATIO}")
    validate_ratio = statistics.median(samples["opsctl validate --json"]) / base
    print(f"RESULT validate_vs_python {validate_ratio:.2f} ratio target <= {TARGET_RATIO}")
    worker_ratio = statistics.median(samples["opsctl-worker --help"]) / base
    print(f"RESULT worker_help_vs_python {worker_ratio:.2f} ratio target <= {TARGET_RATIO}")


if __name__ == "__main__":
    main()
