"""The run manifest: the pipeline as launched, and its shape when read back.

The manifest holds the steps in order with everything a backend needs to run them, so a run
can be watched, resumed or killed later without the original spec. Every read checks its
shape (MANIFEST), as a state file any process, or anyone with write access, may have changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from opsctl.limits import ENV_NAME, MAX_ARRAY_SIZE, MAX_GPUS, MAX_INTEGER, MAX_RETRIES, MIN_TIMEOUT, STEP_NAME
from opsctl.run.ids import RUN_ID
from opsctl.run.states import JobState
from opsctl_contract.errors import BadInput, brief
from opsctl_contract.markers import WIDTH
from opsctl_contract.shapes import Absent, Int, ListOf, MapOf, Maybe, OneOf, Text, problem

if TYPE_CHECKING:  # the supervisor imports this module; the YAML parser is not its
    from opsctl.records import BackendValue, ManifestStep, RunManifest
    from opsctl.spec_model import Pipeline


def manifest(
    pipeline: Pipeline, run_id: str, backend: BackendValue, list_uris: dict[str, str]
) -> RunManifest:
    """The record of a launched run; list files are referenced by URI, never inlined."""
    return {
        "run_id": run_id,
        "pipeline": pipeline.name,
        "backend": backend,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": str(pipeline.spec_path),
        "spec_text": pipeline.spec_path.read_text(encoding="utf-8"),  # the record outlives the file
        "steps": [step.record(list_uris[step.name]) for step in pipeline.steps],
    }


# What a manifest holds, as `manifest` and the backends write it (opsctl_contract/shapes.py),
# checked whenever one is read back: every value a backend indexes, calls or builds a path from.
_COUNT = Int(0, 10**WIDTH - 1)
_STATE = OneOf(tuple(s.value for s in JobState))
_COMMANDS = {"total": _COUNT, "done": _COUNT, "failed": _COUNT, "reexecuted": _COUNT}
_STEP = {
    "name": Text(STEP_NAME),
    "queue": OneOf(("cpu", "gpu")),
    "array_size": Int(1, MAX_ARRAY_SIZE),
    "commands": Int(1, 10**WIDTH - 1),
    "list_uri": str,
    "split": OneOf(("contiguous", "dynamic")),
    "depends_on": ListOf({"step": Text(STEP_NAME), "n_to_n": bool}),
    "retries": Int(0, MAX_RETRIES),
    "timeout": Int(MIN_TIMEOUT, MAX_INTEGER),
    "vcpus": Maybe(Int(1, MAX_INTEGER)),
    "memory": Maybe(Int(4, MAX_INTEGER)),
    "gpus": Maybe(Int(0, MAX_GPUS)),
    "env": MapOf(Text(re.compile(r"[^\x00]*")), keys=ENV_NAME),
    "image": Maybe(str),
    "job_definition": Maybe(str),  # AWS: the revision its jobs are submitted under
}
_FINAL = {  # AWS: a step's job as a poll saw it end (opsctl/backends/aws/status.py `record_final`)
    "job_id": str,
    "state": _STATE,
    "reason": Maybe(str),
    "counts": Maybe(MapOf(_COUNT)),
    "cancelled": Maybe(_COUNT),  # of counts' FAILED, children that never started
    "attempts": Maybe({"total": _COUNT, "retried": _COUNT}),  # states.Attempts
    "commands": _COMMANDS,
    "requests": Absent(MapOf(_COUNT)),  # not in a record before opsctl kept requests
    "started_at": Maybe(float),
    "stopped_at": Maybe(float),
    "log_stream": Maybe(str),
}
COMMON = {  # every backend's (records.py `_Manifest`)
    "run_id": Text(RUN_ID),
    "pipeline": str,
    "backend": OneOf(("local", "aws", "slurm")),
    "created": str,
    "steps": ListOf(_STEP),
    "spec": Maybe(str),
    "spec_text": Maybe(str),
}
# AWS's own keys, by their shape (records.py `AwsManifest`).
AWS = {
    "generation": Int(1, MAX_INTEGER),
    "jobs": MapOf(str, keys=STEP_NAME),  # each step's current job id
    "submitted_at": MapOf(float, keys=STEP_NAME),
    "replaced": ListOf(MapOf(str, keys=STEP_NAME)),  # the job ids each resume replaced
    "final": MapOf(_FINAL, keys=STEP_NAME),
    "state": _STATE,
    "finished": float,
    "launch_requests": MapOf(_COUNT),
    "infra": {"bucket": str, "region": str},
}
# Any backend's manifest (records.py `RunManifest`): the local keys, and AWS's if there.
MANIFEST = {
    **COMMON,
    "engine": Maybe(str),  # local, --containers: the container engine
    "no_gpus": Maybe(bool),  # local, --containers --no-gpus
    **{key: Maybe(shape) for key, shape in AWS.items()},
}


class BadState(BadInput):
    """A state file opsctl wrote that reads back as something else: exit 2, one line naming it."""


def read_manifest(
    data: bytes | str, run_id: str, where: str, shape: Mapping[str, object] = MANIFEST
) -> RunManifest:
    """The manifest of run `run_id` from the bytes of `where` (a path or a URI), checked for
    `shape` (MANIFEST, or a backend's own): a file that is not JSON, not a manifest, or another
    run's is `BadState`."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise BadState(f"run {run_id}: its manifest {where} is not JSON ({e})") from None
    found = problem(doc, shape) or _order_problem(doc["steps"])
    if found is None and doc["run_id"] != run_id:
        found = f"run_id: {brief(doc['run_id'])} is another run's"
    if found is not None:
        raise BadState(f"run {run_id}: its manifest {where} is not one opsctl wrote: {found}")
    return doc  # type: ignore[no-any-return]  # of `shape`, checked


def _order_problem(steps: list[ManifestStep]) -> str | None:
    """Steps as a launch records them: at least one, names unique, each after those it depends
    on (the supervisor and the submit order rely on it)."""
    if not steps:
        return "steps: none"
    seen: set[str] = set()
    for i, step in enumerate(steps):
        if step["name"] in seen:
            return f"steps[{i}].name: {step['name']!r} appears twice"
        if late := next((d["step"] for d in step["depends_on"] if d["step"] not in seen), None):
            return f"steps[{i}].depends_on: {late!r} is not a step before it"
        seen.add(step["name"])
    return None
