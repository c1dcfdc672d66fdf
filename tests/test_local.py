"""The local backend end to end: real supervisor, real worker subprocesses, real SQLite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsctl import pipeline
from opsctl.backends import local
from opsctl.backends.local import pid_alive
from opsctl.run.plan import write_work
from opsctl.run.states import JobState
from opsctl_contract.markers import Markers
from opsctl_contract.storage import open_store
from tests.helpers import by_name, cli, wait_until

# `home` (tests/conftest.py): a scratch $OPSCTL_HOME for each test and the commands it runs.


def launch(spec: Path, *args: str) -> str:
    result = cli("launch", str(spec), "--json", *args)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["run_id"])


def watch(run_id: str) -> tuple[int, dict[str, object], str]:
    result = cli("watch", run_id, "--json", "--interval", "0.1")
    return result.returncode, json.loads(result.stdout), result.stderr


def write_spec(tmp_path: Path, text: str) -> Path:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(text)
    return spec


def test_dag_runs_in_order(home: Path) -> None:
    log = home / "order.log"
    spec = write_spec(
        home,
        f"""
name: order
steps:
  - name: c
    queue: cpu
    array_size: 2
    commands: {{template: "echo c{{i}} >> {log}", range: 4}}
    depends_on: [b]
  - name: a
    queue: cpu
    array_size: 3
    commands: {{template: "sleep 0.1; echo a{{i}} >> {log}", range: 6}}
  - name: b
    queue: gpu
    command: echo b >> {log}
    depends_on: [a]
""",
    )
    code, doc, _ = watch(launch(spec))
    assert code == 0 and doc["state"] == "SUCCEEDED"
    assert [line[0] for line in log.read_text().split()] == ["a"] * 6 + ["b"] + ["c"] * 4
    c = by_name(doc)["c"]
    assert c["counts"] == {"SUCCEEDED": 2} and c["commands"] == {
        "total": 4,
        "done": 4,
        "failed": 0,
        "reexecuted": 0,
    }
    assert by_name(doc)["a"]["elapsed"] >= 0.2, "two 0.1 s commands a child, one after the other"


def test_concurrency_bound(home: Path) -> None:
    spans = home / "spans"
    spans.mkdir()
    spec = write_spec(
        home,
        f"""
name: bound
steps:
  - name: s
    queue: cpu
    array_size: 6
    commands:
      template: "date +%s.%N > {spans}/{{i}}.start; sleep 0.4; date +%s.%N > {spans}/{{i}}.end"
      range: 6
""",
    )
    code, _, _ = watch(launch(spec, "--max-parallel", "2"))
    assert code == 0
    events = []
    for i in range(6):
        events.append((float((spans / f"{i}.start").read_text()), 1))
        events.append((float((spans / f"{i}.end").read_text()), -1))
    live = peak = 0
    for _, delta in sorted(events):
        live += delta
        peak = max(peak, live)
    assert peak == 2


def test_failure_fails_dependents_while_independent_branch_completes(home: Path) -> None:
    spec = write_spec(
        home,
        """
name: branches
defaults: {retries: 0}
steps:
  - name: bad
    queue: cpu
    array_size: 2
    commands: ["echo fine", "echo broken input >&2; exit 4"]
  - name: after-bad
    queue: cpu
    command: echo must not run
    depends_on: [bad]
  - name: good
    queue: cpu
    command: sleep 0.5
""",
    )
    run_id = launch(spec)
    code, doc, _ = watch(run_id)
    assert code == 1 and doc["state"] == "FAILED"
    steps = by_name(doc)
    assert steps["bad"]["state"] == "FAILED" and steps["bad"]["counts"] == {"SUCCEEDED": 1, "FAILED": 1}
    assert steps["bad"]["commands"] == {"total": 2, "done": 1, "failed": 1, "reexecuted": 0}
    assert steps["after-bad"]["state"] == "FAILED" and steps["after-bad"]["reason"] == "dependency failed"
    assert steps["good"]["state"] == "SUCCEEDED"
    assert "must not run" not in cli("logs", run_id, "after-bad").stdout

    text = cli("watch", run_id)
    assert text.returncode == 1
    assert "bad[1] failed: worker exited 1" in text.stderr and "broken input" in text.stderr


def test_retries_count_attempts(home: Path) -> None:
    spec = write_spec(
        home,
        """
name: retry
steps:
  - name: flaky
    queue: cpu
    retries: 2
    command: test "$AWS_BATCH_JOB_ATTEMPT" -ge 3
""",
    )
    run_id = launch(spec)
    code, _, _ = watch(run_id)
    assert code == 0
    state = open_store(str(home / "home" / "runs" / run_id / "state"))
    done = Markers(state, "flaky").read("done", 0)
    assert done["attempt"] == 3
    assert "attempt 3" in cli("logs", run_id, "flaky", "--index", "0").stdout


def test_n_to_n_starts_child_i_after_child_i(home: Path) -> None:
    marks = home / "marks"
    marks.mkdir()
    spec = write_spec(
        home,
        f"""
name: aligned
steps:
  - name: first
    queue: cpu
    array_size: 2
    commands: ["sleep 0.1; touch {marks}/first0", "sleep 3; touch {marks}/first1"]
  - name: second
    queue: cpu
    array_size: 2
    commands:
      - test -e {marks}/first0 && test ! -e {marks}/first1 && touch {marks}/early
      - test -e {marks}/first1
    depends_on: [{{step: first, type: N_TO_N}}]
""",
    )
    code, _, _ = watch(launch(spec, "--max-parallel", "4"))
    assert code == 0
    assert (marks / "early").exists(), "child 0 of second ran before child 1 of first finished"


def test_kill_leaves_no_process_and_resume_runs_only_what_is_not_done(home: Path) -> None:
    out = home / "out"
    out.mkdir()
    spec = write_spec(
        home,
        f"""
name: killme
steps:
  - name: s
    queue: cpu
    array_size: 2
    commands: {{template: "echo ran >> {out}/{{i}}; test -e {home}/go || sleep 30", range: 6}}
""",
    )
    run_id = launch(spec, "--max-parallel", "2")
    wait_until(lambda: len(list(out.iterdir())) >= 2, 20, "both children's first commands")
    run_dir = home / "home" / "runs" / run_id
    started = time.monotonic()
    result = cli("kill", run_id)
    assert result.returncode == 0 and "killed" in result.stdout
    conn = sqlite3.connect(run_dir / "run.db")
    pids = [r[0] for r in conn.execute("SELECT pid FROM child WHERE pid IS NOT NULL")]
    pids.append(conn.execute("SELECT supervisor_pid FROM run").fetchone()[0])
    conn.close()
    assert time.monotonic() - started < 10
    assert not [p for p in pids if pid_alive(p)], "every process of the run is gone"
    doc = json.loads(cli("status", run_id, "--json").stdout)
    assert doc["state"] == "FAILED" and doc["reason"] == "killed by user"
    assert cli("kill", run_id).returncode == 0, "kill is idempotent"

    (home / "go").touch()
    assert cli("resume", run_id).returncode == 0
    code, doc, _ = watch(run_id)
    assert code == 0 and doc["state"] == "SUCCEEDED"
    runs = [len((out / str(k)).read_text().split()) for k in range(6)]
    # Commands in flight at the kill (the first of each child) ran twice; none ran three times,
    # and commands never started ran once.
    assert runs == [2, 1, 1, 2, 1, 1]


def test_list_and_unknown_run(home: Path) -> None:
    """`list` is newest first by creation time. Two launches can share a second, the resolution
    of run ids, so the test sets the times an hour apart, the later on the run launched first:
    only an order taken from the times passes, not one from the ids or the launch order."""
    spec = write_spec(home, "name: one\nsteps:\n  - name: s\n    queue: cpu\n    command: 'true'\n")
    first = launch(spec)
    second = launch(spec)
    watch(first)
    watch(second)
    now = time.time()
    created = {first: now - 600, second: now - 4200}
    for run_id, when in created.items():
        with sqlite3.connect(home / "home" / "runs" / run_id / "run.db") as db:
            db.execute("UPDATE run SET created = ?", (when,))
    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["run_id"] for r in rows] == [first, second], "newest first"
    assert [r["created"] for r in rows] == [
        datetime.fromtimestamp(created[run_id], UTC).isoformat(timespec="seconds")
        for run_id in (first, second)
    ]
    assert set(rows[0]) == {"run_id", "pipeline", "backend", "state", "created"}
    missing = cli("status", "nope-20260101-000000-0000")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def test_timeout_stops_the_child_and_is_not_retried(home: Path) -> None:
    """The supervisor in-process with a clock that jumps past the deadline once the command runs.

    AWS Batch does not retry an attempt it stopped for its timeout (user guide, "Job timeouts"):
    neither does the local backend, whatever `retries` says.
    """
    started = home / "started"
    spec = write_spec(
        home,
        f"name: slow\nsteps:\n  - name: s\n    queue: cpu\n    retries: 2\n    timeout: 60\n"
        f"    command: touch {started}; sleep 30\n",
    )
    run = local.create_run(pipeline.load(spec))

    def clock() -> float:
        # 62 s later than real time once the command has started: past the 60 s deadline, not
        # yet past deadline + the stop grace, so the worker gets SIGTERM first.
        return time.monotonic() + (62.0 if started.exists() else 0.0)

    began = time.monotonic()
    supervisor = local.Supervisor(run, clock=clock)
    assert supervisor.stop_grace == 30.0, "SIGKILL 30 s after SIGTERM, as on AWS Batch"
    state = supervisor.loop()
    assert state == JobState.FAILED
    assert time.monotonic() - began < 15
    doc = local.status(run.run_id)
    child = doc["steps"][0]["failed_children"][0]
    assert child["reason"] == "timeout after 60 s" and child["attempt"] == 1
    assert "stopped by SIGTERM" in run.log_path("s", 0).read_text()
    with sqlite3.connect(run.path / "run.db") as conn:
        (pid,) = conn.execute("SELECT pid FROM child").fetchone()
    assert not pid_alive(pid)


def test_a_timed_out_child_that_ignores_sigterm_is_killed_after_the_grace(home: Path) -> None:
    """SIGKILL once the clock passes deadline + stop grace, before the worker's own clean-up ends.

    The command ignores SIGTERM, so the worker, stopped by SIGTERM, would wait 5 s for it; the
    clock jumps past the 1 s grace as soon as the SIGTERM has arrived.
    """
    started, termed = home / "started", home / "termed"
    spec = write_spec(
        home,
        "name: stubborn\nsteps:\n  - name: s\n    queue: cpu\n    retries: 0\n    timeout: 60\n"
        f"    command: trap 'touch {termed}' TERM; touch {started}; while :; do sleep 0.1; done\n",
    )
    run = local.create_run(pipeline.load(spec))

    def clock() -> float:
        return time.monotonic() + (62.0 if started.exists() else 0.0) + (5.0 if termed.exists() else 0.0)

    began = time.monotonic()
    assert local.Supervisor(run, clock=clock, stop_grace=2.0).loop() == JobState.FAILED
    assert termed.exists() and time.monotonic() - began < 4.5
    assert "stopped by SIGTERM" not in run.log_path("s", 0).read_text(), "killed before its clean-up ended"


def test_children_that_exit_0_with_commands_not_done_fail_the_step(home: Path) -> None:
    """The step's work pack was rewritten under the workers (as if from an edited list file):
    they run what they read and exit 0, but two of the four commands the step was launched with
    have no done marker."""
    spec = write_spec(
        home,
        "name: short\nsteps:\n  - name: a\n    queue: cpu\n    array_size: 2\n"
        "    commands: [echo 0, echo 1, echo 2, echo 3]\n"
        "  - name: b\n    queue: cpu\n    command: echo b\n    depends_on: [a]\n",
    )
    run = local.create_run(pipeline.load(spec))
    state = open_store(str(run.path / "state"))
    write_work(state, run.manifest["steps"][0], ["echo 0", "echo 1"], 1)
    assert local.Supervisor(run).loop() == JobState.FAILED
    doc = local.status(run.run_id)
    a, b = doc["steps"]
    assert a["counts"] == {"SUCCEEDED": 2}, "every child exited 0"
    assert a["state"] == "FAILED"
    assert a["reason"] == f"2 of 4 commands have no done marker; `opsctl resume {run.run_id}` runs them"
    assert (b["state"], b["reason"]) == ("FAILED", "dependency failed")

    assert local.resume(run.run_id) == f"{run.run_id} resumed: a, b in generation 2"
    code, doc, _ = watch(run.run_id)
    assert code == 0 and doc["state"] == "SUCCEEDED"
    assert by_name(doc)["a"]["commands"]["done"] == 4


def test_ten_thousand_commands(home: Path) -> None:
    spec = write_spec(
        home,
        "name: many\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 4\n"
        "    commands: {template: 'true {i}', range: 10000}\n",
    )
    code, doc, _ = watch(launch(spec, "--max-parallel", "2"))
    assert code == 0
    step = by_name(doc)["s"]
    assert step["commands"] == {"total": 10000, "done": 10000, "failed": 0, "reexecuted": 0}
    assert step["counts"] == {"SUCCEEDED": 4}


def test_dead_supervisor_is_reported_and_resume_finishes_the_run(home: Path) -> None:
    out = home / "out"
    out.mkdir()
    spec = write_spec(
        home,
        f"name: orphan\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 2\n"
        f"    commands: {{template: 'echo ran >> {out}/{{i}}; test -e {home}/go || sleep 30', range: 4}}\n",
    )
    run_id = launch(spec, "--max-parallel", "2")
    wait_until(lambda: len(list(out.iterdir())) >= 2, 20, "both children's first commands")
    run = local.LocalRun.find(run_id)
    os.kill(run.run_row()["supervisor_pid"], signal.SIGKILL)
    time.sleep(0.2)

    doc = json.loads(cli("status", run_id, "--json").stdout)
    assert doc["state"] == "RUNNING"
    assert doc["reason"].startswith("supervisor died")
    code, _, _ = watch(run_id)
    assert code == 1, "watch does not wait for a run nobody drives"

    (home / "go").touch()
    assert cli("resume", run_id).returncode == 0
    code, doc, _ = watch(run_id)
    assert code == 0 and doc["reason"] is None
    assert [len((out / str(k)).read_text().split()) for k in range(4)] == [2, 1, 2, 1]


def test_text_status_and_logs_follow(home: Path) -> None:
    spec = write_spec(
        home,
        "name: shown\nsteps:\n  - name: first-step\n    queue: cpu\n    array_size: 2\n"
        "    commands: ['echo hello from zero; sleep 1', 'echo hello from one; sleep 1']\n",
    )
    run_id = launch(spec)
    follow = cli("logs", run_id, "first-step", "--follow")
    assert follow.returncode == 0
    assert "hello from zero" in follow.stdout and "hello from one" in follow.stdout
    assert '"event": "finished"' in follow.stdout, "follow stops only after the run ended"
    text = cli("status", run_id)
    assert text.returncode == 0
    assert run_id in text.stdout and "first-step" in text.stdout and "2/2" in text.stdout
    listed = cli("list")
    assert run_id in listed.stdout and "SUCCEEDED" in listed.stdout
    missing = cli("logs", run_id, "nope")
    assert missing.returncode == 2 and "step 'nope' is not in run" in missing.stderr


def test_launch_watch_json_prints_one_document(home: Path) -> None:
    spec = write_spec(home, "name: both\nsteps:\n  - name: s\n    queue: cpu\n    command: 'true'\n")
    result = cli("launch", str(spec), "--watch", "--json")
    assert result.returncode == 0
    doc = json.loads(result.stdout)
    assert doc["state"] == "SUCCEEDED" and doc["run_id"].startswith("both-")


def test_kill_never_signals_a_process_that_only_shares_a_recorded_pid(home: Path) -> None:
    spec = write_spec(home, "name: reuse\nsteps:\n  - name: s\n    queue: cpu\n    command: 'true'\n")
    run = local.create_run(pipeline.load(spec))
    # A Python of this venv, not /usr/bin/sleep: the test needs a process, not a system tool.
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        with sqlite3.connect(run.path / "run.db") as conn:  # as if its pid had been reused
            conn.execute("UPDATE run SET state = 'RUNNING', supervisor_pid = ?", (bystander.pid,))
            conn.execute("UPDATE child SET state = 'RUNNING', pid = ?", (bystander.pid,))
        assert local.status(run.run_id)["reason"].startswith("supervisor died")
        assert local.kill(run.run_id) == f"{run.run_id} killed"
        assert bystander.poll() is None, "the bystander is still running"
        assert local.status(run.run_id)["state"] == "FAILED"
    finally:
        bystander.kill()
        bystander.wait()


class Looked(dict):  # type: ignore[type-arg]
    """A dict that counts how many of its entries are looked at."""

    looked = 0

    def __getitem__(self, key: object) -> object:
        self.looked += 1
        return super().__getitem__(key)


def test_a_tick_costs_what_changed_not_the_number_of_children(home: Path) -> None:
    """A 10,000-child step with one child running: an idle tick writes nothing and reads no row."""
    started = home / "started"
    spec = write_spec(
        home,
        "name: wide\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 10000\n"
        f"    commands: {{template: 'touch {started}; sleep 30 # {{i}}', range: 10000}}\n",
    )
    run = local.create_run(pipeline.load(spec), max_parallel=1)
    supervisor = local.Supervisor(run)
    statements: list[str] = []
    supervisor.conn.set_trace_callback(statements.append)
    try:
        with supervisor.conn as conn:
            supervisor._tick(conn)  # the first tick releases 10,000 children and starts one
        assert len(supervisor.running) == 1
        statements.clear()
        supervisor.children = Looked(supervisor.children)
        for _ in range(50):
            with supervisor.conn as conn:
                assert supervisor._tick(conn) is None
        assert [s for s in statements if not s.startswith(("BEGIN", "COMMIT"))] == []
        assert supervisor.children.looked < 50 * 5, "a few children looked at per tick, not 10,000"
    finally:
        for child in supervisor.running.values():
            os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
        supervisor.conn.close()


def test_status_reads_ledgers_and_counts_not_markers(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Polling a run lists each step's ledgers (a file per child attempt), never its markers."""
    from opsctl_contract.storage import LocalStore

    listed: list[str] = []  # the LISTs a poll makes (status keeps no count of its own requests)
    real = LocalStore.list

    def counted(store: LocalStore, folder: str = "", **bounds: str) -> list[str]:
        listed.append(folder)
        return real(store, folder, **bounds)

    spec = write_spec(
        home,
        "name: many\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 4\n"
        "    commands: {template: 'true {i}', range: 3000}\n",
    )
    code, doc, _ = watch(launch(spec, "--max-parallel", "2"))
    assert code == 0 and doc["steps"][0]["commands"]["done"] == 3000  # type: ignore[index]
    monkeypatch.setattr(LocalStore, "list", counted)
    again = local.status(str(doc["run_id"]))
    assert len(listed) == 1, "one listing: the step's ledgers, for its requests"
    assert again["steps"][0]["commands"]["done"] == 3000
    assert again["requests"]["put"] >= 3000, "every done marker was a write"


def test_children_with_nothing_to_run_are_not_started(home: Path) -> None:
    """1,000 children for one command start one worker: the others have an empty shard and
    are counted SUCCEEDED with no attempt and no log, as soon as their dependencies are met.
    Through an N_TO_N dependency child i of `t` still waits for child i of `s`, and a step
    after a failed one is failed by it, its empty children included (nothing is ready)."""
    spec = write_spec(
        home,
        """
name: idle
defaults: {retries: 0}
steps:
  - name: s
    queue: cpu
    array_size: 1000
    command: echo only
  - name: t
    queue: cpu
    array_size: 1000
    commands: [echo zero, echo one]
    depends_on: [{step: s, type: N_TO_N}]
  - name: f
    queue: cpu
    command: exit 3
  - name: g
    queue: cpu
    array_size: 4
    command: echo never
    depends_on: [f]
""",
    )
    run_id = launch(spec)
    code, doc, _ = watch(run_id)
    steps = by_name(doc)
    assert code == 1 and (steps["s"]["state"], steps["t"]["state"]) == ("SUCCEEDED", "SUCCEEDED")
    assert steps["s"]["counts"] == steps["t"]["counts"] == {"SUCCEEDED": 1000}
    assert (steps["s"]["attempts"], steps["t"]["attempts"]) == (
        {"total": 1, "retried": 0},
        {"total": 2, "retried": 0},
    )
    assert (steps["g"]["counts"], steps["g"]["cancelled"]) == ({"FAILED": 4}, 4), "not ready: not done"
    run_dir = home / "home" / "runs" / run_id
    logs = sorted(str(p.relative_to(run_dir / "logs")) for p in (run_dir / "logs").rglob("*.log"))
    # The seed's slices: one command goes to child 999 of 1,000, two to children 499 and 999.
    assert logs == ["f/0.log", "s/999.log", "t/499.log", "t/999.log"], "one worker per child with work"
    with sqlite3.connect(run_dir / "run.db") as db:
        rows = db.execute("SELECT step, idx FROM attempt ORDER BY step, idx").fetchall()
        # Child i of t started after child i of s had succeeded, whether s's child ran or not.
        order = db.execute(
            "SELECT t.idx, t.started >= s.finished FROM attempt t "
            "JOIN child s ON s.step = 's' AND s.idx = t.idx WHERE t.step = 't'"
        ).fetchall()
    assert rows == [("f", 0), ("s", 999), ("t", 499), ("t", 999)]
    assert order == [(499, 1), (999, 1)]


def test_a_resume_starts_only_the_children_dealt_commands(home: Path) -> None:
    """Dynamic split: a resume runs every child again, over a pack of the commands left. After
    one command of eight failed, that pack deals it to one child of four (the last: cuts at
    1*i//4), and that child alone starts; the others' shards are empty."""
    flag = home / "fixed"
    spec = write_spec(
        home,
        f"""
name: again
defaults: {{retries: 0}}
steps:
  - name: s
    queue: cpu
    array_size: 4
    split: dynamic
    commands: {{template: "test {{i}} != 5 || test -e {flag}", range: 8}}
""",
    )
    run_id = launch(spec)
    assert watch(run_id)[0] == 1
    flag.touch()
    assert cli("resume", run_id).returncode == 0
    code, doc, _ = watch(run_id)
    assert code == 0 and by_name(doc)["s"]["commands"]["done"] == 8
    with sqlite3.connect(home / "home" / "runs" / run_id / "run.db") as db:
        again = db.execute("SELECT idx FROM attempt WHERE generation = 2").fetchall()
    assert again == [(3,)]


def test_commands_start_in_their_attempts_scratch_directory(home: Path, tmp_path: Path) -> None:
    """Not the launch directory: an empty directory of the attempt's own, named by
    OPSCTL_SCRATCH_DIR, shared by the attempt's commands in turn and removed when it ends; a
    retry gets a new one. What a command keeps goes under OPSCTL_RUN_URI."""
    launched_from = tmp_path / "launch"
    launched_from.mkdir()
    (launched_from / "data.txt").write_text("the launch directory's\n")
    record = 'd="$OPSCTL_RUN_URI/seen"; mkdir -p "$d"; echo "$PWD $OPSCTL_SCRATCH_DIR $(ls -A | wc -l)"'
    spec = write_spec(
        home,
        f"""
name: where
defaults: {{retries: 1}}
steps:
  - name: s
    queue: cpu
    commands:
      - '{record} > "$d/0"; touch mine'
      - '{record} > "$d/1.$AWS_BATCH_JOB_ATTEMPT"; test "$AWS_BATCH_JOB_ATTEMPT" = 2'
""",
    )
    result = cli("launch", str(spec), "--json", cwd=launched_from)
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    code, doc, _ = watch(run_id)
    assert code == 0, doc
    seen = home / "home" / "runs" / run_id / "seen"
    first, second, retried = ((seen / name).read_text().split() for name in ("0", "1.1", "1.2"))
    assert first[0] == first[1] != str(launched_from) and first[2] == "0", "empty, its own"
    assert second == [first[0], first[0], "1"], "the next command of the attempt: the same, with `mine`"
    assert retried[0] == retried[1] != first[0] and retried[2] == "0", "a retry starts again, empty"
    assert Path(first[0]).parent == Path(tempfile.gettempdir())
    assert not Path(first[0]).exists() and not Path(retried[0]).exists(), "removed with the attempt"
