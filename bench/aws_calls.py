"""API calls of an AWS launch and of one watch poll: opsctl against one job per command.

4 steps x 10,000 commands (arrays of 100 children). opsctl's calls are counted with botocore
event hooks on a real launch and a real status poll against a moto server on 127.0.0.1. The
peer is the one-job-per-command approach other tools take: 40,000 SubmitJob calls, which AWS
Batch's fixed 50 TPS limit makes at least 800 s, and 400 DescribeJobs calls (100 ids a call)
for every poll. Its figures follow from those limits; submitting 40,000 jobs is not run.

Usage: python bench/aws_calls.py
"""

from __future__ import annotations

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

STEPS, COMMANDS, CHILDREN = 4, 10_000, 100
SUBMIT_TPS = 50  # AWS Batch SubmitJob rate limit


def spec_text() -> str:
    lines = ["name: bench", "steps:"]
    for k in range(STEPS):
        lines += [
            f"  - name: s{k}",
            f"    queue: {'gpu' if k == STEPS - 1 else 'cpu'}",
            f"    array_size: {CHILDREN}",
            f"    commands: {{template: 'echo {{i}}', range: {COMMANDS}}}",
        ]
        if k:
            lines.append(f"    depends_on: [s{k - 1}]")
    return "\n".join(lines) + "\n"


def counting(*clients: Any) -> Counter[str]:
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    for client in clients:
        client.meta.events.register("before-call", count)
    return calls


def main() -> None:
    proc, endpoint = moto_env.start_server()
    try:
        moto_env.point_boto3_at(endpoint)
        import boto3

        from opsctl.backends.aws import AwsBackend
        from opsctl.infra import InfraOutputs
        from opsctl.storage import s3_client

        values = moto_env.create_batch_env(endpoint)
        boto3.client("s3").create_bucket(Bucket="opsctl-bench")
        backend = AwsBackend(InfraOutputs(**values, bucket="opsctl-bench", source="bench"))
        with tempfile.TemporaryDirectory() as tmp:
            spec = Path(tmp) / "bench.yaml"
            spec.write_text(spec_text())
            launch_calls = counting(backend.api.batch, s3_client())
            started = time.perf_counter()
            run_id = backend.launch(spec)
            launch_s = time.perf_counter() - started
            snapshot = Counter(launch_calls)
            backend.status(run_id)  # the first poll also reads the manifest
            launch_calls.clear()
            backend.status(run_id)
            poll_calls = Counter(launch_calls)
    finally:
        moto_env.stop_server(proc)

    ours_submit = snapshot["SubmitJob"]
    ours_puts = snapshot["PutObject"]
    ours_poll = sum(poll_calls.values())
    peer_submit = STEPS * COMMANDS
    peer_poll = math.ceil(peer_submit / 100)
    print(f"{STEPS} steps x {COMMANDS} commands, arrays of {CHILDREN}")
    print(f"{'approach':<30}{'SubmitJob':>10}{'S3 PUT':>8}{'calls/poll':>12}{'submit time at 50 TPS':>24}")
    print(
        f"{'opsctl (one job per step)':<30}{ours_submit:>10}{ours_puts:>8}{ours_poll:>12}"
        f"{ours_submit / SUBMIT_TPS:>22.2f} s"
    )
    peer_time = peer_submit / SUBMIT_TPS
    print(f"{'one job per command':<30}{peer_submit:>10}{'-':>8}{peer_poll:>12}{peer_time:>22.0f} s")
    print(f"opsctl launch against moto on 127.0.0.1: {launch_s:.2f} s; one poll: {dict(poll_calls)}")
    print(f"RESULT submit_calls_vs_per_command {ours_submit / peer_submit:.6f} ratio target <= 0.001")
    print(f"RESULT poll_calls_vs_per_command {ours_poll / peer_poll:.4f} ratio target <= 0.02")


if __name__ == "__main__":
    main()
