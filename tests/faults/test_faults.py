"""Fault rounds in CI: five on the local backend, three on AWS (bench/faults.py runs 50 + 20)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.batch_player import BatchPlayer
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


# Seeds 10 and 14 kill the whole run once in a dynamic round: without a new generation on
# `opsctl resume`, those rounds never finish (checked by removing it from runs.plan_resume).
@pytest.mark.parametrize(("seed", "split"), [(10, "dynamic"), (7, "contiguous"), (14, "dynamic")])
def test_the_same_on_aws_through_opsctl(tmp_path: Path, player: BatchPlayer, seed: int, split: str) -> None:
    """opsctl's launch, status, kill and resume; Batch played with real workers; state on moto S3."""
    result = run_batch_round(tmp_path, player, seed, split)
    assert result.kills, "the round injected faults"
    assert result.lost == 0
    assert result.reexecutions <= result.in_flight_at_kills, result
    if split == "dynamic":
        assert result.status_reexecuted <= result.in_flight_at_kills
