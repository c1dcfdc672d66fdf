"""Hostile input and broken state: each case one `opsctl:` line, no hang, no work lost or run twice.

Every CLI call runs as its own process with a time limit, so a hang fails the test instead of
stalling the suite. Classes: special files (FIFOs, devices, directories, huge files), YAML alias
bombs, values over the kernel's limits, characters that split lines differently for different
readers, two resumes at once, a damaged state database, a full disk, run ids that try to escape
the run directory, file permissions under a careless umask; and (round three) numbers YAML would
read otherwise, integers of hundreds of digits, dependency chains deeper than Python recurses,
byte-order marks, numeric options that are not finite, a home that is a file, relative or
read-only, state files of the wrong shape, modules that would stand in for the supervisor or the
worker, and processes a command leaves running. What commands print, how logs grow, clocks and
narrow terminals: tests/test_hostile_output.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsctl import pipeline
from opsctl.backends.local import processes
from opsctl.errors import SpecError
from opsctl_contract.listfile import AMBIGUOUS, MAX_COMMAND_BYTES, parse_commands, render_commands
from opsctl_contract.shapes import problem
from tests.conftest import released_together
from tests.helpers import OPSCTL, WORKER, cli, one_line

LIMIT = 20  # seconds any single command here may take


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPSCTL_HOME", str(tmp_path / "home"))
    return tmp_path


def spec_with(tmp_path: Path, commands: str, extra: str = "") -> Path:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(f"name: hostile\nsteps:\n  - name: s\n    queue: cpu\n{extra}    commands: {commands}\n")
    return spec


def validate(spec: Path | str) -> str:
    return one_line(cli("validate", str(spec), timeout=LIMIT), 2)


# --- special files -------------------------------------------------------------------------------


def test_a_fifo_spec_list_or_infra_file_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert validate(fifo) == f"opsctl: {fifo}: the spec file is a FIFO, not a regular file"
    spec = spec_with(tmp_path, "fifo")
    assert (
        validate(spec)
        == f"opsctl: {spec}:5: step 's': list file 'fifo': the list file is a FIFO, not a regular file"
    )
    good = spec_with(tmp_path, "[echo hi]")
    line = one_line(cli("launch", str(good), "--backend", "aws", "--infra", str(fifo), timeout=LIMIT), 2)
    assert line == f"opsctl: {fifo}: the infra outputs file is a FIFO, not a regular file"


def test_devices_directories_and_huge_files_are_refused(tmp_path: Path) -> None:
    assert (
        validate("/dev/zero") == "opsctl: /dev/zero: the spec file is a character device, not a regular file"
    )
    assert validate(tmp_path) == f"opsctl: {tmp_path}: the spec file is a directory, not a regular file"
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    assert "list file 'zero.txt': the list file is a character device" in validate(
        spec_with(tmp_path, "zero.txt")
    )
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:
        f.truncate(9 * 1024 * 1024)  # sparse: no disk used
    assert validate(huge) == f"opsctl: {huge}: the spec file is 9.0 MiB, over the limit of 8.0 MiB"
    line = one_line(cli("status", "x-20260101-000000-0000", "--backend", "aws", "--infra", str(tmp_path)), 2)
    assert line == f"opsctl: {tmp_path}: the infra outputs file is a directory, not a regular file"


def test_the_worker_refuses_a_device_as_its_list_file(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LIST_FILE_S3_PATH": "/dev/zero",
        "OPSCTL_STEP": "s",
        "OPSCTL_STATE_URI": str(tmp_path / "state"),
    }
    result = subprocess.run([WORKER, "run"], env=env, capture_output=True, text=True, timeout=LIMIT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "opsctl-worker: /dev/zero: not a regular file"


# --- YAML bombs ----------------------------------------------------------------------------------

BOMB = """
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


@pytest.mark.parametrize(
    "where", ["name: *h", "steps: *h", "steps:\n  - name: *h\n    queue: cpu\n    command: x"]
)
def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path, where: str) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(f"{BOMB}{where}\n")
    started = time.monotonic()
    line = validate(spec)
    assert time.monotonic() - started < 10
    assert (
        line == f"opsctl: {spec}:2: the spec expands to more than 2,000,000 YAML values through its aliases"
    )


def test_a_long_value_is_cut_short_in_the_message(tmp_path: Path) -> None:
    spec = tmp_path / "long.yaml"
    spec.write_text(f"name: {'X' * 500_000}\nsteps: []\n")
    line = validate(spec)
    assert len(line) < 300 and "must be 1..40 characters" in line


# --- limits --------------------------------------------------------------------------------------


def test_values_the_kernel_cannot_take_are_refused_at_their_line(tmp_path: Path) -> None:
    nul = spec_with(tmp_path, '["echo a\\0b"]')
    assert validate(nul).endswith(
        "commands[0] contains U+0000 (NUL), which a command line cannot hold unambiguously"
    )
    long = spec_with(tmp_path, f"[echo {'y' * MAX_COMMAND_BYTES}]")
    assert f"over the {MAX_COMMAND_BYTES} bytes the kernel takes as one argument" in validate(long)
    template = spec_with(
        tmp_path, f"{{template: 'echo {'y' * (MAX_COMMAND_BYTES - 10)} {{i}}', range: 100000}}"
    )
    assert "commands: template 99999 is" in validate(template)
    env_nul = spec_with(tmp_path, "[echo hi]", '    env: {A: "x\\0y"}\n')
    assert (
        validate(env_nul)
        == f"opsctl: {env_nul}:5: step 's': env: A contains a NUL byte, which no environment can hold"
    )
    env_big = spec_with(tmp_path, "[echo hi]", f"    env: {{A: {'v' * 200_000}}}\n")
    assert "its container overrides as ECS receives them would be 201," in validate(env_big)


def test_a_command_the_kernel_refuses_fails_alone_and_the_rest_run(tmp_path: Path) -> None:
    """A list file edited after validation: the worker marks the too-long command failed (126)
    and runs the next ones; it neither dies nor gets retried into the same wall."""
    listing = tmp_path / "list.txt"
    out = tmp_path / "out"
    listing.write_text(f"echo {'y' * 200_000}\ntouch {out}\n")
    env = {
        **os.environ,
        "LIST_FILE_S3_PATH": str(listing),
        "OPSCTL_STEP": "s",
        "OPSCTL_STATE_URI": str(tmp_path / "state"),
    }
    result = subprocess.run([WORKER, "run"], env=env, capture_output=True, text=True, timeout=LIMIT)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    failed = json.loads((tmp_path / "state" / "s" / "failed" / "000000000").read_text())
    assert failed["exit_code"] == 126 and "Argument list too long" in failed["stderr_tail"]
    assert out.exists() and (tmp_path / "state" / "s" / "done" / "000000001").exists()


# --- one definition of a line --------------------------------------------------------------------


@pytest.mark.parametrize("char", sorted(AMBIGUOUS))
def test_a_character_some_reader_takes_for_a_line_break_is_refused(tmp_path: Path, char: str) -> None:
    inline = spec_with(tmp_path, json.dumps([f"echo a{char}b", "echo c"]))
    assert f"contains U+{ord(char):04X}" in validate(inline)
    (tmp_path / "list.txt").write_text(f"echo first\necho a{char}b\n", newline="")
    line = validate(spec_with(tmp_path, "list.txt"))
    if char == "\r":  # only a \r inside a line: "\r\n" is a Windows line break, dropped
        assert "line 2: the command contains U+000D" in line
    else:
        assert f"list file 'list.txt' line 2: the command contains U+{ord(char):04X}" in line


def test_windows_line_breaks_are_line_breaks(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_bytes(b"echo a\r\necho b\r\n")
    assert pipeline.load(spec_with(tmp_path, "list.txt")).steps[0].commands == ("echo a", "echo b")


TEXT = st.text(
    alphabet=st.sampled_from(list("ab #\t \n\r") + list(AMBIGUOUS) + ["\u00e9", "\u2027"]), max_size=60
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_the_plan_counts_what_the_worker_runs(tmp_path: Path, text: str) -> None:
    """For any list file the spec accepts, the commands the plan counts are exactly those the
    worker reads back from the list file the backends write."""
    (tmp_path / "list.txt").write_text(text, newline="")
    try:
        commands = pipeline.load(spec_with(tmp_path, "list.txt")).steps[0].commands
    except SpecError:
        return
    assert parse_commands(render_commands(commands)) == list(commands)
    assert parse_commands(text) == list(commands)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(TEXT, min_size=1, max_size=4))
def test_inline_commands_round_trip_or_are_refused(tmp_path: Path, items: list[str]) -> None:
    try:
        commands = pipeline.load(spec_with(tmp_path, json.dumps(items))).steps[0].commands
    except SpecError:
        return
    assert parse_commands(render_commands(commands)) == list(commands) and len(commands) == len(items)


# --- two resumes at once -------------------------------------------------------------------------


def _slow_run(home: Path, split: str, seconds: float = 0.05) -> tuple[str, Path]:
    out = home / "out"
    out.mkdir()
    spec = home / "slow.yaml"
    spec.write_text(
        f"name: slow\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 4\n    split: {split}\n"
        f"    commands: {{template: 'echo ran >> {out}/{{i}}; sleep {seconds}', range: 200}}\n"
    )
    launched = cli("launch", str(spec), "--json")
    assert launched.returncode == 0, launched.stderr
    return json.loads(launched.stdout)["run_id"], out


@pytest.mark.parametrize("split", ["contiguous", "dynamic"])
def test_two_resumes_at_once_start_one_supervisor(home: Path, split: str) -> None:
    run_id, out = _slow_run(home, split)
    time.sleep(1.0)
    assert cli("kill", run_id).returncode == 0
    in_flight = 4  # at most one command per child was running at the kill
    script = (
        "import sys, subprocess\n"
        "print('ready', flush=True); sys.stdin.readline()\n"
        f"r = subprocess.run([{OPSCTL!r}, 'resume', {run_id!r}], capture_output=True, text=True)\n"
        "print(r.returncode, r.stdout.strip() or r.stderr.strip())\n"
    )
    outputs = released_together([[sys.executable, "-c", script]] * 2, timeout=60)
    codes = sorted(o.split(" ", 1)[0] for o in outputs)
    assert codes == ["0", "1"], outputs
    refused = next(o for o in outputs if o.startswith("1 "))
    assert f"{run_id} is running: its supervisor (pid" in refused
    watched = cli("watch", run_id, "--json", "--interval", "0.2", timeout=120)
    assert json.loads(watched.stdout)["state"] == "SUCCEEDED", watched.stdout[-2000:]
    runs = [len((out / str(k)).read_text().split()) for k in range(200)]
    assert min(runs) == 1 and sum(runs) - 200 <= in_flight, "only commands in flight at the kill ran twice"
    assert not processes.run_processes(run_id), "no supervisor left polling"


# --- a damaged state -----------------------------------------------------------------------------


def _finished_run(home: Path, name: str) -> str:
    spec = home / f"{name}.yaml"
    spec.write_text(f"name: {name}\nsteps:\n  - name: s\n    queue: cpu\n    command: echo hi\n")
    run_id = json.loads(cli("launch", str(spec), "--json").stdout)["run_id"]
    assert cli("watch", run_id, "--json", "--interval", "0.1").returncode == 0
    return run_id


@pytest.mark.parametrize("damage", ["truncated", "no tables", "garbage", "locked"])
def test_a_damaged_database_breaks_only_its_own_run(home: Path, damage: str) -> None:
    good = _finished_run(home, "good")
    bad = _finished_run(home, "bad")
    db = home / "home" / "runs" / bad / "run.db"
    holder = None
    if damage == "locked":  # another program holds the database (readers wait 5 s, then give up)
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
    for suffix in ("-wal", "-shm"):
        if holder is None:
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    if damage == "truncated":
        with db.open("r+b") as f:
            f.truncate(1000)
    elif damage == "no tables":
        db.unlink()
        sqlite3.connect(db).close()
    elif damage == "garbage":
        db.write_bytes(b"\x00garbage" * 100)
    for verb in ("status", "resume"):
        line = one_line(cli(verb, bad, timeout=LIMIT), 1)
        assert line.startswith(f"opsctl: run {bad}: its state database {db}"), line
    killed = cli("kill", bad, timeout=LIMIT)
    assert killed.returncode == 0 and "state database is unreadable" in killed.stdout
    listed = cli("list", "--json", timeout=LIMIT)
    assert listed.returncode == 0
    rows = {r["run_id"]: r for r in json.loads(listed.stdout)}
    assert rows[good]["state"] == "SUCCEEDED"
    assert rows[bad]["state"] is None and rows[bad]["problem"].startswith(f"run {bad}: its state database")
    assert cli("status", good).returncode == 0


def test_kill_finds_every_process_of_a_run_whose_database_is_gone(home: Path) -> None:
    """The supervisor died and took the database with it: only the processes' own mark is left."""
    run_id, _ = _slow_run(home, "contiguous", seconds=60)
    time.sleep(0.5)
    run_dir = home / "home" / "runs" / run_id
    os.kill(int((run_dir / "supervisor.lock").read_text()), 9)
    (run_dir / "run.db").unlink()
    assert processes.run_processes(run_id), "its workers still run"
    killed = cli("kill", run_id, timeout=60)
    assert killed.returncode == 0, killed.stderr
    deadline = time.monotonic() + 10
    while processes.run_processes(run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes.run_processes(run_id)


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 1 MiB tmpfs (root only); resized with `mount -o remount,size=...`."""
    place = tmp_path / "disk"
    place.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(place)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield place
    finally:
        subprocess.run(["umount", "-l", str(place)], check=False)


def test_a_full_disk_is_one_line_and_resume_finishes_after_space_is_freed(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSCTL_HOME", str(small_disk / "home"))
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"x" * (1024 * 1024 - 64 * 1024))  # leave 64 KiB
    spec = tmp_path / "fill.yaml"
    spec.write_text(
        "name: fill\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 2\n"
        "    commands: {template: 'head -c 20000 /dev/zero > $OPSCTL_RUN_URI/out-{i}', range: 20}\n"
    )
    launched = cli("launch", str(spec), "--json", timeout=LIMIT)
    if launched.returncode:  # not even the run fitted: one line, and no half-made run
        one_line(launched, 1)
        assert not [p for p in (small_disk / "home" / "runs").iterdir() if not p.name.startswith(".")]
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        launched = cli("launch", str(spec), "--json", timeout=LIMIT)
    run_id = json.loads(launched.stdout)["run_id"]
    watched = cli("watch", run_id, "--json", "--interval", "0.2", timeout=120)
    assert "Traceback" not in watched.stderr
    doc = json.loads(watched.stdout) if watched.stdout else {}
    if doc.get("state") != "SUCCEEDED":
        ballast.unlink()
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        resumed = cli("resume", run_id, timeout=LIMIT)
        assert resumed.returncode == 0, resumed.stderr
        watched = cli("watch", run_id, "--json", "--interval", "0.2", timeout=120)
    final = json.loads(watched.stdout)
    assert final["state"] == "SUCCEEDED" and final["steps"][0]["commands"]["done"] == 20


def test_launch_on_a_full_disk_leaves_no_half_made_run(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSCTL_HOME", str(small_disk / "home"))
    (small_disk / "home" / "runs").mkdir(parents=True)
    spec = tmp_path / "big.yaml"
    spec.write_text(
        "name: big\nsteps:\n  - name: s\n    queue: cpu\n"
        "    commands: {template: 'echo {i}', range: 200000}\n"
    )
    line = one_line(cli("launch", str(spec), timeout=60), 1)
    assert line.startswith(
        f"opsctl: cannot create the run under {small_disk / 'home' / 'runs'}: No space left on device"
    )
    assert list((small_disk / "home" / "runs").iterdir()) == []
    assert cli("list").returncode == 0


# --- run ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id",
    [
        "../other/runs/x-20260101-000000-0000",
        "/etc",
        "a/b",
        "x" * 300,
        "good-20260101-000000-00000",
        "",
        "-tomo-20260101-000000-abcd",  # what a pipeline named `-tomo` would have made
    ],
)
def test_a_run_id_that_is_not_one_is_refused_before_any_path(home: Path, run_id: str) -> None:
    for verb in ("status", "kill", "resume"):
        line = one_line(cli(verb, run_id, timeout=LIMIT), 2)
        assert "is not one opsctl makes: <pipeline>-<YYYYmmdd-HHMMSS>-<4 hex>" in line
    line = one_line(cli("status", run_id, "--backend", "aws", "--infra", "/nonexistent", timeout=LIMIT), 2)
    assert "is not one opsctl makes" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "-x-20260101-000000-abcd"],
        ["status", "--json", "-x-20260101-000000-abcd"],
        ["report", "-tomo-20260101-000000-abcd"],  # not `-t`, then `-o mo-...`
        ["logs", "-x-20260101-000000-abcd", "pre", "--follow"],
        ["watch", "--interval", "1", "--x-20260101-000000-abcd"],
        ["kill", "--", "-x-20260101-000000-abcd"],
        ["resume", "--", "-x-20260101-000000-abcd"],
    ],
)
def test_a_run_id_that_reads_as_an_option_is_a_bad_run_id(home: Path, argv: list[str]) -> None:
    """No run id starts with '-' (pipeline names start with a letter or digit); one that does is
    refused as a run id, one line, not taken for options or answered with a usage box."""
    line = one_line(cli(*argv, timeout=LIMIT), 2)
    assert line.startswith("opsctl: run id '-")
    assert "is not one opsctl makes" in line and "starting with a letter or digit" in line


# --- permissions ---------------------------------------------------------------------------------


def test_runs_are_private_whatever_the_umask(home: Path) -> None:
    spec = home / "p.yaml"
    spec.write_text(
        "name: p\nsteps:\n  - name: s\n    queue: cpu\n    array_size: 2\n    commands: [echo a, echo b]\n"
    )
    old = os.umask(0)
    try:
        run_id = json.loads(cli("launch", str(spec), "--json").stdout)["run_id"]
        assert cli("watch", run_id, "--json", "--interval", "0.1").returncode == 0
    finally:
        os.umask(old)
    run_dir = home / "home" / "runs" / run_id
    found = {
        p.relative_to(home / "home"): stat.S_IMODE(p.stat().st_mode) for p in [run_dir, *run_dir.rglob("*")]
    }
    loose = {str(p): oct(m) for p, m in found.items() if m & 0o077}
    assert not loose, loose
    assert stat.S_IMODE((home / "home" / "runs").stat().st_mode) == 0o700
    assert {"run.db", "manifest.json", "supervisor.log", "supervisor.lock"} <= {p.name for p in found}


# --- round three: numbers as written, validation's own limits, invisible text, options ----------


def launch_and_wait(spec: Path) -> dict[str, object]:
    result = cli("launch", str(spec), "--watch", "--json", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def test_env_values_reach_the_commands_as_written_not_as_yaml_reads_them(home: Path) -> None:
    """YAML 1.1 reads 01234 as 668, 1:30 as 90, 1.10 as 1.1, 0x1F as 31, 1e3 as 1000.0 and yes
    as true; the spec's author typed none of those (docs/spec.md, `env`). A merge key's values
    are kept as written too."""
    written = {"OCTAL": "01234", "SEXAGESIMAL": "1:30", "DECIMAL": "1.10", "HEX": "0x1F", "EXP": "1e3"}
    written |= {"YES": "yes", "OFF": "Off", "DATE": "2024-13-01", "QUOTED": "'007'", "BIG": "9" * 400}
    out = home / "seen"
    names = [*sorted(written), "MERGED"]
    spec = home / "env.yaml"
    spec.write_text(
        "name: env\nsteps:\n  - name: s\n    queue: cpu\n"
        f"    command: printf '%s|' {' '.join(f'${n}' for n in names)} > {out}\n"
        "    env:\n      <<: {MERGED: 0o17}\n" + "".join(f"      {n}: {v}\n" for n, v in written.items())
    )
    assert launch_and_wait(spec)["state"] == "SUCCEEDED"
    expected = {**written, "QUOTED": "007", "MERGED": "0o17"}
    assert out.read_text() == "".join(f"{expected[n]}|" for n in names)


def test_an_env_key_without_a_value_is_refused_with_how_to_write_an_empty_one(tmp_path: Path) -> None:
    spec = spec_with(tmp_path, "[echo hi]", "    env:\n      EMPTY:\n")
    assert validate(spec) == (
        f"opsctl: {spec}:6: step 's': env: EMPTY has no value; write EMPTY: \"\" for an empty one"
    )


@pytest.mark.parametrize("key", ["timeout", "vcpus", "memory", "gpus", "retries", "array_size"])
def test_an_integer_of_400_digits_is_refused_in_a_short_line_naming_its_limit(
    tmp_path: Path, key: str
) -> None:
    queue = "gpu" if key == "gpus" else "cpu"
    spec = tmp_path / "big.yaml"
    spec.write_text(
        f"name: big\nsteps:\n  - name: s\n    queue: {queue}\n    {key}: {'9' * 400}\n    command: echo hi\n"
    )
    line = validate(spec)
    assert line.startswith(f"opsctl: {spec}:5: step 's': {key} = 999") and " is outside " in line
    assert len(line) < 200


@pytest.mark.parametrize("steps", [1_500, 10_000])
def test_a_long_dependency_chain_validates_without_recursion(tmp_path: Path, steps: int) -> None:
    """Each step depends on the next: the cycle check and the ordering walk the whole chain."""

    def chain(last_depends_on_first: bool) -> Path:
        spec = tmp_path / "chain.yaml"
        body = "".join(
            f"  - name: s{i}\n    queue: cpu\n    command: echo {i}\n"
            + (f"    depends_on: [s{i + 1}]\n" if i + 1 < steps else "")
            for i in range(steps)
        )
        spec.write_text(
            f"name: chain\nsteps:\n{body}" + ("    depends_on: [s0]\n" if last_depends_on_first else "")
        )
        return spec

    result = cli("validate", str(chain(False)), "--json", timeout=LIMIT)
    assert result.returncode == 0, result.stderr[-2000:]
    order = [s["name"] for s in json.loads(result.stdout)["steps"]]
    assert order[:2] == [f"s{steps - 1}", f"s{steps - 2}"] and order[-1] == "s0"
    spec = chain(True)
    line = validate(spec)
    assert line.startswith(f"opsctl: {spec}:3: dependency cycle: s0 -> s1 -> ")
    assert line.endswith(f"s{steps - 1} -> s0")


def test_a_byte_order_mark_starts_a_list_file_harmlessly_and_is_refused_inside_a_command(home: Path) -> None:
    out = home / "ran"
    (home / "list.txt").write_bytes(f"\ufeffecho first >> {out}\necho second >> {out}\n".encode())
    spec = spec_with(home, "list.txt")
    spec.write_bytes(b"\xef\xbb\xbf" + spec.read_bytes())  # the spec's own BOM: YAML's to skip
    assert launch_and_wait(spec)["state"] == "SUCCEEDED"
    assert out.read_text() == "first\nsecond\n"
    assert parse_commands("\ufeffecho a\n") == ["echo a"], "the worker's reader too"
    (home / "list.txt").write_text("echo one\necho \ufefftwo\n")
    assert validate(spec) == (
        f"opsctl: {spec}:5: step 's': list file 'list.txt' line 2: the command contains U+FEFF "
        "(a byte-order mark), invisible, and not a blank to the shell"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["watch", "r-20260101-000000-abcd", "--interval", "nan"],
        ["watch", "r-20260101-000000-abcd", "--interval", "inf"],
        ["watch", "r-20260101-000000-abcd", "--interval", "1e308"],
        ["watch", "r-20260101-000000-abcd", "--cost-every", "nan"],
        ["status", "r-20260101-000000-abcd", "--stuck-after", "inf"],
        ["prune", "--older-than", "nan"],
        ["launch", "examples/hello.yaml", "--max-parallel", "1" + "0" * 30],
    ],
)
def test_a_numeric_option_out_of_its_range_is_a_usage_error(home: Path, argv: list[str]) -> None:
    result = subprocess.run(
        [OPSCTL, *argv], capture_output=True, text=True, timeout=LIMIT, cwd=Path(__file__).parent.parent
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    option = next(a for a in argv if a.startswith("--"))
    assert f"Invalid value for '{option}'" in result.stderr
    runs = home / "home" / "runs"
    assert not runs.exists() or not list(runs.iterdir()), "nothing made, not even a hidden half-made run"


@pytest.mark.parametrize("where", ["launch directory", "step PYTHONPATH", "caller PYTHONPATH"])
def test_a_worker_or_opsctl_module_cannot_stand_in_for_opsctls(home: Path, where: str) -> None:
    """The local supervisor and worker start isolated (`python -I -m ...`): a `worker` or an
    `opsctl` of the user's, in the launch directory, on the step's PYTHONPATH or (a `worker`) on
    the caller's, is not imported in place of opsctl's; the commands still get the step's
    PYTHONPATH."""
    impostor = "import sys; print('impostor'); sys.exit(0)\n"
    lib = home / "lib"
    planted = home if where == "launch directory" else lib
    (planted / "worker").mkdir(parents=True)
    (planted / "worker" / "__main__.py").write_text(impostor)
    (planted / "worker" / "__init__.py").write_text("")
    if where != "caller PYTHONPATH":  # there an `opsctl` would replace the CLI itself
        (planted / "opsctl" / "backends" / "local").mkdir(parents=True)
        for package in ("opsctl", "opsctl/backends", "opsctl/backends/local"):
            (planted / package / "__init__.py").write_text("")
        for module in ("__main__.py", "supervisor.py"):
            (planted / "opsctl" / "backends" / "local" / module).write_text(impostor)
    out = home / "seen"
    spec = spec_with(home, f'["echo $PYTHONPATH > {out}"]', f"    env: {{PYTHONPATH: {lib}}}\n")
    env = {**os.environ, "PYTHONPATH": str(lib)} if where == "caller PYTHONPATH" else None
    result = subprocess.run(
        [OPSCTL, "launch", str(spec), "--watch", "--json"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["state"] == "SUCCEEDED" and doc["steps"][0]["commands"]["done"] == 1
    assert out.read_text() == f"{lib}\n"
    run_dir = home / "home" / "runs" / doc["run_id"]
    assert "impostor" not in (run_dir / "logs" / "s" / "0.log").read_text()
    assert "impostor" not in (run_dir / "supervisor.log").read_text()


# --- round three: the home directory, state of the wrong shape, what commands leave running ----


READS = ["status", "report --json", "logs s", "watch --json --interval 0.1"]
WRITES = ["resume", "kill"]


def _run_verb(verb: str, run_id: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    name, *rest = verb.split()
    return cli(name, run_id, *rest, timeout=LIMIT, **kwargs)  # type: ignore[arg-type]


def test_a_home_that_is_a_file_is_one_line_for_every_command(home: Path) -> None:
    file = home / "home"
    file.write_text("not a directory")
    expected = f"opsctl: {file} (OPSCTL_HOME) is not a directory: opsctl keeps its runs in a directory there"
    run_id = "x-20260101-000000-0000"
    for argv in (
        ["list"],
        ["prune"],
        ["launch", str(spec_with(home, "[echo hi]"))],
        *(v.split() for v in WRITES),
    ):
        args = argv if argv[0] in ("list", "prune", "launch") else [argv[0], run_id]
        assert one_line(cli(*args, timeout=LIMIT), 2) == expected, args
    for verb in READS:
        assert one_line(_run_verb(verb, run_id), 2) == expected, verb
    assert file.read_text() == "not a directory"


def test_a_relative_home_is_made_absolute_so_a_command_that_changes_directory_keeps_its_run(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(home)
    monkeypatch.setenv("OPSCTL_HOME", "relative/home")
    spec = spec_with(
        home,
        '["cd / && echo $OPSCTL_RUN_URI > '
        + str(home / "uri")
        + ' && opsctl status $OPSCTL_RUN_ID >/dev/null"]',
    )
    result = cli("launch", str(spec), "--watch", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["state"] == "SUCCEEDED", doc
    assert (home / "uri").read_text().strip() == str(home / "relative" / "home" / "runs" / doc["run_id"])


READ_ONLY = """
set -e
mount --bind "$1" "$1"
mount -o remount,bind,ro "$1"
shift
exec "$@"
"""


def read_only(path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`opsctl ARGV` with `path` mounted read-only for it alone: a private mount namespace of a
    new user namespace (unshare -rm), so root's bypass of permission bits does not apply and
    nothing outside the command sees the mount. A machine that allows no user namespace (a
    sysctl, a container's seccomp profile) skips the test with the reason, except in CI."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True, check=False)
    if probe.returncode:
        why = f"a read-only mount needs a user namespace; `unshare -rm` is refused: {probe.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", READ_ONLY, "sh", str(path), OPSCTL, *argv],
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )


def test_a_read_only_home_is_read_and_every_write_is_one_line(home: Path) -> None:
    """Reads work on a read-only home (SQLite opens the database immutable there, the lock is
    tested shared); launch, resume, kill and prune --yes say what they would write, in one line."""
    run_id = _finished_run(home, "ro")
    runs = home / "home" / "runs"
    before = sorted(p.name for p in runs.rglob("*"))
    for verb in READS:
        result = read_only(home / "home", *verb.split()[:1], run_id, *verb.split()[1:])
        assert result.returncode == 0 and "Traceback" not in result.stderr, (verb, result.stderr)
    assert run_id in read_only(home / "home", "list").stdout
    assert read_only(home / "home", "prune").stdout.strip() == "nothing to prune"
    ending = "writes there; status, logs, list and report still read it"
    for argv, path, doing in (
        (["resume", run_id], runs / run_id, "resume"),
        (["prune", "--yes"], runs, "prune --yes"),
        (["launch", str(spec_with(home, "[echo hi]"))], runs, "launch"),
    ):
        line = one_line(read_only(home / "home", *argv), 2)
        assert line == f"opsctl: {path} is read-only here, and {doing} {ending}", argv
    assert read_only(home / "home", "kill", run_id).stdout.strip() == f"{run_id} already ended SUCCEEDED"
    assert sorted(p.name for p in runs.rglob("*")) == before, "nothing written, nothing lost"


MANIFESTS = {
    "empty object": "{}",
    "null": "null",
    "a list": "[1]",
    "steps a number": '{"steps": 5}',
    "not JSON": "{",
    "array_size a string": None,  # the real manifest, one value changed (below)
    "a step name that climbs out": None,
    "a timeout of 400 digits": None,
    "another run's": None,
    "a dependency on no step": None,
}


def _bent(real: dict[str, object], case: str, run_id: str) -> str:
    doc = json.loads(json.dumps(real))
    step = doc["steps"][0]
    if case == "array_size a string":
        step["array_size"] = "4"
    elif case == "a step name that climbs out":
        step["name"] = "../../../../etc"
    elif case == "a timeout of 400 digits":
        step["timeout"] = int("9" * 400)
    elif case == "another run's":
        doc["run_id"] = run_id.replace("ro-", "rx-")
    elif case == "a dependency on no step":
        step["depends_on"] = [{"step": "ghost", "n_to_n": False}]
    return json.dumps(doc)


@pytest.mark.parametrize("case", MANIFESTS)
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_it(home: Path, case: str) -> None:
    run_id = _finished_run(home, "ro")
    path = home / "home" / "runs" / run_id / "manifest.json"
    text = MANIFESTS[case] or _bent(json.loads(path.read_text()), case, run_id)
    path.write_text(text)
    for verb in [*READS, "resume"]:
        line = one_line(_run_verb(verb, run_id), 2)
        assert line.startswith(f"opsctl: run {run_id}: its manifest {path} is not "), (verb, line)
        assert len(line) < 400, line
    assert path.read_text() == text, "left as found"
    # kill reads no manifest: it finds the run's processes by their environment.
    assert cli("kill", run_id, timeout=LIMIT).stdout.strip() == f"{run_id} already ended SUCCEEDED"
    listed = cli("list", "--json", timeout=LIMIT)
    assert listed.returncode == 0 and run_id in listed.stdout


ROWS = {
    "a run state no one knows": "UPDATE run SET state = 'BOGUS'",
    "a start time that is text": "UPDATE step SET started = 'yesterday'",
    "a child index of 400 digits": "UPDATE child SET idx = 9e999",
    "a supervisor pid below 1": "UPDATE run SET supervisor_pid = -5",
    "an attempt's cpu time of infinity": "UPDATE attempt SET cpu = 9e999",
    "a child's step name that climbs out": "UPDATE child SET step = '../../etc'",
    "an exit code that is a fraction": "UPDATE child SET exit_code = 1.5",
    "a reason that is bytes": "UPDATE step SET reason = x'00ff'",
    "a column gone": "ALTER TABLE child DROP COLUMN state",
    "two run records": "INSERT INTO run (id, pipeline, state, created, max_parallel, generation) "
    "SELECT replace(id, 'ro-', 'rp-'), pipeline, state, created, 1, 1 FROM run",
}


@pytest.mark.parametrize("case", ROWS)
def test_a_database_row_of_the_wrong_shape_is_one_line_naming_it(home: Path, case: str) -> None:
    run_id = _finished_run(home, "ro")
    db = home / "home" / "runs" / run_id / "run.db"
    with sqlite3.connect(db) as conn:
        conn.execute(ROWS[case])
    conn.close()
    verbs = ["report --json"] if "attempt" in case else ["status", "report --json", "resume"]
    for verb in verbs:
        line = one_line(_run_verb(verb, run_id), 1 if case == "two run records" else 2)
        assert line.startswith(f"opsctl: run {run_id}: its state database "), (verb, line)
    listed = json.loads(cli("list", "--json", timeout=LIMIT).stdout)
    assert [r for r in listed if r["run_id"] == run_id], "still listed"


# A row of each table as opsctl writes it, for the check below to bend one value of.
GOOD_ROWS: dict[str, dict[str, object]] = {
    "run": {
        "id": "p-20261202-120000-0abc",
        "pipeline": "p",
        "state": "RUNNING",
        "reason": None,
        "created": 1.7e9,
        "finished": None,
        "supervisor_pid": 4242,
        "max_parallel": 2,
        "generation": 1,
    },
    "step": {
        "name": "s_1",
        "position": 0,
        "state": "SUCCEEDED",
        "reason": "ok",
        "started": 1.7e9,
        "finished": 1.7e9,
        "done": 3,
        "failed": 0,
        "reexecuted": None,
    },
    "child": {
        "step": "s_1",
        "idx": 0,
        "state": "FAILED",
        "attempt": 1,
        "pid": 99,
        "exit_code": -9,
        "reason": "x",
        "started": 1.7e9,
        "finished": 1.8e9,
    },
    "attempt": {
        "step": "s_1",
        "idx": 3,
        "generation": 1,
        "attempt": 2,
        "started": 1.7e9,
        "finished": None,
        "exit_code": 143,
        "reason": None,
        "cpu": 0.25,
    },
}
SQLITE_VALUES = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.sampled_from([1.5, -0.0, 9e999, -9e999, 2**31, 0, 10**6, "s_1", "../x", "S1", "RUNNING", "running"]),
    st.text(max_size=6),
    st.binary(max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(GOOD_ROWS)), st.data())
def test_the_sql_row_check_agrees_with_the_walker(table: str, data: st.DataObject) -> None:
    """state.py checks rows in SQL for speed and walks them (opsctl_contract/shapes.py) only for
    the message: the two verdicts must agree on any value SQLite can hold, one column at a time."""
    from opsctl.backends.local.schema import ROWS, SCHEMA, fits

    row = dict(GOOD_ROWS[table])
    row[data.draw(st.sampled_from(sorted(row)))] = data.draw(SQLITE_VALUES)
    with sqlite3.connect(":memory:") as conn:
        conn.executescript(SCHEMA)
        marks = ", ".join("?" * len(row))
        insert = f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})"  # noqa: S608 - ROWS' names
        conn.execute(insert, list(row.values()))
        cursor = conn.execute(f"SELECT * FROM {table}")  # noqa: S608
        stored = dict(zip([c[0] for c in cursor.description], cursor.fetchone(), strict=True))
        verdict = fits(conn, table, tuple(stored))
    conn.close()
    assert verdict == (problem(stored, ROWS[table], table) is None), (table, stored)


def test_every_column_of_the_good_rows_is_checked() -> None:
    """The rows above have every column the schema has, and have the shape."""
    from opsctl.backends.local.schema import ROWS

    for table, row in GOOD_ROWS.items():
        assert list(row) == list(ROWS[table]) and problem(row, ROWS[table]) is None, table


def _procs(pattern: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if pattern in line and "ps -eo" not in line]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_what_a_command_leaves_running_is_ended_when_it_ends_and_counted(home: Path) -> None:
    """`sleep &` no longer holds the command open; a nohup daemon, a `setsid` child without the
    run's environment and one that ignores SIGTERM do not outlive it; the log says how many."""
    tag = f"{os.getpid()}{time.monotonic_ns() % 10_000}"
    commands = [
        f"sleep 3{tag} &",
        f"nohup sleep 4{tag} >/dev/null 2>&1 &",
        f"env -i setsid sleep 5{tag} &",
        f"(trap '' TERM; exec sleep 6{tag}) & echo started",
    ]
    spec = spec_with(home, json.dumps(commands))
    started = time.monotonic()
    result = cli("launch", str(spec), "--watch", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 15, "no command waited for what it left"
    doc = json.loads(result.stdout)
    assert doc["state"] == "SUCCEEDED"
    assert _procs(tag) == [], "nothing of the run is left"
    log = (home / "home" / "runs" / doc["run_id"] / "logs" / "s" / "0.log").read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    ended = {e["index"]: e["count"] for e in events if e["event"] == "leftover processes ended"}
    assert ended == {0: 1, 1: 1, 2: 1, 3: 1}
    seconds = {e["index"]: e["seconds"] for e in events if e["event"] == "command"}
    assert max(seconds.values()) < 1, "a command's time is its own, not its leftovers' grace"


def test_kill_ends_every_process_of_a_run_however_it_detached(home: Path) -> None:
    tag = f"{os.getpid()}{time.monotonic_ns() % 10_000}"
    commands = [
        f"env -i setsid sleep 7{tag} & sleep 8{tag}",
        f"env -i setsid sh -c 'trap \"\" TERM; sleep 9{tag}' & "
        f"nohup sleep 1{tag} >/dev/null 2>&1 & sleep 8{tag}",
    ]
    spec = spec_with(home, json.dumps(commands), "    array_size: 2\n")
    run_id = json.loads(cli("launch", str(spec), "--json", timeout=LIMIT).stdout)["run_id"]
    sleeps = lambda: [p for p in _procs(tag) if p.split()[1] == "sleep"]  # noqa: E731
    deadline = time.monotonic() + 10
    while len(sleeps()) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(sleeps()) == 5, _procs(tag)
    killed = cli("kill", run_id, timeout=60)
    assert (killed.returncode, killed.stdout.strip()) == (0, f"{run_id} killed"), killed.stderr
    assert _procs(tag) == []
    assert json.loads(cli("status", run_id, "--json").stdout)["state"] == "FAILED"


def test_a_worker_killed_outright_leaves_nothing_behind(home: Path) -> None:
    """A worker SIGKILLed (the OOM killer, a timeout's last resort) cannot end its commands'
    leftovers; the supervisor adopts them and ends them."""
    tag = f"{os.getpid()}{time.monotonic_ns() % 10_000}"
    spec = spec_with(home, json.dumps([f"env -i setsid sleep 2{tag} & sleep 3{tag}"]), "    retries: 0\n")
    run_id = json.loads(cli("launch", str(spec), "--json", timeout=LIMIT).stdout)["run_id"]
    deadline = time.monotonic() + 10
    while not (found := [p for p in _procs(f"sleep 3{tag}") if p.split()[1] == "sleep"]):
        assert time.monotonic() < deadline, "the command started"
        time.sleep(0.1)
    shell = _parent(int(found[0].split()[0]))
    os.kill(_parent(shell), 9)  # the worker
    watched = cli("watch", run_id, "--json", "--interval", "0.1", timeout=60)
    assert json.loads(watched.stdout)["state"] == "FAILED"
    assert _procs(tag) == []
    log = (home / "home" / "runs" / run_id / "supervisor.log").read_text()
    assert "ended 3 processes left by workers that ended" in log  # the shell and its two sleeps
