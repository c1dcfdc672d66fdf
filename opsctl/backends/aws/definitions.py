"""Job definitions for steps that name their own image.

SubmitJob cannot override a container's image, so a step with `image:` runs under a job
definition of its own, *derived* from the stack's definition for its queue: everything the stack
set (retry rules, timeout, log configuration, job role, resource requirements, GPU) is read back
with DescribeJobDefinitions and kept, and only the image changes. The stack's definition stays
the one source of truth: change it with `make infra` and the next launch derives anew.

A derived definition is named by its content, `<stack definition>-<12 hex of its hash>`, so the
same image on the same stack revision always maps to one name: a second launch finds it ACTIVE
and registers nothing, and a changed image (or stack) registers one new definition. It is tagged
with the stack's tags plus `opsctl:derived-from` and `opsctl:image`, which is how
`opsctl infra definitions` finds them again.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opsctl.backends.aws.api import BatchAPI

DERIVED_FROM = "opsctl:derived-from"
IMAGE_TAG = "opsctl:image"
MAX_NAME = 128  # Batch's limit on a job definition name
# What a description carries that RegisterJobDefinition takes back unchanged (API reference,
# "DescribeJobDefinitions" response and "RegisterJobDefinition" request).
_KEPT = (
    "type",
    "parameters",
    "schedulingPriority",
    "retryStrategy",
    "propagateTags",
    "timeout",
    "containerProperties",
    "platformCapabilities",
)


def derive(stack: dict[str, Any], image: str) -> dict[str, Any]:
    """The RegisterJobDefinition request for `image` on the stack definition `stack` (as
    DescribeJobDefinitions returns it)."""
    body = {key: copy.deepcopy(stack[key]) for key in _KEPT if stack.get(key) is not None}
    body["containerProperties"]["image"] = image
    source = f"{stack['jobDefinitionName']}:{stack['revision']}"
    tags = {k: v for k, v in (stack.get("tags") or {}).items() if not k.startswith("aws:")}
    body["tags"] = {**tags, DERIVED_FROM: source, IMAGE_TAG: image}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    stem = stack["jobDefinitionName"][: MAX_NAME - len(digest) - 1]
    return {"jobDefinitionName": f"{stem}-{digest}", **body}


def same_content(found: dict[str, Any], request: dict[str, Any]) -> bool:
    """Whether a registered definition is what `request` would register."""
    return all(found.get(key) == request.get(key) for key in _KEPT)


@dataclass(frozen=True)
class Derived:
    """A derived job definition as `opsctl infra definitions` shows it."""

    arn: str
    name: str
    revision: int
    image: str
    source: str  # the stack definition it was derived from, name:revision
    jobs: int  # active jobs (SUBMITTED to RUNNING) on the stack's queues that use it


class Definitions:
    """Resolves (stack definition, image) to a derived definition's ARN, registering it only when
    no ACTIVE one with that content exists: one DescribeJobDefinitions, at most one
    RegisterJobDefinition, per distinct image."""

    def __init__(self, api: BatchAPI, stack: dict[str, dict[str, Any]]) -> None:
        self.api = api
        self.stack = stack  # the stack's definitions as described, by the reference infra gives
        self._resolved: dict[tuple[str, str], str] = {}

    def arn(self, stack_ref: str, image: str) -> str:
        key = (stack_ref, image)
        if key not in self._resolved:
            request = derive(self.stack[stack_ref], image)
            named = self.api.definitions_named(request["jobDefinitionName"])
            existing = [d for d in named if same_content(d, request)]
            if existing:
                arn = str(max(existing, key=lambda d: int(d["revision"]))["jobDefinitionArn"])
            else:
                arn = self.api.register_definition(request)
            self._resolved[key] = arn
        return self._resolved[key]


def derived(api: BatchAPI, stack_names: Iterable[str], queues: list[str]) -> list[Derived]:
    """The ACTIVE derived definitions of the stack (by tag and name), with how many active jobs on
    `queues` use each."""
    prefixes = tuple(f"{name}-" for name in stack_names)
    in_use = api.active_job_definitions(queues)
    found = []
    for d in api.active_definitions():
        tags = d.get("tags") or {}
        if DERIVED_FROM not in tags or not d["jobDefinitionName"].startswith(prefixes):
            continue
        arn = str(d["jobDefinitionArn"])
        found.append(
            Derived(
                arn=arn,
                name=str(d["jobDefinitionName"]),
                revision=int(d["revision"]),
                image=str(d.get("containerProperties", {}).get("image", tags.get(IMAGE_TAG, "?"))),
                source=str(tags[DERIVED_FROM]),
                jobs=in_use.get(arn, 0),
            )
        )
    return sorted(found, key=lambda d: (d.name, d.revision))
