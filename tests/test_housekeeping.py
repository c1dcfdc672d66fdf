"""What is left behind, and who removes it: the staged file of a worker killed while writing a
marker (swept by its next attempt, by `resume`, by `prune`), old finished runs (`prune`), and
the `storage:` key, refused rather than ignored."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from opsctl_contract.storage import STAGING
from tests.helpers import cli, host_python, marker_indices, one_line

# Plays a host that dies at the worst moment: the worker's first done marker is staged, and the
# process is SIGKILLed before it is renamed into place. Loaded by every Python process of the
# host's interpreter (tests.helpers.host_python); only a worker writes markers, and it dies once
# (the flag file remembers).
DYING = """
import os, signal
_replace = os.replace
def replace(src, dst, *args, **kwargs):
    flag = os.environ.get("DIE_ONCE_FLAG")
    if flag and "/done/" in str(dst) and not os.path.exists(flag):
        open(flag, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)
os.replace = replace
"""


def dying_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DIE_ONCE_FLAG": str(tmp_path / "died"), "OPSCTL_HOME": str(tmp_path / "home")}


@pytest.fixture
def host(tmp_path: Path) -> str:
    return host_python(tmp_path / "host", DYING)


def spec(tmp_path: Path, retries: int) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: swept\ndefaults: {{retries: {retries}}}\nsteps:\n"
        "  - name: s\n    queue: cpu\n    commands: {template: 'echo {i}', range: 3}\n"
    )
    return path


def launched(env: dict[str, str], path: Path, host: str) -> dict[str, object]:
    result = cli("launch", str(path), "--watch", "--json", env=env, python=host)
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def staged(tmp_path: Path, run_id: object) -> list[str]:
    folder = tmp_path / "home" / "runs" / str(run_id) / "state" / STAGING
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def done_markers(tmp_path: Path, run_id: object) -> list[int]:
    """Step s's done markers; anything else in its done/ fails the test (`marker_indices`)."""
    return marker_indices(tmp_path / "home" / "runs" / str(run_id) / "state" / "s" / "done")


def test_a_retry_sweeps_what_its_killed_attempt_left_staged(tmp_path: Path, host: str) -> None:
    env = dying_env(tmp_path)
    doc = launched(env, spec(tmp_path, retries=1), host)
    assert (tmp_path / "died").exists(), "the first attempt was killed writing its marker"
    assert doc["state"] == "SUCCEEDED", doc
    assert done_markers(tmp_path, doc["run_id"]) == [0, 1, 2]
    assert staged(tmp_path, doc["run_id"]) == []


def test_resume_sweeps_what_a_killed_worker_left_staged(tmp_path: Path, host: str) -> None:
    env = dying_env(tmp_path)
    doc = launched(env, spec(tmp_path, retries=0), host)
    run_id = doc["run_id"]
    assert doc["state"] == "FAILED"
    assert done_markers(tmp_path, run_id) == [], "the killed marker is not among the markers, nor is its file"
    left = staged(tmp_path, run_id)
    assert len(left) == 1 and left[0].startswith("s.0.1-"), left  # step s, child 0, attempt 1
    assert cli("resume", str(run_id), env=env, python=host).returncode == 0
    assert json.loads(cli("watch", str(run_id), "--json", env=env).stdout)["state"] == "SUCCEEDED"
    assert done_markers(tmp_path, run_id) == [0, 1, 2]
    assert staged(tmp_path, run_id) == []


def test_prune_is_a_dry_run_unless_asked_and_never_touches_recent_runs(tmp_path: Path, host: str) -> None:
    env = dying_env(tmp_path)
    failed = launched(env, spec(tmp_path, retries=0), host)  # leaves one staged file
    env.pop("DIE_ONCE_FLAG")
    old, recent = launched(env, spec(tmp_path, 0), host), launched(env, spec(tmp_path, 0), host)
    runs = tmp_path / "home" / "runs"
    with sqlite3.connect(runs / str(old["run_id"]) / "run.db") as db:  # as if it ended 40 days ago
        db.execute("UPDATE run SET finished = ?", (time.time() - 40 * 86400,))

    dry = cli("prune", "--older-than", "30", env=env)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert any(
        line.startswith(f"would delete run {old['run_id']} (SUCCEEDED, ended 40 days ago): ")
        for line in lines
    )
    assert any(
        line.startswith("would delete 1 staged file in ") and str(failed["run_id"]) in line for line in lines
    )
    assert lines[-1].startswith("dry run: 2 items, ") and lines[-1].endswith("--yes removes them")
    assert (runs / str(old["run_id"])).is_dir() and staged(tmp_path, failed["run_id"]), "nothing removed"

    done = cli("prune", "--older-than", "30", "--yes", env=env)
    assert done.returncode == 0 and done.stdout.splitlines()[-1].startswith("removed 2 items, ")
    assert not (runs / str(old["run_id"])).exists()
    assert staged(tmp_path, failed["run_id"]) == []
    assert sorted(p.name for p in runs.iterdir()) == sorted([str(failed["run_id"]), str(recent["run_id"])])
    assert cli("prune", env=env).stdout.strip() == "nothing to prune"


def test_a_spec_with_storage_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: x\nstorage: /data/runs\nsteps:\n  - name: s\n    queue: cpu\n    command: 'true'\n"
    )
    line = one_line(cli("validate", str(path)), 2)
    assert line.startswith(f"opsctl: {path}:2: storage is not supported: a local run's data lives under")
