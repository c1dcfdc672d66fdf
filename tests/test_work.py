"""Work packs (opsctl_contract/work.py): what opsctl writes is what each child reads back, a shard
or a shard's tail at a time; and a child's start costs a bounded number of requests and bytes,
counted where they happen (the worker's "first command" event), not timed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from opsctl.run.plan import write_work
from opsctl_contract import work
from opsctl_contract.markers import Markers
from opsctl_contract.storage import LocalStore, open_store
from tests.helpers import WORKER, events, worker_env
from tests.test_worker import write_list

# Tabs, non-ASCII and shell syntax inside commands; lengths from 1 byte to several chunks.
COMMANDS = [
    "true",
    "printf 'a\\tb' | cut -f2",
    "echo héllo wörld ✓",
    "x=1; [ $x -eq 1 ] && echo '#not a comment'",
    "echo " + "long " * 3000,
    *(f"echo {k}" for k in range(5, 60)),
]


@pytest.fixture(params=["contiguous", "dynamic"])
def split(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_each_child_reads_back_exactly_its_shard(tmp_path: Path, split: str) -> None:
    store = LocalStore(tmp_path)
    remaining = [k for k in range(len(COMMANDS)) if k % 7]  # as after a resume
    owned = work.shards(len(COMMANDS), remaining, split, 4)
    store.write("s/work/2", work.pack(COMMANDS, owned, frozenset({8, 9})))
    pack = work.Pack(store, "s", 2)
    assert sorted(k for shard in owned for k in shard) == remaining
    for child, shard in enumerate(owned):
        read = pack.shard(child)
        assert [(c.index, c.text, c.rerun) for c in read] == [(k, COMMANDS[k], k in (8, 9)) for k in shard]


def test_a_packs_index_gives_every_shards_size_in_one_read(tmp_path: Path, split: str) -> None:
    """What the local supervisor reads to leave children with nothing to run unstarted."""
    store = LocalStore(tmp_path)
    owned = work.shards(len(COMMANDS), [0, 1, 2, 40, 59], split, 8)  # more children than commands
    store.write("s/work/1", work.pack(COMMANDS, owned))
    assert work.Pack(store, "s", 1).sizes(8) == [len(shard) for shard in owned]
    assert 0 in work.Pack(store, "s", 1).sizes(8)
    with pytest.raises(work.DamagedWork, match="not an index of 9 shards"):
        work.Pack(store, "s", 1).sizes(9)
    data = bytearray(work.pack(COMMANDS, owned))
    data[16 + 16 * 3 + 8 : 16 + 16 * 3 + 16] = (10**6).to_bytes(8, "little")  # child 3 counts back
    store.write("s/work/2", bytes(data))
    with pytest.raises(work.DamagedWork, match="counts backwards"):
        work.Pack(store, "s", 2).sizes(8)


def test_a_tail_read_from_the_back_in_small_chunks_is_the_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks smaller than a line, lines split across chunks: a thief still reads them whole."""
    monkeypatch.setattr(work.Tail, "FIRST_CHUNK", 5)
    store = LocalStore(tmp_path)
    owned = work.shards(len(COMMANDS), range(len(COMMANDS)), "dynamic", 2)
    store.write("s/work/1", work.pack(COMMANDS, owned))
    for child in (0, 1):
        tail = work.Pack(store, "s", 1).tail(child)
        assert len(tail) == len(owned[child])
        got = [tail[p] for p in reversed(range(len(tail)))]
        assert [c.index for c in reversed(got)] == list(owned[child])
        assert [c.text for c in reversed(got)] == [COMMANDS[k] for k in owned[child]]


def test_contiguous_shards_are_the_seed_slices_of_what_is_left() -> None:
    assert work.shards(10, range(10), "contiguous", 3) == [range(0, 3), range(3, 6), range(6, 10)]
    assert work.shards(10, [1, 2, 7, 9], "contiguous", 3) == [[1, 2], [], [7, 9]]
    assert work.shards(10, [1, 2, 7, 9], "dynamic", 3) == [[1], [2], [7, 9]]


@pytest.mark.parametrize("length", [0, 1, 2, 3, 10, 33, 100, 1000])
def test_blocks_cover_a_shard_and_shrink_towards_its_end(length: int) -> None:
    blocks = work.blocks(length)
    assert [p for b in blocks for p in b] == list(range(length))
    sizes = [len(b) for b in blocks]
    assert all(1 <= s <= work.MAX_BLOCK for s in sizes)
    assert sizes == sorted(sizes, reverse=True)
    assert all(s >= 2 for s in sizes[:-1])
    assert len(blocks) <= length // work.MAX_BLOCK + 16
    assert work.blocks(10) == [range(0, 3), range(3, 5), range(5, 7), range(7, 9), range(9, 10)]


def test_a_damaged_pack_stops_the_worker_with_one_line_and_exit_2(tmp_path: Path) -> None:
    place = str(tmp_path / "run")
    write_list(place, ["true"] * 4)
    write_work(
        open_store(f"{place}/state"),
        {"name": "step", "split": "contiguous", "array_size": 2},
        ["true"] * 4,
        1,
    )
    key = tmp_path / "run" / "state" / "step" / "work" / "1"
    key.write_bytes(key.read_bytes().replace(b"\t-\t", b" "))
    env = worker_env(
        LIST_FILE_S3_PATH=f"{place}/lists/step.txt",
        OPSCTL_STATE_URI=f"{place}/state",
        OPSCTL_STEP="step",
        AWS_BATCH_JOB_ARRAY_INDEX="1",
        ARRAY_SIZE="2",
    )
    result = subprocess.run([WORKER, "run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"opsctl-worker: {place}/state/step/work/1: damaged "
        "(a line is not index, flag and command between tabs)"
    ]


def first_command(stderr: str) -> dict[str, Any]:
    return events(stderr, "first command")[0]


@pytest.mark.parametrize(("split", "attempt"), [("contiguous", 1), ("contiguous", 2), ("dynamic", 1)])
def test_a_child_start_costs_at_most_4_requests_and_its_share_of_the_list(
    bucket: str, tmp_path: Path, split: str, attempt: int
) -> None:
    """10,000 commands over 100 children on moto S3; child 37 starts (on attempt 2, after half
    of its commands were done, and the 1,100 commands on either side of its slice): what it
    requested and downloaded before its first command."""
    place, total, size, child = f"s3://{bucket}/run", 10_000, 100, 37
    commands = [f"echo {k} {'x' * (k % 50)}" for k in range(total)]
    write_list(place, commands)
    state = open_store(f"{place}/state")
    write_work(state, {"name": "step", "split": split, "array_size": size}, commands, 1)
    mine = range(total * child // size, total * (child + 1) // size)
    if attempt > 1:
        done = [
            *range(mine.start - 1100, mine.start),
            *mine[: len(mine) // 2],
            *range(mine.stop, mine.stop + 1100),
        ]
        for k in done:
            Markers(state, "step").mark("done", k, {})
    env = worker_env(
        LIST_FILE_S3_PATH=f"{place}/lists/step.txt",
        OPSCTL_STATE_URI=f"{place}/state",
        OPSCTL_STEP="step",
        OPSCTL_SPLIT=split,
        AWS_BATCH_JOB_ARRAY_INDEX=str(child),
        AWS_BATCH_JOB_ATTEMPT=str(attempt),
        ARRAY_SIZE=str(size),
    )
    result = subprocess.run([WORKER, "run"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    start = first_command(result.stderr)
    assert start["index"] == (mine[len(mine) // 2] if attempt > 1 else mine[0])
    # The pack's entry and the shard; a bounded listing of done/ on a retry; the first claim
    # and the ledger that tells thieves the owner started on the dynamic split. (LIST and PUT
    # share S3's "put" price class.)
    expected = {"get": 2} | ({"put": 1} if attempt > 1 else {}) | ({"put": 2} if split == "dynamic" else {})
    assert start["requests"] == expected
    assert sum(start["requests"].values()) <= 4
    own = sum(len(commands[k].encode()) + 1 for k in mine)
    assert start["read_bytes"] <= 2 * own + 64 * 1024, (start["read_bytes"], own)
    assert start["read_bytes"] < len("\n".join(commands)) / 20, "not the whole list"
