"""Dynamic split: children claim runs of their own shard and steal from others'; nothing is lost
or run twice, a dead runner's claim is run again by its retry, a retry runs again what failed in
it wherever it lay, and claiming costs about one request per command (the done marker) plus a
claim per run.

Every child here is a real `opsctl-worker` process; a runner that dies is a worker killed with
SIGKILL by its own command, at a moment the test chooses.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opsctl.run.plan import write_work
from opsctl_contract.markers import Markers, ledgers
from opsctl_contract.storage import open_store
from tests.helpers import WORKER, events, worker_env
from tests.test_worker import appender, lines, markers, write_list
from worker.claims import BLOCK_SECONDS, SHARE, STEAL_AFTER, block_size


def dynamic(place: str, index: int, size: int, **extra: str) -> dict[str, str]:
    return worker_env(
        LIST_FILE_S3_PATH=f"{place}/lists/step.txt",
        OPSCTL_STATE_URI=f"{place}/state",
        OPSCTL_STEP="step",
        OPSCTL_SPLIT="dynamic",
        AWS_BATCH_JOB_ARRAY_INDEX=str(index),
        ARRAY_SIZE=str(size),
        **extra,
    )


def packed(place: str, commands: list[str], size: int, generation: int = 1) -> None:
    """The list file and the work pack, as `opsctl launch` (or resume) writes them."""
    write_list(place, commands)
    step = {"name": "step", "split": "dynamic", "array_size": size}
    write_work(open_store(f"{place}/state"), step, commands, generation)


def worker(place: str, index: int, size: int, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WORKER, "run"], env=dynamic(place, index, size, **extra), capture_output=True, text=True, timeout=120
    )


def dies_once(out: Path, k: int) -> str:
    """Command k: kills its worker (SIGKILL, no clean-up) the first time it runs."""
    flag = out / f"died-{k}"
    return f"echo ran >> {out}/{k}; test -e {flag} || {{ touch {flag}; kill -9 $PPID; sleep 5; }}"


def one_dies(tmp_path: Path, total: int, k: int) -> tuple[str, Path, list[str]]:
    """A one-child step of `total` commands whose command k kills its worker once."""
    place, out = str(tmp_path / "run"), tmp_path / "out"
    out.mkdir()
    commands = [appender(out, j) for j in range(total)]
    commands[k] = dies_once(out, k)
    packed(place, commands, 1)
    return place, out, commands


def test_children_share_the_commands_and_each_runs_once(tmp_path: Path) -> None:
    place, out = str(tmp_path / "run"), tmp_path / "out"
    out.mkdir()
    # Skewed durations: the first child's shard (every third command) takes 6 s, the others' 3 s,
    # so by the time they are done the first child has published its pace and both steal from it.
    commands = [f"{appender(out, k)}; sleep {0.2 if k % 3 == 0 else 0.1}" for k in range(90)]
    packed(place, commands, 3)
    procs = [
        subprocess.Popen([WORKER, "run"], env=dynamic(place, i, 3), stderr=subprocess.PIPE) for i in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert [lines(out, k) for k in range(90)] == [1] * 90
    assert markers(place, "done") == list(range(90))
    state = Markers(open_store(f"{place}/state"), "step")
    ran_by = {k: state.read("done", k)["child"] for k in range(0, 90, 3)}
    assert list(ran_by.values()).count(0) < 24, "others took from the slow shard"
    # The second thief there finds the chain's end taken by the first (or the owner), reads that
    # claim and claims at its stop: all three share the shard.
    assert {0, 1, 2} <= set(ran_by.values()), "two thieves shared the slow shard with its owner"
    assert markers(place, "rerun") == []


@pytest.mark.parametrize(
    ("left", "pace", "size"),
    [
        (50, None, 1),  # its pace unknown: one command, then it knows
        (3, 0.01, 3),  # what is left takes less than a thief's visit is worth: all of it
        (1000, 0.005, 200),  # fast: BLOCK_SECONDS of work
        (100, 0.005, 25),  # a quarter of what is left
        (40, 0.3, 3),  # the balance bench's commands: about a second
        (40, 30.0, 1),  # long commands one at a time: none waits behind another
        (0, None, 0),
    ],
)
def test_a_claim_takes_a_quarter_of_what_is_left_at_most_a_second_of_work(
    left: int, pace: float | None, size: int
) -> None:
    assert block_size(left, pace) == size
    if pace is not None and left * pace > STEAL_AFTER:
        assert 1 <= size <= max(1, min(-(-left // SHARE), BLOCK_SECONDS / pace))


def test_fast_commands_take_few_claims() -> None:
    """A shard of 100 commands of 5 ms: 5 claims (1, 25, 19, 14, then the 41 left)."""
    left, claims = 100, []
    while left:
        claims.append(block_size(left, 0.005 if claims else None))
        left -= claims[-1]
    assert claims == [1, 25, 19, 14, 41]


def test_a_retried_attempt_reruns_its_unfinished_block_first(tmp_path: Path) -> None:
    place, out, _ = one_dies(tmp_path, 8, 2)
    first = worker(place, 0, 1)
    assert first.returncode == -9
    second = worker(place, 0, 1, AWS_BATCH_JOB_ATTEMPT="2")
    assert second.returncode == 0, second.stderr
    order = [e["index"] for e in events(second.stderr, "command")]
    assert order[0] == 2, "the command in flight comes first"
    assert [lines(out, k) for k in range(8)] == [1, 1, 2, 1, 1, 1, 1, 1]
    assert markers(place, "rerun") == [2]
    assert markers(place, "done") == list(range(8))


def test_a_thief_that_dies_is_recovered_by_its_retry_and_goes_on_stealing(tmp_path: Path) -> None:
    place, out = str(tmp_path / "run"), tmp_path / "out"
    out.mkdir()
    # Two shards of 20: the even commands and the odd ones, of 30 ms each, so that what shard 1
    # has left is worth a thief's visit at the thief's own pace (its owner's is unknown).
    commands = [f"{appender(out, k)}; sleep 0.03" for k in range(40)]
    commands[1] = dies_once(out, 1)  # child 1's first command
    commands[21] = dies_once(out, 21)  # shard 1's position 10
    packed(place, commands, 2)
    assert worker(place, 1, 2).returncode == -9  # started (its ledger says so), died at once
    first = worker(place, 0, 2)
    assert first.returncode == -9
    ran = [e["index"] for e in events(first.stderr, "command")]
    # Its own shard, then shard 1 from its chain's end; it died running 21.
    assert ran == [*range(0, 40, 2), *range(3, 21, 2)]
    second = worker(place, 0, 2, AWS_BATCH_JOB_ATTEMPT="2")
    assert second.returncode == 0, second.stderr
    ran = [e["index"] for e in events(second.stderr, "command")]
    assert ran == list(range(21, 40, 2)), "the command in flight, then on along the chain"
    owner = worker(place, 1, 2, AWS_BATCH_JOB_ATTEMPT="2")
    assert owner.returncode == 0, owner.stderr
    assert [e["index"] for e in events(owner.stderr, "command")] == [1], "its claim; the rest is taken"
    assert [lines(out, k) for k in range(40)] == [2 if k in (1, 21) else 1 for k in range(40)]
    assert markers(place, "done") == list(range(40))
    assert markers(place, "rerun") == [1, 21]


def test_a_retry_runs_again_what_failed_in_its_child_wherever_it_lay(tmp_path: Path) -> None:
    """Retries mean on the dynamic split what they mean on the contiguous one: the failed
    commands of the child run again, here one in the child's own shard and one it stole."""
    place, out = str(tmp_path / "run"), tmp_path / "out"
    out.mkdir()
    # 50 ms each: shard 1's 9 left are worth a visit (0.45 s at the thief's pace).
    commands = [f"{appender(out, k)}; sleep 0.05" for k in range(20)]
    commands[1] = dies_once(out, 1)
    for k in (4, 13):  # shard 0's position 2, shard 1's position 6
        commands[k] = f"{appender(out, k)}; test -e {out}/failed-{k} || {{ touch {out}/failed-{k}; exit 3; }}"
    packed(place, commands, 2)
    assert worker(place, 1, 2).returncode == -9
    first = worker(place, 0, 2)
    assert first.returncode == 1, first.stderr
    assert markers(place, "failed") == [4, 13]
    second = worker(place, 0, 2, AWS_BATCH_JOB_ATTEMPT="2")
    assert second.returncode == 0, second.stderr
    assert [e["index"] for e in events(second.stderr, "command")] == [4, 13]
    assert [lines(out, k) for k in range(20)] == [2 if k in (4, 13) else 1 for k in range(20)]
    assert markers(place, "done") == [k for k in range(20) if k != 1], "child 1's in flight is its own"
    assert markers(place, "rerun") == [], "a failed command run again is not a re-execution"


def test_a_new_generation_runs_what_is_not_done_and_counts_the_command_left_in_flight(tmp_path: Path) -> None:
    place, out, commands = one_dies(tmp_path, 6, 3)
    assert worker(place, 0, 1).returncode == -9  # generation 1 ends with 3 in flight, 4 and 5 not run
    write_work(
        open_store(f"{place}/state"), {"name": "step", "split": "dynamic", "array_size": 2}, commands, 2
    )
    results = [worker(place, i, 2, OPSCTL_GENERATION="2") for i in range(2)]
    assert [r.returncode for r in results] == [0, 0], results[0].stderr
    assert [lines(out, k) for k in range(6)] == [1, 1, 1, 2, 1, 1]
    assert markers(place, "rerun") == [3]
    assert markers(place, "done") == list(range(6))


def test_a_worker_without_a_pack_reads_the_list_and_skips_what_is_done(tmp_path: Path) -> None:
    """A hand-run worker, or a run created before packs: the list file read whole."""
    place, out = str(tmp_path / "run"), tmp_path / "out"
    out.mkdir()
    write_list(place, [appender(out, k) for k in range(6)])
    Markers(open_store(f"{place}/state"), "step").mark("done", 1, {})
    results = [worker(place, i, 2, OPSCTL_GENERATION="3") for i in range(2)]
    assert [r.returncode for r in results] == [0, 0]
    assert [lines(out, k) for k in range(6)] == [1, 0, 1, 1, 1, 1]


def test_claims_on_s3_under_8_concurrent_workers_cost_about_one_request_a_command(
    bucket: str, tmp_path: Path
) -> None:
    """1,000 commands, 8 real workers at once against moto: each command runs once, and the
    workers' storage requests (from their ledgers) stay within 1.5 a command in all."""
    place, out = f"s3://{bucket}/run", tmp_path / "out"
    out.mkdir()
    total, size = 1000, 8
    packed(place, [f"echo {k} >> {out}/{k % 16}" for k in range(total)], size)
    procs = [
        subprocess.Popen([WORKER, "run"], env=dynamic(place, i, size), stderr=subprocess.DEVNULL)
        for i in range(size)
    ]
    assert [proc.wait(timeout=300) for proc in procs] == [0] * size
    ran = sorted(int(n) for f in out.iterdir() for n in f.read_text().split())
    assert ran == list(range(total))
    assert markers(place, "done") == list(range(total))
    entries = ledgers(open_store(f"{place}/state"), "step")
    requests = sum(e.put + e.get for e in entries)
    # A done marker each, a claim per run (a few a shard of fast commands), a ledger update per
    # 16, 4 to start each child, and the thieves' looks.
    claims = open_store(f"{place}/state").list("step/claims/1")
    assert len(claims) <= total / 8, len(claims)
    assert requests / total <= 1.5, requests
    assert requests <= 2.2 * total + 10 * size
