"""`opsctl launch --containers`: every local child runs in a container, as AWS Batch would run it.

A step with its own `image:` runs in that image; any other step in the worker image of its queue
(`opsctl-cpu:<tag>` or `opsctl-gpu:<tag>`, built by `make images`; the tag is `local` unless
`--image-tag` or OPSCTL_IMAGE_TAG names another), as on AWS it runs in the stack's images.

Each container runs as the image's own user (uid 10001 in ours), with the run directory mounted
at the same path (markers, lists and logs stay where the host's `opsctl` reads them) and the
directory's group added, which is how that user may write there (state.share_with_containers).
It receives the worker environment by name only (`-e NAME`: the values travel in the engine
client's environment, never on a command line). Its command is `run`, after the image's
ENTRYPOINT, which must be the worker (docs/worker.md, "Your own image"); a gpu-queue step's
is `run --preflight-gpu`, as on AWS. `--init` reaps what commands leave behind, as
`initProcessEnabled` does in the job definitions.

A step with `gpus:` needs an engine that gives containers GPUs (the NVIDIA Container Toolkit);
without one it is refused before launch, and `--no-gpus` runs such steps without GPUs (and without
the GPU preflight), for a trial on a machine that has none.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from opsctl_contract.errors import BadInput

ENGINES = ("docker", "podman")  # the first on PATH is used
WORKER_IMAGES = {"cpu": "opsctl-cpu", "gpu": "opsctl-gpu"}  # by queue, as the stack's images


def find_engine() -> str:
    """The container engine's path: docker, else podman."""
    for name in ENGINES:
        found = shutil.which(name)
        if found:
            return found
    raise BadInput("--containers needs docker or podman on PATH; neither was found")


def worker_image(queue: str, tag: str) -> str:
    return f"{WORKER_IMAGES[queue]}:{tag}"


def check_images(engine: str, images: Iterable[str]) -> None:
    """Every image present for `engine` (`image inspect`): a missing one is bad input, before
    anything runs; pulling is left to the user, who knows which registry credentials apply."""
    for image in sorted(set(images)):
        found = _engine(engine, "image", "inspect", image)
        if found.returncode:
            why = (found.stderr.strip().splitlines() or ["no reason given"])[-1]
            hint = (
                "`make images` builds it"
                if image.startswith(tuple(WORKER_IMAGES.values()))
                else "pull or build it"
            )
            raise BadInput(f"image {image} is not available to {engine} ({why}): {hint}, then launch again")


def check_gpus(engine: str, gpu_steps: Mapping[str, str]) -> None:
    """That `engine` can give a container GPUs, by starting one the way a step's child starts
    (`gpu_steps`: step name -> image); refused in one line naming the step otherwise."""
    if not gpu_steps:
        return
    step, image = sorted(gpu_steps.items())[0]
    probe = _engine(engine, "run", "--rm", *gpu_flags(engine), "--entrypoint", "true", image, timeout=120)
    if probe.returncode:
        # The engine's first line says why; docker then adds "Run 'docker run --help' ...".
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[0]
        why = why.removeprefix(f"{Path(engine).name}: ").removeprefix("Error response from daemon: ")
        raise BadInput(
            f"step {step} asks for GPUs (gpus:), but {engine} cannot give a container any ({why}): "
            "install the NVIDIA Container Toolkit, or launch with --no-gpus to run such steps without GPUs"
        )


def gpu_flags(engine: str) -> list[str]:
    return ["--device", "nvidia.com/gpu=all"] if Path(engine).name == "podman" else ["--gpus", "all"]


def name(run_id: str, step: str, index: int, attempt: int) -> str:
    return f"opsctl-{run_id}-{step}-{index}-{attempt}"


def command(
    engine: str,
    image: str,
    container: str,
    run_dir: Path,
    env_names: Iterable[str],
    *,
    gpus: bool,
    preflight_gpu: bool,
) -> list[str]:
    """The engine command line that runs one child attempt in `image`."""
    argv = [
        engine,
        "run",
        "--rm",
        "--init",  # signals reach the worker, and its commands' zombies are reaped
        "--name",
        container,
        "--group-add",
        str(run_dir.stat().st_gid),  # the image's user writes the run directory by its group
        "--volume",
        f"{run_dir}:{run_dir}",
    ]
    if gpus:
        argv += gpu_flags(engine)
    for env_name in sorted(env_names):
        argv += ["--env", env_name]
    return [*argv, image, "run", *(["--preflight-gpu"] if preflight_gpu else [])]


def remove(engine: str, container: str) -> None:
    """Remove a child's container if it is still there (its engine client was killed, say):
    best effort, as the run goes on either way."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run([engine, "rm", "--force", container], capture_output=True, timeout=30)


def _engine(engine: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([engine, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BadInput(f"{engine} {' '.join(args[:2])}: {e}") from None
