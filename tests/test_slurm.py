"""The Slurm backend against a real one-node Slurm (tests/slurm_cluster.py): munged, slurmctld and
slurmd started from a scratch directory for this module, jobs run by the real sbatch.

Where Slurm is not installed the tests skip with the reason, except in CI (`CI=true`), where
they fail: `make system` installs it. The stand-in GPUs are Slurm GRES that nothing computes on,
so these runs turn the GPU preflight off (OPSCTL_SLURM_GPU_PREFLIGHT=0) and check the `--gres`
request as Slurm recorded it. Two tests start a cluster of their own: one with accounting
(slurmdbd and MariaDB), one whose node dies and returns within seconds.
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
        monkeypatch.setenv("SLURM_CONF", str(started.conf))
        monkeypatch.setenv("OPSCTL_SLURM_GPU_PREFLIGHT", "0")
        yield started
    finally:
        started.stop()


@pytest.fixture
def slurm(cluster: SlurmCluster, home: Path, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The cluster, for a test whose commands all talk to it, and whose runs live in its home."""
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


def test_a_failed_step_fails_its_dependents_without_running_them(slurm: SlurmCluster, home: Path) -> None:
    spec = write_spec(
        home,
        """
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
""",
    )
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


def test_hello_on_a_cluster_with_accounting_is_one_sacct_name(
    cluster: SlurmCluster, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With slurmdbd (and MariaDB) the same run succeeds, and one `sacct --name` of the run's job
    name lists every job of it: each step's array or plain job, and nothing else."""
    require(missing(accounting=True))
    with own_cluster(tmp_path / "slurm", monkeypatch, accounting=True) as recorded:
        run_id = launch(EXAMPLES / "hello.yaml")
        code, doc, err = watch(run_id)
        assert (code, doc["state"]) == (0, "SUCCEEDED"), err
        jobs = {a[0]["job"] for a in manifest(home, run_id)["arrays"].values()}  # type: ignore[union-attr,index]

        def accounted() -> set[str]:
            out = subprocess.run(
                ["sacct", "--noheader", "--parsable2", "-X", f"--name=opsctl-{run_id}", "--format=JobID"],
                env=recorded.env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return {line.split("_")[0] for line in out.split()}

        wait_until(lambda: accounted() == jobs, 30, "sacct shows every job of the run", interval=0.5)


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
