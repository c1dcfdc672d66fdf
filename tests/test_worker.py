"""`opsctl-worker run` end to end, as a real subprocess, on a local directory and on S3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from opsctl_contract.storage import open_store
from tests.helpers import WORKER, events, wait_until, worker_env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def events(self) -> list[dict[str, object]]:
        return events(self.stderr)


def run_worker(env: dict[str, str], *args: str) -> Result:
    proc = subprocess.run(
        [WORKER, "run", *args], env=worker_env(**env), capture_output=True, text=True, timeout=60
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the list file and the markers live: a directory or a moto bucket."""
    if request.param == "local":
        return str(tmp_path / "run")
    return f"s3://{request.getfixturevalue('bucket')}/runs/r1"


def contract(place: str, list_key: str = "lists/step.txt", **extra: str) -> dict[str, str]:
    return {
        "LIST_FILE_S3_PATH": f"{place}/{list_key}",
        "OPSCTL_STATE_URI": f"{place}/state",
        "OPSCTL_STEP": "step",
        "OPSCTL_RUN_ID": "demo-20261128-120000-abcd",
        **extra,
    }


def write_list(place: str, commands: list[str]) -> None:
    text = "# commands\n\n" + "".join(f"{c}\n" for c in commands)
    open_store(place).write("lists/step.txt", text.encode())


def appender(out: Path, k: int) -> str:
    """A command that appends one line to its own file, so re-runs are countable."""
    return f"echo ran >> {out}/{k}"


def lines(out: Path, k: int) -> int:
    path = out / str(k)
    return len(path.read_text().splitlines()) if path.exists() else 0


def markers(place: str, kind: str) -> list[int]:
    return sorted(int(key.rsplit("/", 1)[1]) for key in open_store(f"{place}/state").list(f"step/{kind}"))


def test_children_split_the_list(place: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_list(place, [appender(out, k) for k in range(5)])

    first = run_worker(contract(place, AWS_BATCH_JOB_ARRAY_INDEX="0", ARRAY_SIZE="2"))
    assert first.code == 0, first.stderr
    assert markers(place, "done") == [0, 1]
    second = run_worker(contract(place, AWS_BATCH_JOB_ARRAY_INDEX="1", ARRAY_SIZE="2"))
    assert second.code == 0, second.stderr
    assert markers(place, "done") == [0, 1, 2, 3, 4]
    assert [lines(out, k) for k in range(5)] == [1] * 5

    done = json.loads(open_store(f"{place}/state").read("step/done/000000003"))
    assert (done["exit_code"], done["attempt"], done["child"]) == (0, 1, 1)
    assert done["seconds"] >= 0 and done["host"]

    events = [e for e in second.events() if e["event"] == "command"]
    assert [e["index"] for e in events] == [2, 3, 4]
    for event in events:
        assert event["run_id"] == "demo-20261128-120000-abcd"
        assert (event["step"], event["child"], event["attempt"]) == ("step", 1, 1)
        assert event["exit_code"] == 0 and "seconds" in event


def test_failed_command_does_not_stop_the_others_and_a_retry_skips_done(place: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    flag = tmp_path / "fixed"
    commands = [appender(out, k) for k in range(4)]
    commands[1] = f"echo ran >> {out}/1; test -e {flag} || {{ echo 'input missing' >&2; exit 3; }}"
    write_list(place, commands)

    first = run_worker(contract(place))
    assert first.code == 1
    assert markers(place, "done") == [0, 2, 3]
    assert markers(place, "failed") == [1]
    failed = json.loads(open_store(f"{place}/state").read("step/failed/000000001"))
    assert failed["exit_code"] == 3
    assert "input missing" in failed["stderr_tail"]
    assert "input missing" in first.stderr, "the command's stderr still reaches the log"

    flag.touch()
    retry = run_worker(contract(place, AWS_BATCH_JOB_ATTEMPT="2"))
    assert retry.code == 0, retry.stderr
    assert [lines(out, k) for k in range(4)] == [1, 2, 1, 1], "only the failed command ran again"
    assert json.loads(open_store(f"{place}/state").read("step/done/000000001"))["attempt"] == 2
    outcomes = {e["index"]: e["outcome"] for e in retry.events() if e["event"] == "command"}
    assert outcomes == {0: "skipped", 1: "done", 2: "skipped", 3: "skipped"}


def test_fail_fast_stops_at_the_first_failure(tmp_path: Path) -> None:
    place = str(tmp_path / "run")
    out = tmp_path / "out"
    out.mkdir()
    write_list(place, [appender(out, 0), "exit 7", appender(out, 2)])
    result = run_worker(contract(place), "--fail-fast")
    assert result.code == 1
    assert (markers(place, "done"), markers(place, "failed")) == ([0], [1])
    assert lines(out, 2) == 0


def test_missing_list_file_exits_2(place: str) -> None:
    result = run_worker(contract(place, list_key="lists/nope.txt"))
    assert result.code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "LIST_FILE_S3_PATH=" in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"AWS_BATCH_JOB_ARRAY_INDEX": "4", "ARRAY_SIZE": "4"},
            "AWS_BATCH_JOB_ARRAY_INDEX=4 is outside 0..3",
        ),
        ({"ARRAY_SIZE": "0"}, "ARRAY_SIZE=0 is outside 1..10000"),
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "one"}, "AWS_BATCH_JOB_ARRAY_INDEX='one' is not an integer"),
        ({"AWS_BATCH_JOB_ATTEMPT": "0"}, "AWS_BATCH_JOB_ATTEMPT=0 is outside >= 1"),
        ({"OPSCTL_STEP": ""}, "OPSCTL_STEP is not set"),
        ({"OPSCTL_SPLIT": "random"}, "OPSCTL_SPLIT='random' is not one of contiguous | dynamic"),
        ({"SLURM_ARRAY_TASK_ID": "2"}, "SLURM_ARRAY_TASK_ID=2 is outside 0..0 (array size 1)"),
    ],
)
def test_bad_environment_exits_2(tmp_path: Path, change: dict[str, str], message: str) -> None:
    place = str(tmp_path / "run")
    write_list(place, ["true"])
    result = run_worker({**contract(place), **change})
    assert result.code == 2
    assert result.stderr.startswith(f"opsctl-worker: environment: {message}")
    assert result.stderr.count("\n") == 1


def test_other_schedulers_index_sources(tmp_path: Path) -> None:
    place = str(tmp_path / "run")
    write_list(place, [f"echo {k}" for k in range(6)])
    result = run_worker({**contract(place), "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"})
    assert result.code == 0
    assert result.stdout.split() == ["4", "5"]
    result = run_worker({**contract(place), "JOB_COMPLETION_INDEX": "0", "ARRAY_SIZE": "3"})
    assert result.stdout.split() == ["0", "1"]


def test_child_without_commands_exits_0(tmp_path: Path) -> None:
    place = str(tmp_path / "run")
    write_list(place, ["echo only"])
    result = run_worker(contract(place, AWS_BATCH_JOB_ARRAY_INDEX="0", ARRAY_SIZE="4"))
    assert result.code == 0
    assert result.stdout == "" and markers(place, "done") == []


def test_command_sees_the_contract(tmp_path: Path) -> None:
    place = str(tmp_path / "run")
    write_list(
        place, ["true", 'echo "$OPSCTL_COMMAND_INDEX $AWS_BATCH_JOB_ARRAY_INDEX $ARRAY_SIZE $OPSCTL_STEP"']
    )
    result = run_worker(contract(place, AWS_BATCH_JOB_ARRAY_INDEX="1", ARRAY_SIZE="2"))
    assert result.stdout == "1 1 2 step\n"


def test_sigterm_stops_the_command_and_leaves_it_unmarked(tmp_path: Path) -> None:
    place = str(tmp_path / "run")
    pid_file = tmp_path / "pid"
    write_list(place, ["true", f"echo $$ > {pid_file}; exec sleep 60"])
    proc = subprocess.Popen(
        [WORKER, "run"], env=worker_env(**contract(place)), stderr=subprocess.PIPE, text=True
    )
    wait_until(
        lambda: pid_file.exists() and bool(pid_file.read_text().strip()), 20, "the long command's start"
    )
    command_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)  # like Batch's TerminateJob, to the worker only
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err
    assert markers(place, "done") == [0] and markers(place, "failed") == []
    with pytest.raises(ProcessLookupError):
        os.kill(command_pid, 0)


def test_the_scratch_directory_is_removed_when_a_kill_stops_the_attempt(tmp_path: Path) -> None:
    place = str(tmp_path / "run")
    temp = tmp_path / "temp"
    temp.mkdir()
    write_list(place, ['echo "$PWD" > ../where; mkdir -p deep/er; touch deep/er/f; exec sleep 60'])
    env = worker_env(**contract(place), TMPDIR=str(temp))
    proc = subprocess.Popen([WORKER, "run"], env=env, stderr=subprocess.PIPE, text=True)
    wait_until(
        lambda: (temp / "where").exists() and (temp / "where").read_text().strip() != "", 20, "its start"
    )
    scratch = Path((temp / "where").read_text().strip())
    assert scratch.parent == temp and scratch.name.startswith("opsctl-step-0-1-")
    wait_until(lambda: (scratch / "deep" / "er" / "f").exists(), 20, "its files")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM
    assert sorted(p.name for p in temp.iterdir()) == ["where"], "the scratch directory is gone"


def test_worker_process_runs_without_rich(tmp_path: Path) -> None:
    """A worker started through its entry point runs and logs with rich kept out of the process
    (structlog would import it: 40 ms of every child's start)."""
    (tmp_path / "list.txt").write_text("true\n")
    code = (
        "import sys\n"
        "from worker.__main__ import main\n"
        "sys.argv = ['opsctl-worker', 'run']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'rich' and sys.modules[m])\n"
        "print('structlog' in sys.modules, loaded)\n"
    )
    env = {
        **os.environ,
        "LIST_FILE_S3_PATH": str(tmp_path / "list.txt"),
        "OPSCTL_STEP": "s",
        "OPSCTL_STATE_URI": str(tmp_path / "state"),
    }
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True []", result.stdout
    assert (tmp_path / "state" / "s" / "done" / "000000000").is_file()
    assert '"outcome": "done"' in result.stderr
