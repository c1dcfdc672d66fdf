"""tools/system.sh, which `make test`, `make demo` and `.ci/run` (through `make system`) use to see
to what the machine must have: it passes where everything is there, and where something is
missing and it cannot install it (no apt-get on its PATH, as for a user without root) it names
the Debian packages in one line and exits 2, without installing anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "tools" / "system.sh"


def system(
    *needs: str, path: str, python: str = sys.executable, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), python, *needs],
        env={**os.environ, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def bare_path(tmp_path: Path) -> str:
    """A PATH holding `id` alone: no chromium, docker, debootstrap, npm, Slurm or apt-get."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").symlink_to(shutil.which("id") or "/usr/bin/id")
    return str(bin_dir)


def test_what_is_missing_is_named_in_one_line(tmp_path: Path) -> None:
    vendors = tmp_path / "vendors"  # no such directory: the ICD loader finds no driver at all
    result = system(
        "opencl",
        "chromium",
        "docker",
        "npm",
        "jq",
        "slurm",
        path=bare_path(tmp_path),
        OCL_ICD_VENDORS=str(vendors),
    )
    assert result.returncode == 2, result.stderr
    packages = (
        "pocl-opencl-icd chromium docker.io debootstrap npm jq"
        " slurm-wlm munge slurmdbd slurm-wlm-mysql-plugin mariadb-server"
    )
    assert result.stderr == (
        f"make: this machine lacks Debian/Ubuntu packages {packages}: sudo apt-get install -y {packages}\n"
    )


def test_a_driver_present_that_cannot_build_is_said(tmp_path: Path) -> None:
    """Debian's PoCL registered, and still no device builds the kernel (played by an interpreter
    whose gpu-check fails): there is nothing to install, so it says so and exits 2."""
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    (vendors / "pocl.icd").write_text("libpocl.so.2\n")
    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    result = system("opencl", path=bare_path(tmp_path), python=str(failing), OCL_ICD_VENDORS=str(vendors))
    assert result.returncode == 2
    assert result.stderr == (
        "make: no OpenCL device here builds a kernel, even with Debian's pocl-opencl-icd: "
        f"{failing} -m worker gpu-check says why\n"
    )


def test_this_machine_has_what_the_tests_need() -> None:
    """`make test` ran this before the tests: here it finds everything, and installs nothing."""
    result = system("opencl", "chromium", "docker", "npm", "jq", "slurm", path=os.environ["PATH"])
    assert (result.returncode, result.stderr) == (0, "")


def test_an_unknown_need_is_refused(tmp_path: Path) -> None:
    result = system("opencl", "gpu", path=bare_path(tmp_path))
    assert result.returncode == 2
    assert result.stderr == "tools/system.sh: unknown need 'gpu' (opencl, chromium, docker, npm, jq, slurm)\n"


def test_a_docker_client_without_an_engine_is_not_an_engine(tmp_path: Path) -> None:
    """Some machines ship the `docker` CLI alone (a static client in /usr/local/bin, no
    dockerd): the engine is still missing, and docker.io is named. Played by a `docker` whose
    `info` fails as a client with no daemon does."""
    path = bare_path(tmp_path)
    client = Path(path) / "docker"
    client.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    client.chmod(0o755)
    (Path(path) / "debootstrap").symlink_to("/bin/true")
    result = system("docker", path=path)
    assert result.returncode == 2
    assert result.stderr == (
        "make: this machine lacks Debian/Ubuntu packages docker.io: sudo apt-get install -y docker.io\n"
    )
