"""What a launch takes besides the spec: `launch --containers` and its options.

Apart from the registry (base.py) so that a backend can take them without importing the
registry that builds it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from opsctl_contract.errors import BadInput

IMAGE_TAG_ENV = "OPSCTL_IMAGE_TAG"
DEFAULT_TAG = "local"  # what `make images` tags its last build with, beside the commit
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # Docker's grammar of a tag


@dataclass(frozen=True)
class Containers:
    """`launch --containers` and its options: the worker images' tag, and whether `gpus:` steps
    get GPUs (`--no-gpus`: no)."""

    image_tag: str = DEFAULT_TAG
    gpus: bool = True

    @classmethod
    def chosen(cls, tag: str | None, *, gpus: bool) -> Containers:
        """From the options: `tag` (`--image-tag`), else OPSCTL_IMAGE_TAG, else `local`."""
        return cls(image_tag(tag), gpus)


def image_tag(option: str | None) -> str:
    """The worker images' tag: `--image-tag`, else OPSCTL_IMAGE_TAG, else `local`."""
    tag = option if option is not None else os.environ.get(IMAGE_TAG_ENV, DEFAULT_TAG)
    origin = "--image-tag" if option is not None else IMAGE_TAG_ENV
    if not TAG.fullmatch(tag):
        raise BadInput(
            f"{origin} {tag!r} is not an image tag (1 to 128 of A-Z a-z 0-9 _ . -, not first . or -)"
        )
    return tag
