"""`make images`: the CPU and GPU worker images and the example's own image, built here.

Each image is tagged with the commit it is built from (`<commit>`, or `<commit>-dirty` when the
working tree has changes) and with `local`, the tag `opsctl launch --containers` runs by default.

The images start FROM python:3.11.11-slim-bookworm. An engine that has it uses it; otherwise it is
pulled. Where no registry is reachable, `--base debootstrap` (`make images BASE=debootstrap`, the
default with CI=true) builds a stand-in from Debian's archive alone: a minimal bookworm with
Debian's python3 (3.11), linked and configured as the official image is, imported under the
official name. Its root file system is cached as a tarball (`--cache`), so only the first run
bootstraps. What the stand-in leaves unproved is in docs/worker.md, "Building the images here".

Standard library only: it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "python:3.11.11-slim-bookworm"
# (image name, Dockerfile, build arguments): the example is built on the CPU image just built.
IMAGES = (
    ("opsctl-cpu", "images/cpu/Dockerfile", {}),
    ("opsctl-gpu", "images/gpu/Dockerfile", {}),
    ("opsctl-tomo", "examples/tomo/Dockerfile", {"BASE": "opsctl-cpu:{tag}"}),
)
LOCAL_TAG = "local"

# The stand-in's recipe: what the official image has that a minimal bookworm lacks. A change
# here (or in the host's extra CA certificates) names a new cache entry.
RECIPE = 1  # raise when `configure` changes what it makes
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "netbase", "tzdata")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_CAS = Path("/usr/local/share/ca-certificates")  # a site's proxy CA: pip in a build needs it
IMPORT_CHANGES = (
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)


class Refused(Exception):
    """One line for the user, exit 2: a missing tool, a base that cannot be had."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make images", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base",
        choices=("pull", "debootstrap"),
        default=os.environ.get("BASE") or ("debootstrap" if os.environ.get("CI") == "true" else "pull"),
        help="where a missing base image comes from (default: pull; debootstrap with CI=true)",
    )
    parser.add_argument("--tag", help="the images' tag (default: the commit, -dirty if changed)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=cache_dir(),
        help="where stand-in root file systems are kept (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        docker = engine()
        # One build at a time per cache (CI starts one early; the tests' own waits for it, then
        # finds every layer built). flock(2) is released however this process ends.
        args.cache.mkdir(parents=True, exist_ok=True)
        lock = os.open(args.cache / "build.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not present(docker, BASE_IMAGE):
            if args.base == "pull":
                pull(docker, BASE_IMAGE)
            else:
                import_stand_in(docker, stand_in(args.cache))
        tag = args.tag or commit_tag()
        for name, dockerfile, build_args in IMAGES:
            build(docker, name, dockerfile, {k: v.format(tag=tag) for k, v in build_args.items()}, tag)
    except Refused as e:
        print(f"make images: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(
            f"make images: `{' '.join(map(str, e.cmd[:3]))} ...` failed (exit {e.returncode})",
            file=sys.stderr,
        )
        return 1
    for name, _, _ in IMAGES:
        print(f"built {name}:{tag} (also {name}:{LOCAL_TAG})")
    return 0


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "opsctl" / "images"


def engine() -> str:
    docker = shutil.which("docker")
    if docker is None:
        raise Refused("docker is not on PATH: install a Docker engine (Debian: apt-get install docker.io)")
    if subprocess.run([docker, "info"], capture_output=True).returncode:
        raise Refused("no Docker engine answers (`docker info` failed): start it (`dockerd &`) and run again")
    return docker


def present(docker: str, image: str) -> bool:
    return subprocess.run([docker, "image", "inspect", image], capture_output=True).returncode == 0


def pull(docker: str, image: str) -> None:
    print(f"pulling {image}")
    pulled = subprocess.run([docker, "pull", image], capture_output=True, text=True)
    if pulled.returncode:
        why = (pulled.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise Refused(
            f"cannot pull {image} ({why}); without a registry, `make images BASE=debootstrap` "
            "builds a stand-in from Debian's archive"
        )


def commit_tag() -> str:
    """The commit the images are built from; `-dirty` when the working tree differs from it."""
    git = shutil.which("git")
    head = git and subprocess.run(
        [git, "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    if not head or head.returncode:
        raise Refused(f"{ROOT} is not a git checkout with a commit: pass --tag TAG")
    status = subprocess.run(
        [git, "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def build(docker: str, name: str, dockerfile: str, build_args: dict[str, str], tag: str) -> None:
    argv = [docker, "build", "--file", str(ROOT / dockerfile), "--tag", f"{name}:{tag}"]
    argv += ["--tag", f"{name}:{LOCAL_TAG}"]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    print(f"building {name}:{tag} from {dockerfile}", flush=True)
    subprocess.run([*argv, str(ROOT)], check=True)


# --- the stand-in base, from Debian's archive ------------------------------------------------


def mirror() -> str:
    """The host's Debian mirror (its apt sources), else Debian's own."""
    if HOST_SOURCES.is_file():
        for line in HOST_SOURCES.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split(None, 1)[1].strip()
    return DEFAULT_MIRROR


def host_cas() -> list[Path]:
    return sorted(HOST_CAS.glob("*.crt")) if HOST_CAS.is_dir() else []


def recipe_key() -> str:
    digest = hashlib.sha256(repr((RECIPE, SUITE, PACKAGES, IMPORT_CHANGES, mirror())).encode())
    for ca in host_cas():
        digest.update(ca.read_bytes())
    return digest.hexdigest()[:12]


def stand_in(cache: Path) -> Path:
    """The stand-in's root file system as a tarball: from the cache, or bootstrapped into it."""
    tarball = cache / f"python-3.11-slim-bookworm-{recipe_key()}.tar"
    if tarball.is_file():
        print(f"using the cached stand-in {tarball}")
        return tarball
    if os.geteuid() != 0:
        raise Refused(
            "BASE=debootstrap needs root (debootstrap and chroot): run it as root, or pull the base"
        )
    for tool in ("debootstrap", "chroot", "mount", "tar"):
        if shutil.which(tool) is None:
            raise Refused(f"BASE=debootstrap needs {tool} on PATH (Debian: apt-get install debootstrap)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=cache) as scratch:
        rootfs = Path(scratch) / "rootfs"
        print(f"bootstrapping Debian {SUITE} from {mirror()} (a few minutes, once)", flush=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror()],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        configure(rootfs)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    return tarball


def configure(rootfs: Path) -> None:
    """Make a minimal bookworm what the official image is: updates and security suites, the
    site's CAs, Debian's python3 as /usr/local/bin/python, and no EXTERNALLY-MANAGED marker
    (the official image has none; PIP_BREAK_SYSTEM_PACKAGES would leak into every command)."""
    sources = rootfs / "etc" / "apt" / "sources.list.d" / "debian.sources"
    sources.write_text(
        f"Types: deb\nURIs: {mirror()}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {SECURITY_MIRROR}\nSuites: {SUITE}-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    (rootfs / "etc" / "apt" / "sources.list").unlink(missing_ok=True)
    cas = rootfs / "usr" / "local" / "share" / "ca-certificates"
    cas.mkdir(parents=True, exist_ok=True)
    for ca in host_cas():
        shutil.copy2(ca, cas / ca.name)
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
    try:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C"}
        chroot = ["chroot", str(rootfs)]
        subprocess.run([*chroot, "apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(
            [*chroot, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run([*chroot, "update-ca-certificates"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run([*chroot, "apt-get", "clean"], check=True, env=env)
    finally:
        subprocess.run(["umount", str(rootfs / "proc")], check=False)
    shutil.rmtree(rootfs / "var" / "lib" / "apt" / "lists", ignore_errors=True)
    (rootfs / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True)
    for marker in (rootfs / "usr" / "lib").glob("python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    bin_dir = rootfs / "usr" / "local" / "bin"
    for link, target in (("python", "python3"), ("python3", "python3"), ("pip", "pip3"), ("pip3", "pip3")):
        (bin_dir / link).unlink(missing_ok=True)
        (bin_dir / link).symlink_to(f"/usr/bin/{target}")


def import_stand_in(docker: str, tarball: Path) -> None:
    argv = [docker, "import"]
    for change in IMPORT_CHANGES:
        argv += ["--change", change]
    print(f"importing {tarball.name} as {BASE_IMAGE} (a stand-in from Debian's archive)", flush=True)
    subprocess.run([*argv, str(tarball), BASE_IMAGE], check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    sys.exit(main())
