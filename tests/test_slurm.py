"""The Slurm backend against a real one-node Slurm (tests/slurm_cluster.py): munged, slurmctld and
slurmd started from a scratch directory for this module, jobs run by the real sbatch.

Where Slurm is not installed the tests skip with the reason, except in CI (`CI=true`), where
they fail: `make system` installs it. The stand-in GPUs are Slurm GRES that nothing computes on,
so these runs turn the GPU preflight off (OPSCTL_SLURM_GPU_PREFLIGHT=0) and check the `--gres`
request as Slurm recorded it. A second cluster, with accounting (slurmdbd and MariaDB), is
started for the tests of polls by sacct, and one test starts a cluster of its own whose node
dies and returns within seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import by_name, cli, one_line, wait_until
from tests.slurm_cluster import SlurmCluster, missing

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    require(missing())
    # MaxArraySize 10: task ids 0..9, so a step of 12 children is two arrays (hello's fit in one).
    started = SlurmCluster(tmp_path_factory.mktemp("slurm"), max_array_size=10).start()
    yield started
    started.stop()


def require(why: str | None) -> None:
    """Skip where a part of Slurm is missing (`why`), except in CI, where that fails."""
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Slurm in CI: {why}")
        pytest.skip(why)


@contextlib.contextmanager
def own_cluster(root: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Iterator[SlurmCluster]:
    """A cluster of the test's own (accounting, other timeouts), which its commands talk to."""
    started = SlurmCluster(root, **options).start()
    try:
        yield talk_to(started, monkeypatch)
    finally:
        started.stop()


@pytest.fixture
def slurm(cluster: SlurmCluster, home: Path, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The cluster, for a test whose commands all talk to it, and whose runs live in its home."""
    return talk_to(cluster, monkeypatch)


def talk_to(cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """`cluster`, which the test's commands now talk to, with the GPU preflight off."""
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    monkeypatch.setenv("OPSCTL_SLURM_GPU_PREFLIGHT", "0")
    return cluster


def launch(spec: Path, *args: str) -> str:
    result = cli("launch", str(spec), "--backend", "slurm", "--json", *args)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["run_id"])


def watch(run_id: str, timeout: float = 300) -> tuple[int, dict[str, object], str]:
    result = cli("watch", run_id, "--json", "--interval", "0.5", timeout=timeout)
    return result.returncode, json.loads(result.stdout), result.stderr


def write_spec(folder: Path, text: str) -> Path:
    spec = folder / "pipeline.yaml"
    spec.write_text(text)
    return spec


def job(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    """`scontrol show job` of one job (an array's first task), as its fields."""
    out = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job_id],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[0]
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


def manifest(home: Path, run_id: str) -> dict[str, object]:
    return json.loads((home / "home" / "slurm" / run_id / "manifest.json").read_text())  # type: ignore[no-any-return]


def live(cluster: SlurmCluster) -> list[str]:
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i %T"],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split("\n")[:-1]


def test_hello_runs_one_submission_per_step_with_slurms_dependencies(slurm: SlurmCluster, home: Path) -> None:
    run_id = launch(EXAMPLES / "hello.yaml")
    ids = {name: a[0]["job"] for name, a in manifest(home, run_id)["arrays"].items()}  # type: ignore[union-attr,index]
    # While it waits, the last step's dependency as Slurm recorded it.
    waiting = job(slurm, ids["reconstruct"])
    assert waiting["Dependency"].startswith(f"afterok:{ids['calibrate']}"), waiting
    assert waiting["KillOInInvalidDependent"] == "Yes"  # Slurm's spelling
    code, doc, err = watch(run_id)
    steps = by_name(doc)  # type: ignore[arg-type]
    assert (code, doc["state"]) == (0, "SUCCEEDED"), err
    assert {name: s["commands"]["done"] for name, s in steps.items()} == {
        "preprocess": 10,
        "process": 64,
        "calibrate": 1,
        "reconstruct": 4,
    }
    arrays = manifest(home, run_id)["arrays"]
    assert {name: len(a) for name, a in arrays.items()} == dict.fromkeys(steps, 1), "one sbatch a step"  # type: ignore[union-attr]
    shown = {name: job(slurm, ids[name]) for name in ids}
    assert shown["preprocess"]["ArrayJobId"] == ids["preprocess"] and "ArrayTaskId" in shown["preprocess"]
    assert "ArrayJobId" not in shown["calibrate"], "a one-child step is a plain job"
    assert shown["process"]["Partition"] == "cpu" and shown["reconstruct"]["Partition"] == "gpu"
    assert "gpu:1" in shown["reconstruct"].get("TresPerNode", "") + shown["reconstruct"].get("TresPerJob", "")
    assert shown["process"]["JobName"] == f"opsctl-{run_id}"

    # A poll is one squeue for the whole run; list and report run no Slurm command.
    from opsctl.backends.slurm.backend import SlurmBackend

    backend = SlurmBackend()
    assert backend.status(run_id)["state"] == "SUCCEEDED" and backend.calls == {"squeue": 1}
    backend.list_runs()
    backend.attempts(run_id)
    assert backend.calls == {"squeue": 1}
    listed = json.loads(cli("list", "--backend", "slurm", "--json").stdout)
    assert [r["run_id"] for r in listed] == [run_id]
    logged = cli("logs", run_id, "process", "--index", "3")
    assert logged.returncode == 0 and "processing slice 24" in logged.stdout, logged.stderr
    reported = cli("report", run_id, "--json")
    assert reported.returncode == 0, reported.stderr


def test_a_step_above_max_array_size_is_several_arrays_and_n_to_n_waits_child_by_child(
    slurm: SlurmCluster, home: Path
) -> None:
    spec = write_spec(
        home,
        """
name: wide
defaults: {retries: 0, timeout: 60}
steps:
  - name: a
    queue: cpu
    array_size: 12
    commands: {template: "echo a{i} > $OPSCTL_RUN_URI/a{i}", range: 12}
  - name: b
    queue: cpu
    array_size: 12
    commands: {template: "test -e $OPSCTL_RUN_URI/a{i}", range: 12}
    depends_on: [{step: a, type: N_TO_N}]
""",
    )
    run_id = launch(spec)
    arrays = manifest(home, run_id)["arrays"]
    assert [(x["offset"], x["children"]) for x in arrays["b"]] == [(0, "0-9"), (10, "10-11")]  # type: ignore[index]
    recorded = [job(slurm, x["job"])["Dependency"] for x in arrays["b"]]  # type: ignore[index]
    for dependency, upstream in zip(recorded, arrays["a"], strict=True):  # type: ignore[arg-type]
        assert dependency.startswith(f"aftercorr:{upstream['job']}"), recorded  # type: ignore[index]
    code, doc, err = watch(run_id)
    assert (code, doc["state"]) == (0, "SUCCEEDED"), err
    assert [s["commands"]["done"] for s in doc["steps"]] == [12, 12]  # type: ignore[attr-defined,index]


# Child 0 of `bad` fails both its attempts; `after` must end unrun.
FAILS = """
name: fails
defaults: {retries: 1, timeout: 60}
steps:
  - name: bad
    queue: cpu
    array_size: 2
    commands: ["exit 3", "echo fine"]
  - name: after
    queue: cpu
    command: echo never
    depends_on: [bad]
"""


def test_a_failed_step_fails_its_dependents_without_running_them(slurm: SlurmCluster, home: Path) -> None:
    spec = write_spec(home, FAILS)
    run_id = launch(spec)
    code, doc, _ = watch(run_id)
    steps = by_name(doc)  # type: ignore[arg-type]
    assert code == 1 and (steps["bad"]["state"], steps["after"]["state"]) == ("FAILED", "FAILED")
    assert steps["bad"]["attempts"] == {"total": 3, "retried": 1}, (
        "retries: 1 gives the failed child 2 attempts"
    )
    assert steps["after"]["cancelled"] == 1 and steps["after"]["commands"]["done"] == 0
    told = cli("watch", run_id, "--interval", "0.5").stderr  # the table's failure lines
    assert "bad[0] command 0 failed (exit 3): exit 3" in told, told
    assert live(slurm) == [], "nothing left pending"


def test_kill_leaves_nothing_in_squeue_and_resume_runs_only_what_is_left(
    slurm: SlurmCluster, home: Path
) -> None:
    spec = write_spec(
        home,
        """
name: long
defaults: {retries: 0, timeout: 120}
steps:
  - name: work
    queue: cpu
    array_size: 2
    commands: {template: "echo {i} >> $OPSCTL_RUN_URI/ran.txt; sleep 0.2", range: 40}
""",
    )
    run_id = launch(spec)
    ran = home / "home" / "slurm" / run_id / "ran.txt"
    wait_until(lambda: ran.exists() and len(ran.read_text().split()) >= 4, 60, "commands started")
    killed = cli("kill", run_id)
    assert killed.returncode == 0 and "killed" in killed.stdout, killed.stderr
    assert live(slurm) == []
    gone = subprocess.run(["pgrep", "-f", run_id], capture_output=True, text=True, check=False)
    assert gone.stdout == "", "no process of the run"
    doc = json.loads(cli("status", run_id, "--json").stdout)
    assert doc["state"] == "FAILED" and doc["steps"][0]["reason"] == "killed by user"
    before = ran.read_text().split()
    resumed = cli("resume", run_id)
    assert resumed.returncode == 0 and "generation 2" in resumed.stdout, resumed.stderr
    code, doc, err = watch(run_id)
    assert (code, doc["state"]) == (0, "SUCCEEDED"), err
    after = ran.read_text().split()
    assert sorted(set(after)) == sorted(str(i) for i in range(40)), "every command ran"
    # Only commands in flight at the kill (one a child) may have run twice.
    assert len(after) - 40 <= 2 and len(before) <= len(after)


def test_resume_resubmits_exactly_the_children_that_did_not_succeed(slurm: SlurmCluster, home: Path) -> None:
    """Children 0 and 1 succeed, 2 and 3 are killed mid-command: the next generation is one
    array of tasks 2 and 3, as Slurm recorded it, and no command runs twice."""
    spec = write_spec(
        home,
        """
name: half
defaults: {retries: 0, timeout: 120}
steps:
  - name: work
    queue: cpu
    array_size: 4
    commands:
      template: '[ {i} -lt 2 ] || [ $OPSCTL_GENERATION != 1 ] || sleep 99; echo {i} >>$OPSCTL_RUN_URI/ran.txt'
      range: 4
""",
    )
    run_id = launch(spec)

    def two_done() -> bool:
        doc = json.loads(cli("status", run_id, "--json").stdout)
        return bool(doc["steps"][0]["counts"].get("SUCCEEDED") == 2)

    wait_until(two_done, 60, "children 0 and 1 succeeded")
    assert cli("kill", run_id).returncode == 0
    assert cli("resume", run_id).returncode == 0
    arrays = manifest(home, run_id)["arrays"]["work"]  # type: ignore[index]
    assert [(a["offset"], a["children"]) for a in arrays] == [(0, "2-3")]  # type: ignore[index]
    assert job(slurm, arrays[0]["job"])["ArrayTaskId"] in ("2-3", "2", "3")  # type: ignore[index]
    code, doc, err = watch(run_id)
    assert (code, doc["state"]) == (0, "SUCCEEDED"), err
    ran = (home / "home" / "slurm" / run_id / "ran.txt").read_text().split()
    assert sorted(ran) == ["0", "1", "2", "3"], "each command once"


def test_watch_backs_off_while_the_run_shows_nothing_new(slurm: SlurmCluster, home: Path) -> None:
    """A step that sleeps 12 s, watched every 0.5 s: the polls double while nothing changes, so
    the watch asks squeue about 10 times where a fixed pace would ask 24."""
    from opsctl.backends.slurm.backend import SlurmBackend
    from opsctl.cli.runs import Pace, _follow

    spec = write_spec(home, "name: quiet\nsteps:\n  - name: nap\n    queue: cpu\n    command: sleep 12\n")
    backend = SlurmBackend()
    run_id = backend.launch(spec)
    doc = _follow(backend.status, run_id, Pace(0.5, 60.0))
    assert doc["state"] == "SUCCEEDED"
    assert backend.calls["squeue"] <= 12, backend.calls


def test_children_whose_node_dies_mid_step_are_requeued_and_finish(
    cluster: SlurmCluster, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node dies (slurmd, its job steps and the workers SIGKILLed) while each child is on its
    second command, and comes back once Slurm marks it down. Slurm requeues both children; each
    lost attempt used a try (retries: 1), and the requeued ones skip the commands done."""
    # A cluster of its own (`cluster` only skips the test where Slurm is missing), whose
    # timeouts make Slurm notice the death and run the job again in seconds, not minutes.
    fast = {"slurmd_timeout": 5, "message_timeout": 2, "cred_expire": 5, "bf_interval": 1}
    with own_cluster(tmp_path / "slurm", monkeypatch, **fast) as dying:
        spec = write_spec(
            home,
            """
name: dies
defaults: {retries: 1, timeout: 120}
steps:
  - name: work
    queue: cpu
    array_size: 2
    commands: {template: "sleep 2; echo {i} >> $OPSCTL_RUN_URI/ran.txt", range: 6}
""",
        )
        run_id = launch(spec)
        ran = home / "home" / "slurm" / run_id / "ran.txt"
        wait_until(lambda: ran.exists() and len(ran.read_text().split()) >= 2, 60, "first commands done")
        dying.kill_node()
        wait_until(lambda: "down" in dying.node_state(), 60, "the node marked down", interval=0.2)
        during = json.loads(cli("status", run_id, "--json").stdout)
        assert during["state"] not in ("FAILED", "SUCCEEDED"), during
        dying.start_node()
        code, doc, err = watch(run_id)
        assert (code, doc["state"]) == (0, "SUCCEEDED"), err
        assert doc["steps"][0]["attempts"] == {"total": 4, "retried": 2}, doc["steps"][0]  # type: ignore[index]
        done = ran.read_text().split()
        assert sorted(set(done)) == [str(i) for i in range(6)]
        assert len(done) <= 6 + 2, "only the commands in flight at the death ran twice"


@pytest.fixture(scope="module")
def accounting_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    require(missing(accounting=True))
    started = SlurmCluster(tmp_path_factory.mktemp("slurmdbd"), accounting=True).start()
    yield started
    started.stop()


@pytest.fixture
def accounted(accounting_cluster: SlurmCluster, home: Path, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The cluster with accounting (slurmdbd, MariaDB), which the test's commands talk to."""
    return talk_to(accounting_cluster, monkeypatch)


def test_with_accounting_a_poll_is_one_sacct_and_report_has_cpu_time_and_peak_memory(
    accounted: SlurmCluster, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hello, then a step whose commands each hold 64 MB for 2 s, sampled every second
    (`--acctg-freq`, through the settings' extra sbatch options): every poll is one sacct, which
    lists every job of the run, and the report's CPU time and peak memory are sacct's."""
    from opsctl.backends.slurm.backend import SlurmBackend

    run_id = launch(EXAMPLES / "hello.yaml")
    code, doc, err = watch(run_id)
    assert (code, doc["state"]) == (0, "SUCCEEDED"), err
    backend = SlurmBackend()
    assert backend.status(run_id)["state"] == "SUCCEEDED" and backend.calls == {"sacct": 1}
    jobs = {a[0]["job"] for a in manifest(home, run_id)["arrays"].values()}  # type: ignore[union-attr,index]
    rows = backend.client.accounted(f"opsctl-{run_id}", sorted(jobs))
    assert {r.array_job for r in rows} == jobs and {r.state for r in rows} == {"COMPLETED"}

    monkeypatch.setenv("OPSCTL_SLURM_SBATCH_CPU", "--acctg-freq=task=1")
    hold = "python3 -c 'import time; x = bytearray(64 << 20); time.sleep(2)'"
    spec = write_spec(
        home,
        f"name: big\nsteps:\n  - name: hold\n    queue: cpu\n    array_size: 2\n"
        f'    commands: ["{hold}", "{hold}"]\n',
    )
    run_id = launch(spec)
    code, doc, err = watch(run_id)
    assert (code, doc["state"]) == (0, "SUCCEEDED"), json.dumps(doc["steps"])
    result = cli("report", run_id, "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    bars = facts["timeline"]
    assert len(bars) == 2 and all(b["cpu_seconds"] is not None for b in bars), bars
    assert all(b["max_rss"] >= 64 << 20 for b in bars), "each child held 64 MiB"
    assert facts["max_rss_bytes"] == max(b["max_rss"] for b in bars)
    assert facts["cpu_seconds"] == pytest.approx(sum(b["cpu_seconds"] for b in bars), abs=0.01)


def test_with_accounting_dependents_end_unrun_and_kill_is_checked_by_sacct(
    accounted: SlurmCluster, home: Path
) -> None:
    """What squeue told before, sacct tells now: a step after a failed one ended unrun (a bare
    CANCELLED), and a kill waited out until none is live."""
    from opsctl.backends.slurm.backend import SlurmBackend

    spec = write_spec(home, FAILS)
    run_id = launch(spec)
    code, doc, _ = watch(run_id)
    steps = by_name(doc)  # type: ignore[arg-type]
    assert code == 1 and steps["after"]["reason"] == "dependency failed", steps["after"]
    assert steps["after"]["cancelled"] == 1
    backend = SlurmBackend()
    attempts = sorted((a for a in backend.attempts(run_id) if a["index"] == 0), key=lambda a: a["attempt"])
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["cpu_seconds"] is None and attempts[1]["cpu_seconds"] is not None, (
        "two attempts in one allocation: its CPU time on the last"
    )

    long = write_spec(
        home,
        "name: long\nsteps:\n  - name: nap\n    queue: cpu\n    array_size: 3\n"
        "    commands: {template: 'sleep 60 # {i}', range: 3}\n",
    )
    run_id = SlurmBackend().launch(long)
    wait_until(lambda: "RUNNING" in " ".join(live(accounted)), 60, "children running")
    killing = SlurmBackend()
    assert "killed" in killing.kill(run_id)
    assert live(accounted) == [] and set(killing.calls) == {"sacct", "scancel"}, killing.calls
    assert SlurmBackend().status(run_id)["steps"][0]["reason"] == "killed by user"


def test_a_timed_out_child_is_not_retried(slurm: SlurmCluster, home: Path) -> None:
    spec = write_spec(
        home,
        """
name: slow
defaults: {retries: 2, timeout: 60}
steps:
  - name: nap
    queue: cpu
    command: sleep 600
""",
    )
    code, doc, _ = watch(launch(spec))
    step = by_name(doc)["nap"]  # type: ignore[arg-type]
    assert (code, step["state"], step["attempts"]) == (1, "FAILED", {"total": 1, "retried": 0})


@pytest.mark.parametrize("setup", ["no sbatch", "SLURM_CONF nowhere", "unknown partition"])
def test_a_bad_setup_is_one_line_exit_2_and_nothing_submitted(
    slurm: SlurmCluster, home: Path, setup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dict(os.environ)
    expected = {
        "no sbatch": "opsctl: sbatch: not on PATH",
        "SLURM_CONF nowhere": f"opsctl: SLURM_CONF={home}/nowhere.conf: no such file",
        "unknown partition": "opsctl: partition 'nope' (for queue cpu) is not on this cluster",
    }[setup]
    if setup == "no sbatch":
        env["PATH"] = str(Path(os.environ["PATH"].split(os.pathsep)[0]))  # the venv's bin only
    elif setup == "SLURM_CONF nowhere":
        env["SLURM_CONF"] = str(home / "nowhere.conf")
    else:
        env["OPSCTL_SLURM_PARTITION_CPU"] = "nope"
    result = cli("launch", str(EXAMPLES / "hello.yaml"), "--backend", "slurm", env=env)
    assert one_line(result, 2).startswith(expected)
    assert live(slurm) == [], "nothing submitted"
    runs = home / "home" / "slurm"
    assert not runs.exists() or not any(runs.iterdir()), "no run written"


def test_the_tomography_pipeline_reconstructs_on_slurm(slurm: SlurmCluster, home: Path) -> None:
    """examples/tomo at test_tomo's small size, its gpu step on the gpu partition (OpenCL on the
    CPU: the stand-in GRES computes nothing), to the same calibration as on the local backend."""
    small = (
        (EXAMPLES / "tomo" / "pipeline.yaml")
        .read_text()
        .replace("range: 32", "range: 4")
        .replace(
            "TOMO_SLICES: 32, TOMO_SIZE: 256, TOMO_ANGLES: 256",
            "TOMO_SLICES: 4, TOMO_SIZE: 128, TOMO_ANGLES: 128",
        )
        .replace("array_size: 8", "array_size: 2")
    )
    run_id = launch(write_spec(home, small))
    code, doc, err = watch(run_id, timeout=600)
    assert (code, doc["state"]) == (0, "SUCCEEDED"), err
    assert [s["commands"]["done"] for s in doc["steps"]] == [4, 4, 1, 4]  # type: ignore[attr-defined,index]
    report = json.loads((home / "home" / "slurm" / run_id / "tomo" / "report.json").read_text())
    assert abs(report["centre_offset_px"] - 2.7) <= 0.25


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        # sacct(1), "Elapsed time fields are presented as [days-]hours:minutes:seconds
        # [.microseconds]"; 22.05 writes a CPU time under an hour as MM:SS.mmm (measured).
        ("00:03.148", 3.148),
        ("01:02:03", 3723.0),
        ("2-00:00:01", 172801.0),
        ("1-02:03:04.5", 93784.5),
        ("", None),
        ("INVALID", None),
        ("x-01:02:03", None),
    ],
)
def test_sacct_cpu_times_are_read_in_each_of_its_forms(text: str, seconds: float | None) -> None:
    from opsctl.backends.slurm.client import cpu_seconds

    assert cpu_seconds(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(
    ("text", "size"),
    # --noconvert on 22.05 writes bytes (measured: 65413120 for a 64 MiB bytearray); sacct's
    # default form is a number of 1024s with a K/M/G suffix ("10452K"); never sampled: empty.
    [
        ("65413120", 65413120),
        ("10452K", 10452 * 1024),
        ("1.5G", 3 << 29),
        ("0", 0),
        ("", None),
        ("12Q", None),
    ],
)
def test_sacct_memory_sizes_are_read_as_bytes(text: str, size: int | None) -> None:
    from opsctl.backends.slurm.client import size_bytes

    assert size_bytes(text) == size


def test_the_exit_records_win_over_a_lagging_sacct() -> None:
    """sacct lags the controller (measured on 22.05, 9 children, 2 at a time, `sleep 1` each): its
    rows still showed tasks 6 and 7 in the array's pending range after their scripts had
    recorded exit 0, and task 8 pending after its attempt had started. The records decide for a
    child whose last attempt ended; an attempt started within the lag is running; a child with
    no record waits as sacct says. squeue does not lag: there a pending row is pending."""
    import time

    from opsctl.backends.slurm.client import QueueRow
    from opsctl.backends.slurm.job import Exit
    from opsctl.backends.slurm.status import Seen, children
    from opsctl.run.states import JobState

    now = time.time()
    rows = [QueueRow("52", str(i), "COMPLETED", "None") for i in range(6)]
    rows.append(QueueRow("52", "[6-9%2]", "PENDING", "JobArrayTaskLimit"))
    records = [Exit(i, 1, 1, now - 3, now - 1, 0) for i in range(8)] + [Exit(8, 1, 1, now - 1, None, None)]
    step: Any = {"array_size": 10, "timeout": 60}
    arrays: Any = [{"job": "52", "offset": 0, "children": "0-9"}]

    def states(accounted: bool) -> list[str]:
        seen = Seen({"52": rows}, at=now, accounted=accounted)
        return [k.state.value for _, k in sorted(children(step, arrays, seen, records, 1, 1).items())]

    assert states(True) == [JobState.SUCCEEDED.value] * 8 + ["RUNNING", "RUNNABLE"]
    assert states(False)[8:] == ["RUNNABLE", "RUNNABLE"]
