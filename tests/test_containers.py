"""The real images, built by `make images` (images/build.py) and run by a real Docker engine, as
AWS Batch runs them: the worker contract in the CPU image, the GPU image's OpenCL diagnosis and
kernel, and `opsctl launch --containers` of both examples, unchanged.

Marked `containers`: they run wherever a Docker engine answers (`.ci/run` installs and starts
one); elsewhere they are skipped with the reason, except with CI=true, where a missing engine
fails them. Where the base image cannot be pulled the build makes a stand-in from Debian's
archive (BASE=debootstrap, the default with CI=true; docs/worker.md says what it leaves unproved).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from opsctl_contract.storage import STAGING
from tests.helpers import cli, one_line
from tests.moto_env import ROOT
from tests.test_worker import contract, markers, write_list

pytestmark = pytest.mark.containers

TAG = "opsctl-test"
CPU, GPU, TOMO = (f"opsctl-{name}:{TAG}" for name in ("cpu", "gpu", "tomo"))
WORKER_UID = 10001


@dataclass(frozen=True)
class Engine:
    docker: str

    def run(self, *args: str, timeout: float = 180, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.docker, *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The Docker engine with the three images built from this tree (tag opsctl-test)."""
    docker = shutil.which("docker")
    answers = docker is not None and subprocess.run([docker, "info"], capture_output=True).returncode == 0
    if not answers:
        why = "no Docker engine answers (`docker info`): the container tests need one (.ci/run starts one)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    assert docker is not None
    built = subprocess.run(
        [sys.executable, str(ROOT / "images" / "build.py"), "--tag", TAG],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if built.returncode == 2 and os.environ.get("CI") != "true":  # say, the base cannot be pulled
        pytest.skip(built.stderr.strip().splitlines()[-1])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return Engine(docker)


def batch_argv(engine: Engine, image: str, env: dict[str, str], place: Path | None = None) -> list[str]:
    """The `docker run` AWS Batch's agent makes, in essence: the variables by name, no user."""
    argv = ["run", "--rm", "--init", "--network", "host"]
    if place is not None:
        argv += ["--volume", f"{place}:{place}", "--group-add", str(place.stat().st_gid)]
    for name in sorted(env):
        argv += ["--env", name]
    return [engine.docker, *argv, image]


def batch_run(
    engine: Engine, image: str, env: dict[str, str], place: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """One child attempt run in `image` with its default command, to its end."""
    return subprocess.run(
        batch_argv(engine, image, env, place),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def outcomes(stderr: str) -> dict[int, str]:
    """Each command's outcome, from the worker's JSON events."""
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return {e["index"]: e["outcome"] for e in events if e.get("event") == "command"}


def shared_place(tmp_path: Path) -> Path:
    """A run directory shared with the image's user by group, as `launch --containers` makes it."""
    place = tmp_path / "run"
    place.mkdir()
    place.chmod(0o2770)  # the group is this user's own
    return place


# --- the images themselves --------------------------------------------------------------------


def test_each_image_is_tagged_pinned_and_free_of_build_files(engine: Engine) -> None:
    for image in (CPU, GPU, TOMO):
        ids = {
            engine.run("image", "inspect", "--format", "{{.Id}}", ref).stdout
            for ref in (image, image.replace(TAG, "local"))
        }
        assert len(ids) == 1, f"{image} and its `local` tag are one image"
        history = engine.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
        # The runtime stage copies the built environment whole: no layer adds a build file that a
        # later one deletes (35 MB of wheels did, when they were copied in and then removed).
        assert "/wheels" not in history and "rm -rf" not in history.replace("rm -rf /var/lib/apt/lists", "")
        leftovers = engine.run("run", "--rm", "--entrypoint", "ls", image, "-d", "/wheels", "/src")
        assert leftovers.returncode != 0 and not leftovers.stdout, leftovers.stdout
    constraints = dict(
        line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    probe = (
        "import sys, importlib.metadata as m; "
        "print(sys.version_info[:2], m.version('numpy'), m.version('boto3'))"
    )
    for image in (CPU, GPU):
        found = engine.run("run", "--rm", "--entrypoint", "python", image, "-c", probe).stdout.split(") ")
        assert found[0] + ")" == str(sys.version_info[:2]), f"{image}: the test venv's Python minor"
        assert found[1].split() == [constraints["numpy"], constraints["boto3"]], image
    assert metadata.version("numpy") == constraints["numpy"], "the tests run the pinned numpy"
    pyopencl = engine.run(
        "run", "--rm", "--entrypoint", "python", GPU, "-c", "import pyopencl; print(pyopencl.VERSION_TEXT)"
    )
    assert pyopencl.stdout.strip() == metadata.version("pyopencl") == constraints["pyopencl"]


# --- the worker contract in the CPU image -----------------------------------------------------


@pytest.fixture(params=["directory", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path | None]:
    """Where the run's state lives: a mounted directory, or a moto bucket reached over 127.0.0.1."""
    if request.param == "directory":
        folder = shared_place(tmp_path)
        return str(folder), folder
    return f"s3://{request.getfixturevalue('bucket')}/runs/r1", None


def aws_names() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_") and not k.startswith("AWS_BATCH_")}


def test_the_cpu_image_meets_the_worker_contract(
    engine: Engine, place: tuple[str, Path | None], tmp_path: Path
) -> None:
    uri, folder = place
    flag = f"{uri}/fixed" if folder else None
    broken = f"test -e {flag}" if flag else 'test "$AWS_BATCH_JOB_ATTEMPT" = 2'
    write_list(
        uri,
        [
            # The image's user; the attempt's scratch directory in the container's /tmp.
            f'test "$(id -u)" = {WORKER_UID} && test "$PWD" = "$OPSCTL_SCRATCH_DIR"'
            ' && test "${PWD%/*}" = /tmp',
            f"{broken} || {{ echo 'input missing' >&2; exit 3; }}",
            "true",
        ],
    )
    env = {**contract(uri), **aws_names()}
    first = batch_run(engine, CPU, env, folder)
    assert first.returncode == 1, first.stderr
    assert markers(uri, "done") == [0, 2], (
        "the image's user is 10001 in /tmp/opsctl-*, and it writes its markers"
    )
    assert markers(uri, "failed") == [1]
    if flag:
        Path(flag).touch()
    retry = batch_run(engine, CPU, {**env, "AWS_BATCH_JOB_ATTEMPT": "2"}, folder)
    assert retry.returncode == 0, retry.stderr
    assert outcomes(retry.stderr) == {0: "skipped", 1: "done", 2: "skipped"}, "a retry runs what is not done"
    refused = batch_run(engine, CPU, {**env, "ARRAY_SIZE": "0"}, folder)
    assert refused.returncode == 2 and "ARRAY_SIZE=0 is outside 1..10000" in refused.stderr


def test_the_cpu_image_stops_on_sigterm_with_143_and_leaves_the_command_unmarked(
    engine: Engine, tmp_path: Path
) -> None:
    folder = shared_place(tmp_path)
    started = folder / "started"
    write_list(str(folder), ["true", f"touch {started}; exec sleep 60"])
    env = contract(str(folder))
    name = f"opsctl-test-{uuid.uuid4().hex[:8]}"
    argv = batch_argv(engine, CPU, env, folder)
    argv[argv.index("--rm")] = f"--name={name}"
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the long command never started"
            time.sleep(0.1)
        stopped = engine.run("stop", "--time", "30", name)  # what TerminateJob does: SIGTERM, then SIGKILL
        assert stopped.returncode == 0, stopped.stderr
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "stopped by SIGTERM" in err
        assert markers(str(folder), "done") == [0] and markers(str(folder), "failed") == []
    finally:
        engine.run("rm", "--force", name)


def test_an_init_as_pid_1_reaps_what_a_command_leaves_behind(engine: Engine, tmp_path: Path) -> None:
    """`--init` here, `initProcessEnabled` in the job definitions: without it the worker is PID 1
    and an orphaned grandchild of a command stays a zombie for the container's life."""
    folder = shared_place(tmp_path)
    zombies = "grep -l ') Z ' /proc/[0-9]*/stat"
    write_list(str(folder), ["sh -c 'sleep 0.2 &'", f"sleep 1; if {zombies}; then exit 1; fi"])
    env = contract(str(folder))
    reaped = batch_run(engine, CPU, env, folder)
    assert reaped.returncode == 0, reaped.stderr
    assert markers(str(folder), "done") == [0, 1]


def test_make_images_refuses_in_one_line_what_it_cannot_build_from() -> None:
    empty = {**os.environ, "PATH": "/nonexistent"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "images" / "build.py")],
        env=empty,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (
        2,
        "make images: docker is not on PATH: install a Docker engine (Debian: apt-get install docker.io)\n",
    )


def test_a_base_that_cannot_be_pulled_is_one_line_naming_the_stand_in(engine: Engine) -> None:
    sys.path.insert(0, str(ROOT / "images"))
    try:
        import build  # images/build.py
    finally:
        sys.path.pop(0)
    with pytest.raises(build.Refused) as refused:
        build.pull(engine.docker, "opsctl-test-absent:0")
    line = str(refused.value)
    assert line.startswith("cannot pull opsctl-test-absent:0 (") and "\n" not in line
    assert line.endswith(
        "without a registry, `make images BASE=debootstrap` builds a stand-in from Debian's archive"
    )


# --- the GPU image ----------------------------------------------------------------------------


def test_the_gpu_image_names_the_missing_nvidia_driver_in_one_line(engine: Engine, tmp_path: Path) -> None:
    checked = engine.run("run", "--rm", GPU, "gpu-check", "--json")
    assert checked.returncode == 1
    report = json.loads(checked.stdout)
    first = report["problems"][0]
    assert "\n" not in first and "libnvidia-opencl.so.1, which is not there" in first
    assert "NVIDIA runtime" in first and "--gpus all" in first
    folder = shared_place(tmp_path)
    write_list(str(folder), [f"touch {folder}/ran"])
    env = contract(str(folder))
    preflight = batch_run(engine, GPU, env, folder)
    assert preflight.returncode == 1, (
        "the image's default command is run --preflight-gpu: 1 on a host without GPUs"
    )
    assert not (folder / "ran").exists() and markers(str(folder), "done") == []


# Test layers on the GPU image: PoCL (Debian's 3.1, whose LLVM 15 builds for this CPU; it brings
# the linker and C runtime files it builds kernels with) as the OpenCL device; then a host whose
# toolchain is broken, played by removing the linker.
TEST_LAYERS = (
    "apt-get update && apt-get install -y --no-install-recommends pocl-opencl-icd"
    " && rm -rf /var/lib/apt/lists/*",
    "rm /usr/bin/ld /usr/bin/ld.bfd /usr/bin/ld.gold",
)
LAYER = """FROM {base}
USER root
# hadolint ignore=DL3008
RUN {run}
USER 10001
"""


def test_the_gpu_image_runs_the_kernel_on_pocl_added_in_a_test_layer(engine: Engine, tmp_path: Path) -> None:
    base = GPU
    reports = []
    for step, run in enumerate(TEST_LAYERS):
        context = tmp_path / str(step)
        context.mkdir()
        (context / "Dockerfile").write_text(LAYER.format(base=base, run=run))
        base = f"opsctl-gpu-test{step}:{TAG}"
        built = engine.run("build", "--tag", base, str(context), timeout=900)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        checked = engine.run("run", "--rm", base, "gpu-check", "--json")
        reports.append((checked.returncode, json.loads(checked.stdout)))
    code, report = reports[0]
    assert report["kernel"] and report["kernel"]["ok"] and report["kernel"]["max_error"] < 1e-5, report
    assert [d["type"] for p in report["platforms"] for d in p["devices"]] == ["ALL | CPU"]
    # Only the driver library the NVIDIA runtime would mount is missing: the one problem left.
    assert code == 1 and len(report["problems"]) == 1 and "libnvidia-opencl.so.1" in report["problems"][0]
    # Without a linker PoCL aborts its process building the kernel: the check says so, exit 1.
    code, report = reports[1]
    assert code == 1 and any("ended the check with SIGABRT" in p for p in report["problems"]), report


# --- opsctl launch --containers ---------------------------------------------------------------


def launch_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OPSCTL_HOME": str(tmp_path / "home"), "OPSCTL_IMAGE_TAG": TAG}


def test_hello_runs_in_the_worker_images_once_its_gpu_step_is_run_without_gpus(
    engine: Engine, tmp_path: Path
) -> None:
    env = launch_env(tmp_path)
    spec = str(ROOT / "examples" / "hello.yaml")
    line = one_line(cli("launch", spec, "--containers", env=env), 2)
    assert line.startswith("opsctl: step reconstruct asks for GPUs (gpus:), but ")
    assert "could not select device driver" in line and line.endswith(
        "launch with --no-gpus to run such steps without GPUs"
    )
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())

    result = cli("launch", spec, "--containers", "--no-gpus", "--watch", "--json", env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    doc = json.loads(result.stdout)
    assert doc["state"] == "SUCCEEDED"
    assert [s["image"] for s in doc["steps"]] == [CPU, CPU, CPU, GPU], "each step in its queue's worker image"
    assert [s["commands"]["done"] for s in doc["steps"]] == [10, 64, 1, 4]
    # 4 commands over 8 children: child 0 has none and never starts; child 1 runs command 0.
    logs = tmp_path / "home" / "runs" / doc["run_id"] / "logs" / "reconstruct"
    assert sorted(p.name for p in logs.iterdir()) == ["1.log", "3.log", "5.log", "7.log"]
    log = (logs / "1.log").read_text()
    assert "reconstructing block 0" in log and "OpenCL" not in log, "--no-gpus: no GPU preflight either"


def test_the_tomography_pipeline_in_containers_gives_the_host_runs_outputs(
    engine: Engine, tmp_path: Path
) -> None:
    env = launch_env(tmp_path)
    spec = str(ROOT / "examples" / "tomo" / "pipeline.yaml")
    runs = {}
    # The host run back-projects with numpy, as the containers do with no GPU: the same
    # arithmetic on both sides, so every array must be the same to the byte.
    for mode, extra in (([], {"TOMO_BACKEND": "numpy"}), (["--containers", "--no-gpus"], {})):
        result = cli("launch", spec, *mode, "--watch", "--json", env={**env, **extra}, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        doc = json.loads(result.stdout)
        assert doc["state"] == "SUCCEEDED"
        runs[bool(mode)] = tmp_path / "home" / "runs" / doc["run_id"] / "tomo"
    host, boxed = (
        sorted(p.relative_to(runs[k]) for p in runs[k].rglob("*") if p.is_file() and STAGING not in p.parts)
        for k in (False, True)
    )
    assert host == boxed and len(host) > 4 * 32, "files of every slice from each of the four steps"
    for name in host:
        a, b = (runs[False] / name).read_bytes(), (runs[True] / name).read_bytes()
        if name.suffix == ".json":  # the reconstruction names its backend and why
            left, right = json.loads(a), json.loads(b)
            assert left.pop("backend", "numpy").startswith("numpy") and right.pop(
                "backend", "numpy"
            ).startswith("numpy")
            assert left == right, name
        else:
            assert a == b, f"{name} differs between the host run and the containers run"
    owners = {p.stat().st_uid for p in runs[True].rglob("*")}
    assert owners == {WORKER_UID}, "the image's own user wrote them"
    # ...and this user reads and removes all of it, through the run directory's group.
    pruned = cli("prune", "--older-than", "0", "--yes", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert not runs[True].exists() and not runs[False].exists()
