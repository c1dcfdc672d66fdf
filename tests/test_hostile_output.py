"""Hostile output: what commands print, how long logs grow, clocks that step back, 80 columns.

Round three of the hostile cases (issue 27, items 3, 9 and 10), beside tests/test_hostile.py:
a command's terminal escapes (OSC 0 titles, OSC 52 clipboard writes, cursor moves, C1 controls,
bidirectional overrides) and bytes that are not UTF-8 reach the user's terminal made visible by
`logs`, `watch`'s failure lines and `report`, while `logs --raw` gives the bytes as logged; a
200 MB log streams in bounded memory; a wall-clock step back never shows a negative duration;
and in 80 columns every step's name, state and commands done/total stay whole, and `list` fits.
Every CLI call runs as its own process with a time limit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console

from opsctl import report
from opsctl.backends.aws import status as aws_status
from opsctl.backends.aws.backend import AwsBackend
from opsctl.cli.render import status_table
from opsctl.infra import load_outputs
from opsctl.run.logfiles import _whole, tail
from opsctl.visible import VisibleStream, visible
from tests.helpers import OPSCTL, cli, one_line, one_step_run
from tests.test_aws import fixture, stubbed

LIMIT = 20  # seconds any single command here may take
MAX_STEP_NAME = 40  # opsctl/pipeline.py's step name rule: 1..40 characters (checked below)
MAX_PIPELINE_NAME = 40  # and a pipeline's, which starts every run id


def cli_bytes(
    *args: str, env: dict[str, str] | None = None, timeout: float = LIMIT
) -> subprocess.CompletedProcess[bytes]:
    """`opsctl ARGS` with its output as bytes: raw logs need not be UTF-8."""
    return subprocess.run([OPSCTL, *args], env=env or dict(os.environ), capture_output=True, timeout=timeout)


def no_traceback(result: subprocess.CompletedProcess[Any], code: int) -> None:
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode(errors="replace")
    assert result.returncode == code, (result.returncode, stderr[-2000:])
    assert "Traceback" not in stderr


def launch(home: Path, spec_text: str, name: str = "spec.yaml") -> str:
    """Launch a spec and wait for its run to end; its run id."""
    spec = home / name
    spec.write_text(spec_text)
    launched = cli("launch", str(spec), "--json", timeout=LIMIT)
    no_traceback(launched, 0)
    run_id: str = json.loads(launched.stdout)["run_id"]
    watched = cli("watch", run_id, "--json", "--interval", "0.1", timeout=60)
    assert watched.returncode in (0, 1), watched.stderr
    return run_id


# --- what counts as hidden ----------------------------------------------------------------------

BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))


def expected_shown(char: str) -> str:
    """The escape a character should be shown as, from Unicode's own categories: every control
    (Cc: C0, DEL, C1) but tab and line feed, the bidirectional controls, surrogates."""
    code = ord(char)
    if char in "\t\n" or not (unicodedata.category(char) in ("Cc", "Cs") or code in BIDI):
        return char
    if code < 0x80 or 0xDC80 <= code <= 0xDCFF:  # ASCII controls, and bytes that are not UTF-8
        return f"\\x{code & 0xFF:02x}"
    return f"\\u{code:04x}"


def test_visible_writes_out_exactly_the_characters_that_act_on_a_terminal() -> None:
    every = "".join(map(chr, range(0x110000)))
    shown = visible(every)
    assert shown == "".join(map(expected_shown, every))
    assert visible(shown) == shown, "applying it again changes nothing"
    shown.encode()  # no surrogate left: a terminal (or a UTF-8 file) can be sent all of it
    assert visible("a\tb\nc") == "a\tb\nc"


def test_every_byte_that_is_not_utf8_is_shown_as_that_byte() -> None:
    for byte in range(0x80, 0x100):
        assert visible(bytes([byte])) == f"\\x{byte:02x}"
    assert visible("€".encode()[:2] + b"x") == "\\xe2\\x82x", "a character cut short: its bytes"
    assert visible("\x9b".encode()) == "\\u009b", "the C1 character, not the byte 0x9b"


@given(
    st.binary(max_size=64) | st.text(max_size=32).map(str.encode), st.lists(st.integers(0, 64), max_size=6)
)
def test_a_stream_decodes_characters_split_between_chunks_whole(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    stream = VisibleStream()
    assert "".join(stream.decode(c) for c in chunks) + stream.decode(b"", final=True) == visible(data)


@given(st.text(max_size=40), st.integers(0, 200))
def test_a_log_read_ends_on_a_character_boundary(text: str, cut: int) -> None:
    data = text.encode()[:cut]
    whole = _whole(data)
    boundaries = [len(text[:k].encode()) for k in range(len(text) + 1)]
    assert whole == max(b for b in boundaries if b <= len(data)), "the last whole character's end"


def test_a_log_tail_cut_inside_a_character_starts_at_the_next_one(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_bytes(("€" * 20_000 + "\n").encode() + b"at last!\r\n")
    assert (log.stat().st_size - 16_384) % 3, "the 16 KiB window tail reads begins inside a €"
    lines = tail(log)
    assert set(lines[0]) == {"€"} and lines[1:] == ["at last!\\x0d"], lines[0][:8]


# --- a command's escapes: logs, watch, report ----------------------------------------------------

# What the command prints (printf's octal escapes): a title (OSC 0), a clipboard write (OSC 52),
# colour, a bell, a backspace, a carriage return, DEL, an RLO ... PDF pair, a C1 CSI, an LRI, a
# byte that is not UTF-8, and a tab, which stays.
PAYLOAD = (
    r"\033]0;owned\007\033]52;c;ZXZpbA==\007\033[31mred\033[0m \342\200\256evil\342\200\254 "
    r"\302\233 \342\201\246iso \377 tab\there\r\010\177end\n"
)
SHOWN = [
    "\\x1b]0;owned\\x07",
    "\\x1b]52;c;ZXZpbA==\\x07",
    "\\x1b[31mred\\x1b[0m",
    "\\u202eevil\\u202c",
    "\\u009b",
    "\\u2066iso",
    "\\xff",
    "tab\there\\x0d\\x08\\x7fend",
]
HIDDEN = ["\x1b", "\x07", "\x08", "\r", "\x7f", "\u202e", "\u202c", "\u2066", "\x9b", "\ufffd"]


@pytest.fixture
def escaping_run(home: Path) -> str:
    """A finished run whose one command printed PAYLOAD and failed."""
    (home / "escapes.txt").write_text(f"printf '{PAYLOAD}'; exit 3\n")
    return launch(
        home,
        "name: escapes\nsteps:\n  - name: s\n    queue: cpu\n    retries: 0\n    commands: escapes.txt\n",
    )


def assert_visible(text: str) -> None:
    for shown in SHOWN:
        assert shown in text, (shown, text[-3000:])
    for hidden in HIDDEN:
        assert hidden not in text, (hidden, text[-3000:])


def test_logs_show_a_commands_escapes_and_raw_writes_them_as_logged(home: Path, escaping_run: str) -> None:
    logged = (home / "home" / "runs" / escaping_run / "logs" / "s" / "0.log").read_bytes()
    assert b"\x1b]52;c;ZXZpbA==\x07" in logged and b"\xff" in logged, "the command printed them"
    shown = cli_bytes("logs", escaping_run, "s")
    no_traceback(shown, 0)
    assert_visible(shown.stdout.decode())  # strict: all of it UTF-8
    raw = cli_bytes("logs", escaping_run, "s", "--index", "0", "--raw")
    no_traceback(raw, 0)
    assert raw.stdout == logged, "--raw: the bytes exactly as logged"


def test_watch_status_and_report_show_failure_lines_visibly(home: Path, escaping_run: str) -> None:
    # A reason is text read back from the run's database, which need not be opsctl's writing.
    with sqlite3.connect(home / "home" / "runs" / escaping_run / "run.db") as db:
        db.execute("UPDATE child SET reason = reason || ?", ("\x1b]0;from the db\x07",))
    watched = cli_bytes("watch", escaping_run)
    no_traceback(watched, 1)
    out, err = watched.stdout.decode(), watched.stderr.decode()
    assert "\x1b" not in out, "the table off a terminal: no escape at all"
    assert err.startswith("s[0] command 0 failed (exit 3): printf "), err
    assert "\n  s[0] failed: worker exited 1\\x1b]0;from the db\\x07 (attempt 1" in err, err
    assert_visible(err)
    facts = cli_bytes("report", escaping_run, "--json")
    no_traceback(facts, 0)
    assert_visible("\n".join(json.loads(facts.stdout)["failures"]))
    page = home / "page.html"
    written = cli_bytes("report", escaping_run, "-o", str(page))
    no_traceback(written, 0)
    html = page.read_text()
    assert_visible(html)


def test_report_facts_show_reasons_and_failure_lines_visibly() -> None:
    """Whatever a backend hands it (a reason is text from a state file, or from AWS Batch)."""
    doc = {
        "run_id": "r",
        "pipeline": "p",
        "backend": "local",
        "state": "FAILED",
        "reason": "step 's': \x1b]0;owned\x07",
        "steps": [
            {
                "name": "s",
                "queue": "cpu",
                "state": "FAILED",
                "array_size": 1,
                "commands": {"total": 1, "done": 0, "failed": 1, "reexecuted": 0},
            }
        ],
    }
    attempt = {
        "step": "s",
        "index": 0,
        "generation": 1,
        "attempt": 1,
        "started": 1.0,
        "finished": 2.0,
        "exit_code": 1,
        "reason": "exit \u202elive\u202c",
        "cpu_seconds": None,
    }
    facts = report.facts(doc, [attempt], ["s[0] failed", "    \x1b[2J\x9b\ud8ff"])
    text = json.dumps(facts, ensure_ascii=False)
    assert "\\\\x1b]0;owned\\\\x07" in text and "\\\\u202elive\\\\u202c" in text
    assert "\\\\x1b[2J\\\\u009b\\\\ud8ff" in text
    page = report.render(facts)
    for hidden in ("\x1b", "\x07", "\u202e", "\x9b"):
        assert hidden not in text and hidden not in page


def test_the_table_takes_reasons_warnings_and_names_as_text_not_markup() -> None:
    doc = {
        "run_id": "r-20260101-000000-abcd",
        "backend": "aws",
        "state": "RUNNING",
        "reason": "[bold red]boom[/] \x1b]0;owned\x07 \u202eevil",
        "elapsed": 5.0,
        "steps": [
            {
                "name": "s",
                "queue": "[red]cpu[/red]",
                "image": None,
                "state": "RUNNING",
                "counts": {"RUNNING": 1},
                "commands": {"total": 2, "done": 1, "failed": 0, "reexecuted": 0},
                "elapsed": 1.0,
            }
        ],
        "warnings": ["[link=https://example.com]click[/link] \x1b[2J"],
    }
    buffer = io.StringIO()
    Console(file=buffer, width=200, force_terminal=True, color_system="truecolor").print(status_table(doc))
    drawn = buffer.getvalue()
    for literal in (
        "[bold red]boom[/]",
        "\\x1b]0;owned\\x07",
        "\\u202eevil",
        "[red]cpu[/red]",
        "[link=https",
    ):
        assert literal in drawn, (literal, drawn)
    for hidden in ("\x1b]", "\x07", "\x1b[2J", "\u202e"):
        assert hidden not in drawn, (hidden, drawn)


# --- AWS: CloudWatch messages and Batch's reasons ------------------------------------------------

MESSAGES = ["plain", "\x1b]0;owned\x07title", "\u202eevil\u202c", "c1 \x9b here", "bell\x07\x08\x7f"]


def test_aws_logs_and_failures_show_escapes(infra_file: Path, tmp_path: Path) -> None:
    backend = AwsBackend(load_outputs(infra_file))
    spec = tmp_path / "esc.yaml"
    spec.write_text(
        "name: esc\nsteps:\n  - name: pre\n    queue: cpu\n    array_size: 3\n    command: echo hi\n"
    )
    run_id = backend.launch(spec)
    child = f"{backend.read_manifest(run_id)['jobs']['pre']}:2"
    stream = backend.api.describe([child])[child]["container"]["logStreamName"]
    logs = boto3.client("logs")
    logs.create_log_stream(logGroupName=backend.infra.log_group, logStreamName=stream)
    start = int(time.time() * 1000)
    events = [{"timestamp": start + i, "message": m} for i, m in enumerate(MESSAGES)]
    logs.put_log_events(logGroupName=backend.infra.log_group, logStreamName=stream, logEvents=events)
    flags = ["--index", "2", "--backend", "aws", "--infra", str(infra_file)]
    raw = cli_bytes("logs", run_id, "pre", *flags, "--raw")
    no_traceback(raw, 0)
    assert raw.stdout.decode() == "".join(f"{m}\n" for m in MESSAGES)
    shown = cli_bytes("logs", run_id, "pre", *flags)
    no_traceback(shown, 0)
    assert shown.stdout.decode() == "".join(f"{visible(m)}\n" for m in MESSAGES)
    assert "\\x1b]0;owned\\x07title" in shown.stdout.decode() and b"\x1b" not in shown.stdout

    failed = {
        **fixture("timed_out")["jobs"][0],
        "jobId": "j-pre:1",
        "statusReason": "Essential container \x1b]52;c;ZXZpbA==\x07 exited",
        "arrayProperties": {"index": 1},
        "container": {"exitCode": 1, "reason": "\u202eOOM", "logStreamName": stream},
    }
    stubbed_backend, api = stubbed(infra_file, "r", [], {})
    doc = {"steps": [{"name": "pre", "state": "FAILED", "job_id": "j-pre", "array_size": 4, "gone": False}]}
    with Stubber(api.batch) as stub:
        stub.add_response(
            "list_jobs",
            {"jobSummaryList": [{"jobId": "j-pre:1", "jobName": "pre"}]},
            {"arrayJobId": "j-pre", "jobStatus": "FAILED", "maxResults": 10},
        )
        stub.add_response("describe_jobs", {"jobs": [failed]}, {"jobs": ["j-pre:1"]})
        lines = stubbed_backend.failures("r", doc)
    assert lines[0] == (
        "pre[1] failed: Essential container \\x1b]52;c;ZXZpbA==\\x07 exited "
        "(container: \\u202eOOM, exit code 1)"
    )
    assert lines[1:] == [f"    {visible(m)}" for m in MESSAGES]


def test_aws_logs_yield_each_page_as_it_is_read(infra_file: Path, tmp_path: Path) -> None:
    """A long stream is never held whole: the first page is out before the second is asked for."""
    backend = AwsBackend(load_outputs(infra_file))
    spec = tmp_path / "long.yaml"
    spec.write_text("name: long\nsteps:\n  - name: one\n    queue: cpu\n    command: echo hi\n")
    run_id = backend.launch(spec)
    job = backend.read_manifest(run_id)["jobs"]["one"]
    stream = backend.api.describe([job])[job]["container"]["logStreamName"]
    logs = boto3.client("logs")
    logs.create_log_stream(logGroupName=backend.infra.log_group, logStreamName=stream)
    start = int(time.time() * 1000)
    for batch in range(3):  # 30,000 events: at least three pages of GetLogEvents
        events = [{"timestamp": start + batch, "message": f"{batch} {i}"} for i in range(10_000)]
        logs.put_log_events(logGroupName=backend.infra.log_group, logStreamName=stream, logEvents=events)
    reads: list[str] = []
    backend.api.logs.meta.events.register(
        "provide-client-params.logs.GetLogEvents", lambda params, **_: reads.append(params["logStreamName"])
    )
    pages = backend.logs(run_id, "one", None, follow=False)
    first = next(pages)
    assert len(reads) == 1 and first.startswith(b"0 0\n"), "the first page, before any other is read"
    text = first + b"".join(pages)
    assert len(reads) >= 3 and text.count(b"\n") == 30_000


def test_aws_elapsed_is_never_below_zero() -> None:
    now = time.time() * 1000
    assert aws_status.elapsed(now + 86_400_000, None) == 0.0, "started a day ahead of this machine's clock"
    assert aws_status.elapsed(now, now - 5_000) == 0.0
    assert aws_status.elapsed(now - 5_000, now) == 5.0


# --- a log of 200 MB -----------------------------------------------------------------------------

MEASURED = (
    "import resource, subprocess, sys\n"
    "with open(sys.argv[1], 'wb') as out:\n"
    "    code = subprocess.run(sys.argv[2:], stdout=out, timeout=300).returncode\n"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"  # KiB on Linux
)


def peak_rss(out: Path, *argv: str) -> int:
    """Bytes of resident memory `argv` peaked at, measured by a fresh process whose only child
    it is (this one has had others), its stdout written to `out`."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURED, str(out), *argv], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    code, kib = result.stdout.split()
    assert code == "0", result.stderr
    return int(kib) * 1024


def test_logs_of_a_200_mb_log_stream_in_bounded_memory(home: Path) -> None:
    run_id = launch(home, "name: big\nsteps:\n  - name: s\n    queue: cpu\n    command: echo hi\n")
    log = home / "home" / "runs" / run_id / "logs" / "s" / "0.log"
    line = ("output " * 60 + "é ✓ \x1b[1mbold\x1b[0m\n").encode() + b"\xff not utf-8\n"
    block = line * (1_000_003 // len(line)) + "€".encode()[:2]  # a character split between blocks
    with log.open("wb") as f:
        for _ in range(201):
            f.write(block)
            f.write("€".encode()[2:])
    size = log.stat().st_size
    assert size >= 200_000_000
    limit = 80 * 1024 * 1024
    raw, shown = home / "raw.out", home / "shown.out"
    try:
        assert peak_rss(raw, OPSCTL, "logs", run_id, "s", "--raw") < limit
        assert raw.stat().st_size == size and hashlib.sha256(raw.read_bytes()).digest() == _sha(log)
        raw.unlink()
        assert peak_rss(shown, OPSCTL, "logs", run_id, "s") < limit
        expected, stream = hashlib.sha256(), VisibleStream()
        with log.open("rb") as f:
            while chunk := f.read(65_536):  # other cuts than the command's: the same text
                expected.update(stream.decode(chunk).encode())
        expected.update(stream.decode(b"", final=True).encode())
        assert _sha(shown) == expected.digest()
        with shown.open("rb") as f:
            first = f.read(1 << 20)
        assert b"\x1b" not in first and b"\\x1b[1mbold\\x1b[0m" in first and b"\\xff not" in first
    finally:
        for path in (raw, shown, log):
            path.unlink(missing_ok=True)


def _sha(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.digest()


# --- clocks --------------------------------------------------------------------------------------


def test_a_wall_clock_step_back_shows_no_negative_duration(home: Path) -> None:
    """The records are wall-clock times: a clock set back (NTP, a restored VM) after a step
    started puts its start in the future. Neither a finished nor a running step, nor the run,
    may then read `-86398 s`."""
    run_id = launch(
        home,
        "name: clock\nsteps:\n  - name: done\n    queue: cpu\n    command: 'true'\n"
        "  - name: going\n    queue: cpu\n    command: 'true'\n",
    )
    ahead = time.time() + 86_400
    with sqlite3.connect(home / "home" / "runs" / run_id / "run.db") as db:
        db.execute("UPDATE step SET started = ? WHERE name = 'done'", (ahead,))
        db.execute(
            "UPDATE step SET started = ?, finished = NULL, state = 'RUNNING' WHERE name = 'going'", (ahead,)
        )
        db.execute("UPDATE run SET created = ?, finished = NULL, state = 'RUNNING'", (ahead,))
    result = cli("status", run_id, "--json", timeout=LIMIT)
    no_traceback(result, 0)
    doc = json.loads(result.stdout)
    assert doc["elapsed"] == 0.0
    assert [(s["name"], s["elapsed"]) for s in doc["steps"]] == [("done", 0.0), ("going", 0.0)]
    table = cli("status", run_id, env={**os.environ, "COLUMNS": "120"}, timeout=LIMIT)
    no_traceback(table, 0)
    assert not re.search(r"-\d+(\.\d+)? s\b", table.stdout), table.stdout
    assert re.search(r"going .*RUNNING .* 0\.0 s", table.stdout), table.stdout


# --- 80 columns ----------------------------------------------------------------------------------


def test_step_names_reach_the_spec_maximum(tmp_path: Path) -> None:
    spec = tmp_path / "long.yaml"
    spec.write_text(
        f"name: n\nsteps:\n  - name: {'s' * (MAX_STEP_NAME + 1)}\n    queue: cpu\n    command: 'true'\n"
    )
    assert "must be 1..40 characters" in one_line(cli("validate", str(spec), timeout=LIMIT), 2)


@pytest.fixture
def real_status(home: Path) -> dict[str, Any]:
    """The status document of a real run whose step names are as long as the spec allows."""
    long = "a" * (MAX_STEP_NAME - 4) + "-end"
    run_id = launch(
        home,
        f"name: wide\nsteps:\n  - name: {long}\n    queue: cpu\n    array_size: 2\n"
        "    commands: ['true', 'exit 1']\n    retries: 0\n"
        f"  - name: b\n    queue: gpu\n    command: 'true'\n",
    )
    result = cli("status", run_id, "--json", timeout=LIMIT)
    no_traceback(result, 0)
    doc: dict[str, Any] = json.loads(result.stdout)
    assert [len(s["name"]) for s in doc["steps"]] == [MAX_STEP_NAME, 1]
    return doc


def shaped(doc: dict[str, Any], counts: dict[str, int], done: int, total: int, failed: int) -> dict[str, Any]:
    """`doc` with its first step live: children in `counts`, commands as given."""
    first = {
        **doc["steps"][0],
        "state": "RUNNING",
        "counts": counts,
        "commands": {"total": total, "done": done, "failed": failed, "reexecuted": 0},
        "elapsed": 123456.7,
    }
    return {**doc, "state": "RUNNING", "reason": None, "steps": [first, *doc["steps"][1:]]}


def drawn(doc: dict[str, Any], width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(status_table(doc))
    return console.export_text().splitlines()


def assert_whole(lines: list[str], width: int, doc: dict[str, Any]) -> None:
    assert all(cell_len(line) <= width for line in lines), "\n".join(lines)
    for step in doc["steps"]:
        commands = step["commands"]
        done = f"{commands['done']}/{commands['total']}"
        row = [line for line in lines if line.startswith(f"│ {step['name']} ")]
        assert row, (step["name"], "\n".join(lines))
        assert f" {step['state']} " in row[0] and f" {done} " in row[0], "\n".join(lines)
        if commands["failed"]:
            assert f"({commands['failed']} failed)" in "\n".join(lines)


@pytest.mark.parametrize(
    ("counts", "done", "total", "failed"),
    [
        ({"RUNNING": 3, "SUCCEEDED": 7}, 10, 1_000_000, 3),  # the example
        ({"RUNNABLE": 9_999, "RUNNING": 1}, 1_234_567, 9_999_999, 0),
        (
            {"PENDING": 1_000, "RUNNING": 1_000, "SUCCEEDED": 1_000, "FAILED": 7_000},
            9_999_999,
            9_999_999,
            9_999_999,
        ),
    ],
)
def test_in_80_columns_each_steps_name_state_and_done_total_stay_whole(
    real_status: dict[str, Any], counts: dict[str, int], done: int, total: int, failed: int
) -> None:
    doc = shaped(real_status, counts, done, total, failed)
    narrow = drawn(doc, 80)
    assert_whole(narrow, 80, doc)
    if failed == 3:  # 40 + 9 + 21 characters fit in 80 columns with their rules: on one line
        assert any("│ 10/1000000 (3 failed) │" in line for line in narrow), "\n".join(narrow)
    wide = drawn(doc, 200)
    assert_whole(wide, 200, doc)
    assert any("━" in line for line in wide) and any(" gpu " in line for line in wide), "room: every column"
    narrower = drawn(doc, 45)  # not even the three fit: the step name folds, the others stay whole
    assert all(cell_len(line) <= 45 for line in narrower), "\n".join(narrower)
    for step in doc["steps"]:
        done = f"{step['commands']['done']}/{step['commands']['total']}"
        assert any(f" {step['state']} " in line and f" {done} " in line for line in narrower), "\n".join(
            narrower
        )


def test_in_80_columns_a_usual_step_name_keeps_its_children_by_state(real_status: dict[str, Any]) -> None:
    """Only what does not fit gives way: a name of 7 leaves room for the children, stacked."""
    doc = shaped(real_status, {"RUNNING": 98, "SUCCEEDED": 2}, 10, 1_000_000, 3)
    doc["steps"][0]["name"] = "process"
    lines = drawn(doc, 80)
    assert_whole(lines, 80, doc)
    text = "\n".join(lines)
    assert "running 98" in text and "succeeded 2" in text and "10/1000000 (3 failed)" in text, text


def test_status_in_80_columns_from_the_cli(home: Path, real_status: dict[str, Any]) -> None:
    result = cli("status", real_status["run_id"], env={**os.environ, "COLUMNS": "80"}, timeout=LIMIT)
    no_traceback(result, 0)
    assert_whole(result.stdout.splitlines(), 80, real_status)


def test_list_lines_fit_in_80_columns(home: Path) -> None:
    longest = "p" * (MAX_PIPELINE_NAME - 2) + "-x"
    runs = [
        launch(
            home, f"name: {name}\nsteps:\n  - name: s\n    queue: cpu\n    command: 'true'\n", f"{name}.yaml"
        )
        for name in (longest, "short")
    ]
    assert len(runs[0]) == 61
    broken = launch(
        home, "name: broken\nsteps:\n  - name: s\n    queue: cpu\n    command: 'true'\n", "broken.yaml"
    )
    (home / "home" / "runs" / broken / "run.db").write_bytes(b"\x00garbage" * 100)
    narrow = cli("list", env={**os.environ, "COLUMNS": "80"}, timeout=LIMIT)
    no_traceback(narrow, 0)
    lines = narrow.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    for run_id in runs:
        assert any(line.split() == [run_id, "SUCCEEDED"] for line in lines), lines
    assert any(line.split() == [broken, "-"] for line in lines), lines
    problem = " ".join(line.strip() for line in lines if line.startswith("  "))
    assert f"run {broken}: its state database" in problem, lines
    wide = cli("list", env={**os.environ, "COLUMNS": "200"}, timeout=LIMIT)
    no_traceback(wide, 0)
    created = {r["run_id"]: r["created"] for r in json.loads(cli("list", "--json", timeout=LIMIT).stdout)}
    for run_id in runs:
        assert any(
            line.split() == [run_id, "SUCCEEDED", created[run_id]] for line in wide.stdout.splitlines()
        )
    shutil.rmtree(home / "home" / "runs" / runs[0])  # short run ids only: room for the time
    short = cli("list", env={**os.environ, "COLUMNS": "80"}, timeout=LIMIT)
    no_traceback(short, 0)
    assert short.stdout.splitlines()[-1].split() == [runs[1], "SUCCEEDED", created[runs[1]]], short.stdout
    assert all(len(line) <= 80 for line in short.stdout.splitlines()), short.stdout


def test_a_report_of_attempts_that_end_before_they_begin_has_no_negative_time() -> None:
    """A wall clock stepped back during an attempt records it ending before it began: the
    report counts it as taking no time, in the step, its slowest children and the timeline."""
    doc, attempts = one_step_run([(1000.0, 1010.0), (1005.0, 1005.0 - 86398)])
    facts = report.facts(doc, attempts, [])
    step = facts["steps"][0]
    assert facts["wall_seconds"] == 10.0 and step["wall_seconds"] == 10.0
    assert [s["seconds"] for s in step["slowest"]] == [10.0, 0.0]
    assert all(bar["end"] >= bar["start"] >= 0 for bar in facts["timeline"])
    assert step["busy_share"] == 0.5
