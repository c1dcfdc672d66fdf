"""Fault injection: kill -9 children, the local supervisor or a whole AWS run at random moments.

One round: a step whose commands each append a line to their own file and sleep a random,
skewed (log-normal) time; while it runs, kill -9 a random child's process group (the supervisor
retries it) or, sometimes, the supervisor itself (then `opsctl resume`), a few times; then let
it finish, resuming whenever nothing drives it. Afterwards every command must have exactly one
`done` marker and at least one line, and the re-executions (lines beyond the first) may not
exceed the commands in flight at the kills. Used by tests/faults (CI) and bench/faults.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.helpers import cli, marker_indices

if TYPE_CHECKING:
    from tests.batch_player import BatchPlayer


@dataclass
class Round:
    commands: int
    split: str
    kills: list[str] = field(default_factory=list)
    in_flight_at_kills: int = 0
    lost: int = 0  # commands without a done marker or without a line
    reexecutions: int = 0
    status_reexecuted: int = 0
    seconds: float = 0.0

    def tally(self, done: list[int], out: Path) -> None:
        """Lost commands and re-executions, from the done markers and each command's own file."""
        assert len(done) == len(set(done)) <= self.commands
        counts = [
            len((out / str(k)).read_text().split()) if (out / str(k)).exists() else 0
            for k in range(self.commands)
        ]
        self.lost = sum(1 for k in range(self.commands) if k not in done or counts[k] == 0)
        self.reexecutions = sum(c - 1 for c in counts if c > 1)


def _workload(work: Path, seed: int, commands: int) -> tuple[random.Random, Path, list[str]]:
    """Commands that each append a line to their own file under `out`, then sleep a skewed time."""
    rng = random.Random(seed)
    out = work / "out"
    out.mkdir(parents=True)
    durations = [min(1.5, rng.lognormvariate(-2.5, 1.0)) for _ in range(commands)]
    return rng, out, [f"echo ran >> {out}/{k}; sleep {d:.3f}" for k, d in enumerate(durations)]


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    """A command of the round succeeded; if not, the failure shows what opsctl said."""
    assert result.returncode == 0, (result.args, result.returncode, result.stderr[-3000:])


def _live_children(db: Path, run_id: str) -> list[int]:
    from opsctl.backends.local import runs_for

    with sqlite3.connect(db) as conn:
        pids = [
            r[0] for r in conn.execute("SELECT pid FROM child WHERE state = 'RUNNING' AND pid IS NOT NULL")
        ]
    return [pid for pid in pids if runs_for(pid, run_id)]


def _spec(work: Path, split: str, lines: list[str]) -> Path:
    spec = work / "faults.yaml"
    listing = "".join(f"      - {line}\n" for line in lines)
    spec.write_text(
        f"name: faults\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 4\n    split: {split}\n"
        f"    retries: 9\n    commands:\n{listing}"
    )
    return spec


def run_round(work: Path, seed: int, split: str, commands: int = 40, kills: int = 3) -> Round:
    rng, out, lines = _workload(work, seed, commands)
    spec = _spec(work, split, lines)
    env = {**os.environ, "OPSCTL_HOME": str(work / "home")}
    result = Round(commands=commands, split=split)
    started = time.monotonic()
    launched = cli("launch", str(spec), "--json", "--max-parallel", "4", env=env)
    assert launched.returncode == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]
    run_dir = work / "home" / "runs" / run_id
    db = run_dir / "run.db"

    for _ in range(kills):
        time.sleep(rng.uniform(0.1, 0.6))
        status = json.loads(cli("status", run_id, "--json", env=env).stdout)
        if status["state"] in ("SUCCEEDED", "FAILED"):
            break
        live = _live_children(db, run_id)
        if rng.random() < 0.3:
            with sqlite3.connect(db) as conn:
                supervisor = conn.execute("SELECT supervisor_pid FROM run").fetchone()[0]
            os.kill(supervisor, signal.SIGKILL)
            result.kills.append("supervisor")
            result.in_flight_at_kills += len(live)  # stopped for good by the resume below
            time.sleep(0.1)
            _ok(cli("resume", run_id, env=env))
        elif live:
            victim = rng.choice(live)
            os.killpg(victim, signal.SIGKILL)  # the worker and the command it runs
            result.kills.append("child")
            result.in_flight_at_kills += 1

    deadline = time.monotonic() + 120
    while True:
        status = json.loads(cli("status", run_id, "--json", env=env).stdout)
        if status["state"] == "SUCCEEDED":
            break
        if status["state"] == "FAILED" or status.get("reason"):
            result.in_flight_at_kills += len(_live_children(db, run_id))
            _ok(cli("resume", run_id, env=env))
        assert time.monotonic() < deadline, "the run never finished"
        time.sleep(0.2)
    result.seconds = time.monotonic() - started

    # A worker killed between staging a marker and renaming it leaves its file in
    # state/.opsctl-staging/ (swept by the child's next attempt or a resume), never in done/.
    result.tally(marker_indices(run_dir / "state" / "s" / "done"), out)  # only markers in done/
    result.status_reexecuted = status["steps"][0]["commands"]["reexecuted"]
    return result


def run_batch_round(
    work: Path, player: BatchPlayer, seed: int, split: str, commands: int = 40, kills: int = 3
) -> Round:
    """The same round on the AWS backend, driven through opsctl's own CLI.

    `opsctl launch`, `status`, `kill` and `resume` run as a user would run them, against the
    state in S3 (moto) and AWS Batch played by tests/batch_player.py with real workers. The
    harness plays only the world: a killed child is a spot host taken back, which Batch retries
    by the retryStrategy opsctl submitted; three times in ten the user kills the run instead
    (`opsctl kill`), then `opsctl resume` submits the step again, in its next generation.
    Checked as in `run_round`; `status_reexecuted` is what `opsctl status` reports.
    """
    from opsctl_contract.storage import open_store

    rng, out, lines = _workload(work, seed, commands)
    spec = _spec(work, split, lines)
    env = {**os.environ, "OPSCTL_HOME": str(work / "home")}
    result = Round(commands=commands, split=split)
    started = time.monotonic()
    launched = cli("launch", str(spec), "--backend", "aws", "--infra", str(player.infra), "--json", env=env)
    assert launched.returncode == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]

    for _ in range(kills):
        time.sleep(rng.uniform(0.1, 0.6))
        running = player.running_children()
        if not running:
            break
        if rng.random() < 0.3:
            _ok(cli("kill", run_id, env=env))
            result.kills.append("step")
            result.in_flight_at_kills += len(running)
            player.wait_until(player.idle)
            _ok(cli("resume", run_id, env=env))
        else:
            player.reclaim(rng.choice(running))
            result.kills.append("child")
            result.in_flight_at_kills += 1

    deadline = time.monotonic() + 120
    while True:
        status = json.loads(cli("status", run_id, "--json", env=env).stdout)
        if status["state"] == "SUCCEEDED":
            break
        if status["state"] == "FAILED":  # a child out of attempts: nothing of it runs any more
            _ok(cli("resume", run_id, env=env))
        assert time.monotonic() < deadline, f"the run never finished; player logs in {player.workdir}"
        time.sleep(0.2)
    result.seconds = time.monotonic() - started

    bucket = json.loads(player.infra.read_text())["bucket"]["value"]
    store = open_store(f"s3://{bucket}/runs/{run_id}/state")
    result.tally([int(key.rsplit("/", 1)[1]) for key in store.list("s/done")], out)
    result.status_reexecuted = status["steps"][0]["commands"]["reexecuted"]
    return result
