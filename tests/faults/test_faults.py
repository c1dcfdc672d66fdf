"""Five rounds of kill -9 against the local backend (bench/faults.py runs fifty)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import run_batch_round, run_round


@pytest.mark.parametrize(
    ("seed", "split"), [(1, "dynamic"), (2, "contiguous"), (3, "dynamic"), (4, "dynamic"), (5, "contiguous")]
)
def test_no_command_is_lost_and_only_in_flight_ones_run_twice(tmp_path: Path, seed: int, split: str) -> None:
    result = run_round(tmp_path, seed, split)
    assert result.kills, "the round injected faults"
    assert result.lost == 0
    assert result.reexecutions <= result.in_flight_at_kills, result
    if split == "dynamic":
        assert result.status_reexecuted <= result.in_flight_at_kills


@pytest.mark.parametrize(("seed", "split"), [(6, "dynamic"), (7, "contiguous"), (8, "dynamic")])
def test_the_same_on_s3_with_batch_retries_and_resubmission(
    tmp_path: Path, bucket: str, seed: int, split: str
) -> None:
    """State on a moto S3 server; children retried and resubmitted as AWS Batch and `opsctl resume` do."""
    result = run_batch_round(tmp_path, f"s3://{bucket}/runs/faults-{seed}", seed, split)
    assert result.kills, "the round injected faults"
    assert result.lost == 0
    assert result.reexecutions <= result.in_flight_at_kills, result
    if split == "dynamic":
        assert result.status_reexecuted <= result.in_flight_at_kills
