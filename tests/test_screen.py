"""What `status`, `watch` and `report` put on the screen (issue 28, item 4), on both backends.

- Children that never started (killed before they ran, or never run because a step they
  depend on failed) read "cancelled", not "failed", in the table, and `status --json` says how
  many (`cancelled`), its `counts` left as the scheduler gives them.
- `watch`'s failure summary leads with the failed command's text and its own stderr, then the
  reason, then the log's last lines with the worker's events made short.
- The report's timeline has a labelled time axis that lines up with its bars in a browser.
- An attempt `opsctl kill` stopped says so in its reason (local), and Batch's status reason for
  a terminated job reaches the report (AWS).
- Retries show: each step's `attempts` in `status --json`, an attempts column in the table,
  which gives way in its place in the 80-column order.

Local runs are real (supervisor, workers, SQLite); AWS runs are AWS Batch played with real
workers (tests/batch_player.py), or DescribeJobs answers shaped as the API Reference has them.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from rich.cells import cell_len
from rich.console import Console

from opsctl import report
from opsctl.cli.render import status_table
from opsctl.report import axis_ticks
from opsctl.run.failures import log_lines, worker_line
from opsctl_contract.markers import DONE, Ledger
from opsctl_contract.storage import s3_client
from tests.batch_player import BatchPlayer
from tests.helpers import cli, one_step_run
from tests.test_aws import Calls, a_step, fixture, stubbed
from tests.test_report import headless_chromium

LIMIT = 60  # seconds any one CLI call here may take


def until(done: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def run_cli(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = cli(*args, env=env, timeout=LIMIT)
    assert result.returncode == code, (args, result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr
    return result


def steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in doc["steps"]}


def launched(env: dict[str, str], spec: Path, *args: str) -> str:
    run_id: str = json.loads(run_cli(env, "launch", str(spec), "--json", *args).stdout)["run_id"]
    return run_id


# --- local runs, shared by several tests -------------------------------------------------------

# A child that fails a command (retried once), a dynamic-split step that fails one, and a step
# that depends on the first and so never runs.
FAILING = """name: shown
defaults: {retries: 1}
steps:
  - name: s
    queue: cpu
    array_size: 2
    commands:
      - "echo ok"
      - "echo about to fail; echo 'no such file: data/x.h5' >&2; exit 4"
      - "echo after"
  - name: d
    queue: cpu
    array_size: 2
    split: dynamic
    retries: 0
    commands: ["true", "true", "echo 'dynamic broke' >&2; exit 5", "true"]
  - name: t
    queue: cpu
    array_size: 3
    command: "echo never"
    depends_on: [s]
"""

# Four children, one slot: the first runs a long command, three wait their turn.
KILLED = """name: cancel
defaults: {retries: 0}
steps:
  - name: s
    queue: cpu
    array_size: 4
    commands: {template: "sleep 30 # {i}", range: 4}
"""


def _run_of(factory: pytest.TempPathFactory, text: str, *options: str) -> tuple[dict[str, str], str, Path]:
    """A local run of the spec `text`, launched in a home of its own: (its environment, its run
    id, its run directory)."""
    base = factory.mktemp("run")
    env = {**os.environ, "OPSCTL_HOME": str(base / "home"), "COLUMNS": "200"}
    spec = base / "p.yaml"
    spec.write_text(text)
    run_id = launched(env, spec, *options)
    return env, run_id, base / "home" / "runs" / run_id


@pytest.fixture(scope="module")
def failed_local(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """A local run of FAILING, ended: (its environment, its run id)."""
    env, run_id, _ = _run_of(tmp_path_factory, FAILING)
    run_cli(env, "watch", run_id, "--json", "--interval", "0.1", code=1)
    return env, run_id


@pytest.fixture(scope="module")
def killed_local(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """A local run of KILLED, killed while its first child's command runs."""
    env, run_id, run = _run_of(tmp_path_factory, KILLED, "--max-parallel", "1")
    log = run / "logs" / "s" / "0.log"
    until(lambda: log.exists() and '"first command"' in log.read_text(), "child 0 runs its command")
    assert run_cli(env, "kill", run_id).stdout.strip() == f"{run_id} killed"
    return env, run_id


# --- cancelled -----------------------------------------------------------------------------------


def test_a_kill_shows_children_that_never_started_as_cancelled(
    killed_local: tuple[dict[str, str], str],
) -> None:
    env, run_id = killed_local
    [step] = json.loads(run_cli(env, "status", run_id, "--json").stdout)["steps"]
    assert step["counts"] == {"FAILED": 4}, "the scheduler's word, kept for scripts"
    assert step["cancelled"] == 3
    assert [c["index"] for c in step["failed_children"]] == [0], "only the child that ran failed"
    table = run_cli(env, "status", run_id).stdout
    assert "failed 1 cancelled 3" in table and "failed 4" not in table, table
    watched = run_cli(env, "watch", run_id, code=1)
    assert "failed 1 cancelled 3" in watched.stdout
    assert "s[0] failed: killed by user" in watched.stderr
    assert not re.search(r"s\[[123]\]", watched.stderr), "no failure lines for children that never ran"


def test_a_step_whose_dependency_failed_reads_cancelled(failed_local: tuple[dict[str, str], str]) -> None:
    env, run_id = failed_local
    t = steps(json.loads(run_cli(env, "status", run_id, "--json").stdout))["t"]
    assert (t["state"], t["reason"], t["counts"], t["cancelled"]) == (
        "FAILED",
        "dependency failed",
        {"FAILED": 3},
        3,
    )
    table = run_cli(env, "status", run_id).stdout
    assert re.search(r"│ t +│ cpu +│ FAILED +│ cancelled 3 +│", table), table


def test_aws_kill_shows_children_that_never_started_as_cancelled(player: BatchPlayer, tmp_path: Path) -> None:
    """TerminateJob stops the running child and ends the three RUNNABLE ones before they run
    (API Reference, "TerminateJob"): Batch calls all four FAILED; the three had no attempt. The
    report's attempt carries Batch's status reason for the terminated job."""
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    spec = tmp_path / "p.yaml"
    spec.write_text(KILLED)
    player.capacity = 1
    run_id = launched(env, spec, "--backend", "aws", "--infra", str(player.infra))
    until(lambda: bool(player.running_children()), "a child runs")
    until(lambda: "first command" in _player_log(player), "its command runs")
    run_cli(env, "kill", run_id)
    player.wait_until(player.idle)
    doc = json.loads(run_cli(env, "status", run_id, "--json").stdout)
    [step] = doc["steps"]
    assert (step["counts"], step["cancelled"]) == ({"FAILED": 4}, 3)
    watched = run_cli(env, "watch", run_id, code=1)
    assert "failed 1 cancelled 3" in watched.stdout, watched.stdout
    assert re.findall(r"^s\[(\d)\] failed: killed by user", watched.stderr, re.M) == ["0"], watched.stderr
    facts = json.loads(run_cli(env, "report", run_id, "--json").stdout)
    [retry] = facts["steps"][0]["retries"]
    assert (retry["index"], retry["exit_code"], retry["reason"]) == (0, 143, "killed by user")
    again = json.loads(run_cli(env, "status", run_id, "--json").stdout)
    assert steps(again)["s"]["cancelled"] == 3, "from the final record"


def _player_log(player: BatchPlayer) -> str:
    return "".join(p.read_text() for p in player.workdir.glob("*.log"))


# --- the failure summary -----------------------------------------------------------------------


def _led_by_command(lines: list[str], reason: str) -> int:
    """Where FAILING's child s[1] begins in a failure summary, checked to lead with its failed
    command and that command's stderr, then `reason`, then its log."""
    start = lines.index(
        "s[1] command 1 failed (exit 4): echo about to fail; echo 'no such file: data/x.h5' >&2; exit 4"
    )
    assert lines[start + 1 : start + 3] == ["  its stderr:", "    no such file: data/x.h5"], lines
    assert lines[start + 3] == f"  s[1] failed: {reason}", lines
    assert lines[start + 4].startswith("  its log, last lines (opsctl logs "), lines
    assert not [line for line in lines if line.lstrip().startswith("{")], "no raw worker event"
    return start


def test_watch_leads_with_the_failed_command_and_its_stderr(failed_local: tuple[dict[str, str], str]) -> None:
    env, run_id = failed_local
    lines = run_cli(env, "watch", run_id, code=1).stderr.splitlines()
    start = _led_by_command(lines, "worker exited 1 (attempt 2, exit code 1)")
    log = lines[start + 5 : start + 12]
    assert lines[start + 4] == f"  its log, last lines (opsctl logs {run_id} s --index 1):"
    assert log[0] == f"    == {run_id} s[1] attempt 2 ==", "the latest attempt's lines only"
    assert "    [worker] command 1 failed (exit 4, " in "\n".join(log)
    assert lines[0].startswith("s[1] command 1 failed"), "the first line is the command"
    # The dynamic split: whichever child ran command 2, the same lines.
    dynamic = [
        i for i, line in enumerate(lines) if re.match(r"d\[[01]\] command 2 failed \(exit 5\): ", line)
    ]
    assert len(dynamic) == 1, lines
    assert lines[dynamic[0]].endswith(": echo 'dynamic broke' >&2; exit 5")
    assert lines[dynamic[0] + 1 : dynamic[0] + 3] == ["  its stderr:", "    dynamic broke"]
    facts = json.loads(run_cli(env, "report", run_id, "--json").stdout)
    assert facts["failures"] == lines, "the report's failures are watch's"


def test_worker_events_are_made_short_and_only_the_latest_attempt_is_shown() -> None:
    event = {"index": 3, "outcome": "failed", "exit_code": 4, "seconds": 0.2, "event": "command"}
    bound = {"step": "s", "child": 1, "attempt": 2, "run_id": "r", "level": "warning", "timestamp": "t"}
    assert worker_line(json.dumps({**event, **bound})) == "[worker] command 3 failed (exit 4, 0.2 s)"
    accounting = {"index": 0, "requests": {"get": 2}, "event": "first command", **bound, "level": "info"}
    assert worker_line(json.dumps(accounting)) is None
    assert worker_line('{"not": "an event"}') == '{"not": "an event"}', "a command's own JSON stays"
    log = ["== r s[1] attempt 1 ==", "old", "== r s[1] attempt 2 ==", "new", json.dumps(accounting)]
    assert log_lines(log, 10) == ["== r s[1] attempt 2 ==", "new"]


def test_aws_watch_leads_with_the_failed_command_and_its_stderr(player: BatchPlayer, tmp_path: Path) -> None:
    """On AWS the same lines: the command and its stderr from its marker and the work pack in
    S3, the reasons from Batch, the log's last lines from CloudWatch (on the moto server)."""
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    spec = tmp_path / "p.yaml"
    spec.write_text(FAILING)
    run_id = launched(env, spec, "--backend", "aws", "--infra", str(player.infra))
    watched = run_cli(env, "watch", run_id, code=1)
    lines = watched.stderr.splitlines()
    start = _led_by_command(lines, "Essential container in task exited (container: -, exit code 1)")
    assert lines[start + 4] == f"  its log, last lines (opsctl logs {run_id} s --index 1):"
    assert "    [worker] command 1 failed (exit 4, " in "\n".join(lines[start + 5 :])
    assert any(re.match(r"d\[[01]\] command 2 failed \(exit 5\): ", line) for line in lines), lines
    # The dependent step never ran: cancelled, from Batch's "Dependent Job failed" children.
    doc = json.loads(run_cli(env, "status", run_id, "--json").stdout)
    t = steps(doc)["t"]
    assert (t["counts"], t["cancelled"]) == ({"FAILED": 3}, 3)
    assert "cancelled 3" in watched.stdout
    # Retries, from the children's ledgers: s[1] ran twice.
    assert steps(doc)["s"]["attempts"] == {"total": 3, "retried": 1}
    assert steps(doc)["t"]["attempts"] == {"total": 0, "retried": 0}


def test_aws_report_gives_a_terminated_jobs_own_reason(infra_file: Path) -> None:
    """A job TerminateJob stopped (DescribeJobs, Response Syntax): the job's statusReason is the
    reason the caller gave; its attempt's says only how its container ended."""
    run_id = "four-20261128-120000-abcd"
    job = {
        **fixture("timed_out")["jobs"][0],
        "statusReason": "killed by user",
        "attempts": [
            {
                "container": {"exitCode": 143, "logStreamName": "opsctl-cpu/default/x"},
                "startedAt": 1795867200000,
                "stoppedAt": 1795867230000,
                "statusReason": "Essential container in task exited",
            }
        ],
    }
    backend, api = stubbed(infra_file, run_id, [a_step("calibrate")], {"calibrate": job["jobId"]})
    with Stubber(api.batch) as stub:
        stub.add_response("describe_jobs", {"jobs": [job]}, {"jobs": [job["jobId"]]})
        [attempt] = backend.attempts(run_id)
    assert (attempt["exit_code"], attempt["reason"]) == (
        143,
        "killed by user (Essential container in task exited)",
    )


def test_a_killed_attempt_says_it_was_killed_by_opsctl_kill(killed_local: tuple[dict[str, str], str]) -> None:
    env, run_id = killed_local
    facts = json.loads(run_cli(env, "report", run_id, "--json").stdout)
    [retry] = facts["steps"][0]["retries"]
    assert (retry["index"], retry["attempt"], retry["exit_code"]) == (0, 1, 143)
    assert retry["reason"] == "killed by user (opsctl kill)"
    [bar] = facts["timeline"]
    assert bar["reason"] == "killed by user (opsctl kill)"


# --- retries -----------------------------------------------------------------------------------


def test_status_and_watch_show_attempts_and_retried_children(
    failed_local: tuple[dict[str, str], str],
) -> None:
    env, run_id = failed_local
    doc = json.loads(run_cli(env, "status", run_id, "--json").stdout)
    by = steps(doc)
    assert by["s"]["attempts"] == {"total": 3, "retried": 1}, "s[0] once, s[1] twice"
    assert by["d"]["attempts"] == {"total": 2, "retried": 0}
    assert by["t"]["attempts"] == {"total": 0, "retried": 0}
    assert [c["attempt"] for c in by["s"]["failed_children"]] == [2]
    table = run_cli(env, "status", run_id).stdout
    header = next(line for line in table.splitlines() if "┃ step" in line)
    assert [h.strip() for h in header.strip("┃").split("┃")][:5] == [
        "step",
        "queue",
        "state",
        "children",
        "attempts",
    ]
    assert re.search(r"│ s +│ cpu +│ FAILED +│ succeeded 1 failed 1 +│ 3 \(1 retried\) +│", table), table


def test_aws_attempts_come_from_the_ledger_listing_the_poll_makes_anyway(infra_file: Path) -> None:
    """A running array's attempts from its children's ledgers: the one listing that counts its
    commands (a LIST page per 1,000 attempts), no second one."""
    run_id = "tomo-20261128-120000-abcd"
    running = fixture("array_running")["jobs"][0]
    backend, api = stubbed(
        infra_file, run_id, [a_step("process", array_size=100, commands=1000)], {"process": running["jobId"]}
    )
    store = backend.state_store(run_id)
    for child, attempt in [(0, 1), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]:
        ledger = Ledger(store, "process", child, 1, attempt)
        ledger.note(DONE)
        ledger.save()
    with Stubber(api.batch) as stub, Calls(s3_client()) as s3:
        stub.add_response("describe_jobs", {"jobs": [running]}, {"jobs": [running["jobId"]]})
        [step] = backend.status(run_id, stuck_after=10**12)["steps"]
    assert step["attempts"] == {"total": 1 + 2 + 3, "retried": 2}
    assert step["cancelled"] == 0
    assert s3["ListObjectsV2"] == 1, s3


# --- the table's layout ------------------------------------------------------------------------


def _doc(retried: int, name: str = "process") -> dict[str, Any]:
    step = {
        "name": name,
        "queue": "cpu",
        "image": None,
        "state": "RUNNING",
        "counts": {"RUNNING": 98, "SUCCEEDED": 2, "FAILED": 5},
        "cancelled": 3,
        "attempts": {"total": 107 + retried, "retried": retried},
        "commands": {"total": 1_000_000, "done": 10, "failed": 3, "reexecuted": 0},
        "elapsed": 123456.7,
    }
    other = {**step, "name": "b", "queue": "gpu", "attempts": {"total": 1, "retried": 0}}
    return {
        "run_id": "r-20260101-000000-abcd",
        "backend": "local",
        "state": "RUNNING",
        "elapsed": 5.0,
        "steps": [step, other],
    }


def _drawn(doc: dict[str, Any], width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(status_table(doc))
    return console.export_text().splitlines()


def _headers(lines: list[str]) -> list[str]:
    header = next(line for line in lines if line.startswith("┃"))
    return [h.strip() for h in header.strip("┃").split("┃")]


def test_the_table_shows_cancelled_apart_and_attempts_once_a_child_was_retried() -> None:
    wide = _drawn(_doc(retried=4), 200)
    assert _headers(wide) == ["step", "queue", "state", "children", "attempts", "commands", "", "elapsed"]
    row = next(line for line in wide if line.startswith("│ process "))
    assert "running 98 succeeded 2 failed 2 cancelled 3" in row, "FAILED less the cancelled"
    assert "│ 111 (4 retried) │" in row
    assert "attempts" not in _headers(_drawn(_doc(retried=0), 200)), "nothing retried: no column"


def test_the_attempts_column_gives_way_in_its_place_in_the_80_column_order() -> None:
    """Bar, queue; children, retried, failed one to a line; elapsed; attempts; children: each
    narrower width drops or stacks what the order says next, and step, state and done/total
    stay whole in every one."""
    order = ["", "queue", "elapsed", "attempts", "children"]  # the columns, in the order they go
    seen = []
    for width in range(200, 44, -1):
        lines = _drawn(_doc(retried=4, name="a" * 36 + "-end"), width)
        assert all(cell_len(line) <= width for line in lines), (width, "\n".join(lines))
        headers = _headers(lines)
        assert {"step", "state", "commands"} <= set(headers)
        gone = [c for c in order if c not in headers]
        assert gone == order[: len(gone)], (width, headers)
        text = "\n".join(lines)
        if "attempts" in headers and width < 120:
            seen.append(width)
            assert "(4 retried)" in text
        assert " 10/1000000" in text
    assert seen, "the attempts column is drawn in some narrow layout"
    usual = _drawn(_doc(retried=4), 80)
    assert "attempts" in _headers(usual), "\n".join(usual)
    assert any(line.startswith("│ process ") and " 111 " in line for line in usual), "\n".join(usual)
    assert any("(4 retried)" in line for line in usual)


# --- the report's time axis --------------------------------------------------------------------


def test_axis_ticks_are_spaced_in_sensible_units() -> None:
    assert [label for _, label in axis_ticks(250)] == ["0 min", "1 min", "2 min", "3 min", "4 min"]
    assert [t for t, _ in axis_ticks(250)] == [0, 60, 120, 180, 240]
    assert [label for _, label in axis_ticks(3.2)] == ["0 s", "0.5 s", "1 s", "1.5 s", "2 s", "2.5 s", "3 s"]
    assert [label for _, label in axis_ticks(45)][-1] == "40 s"
    assert [label for _, label in axis_ticks(5 * 3600 + 1)][1:3] == ["1 h", "2 h"]
    assert [label for _, label in axis_ticks(86400 * 3)][1] == "12 h"
    for wall in (0.004, 1, 59, 61, 599, 601, 3599, 3601, 86400, 10**6):
        ticks = axis_ticks(wall)
        assert ticks[0][0] == 0 and 2 <= len(ticks) <= 9 and ticks[-1][0] <= wall, (wall, ticks)


class _Ticks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ticks: list[tuple[float, str, str]] = []
        self._tick: tuple[float, str] | None = None
        self.placed: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("class") == "tick":
            self._tick = (float(str(a["data-seconds"])), str(a["style"]))
        if tag == "body":
            self.placed = {k: str(v) for k, v in a.items() if k.startswith("data-")}

    def handle_data(self, data: str) -> None:
        if self._tick:
            self.ticks.append((*self._tick, data))
            self._tick = None


def _facts(wall: float) -> dict[str, Any]:
    """A report's facts for two children, the second starting at 1 min, ending at `wall` s."""
    return report.facts(*one_step_run([(1000.0, 1060.0), (1060.0, 1000.0 + wall)]), [])


def test_the_reports_timeline_has_a_labelled_time_axis(tmp_path: Path) -> None:
    page = report.render(_facts(250.0))
    parsed = _Ticks()
    parsed.feed(page)
    assert [(t, label) for t, _, label in parsed.ticks] == [
        (0, "0 min"),
        (60, "1 min"),
        (120, "2 min"),
        (180, "3 min"),
        (240, "4 min"),
    ]
    assert [style for _, style, _ in parsed.ticks][1] == f"left:{100 * 60 / 250:.3f}%"
    assert "time since the run's first attempt started" in page


def test_the_axis_lines_up_with_the_bars_in_a_browser(tmp_path: Path) -> None:
    """Headless Chromium lays the page out; a script added to a copy of it (the report has none)
    measures where the 1-minute tick's mark and the bar that starts at 1 minute are."""
    browser = headless_chromium(tmp_path)
    measure = """<script>
const tick = [...document.querySelectorAll('.tick')].find(t => t.dataset.seconds === '60');
const bar = document.querySelector('[data-attempt="s:1:1:1"]');
const mark = getComputedStyle(tick, '::after');
const r = tick.getBoundingClientRect();
document.body.dataset.tick = r.left + r.width / 2;
document.body.dataset.bar = bar.getBoundingClientRect().left;
document.body.dataset.label = tick.textContent;
document.body.dataset.mark = mark.borderLeftWidth;
document.body.dataset.axistop = document.getElementById('axis').getBoundingClientRect().bottom;
document.body.dataset.bartop = bar.getBoundingClientRect().top;
</script></body>"""
    page = tmp_path / "measured.html"
    page.write_text(report.render(_facts(250.0)).replace("</body>", measure))
    dumped = subprocess.run(
        [*browser, "--window-size=1200,900", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    parsed = _Ticks()
    parsed.feed(dumped)
    placed = parsed.placed
    assert placed["data-label"] == "1 min"
    assert abs(float(placed["data-tick"]) - float(placed["data-bar"])) <= 1.0, placed
    assert placed["data-mark"] == "1px", "the tick has its mark"
    assert float(placed["data-axistop"]) <= float(placed["data-bartop"]), "the axis is above the bars"


# --- the backend's notes under the table ---------------------------------------------------------


def test_a_step_image_run_without_containers_is_said_under_the_table(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The local backend runs a step's `image:` only under --containers; without it, `status`
    says so under its table (Backend.notes), and says nothing of the kind where no step has one."""
    text = (
        "name: img\nsteps:\n  - name: s\n    queue: cpu\n    image: example.org/own:1\n    command: 'true'\n"
    )
    env, run_id, _ = _run_of(tmp_path_factory, text)
    run_cli(env, "watch", run_id, "--json", "--interval", "0.1")
    shown = run_cli(env, "status", run_id).stdout
    assert "s: image example.org/own:1" in shown
    assert "(images not used: launched without --containers, so on this host)" in shown
    plain, other, _ = _run_of(
        tmp_path_factory, "name: plain\nsteps:\n  - {name: s, queue: cpu, command: 'true'}\n"
    )
    run_cli(plain, "watch", other, "--json", "--interval", "0.1")
    assert "images not used" not in run_cli(plain, "status", other).stdout
