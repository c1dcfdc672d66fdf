"""`opsctl infra push` (`make push`): the worker images built here, pushed to the stack's ECR, and
the stack applied with their tag, for a first AWS run without GitHub Actions.

The repositories are IMMUTABLE, so a tag names one build for good: the tag is the git commit of
a clean working tree (or `--tag`). The ECR password goes to `docker login` on stdin, never on a
command line or in a log.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from opsctl.infra import InfraOutputs
from opsctl_contract.errors import BadInput, OpsctlError

IMAGES = ("cpu", "gpu")  # images/<name>/Dockerfile -> the <name>_image repository


def commit_tag(repo: Path) -> str:
    """The current commit, short, if the working tree is clean: what the images are built from."""
    git = shutil.which("git")
    if git is None:
        raise BadInput("git not found on PATH: pass --tag TAG to name the images")
    head = subprocess.run([git, "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode:
        raise BadInput(f"{repo}: not a git checkout with a commit; pass --tag TAG to name the images")
    dirty = subprocess.run(
        [git, "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
    )
    if dirty.stdout.strip():
        raise BadInput(
            f"{repo}: the working tree has uncommitted changes, so the commit would not name what is built; "
            "commit them, or pass --tag TAG (ECR tags are immutable: a tag names one build)"
        )
    return head.stdout.strip()


def repository(image: str) -> str:
    """`<registry>/<repo>` of an image reference, without its tag or digest."""
    name = image.split("@", 1)[0]
    registry, _, path = name.rpartition("/")
    return f"{registry}/{path.split(':', 1)[0]}" if registry else name.split(":", 1)[0]


def ecr_login(region: str) -> tuple[str, str]:
    """(registry URL, password) from ECR's GetAuthorizationToken; the user is always AWS."""
    from opsctl_contract.awsclient import aws_call, client

    ecr = client("ecr", region)
    with aws_call("ECR", "an authorization token", region):
        data = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    if user != "AWS":
        raise OpsctlError(f"ECR gave a token for user {user!r}, not AWS")
    return str(data["proxyEndpoint"]), password


def push(
    infra: InfraOutputs,
    tag: str,
    root: Path,
    *,
    say: Callable[[str], None] = print,
) -> dict[str, str]:
    """Build and push both worker images with `tag`; their references by name."""
    docker = shutil.which("docker")
    if docker is None:
        raise BadInput("docker not found on PATH: `make push` builds the images with a local Docker engine")
    if subprocess.run([docker, "info"], capture_output=True).returncode:
        raise BadInput(
            "no Docker engine answers (`docker info` failed): start Docker and run `make push` again"
        )
    registry, password = ecr_login(infra.region)
    _run([docker, "login", "--username", "AWS", "--password-stdin", registry], stdin=password)
    pushed = {}
    for name in IMAGES:
        image = f"{repository(infra.image(name))}:{tag}"
        say(f"building and pushing {image}")
        _run([docker, "build", "-f", str(root / "images" / name / "Dockerfile"), "-t", image, str(root)])
        _run([docker, "push", image])
        pushed[name] = image
    return pushed


def _run(argv: list[str], stdin: str | None = None) -> None:
    """A docker command, its output streamed; a failure is one line naming it (the password
    never appears: it goes through stdin)."""
    result = subprocess.run(argv, input=stdin, text=True)
    if result.returncode:
        raise OpsctlError(
            f"`{' '.join(argv[:3])} ...` failed (exit {result.returncode}); its output above says why"
        )
