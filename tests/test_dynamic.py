"""Dynamic split: children claim commands one at a time; nothing is lost or run twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from opsctl_contract.storage import open_store
from tests.conftest import released_together
from tests.test_worker import WORKER, appender, lines, markers, write_list


def dynamic(place: str, index: int, size: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_BATCH_", "OPSCTL_"))}
    env.update(
        {
            "LIST_FILE_S3_PATH": f"{place}/lists/step.txt",
            "OPSCTL_STATE_URI": f"{place}/state",
            "OPSCTL_STEP": "step",
            "OPSCTL_SPLIT": "dynamic",
            "AWS_BATCH_JOB_ARRAY_INDEX": str(index),
            "ARRAY_SIZE": str(size),
            **extra,
        }
    )
    return env


def test_children_share_the_commands_and_each_runs_once(tmp_path: Path) -> None:
    place, out = str(tmp_path / "run"), tmp_path / "out"
    out.mkdir()
    # Skewed durations: the first child's natural share is slow, so the others take more.
    commands = [f"{appender(out, k)}; sleep {0.3 if k < 5 else 0.01}" for k in range(30)]
    write_list(place, commands)
    procs = [
        subprocess.Popen([WORKER, "run"], env=dynamic(place, i, 3), stderr=subprocess.PIPE) for i in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert [lines(out, k) for k in range(30)] == [1] * 30
    assert markers(place, "done") == list(range(30))
    claims = open_store(f"{place}/state").list("step/claims/1")
    owners = Counter(json.loads(open_store(f"{place}/state").read(key))["child"] for key in claims)
    assert len(claims) == 30 and owners[0] < 10, "the slow child took fewer than its third"
    assert markers(place, "rerun") == []


def test_a_retried_attempt_reruns_its_unfinished_claim_first(tmp_path: Path) -> None:
    place, out = str(tmp_path / "run"), tmp_path / "out"
    out.mkdir()
    write_list(place, [appender(out, k) for k in range(6)])
    state = open_store(f"{place}/state")
    # Attempt 1 of child 0 claimed command 4 and died running it (no done marker).
    state.write("step/claims/1/4", json.dumps({"child": 0, "attempt": 1, "generation": 1}).encode())
    result = subprocess.run(
        [WORKER, "run"], env=dynamic(place, 0, 1, AWS_BATCH_JOB_ATTEMPT="2"), capture_output=True
    )
    assert result.returncode == 0
    events = [json.loads(line) for line in result.stderr.decode().splitlines() if line.startswith("{")]
    order = [e["index"] for e in events if e.get("event") == "command"]
    assert order[0] == 4, "the interrupted command comes first"
    assert [lines(out, k) for k in range(6)] == [1] * 6
    assert markers(place, "rerun") == [4]


def test_a_new_generation_takes_over_unfinished_claims(tmp_path: Path) -> None:
    place, out = str(tmp_path / "run"), tmp_path / "out"
    out.mkdir()
    write_list(place, [appender(out, k) for k in range(4)])
    state = open_store(f"{place}/state")
    for k in (0, 1):  # generation 1: child 1 claimed 0 and 1, finished 0, died running 1
        state.write(f"step/claims/1/{k}", json.dumps({"child": 1, "attempt": 1, "generation": 1}).encode())
    state.write("step/done/0", b"{}")
    result = subprocess.run(
        [WORKER, "run"], env=dynamic(place, 0, 2, OPSCTL_GENERATION="2"), capture_output=True
    )
    assert result.returncode == 0
    assert [lines(out, k) for k in range(4)] == [0, 1, 1, 1], "0 was done; 1, 2, 3 run in generation 2"
    assert markers(place, "rerun") == [1]
    assert sorted(state.list("step/claims/2")) == [f"step/claims/2/{k}" for k in (1, 2, 3)]


def test_claims_on_s3_under_8_concurrent_processes(bucket: str) -> None:
    """1,000 commands, 8 processes claiming at once against moto: each command claimed once."""
    place = f"s3://{bucket}/run"
    code = (
        "import json, sys\n"
        "from opsctl_contract.storage import open_store\n"
        "from worker.claims import Claims\n"
        "from worker.env import WorkerEnv\n"
        "env = WorkerEnv(int(sys.argv[1]), 8, 'x', 1, 'r', 'step', sys.argv[2], 'dynamic')\n"
        "claims = Claims(open_store(sys.argv[2]), env)\n"
        "claims.store.exists('warm-up')\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "print(json.dumps(list(claims.commands(1000, set()))))\n"
    )
    argvs = [[sys.executable, "-c", code, str(i), f"{place}/state"] for i in range(8)]
    claimed = [json.loads(out) for out in released_together(argvs)]
    counts = Counter(k for mine in claimed for k in mine)
    assert sorted(counts) == list(range(1000)) and set(counts.values()) == {1}
    assert all(len(mine) > 50 for mine in claimed), [len(mine) for mine in claimed]
