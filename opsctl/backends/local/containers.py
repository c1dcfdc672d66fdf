"""`opsctl launch --containers`: a local child of a step with its own `image:` runs in that image,
through docker or podman, as AWS Batch would run it.

The container gets the run directory mounted at the same path (markers, lists and logs stay
where the host's `opsctl` reads them), runs as the calling user (files stay the user's), and
receives the worker environment by name only (`-e NAME`: the values travel in the engine
client's environment, never on a command line). Its command is `run`, after the image's
ENTRYPOINT, which must be `opsctl-worker` (docs/worker.md, "Your own image"): the same contract
as on AWS, where Batch cannot override an ENTRYPOINT either. Steps without an image run on the
host as without `--containers`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from opsctl_contract.errors import BadInput

ENGINES = ("docker", "podman")  # the first on PATH is used


def find_engine() -> str:
    """The container engine's path: docker, else podman."""
    for name in ENGINES:
        found = shutil.which(name)
        if found:
            return found
    raise BadInput("--containers needs docker or podman on PATH; neither was found")


def check_images(engine: str, images: Iterable[str]) -> None:
    """Every image present for `engine` (`image inspect`): a missing one is bad input, before
    anything runs; pulling is left to the user, who knows which registry credentials apply."""
    for image in sorted(set(images)):
        try:
            found = subprocess.run(
                [engine, "image", "inspect", image], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BadInput(f"{engine} image inspect {image}: {e}") from None
        if found.returncode:
            why = (found.stderr.strip().splitlines() or ["no reason given"])[-1]
            raise BadInput(
                f"image {image} is not available to {engine} ({why}): pull or build it, then launch again"
            )


def name(run_id: str, step: str, index: int, attempt: int) -> str:
    return f"opsctl-{run_id}-{step}-{index}-{attempt}"


def command(
    engine: str, image: str, container: str, run_dir: Path, env_names: Iterable[str], *, gpus: bool
) -> list[str]:
    """The engine command line that runs one child attempt in `image`."""
    argv = [
        engine,
        "run",
        "--rm",
        "--init",  # signals reach the worker, and its commands' zombies are reaped
        "--name",
        container,
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "--volume",
        f"{run_dir}:{run_dir}",
    ]
    if gpus:
        is_podman = Path(engine).name == "podman"
        argv += ["--device", "nvidia.com/gpu=all"] if is_podman else ["--gpus", "all"]
    for env_name in sorted(env_names):
        argv += ["--env", env_name]
    return [*argv, image, "run"]


def remove(engine: str, container: str) -> None:
    """Remove a child's container if it is still there (its engine client was killed, say):
    best effort, as the run goes on either way."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run([engine, "rm", "--force", container], capture_output=True, timeout=30)
