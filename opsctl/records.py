"""The records that cross layers, typed: what a backend returns and the CLI prints as JSON.

The backends build these as plain dicts, and scripts read them from `--json`; a key renamed in
one backend and not the other, or a value that turns null, breaks a reader without a sound. The
TypedDicts here say what each record holds today, for both backends (a key only one backend
writes is `NotRequired`, with a comment naming that backend), and `json_schema` turns one into a
JSON Schema, so a test can hold each backend's real output to it (tests/test_records.py).

No `from __future__ import annotations` here: on Python 3.11 a TypedDict whose annotations are
strings takes every key as required (`NotRequired` is only seen on evaluated annotations).
"""

import inspect
import types
from collections.abc import Mapping
from typing import (
    Any,
    Literal,
    NotRequired,
    Required,
    TypedDict,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from opsctl.run.states import Attempts, JobState

__all__ = [
    "AttemptRecord",
    "Attempts",
    "AwsManifest",
    "BackendValue",
    "Commands",
    "Dependency",
    "FailedChild",
    "FinalRecord",
    "InfraRecord",
    "ListRow",
    "ManifestStep",
    "Queue",
    "Requests",
    "RunManifest",
    "RunRequests",
    "SlurmArray",
    "SlurmManifest",
    "Split",
    "State",
    "StatusDocument",
    "StatusStep",
    "commands_of",
    "json_schema",
    "requests_of",
    "state_of",
]

State = Literal["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"]
"""A job state by AWS Batch's name (opsctl.run.states.JobState), as every record writes one."""

BackendValue = Literal["local", "aws", "slurm"]  # opsctl.backends.BackendName
Queue = Literal["cpu", "gpu"]  # opsctl.pipeline.Queue
Split = Literal["contiguous", "dynamic"]  # opsctl.pipeline.Split


# --- the status document (`opsctl status RUN --json`, `watch --json`) -----------------------


class Commands(TypedDict):
    """A step's command figures: `total` in its list file; `done`, `failed` and `reexecuted`
    from its markers once it ended, from its children's ledgers while it runs
    (opsctl_contract.markers.step_figures). Written by both backends' `status`, and kept in an
    AWS step's final record."""

    total: int
    done: int
    failed: int
    reexecuted: int


class Requests(TypedDict):
    """The storage requests a step's workers made, by S3 price class, from their ledgers. Local
    writes both keys; AWS writes `{}` for a step never submitted, and a step's recorded
    `requests` once it ended."""

    put: NotRequired[int]
    get: NotRequired[int]


class RunRequests(Requests):
    """The run's storage requests: its steps' summed; on AWS with the launch's own requests
    (`launch_requests` of the manifest) and their cost at S3 Standard's request prices."""

    delete: NotRequired[int]  # a price class of opsctl_contract.storage; no launch counts one today
    dollars: NotRequired[float]  # AWS only


class FailedChild(TypedDict):
    """A child that ran and ended FAILED, in its latest attempt: what `watch` explains.
    Local only (the supervisor's `child` table); AWS asks Batch for them in `failures`."""

    index: int
    attempt: int
    exit_code: int | None  # None: killed, no exit code of its own
    reason: str | None


class StatusStep(TypedDict):
    """One step of the status document: the scheduler's view of its children, settled against
    its markers (opsctl.run.states.settle). Written by `step_status` of opsctl/run/status.py from
    each backend's view of the step."""

    name: str
    queue: Queue
    image: str | None  # the spec's `image:`, or None
    state: State
    reason: str | None
    array_size: int
    counts: dict[State, int]  # children by state; FAILED includes those that never started
    cancelled: int  # of counts' FAILED: children that never started (states.CANCELLED)
    attempts: Attempts | None  # AWS: None for a step whose final record predates attempts
    elapsed: float | None  # seconds since its first child started; None before that
    commands: Commands
    requests: Requests
    failed_children: NotRequired[list[FailedChild]]  # local only
    job_id: NotRequired[str | None]  # AWS only: its current job, None until submitted
    gone: NotRequired[bool]  # AWS only: Batch no longer returns its job (past retention)
    started_at: NotRequired[float | None]  # AWS only, while Batch knows the job: epoch ms
    stopped_at: NotRequired[float | None]  # AWS only, as started_at
    log_stream: NotRequired[str | None]  # AWS only, as started_at: the job's CloudWatch stream


class StatusDocument(TypedDict):
    """What `opsctl status RUN --json` prints, and `watch --json` (and `launch --watch --json`)
    at the end: the run's state and each step's. Written by `assemble` of opsctl/run/status.py
    (the run service's `status`) from each backend's view of the run; `watch`,
    `report` and the status table read it. Its prose is docs/cli.md's `status`."""

    run_id: str
    pipeline: str
    backend: BackendValue
    engine: NotRequired[str | None]  # local only: the container engine under --containers, else None
    state: State
    reason: str | None
    created: str  # ISO 8601, UTC, to the second
    elapsed: float | None  # local: seconds since created, until it ended; AWS: always None
    steps: list[StatusStep]
    warnings: list[str]  # AWS: steps RUNNABLE too long, records a read could not write; local: []
    requests: RunRequests


# --- attempts (`Backend.attempts`, for `opsctl report`) ---------------------------------------


class AttemptRecord(TypedDict):
    """One attempt of one child, as `attempts()` of either backend returns it: the local
    supervisor's `attempt` table (renamed), or Batch's `attempts[]` of each described child
    (opsctl/backends/aws/history.py; kept in the run's attempts.json once it ended). `opsctl
    report` and opsctl.costs read it."""

    step: str
    index: int
    generation: int  # local: the run's generation; AWS: the step's submission (1: launch)
    attempt: int  # from 1
    started: float | None  # epoch seconds
    finished: float | None  # epoch seconds; None while it runs
    exit_code: int | None
    reason: str | None
    # local: wait4's user + system time; AWS: always None; Slurm: sacct's TotalCPU of the
    # allocation the attempt ended, with accounting (None on attempts retried in the same one)
    cpu_seconds: float | None
    max_rss: NotRequired[int | None]  # Slurm with accounting only: bytes, the allocation's MaxRSS
    vcpus: NotRequired[float | None]  # AWS only: the job's vCPUs
    gpus: NotRequired[float]  # AWS only: the job's GPUs, 0.0 when it asked for none


# --- the run manifest (opsctl/run/manifest.py MANIFEST, _STEP, _FINAL) --------------------------------
#
# These follow the shape checker key for key: a `Maybe` there is `NotRequired[X | None]` here
# (missing or null), `Absent` is `NotRequired[X]` (missing, never null), anything else a
# required key. The checker allows keys it does not name (a newer opsctl's); the writers write
# none it does not name.


class Dependency(TypedDict):
    """One `depends_on` entry of a manifest step."""

    step: str
    n_to_n: bool


class ManifestStep(TypedDict):
    """A step as the manifest records it (opsctl.pipeline.Step.record, plus AWS's job
    definition): all a backend needs to run it, watch it or resume it without the spec."""

    name: str
    queue: Queue
    array_size: int
    commands: int
    list_uri: str
    split: Split
    depends_on: list[Dependency]
    retries: int
    timeout: int
    vcpus: NotRequired[int | None]
    memory: NotRequired[int | None]
    gpus: NotRequired[int | None]
    env: dict[str, str]
    image: NotRequired[str | None]
    job_definition: NotRequired[str | None]  # AWS: the revision its jobs are submitted under


class FinalRecord(TypedDict):
    """AWS: a step's job as a poll first saw it end (`record_final` of
    opsctl/backends/aws/status.py), so the run reads the same once Batch forgets the job."""

    job_id: str
    state: State
    reason: NotRequired[str | None]
    counts: NotRequired[dict[State, int] | None]
    cancelled: NotRequired[int | None]
    attempts: NotRequired[Attempts | None]
    commands: Commands
    requests: NotRequired[Requests]  # not in a record before opsctl kept requests
    started_at: NotRequired[float | None]  # epoch ms, as Batch gives it
    stopped_at: NotRequired[float | None]
    log_stream: NotRequired[str | None]


class InfraRecord(TypedDict):
    """The stack an AWS run was launched on, as its manifest keeps it."""

    bucket: str
    region: str


class _Manifest(TypedDict):
    """What every run's manifest holds (opsctl.run.manifest.manifest writes it)."""

    run_id: str
    pipeline: str
    backend: BackendValue
    created: str
    steps: list[ManifestStep]
    spec: NotRequired[str | None]  # the spec's path at launch
    spec_text: NotRequired[str | None]  # the spec itself: the record outlives the file


class RunManifest(_Manifest):
    """The record of a launched run (opsctl.run.manifest.manifest), in the run directory locally and at
    runs/<run_id>/manifest.json on AWS; read back through opsctl.run.manifest.read_manifest, which
    checks it has this shape (`MANIFEST`) on any backend. AWS reads its own as `AwsManifest`."""

    engine: NotRequired[str | None]  # local, --containers: the container engine
    no_gpus: NotRequired[bool | None]  # local, --containers --no-gpus
    generation: NotRequired[int | None]  # AWS; a local run keeps it in run.db
    jobs: NotRequired[dict[str, str] | None]  # AWS: each step's current job id
    submitted_at: NotRequired[dict[str, float] | None]  # AWS: when each was submitted
    replaced: NotRequired[list[dict[str, str]] | None]  # AWS: the job ids each resume replaced
    final: NotRequired[dict[str, FinalRecord] | None]  # AWS
    state: NotRequired[State | None]  # AWS: once every step ended
    finished: NotRequired[float | None]  # AWS: when the last step's end was recorded
    launch_requests: NotRequired[dict[str, int] | None]  # AWS
    infra: NotRequired[InfraRecord | None]  # AWS: the bucket and region it was launched in


class AwsManifest(_Manifest):
    """An AWS run's manifest as opsctl/backends/aws/runs.py reads it (`AWS_MANIFEST`): the
    keys an AWS launch always writes are required, and none of the optional ones is null, so
    that a manifest saying `"jobs": null` is refused when read, not a TypeError when polled."""

    jobs: dict[str, str]
    generation: NotRequired[int]
    submitted_at: NotRequired[dict[str, float]]
    replaced: NotRequired[list[dict[str, str]]]
    final: NotRequired[dict[str, FinalRecord]]
    state: NotRequired[State]
    finished: NotRequired[float]
    launch_requests: NotRequired[dict[str, int]]
    infra: NotRequired[InfraRecord]


class SlurmArray(TypedDict):
    """One `sbatch --array` of a step on Slurm: a step above the cluster's MaxArraySize is
    submitted as several, and a resume submits only the children it runs again."""

    job: str  # its job id
    offset: int  # a task's child index is its task id plus this
    # The child indices it runs, as sbatch's --array writes ids ("0-9999", "3,7,10-12"): a
    # manifest of 10,000 children stays short, and is checked for shape in one match.
    children: str


class SlurmManifest(_Manifest):
    """A Slurm run's manifest, in its directory (opsctl/backends/slurm/runs.py `SLURM_MANIFEST`)."""

    generation: int
    arrays: dict[str, list[SlurmArray]]  # each submitted step's arrays, in its newest generation
    earlier: list[str]  # the job ids of arrays a resume replaced (`kill` cancels them too)
    submitted_at: dict[str, float]
    killed: NotRequired[float]  # when `opsctl kill` stopped it
    # The cluster keeps accounting (slurmdbd), as its configuration said at launch or the last
    # resume: polls then read `sacct` in place of `squeue`. Missing: no accounting.
    accounting: NotRequired[bool]


# --- `opsctl list --json` ---------------------------------------------------------------------


class ListRow(TypedDict):
    """One run of `opsctl list --json`, from the local run directories (`list_runs` of the
    local backend) or the bucket's manifests (`list_runs` of opsctl/backends/aws/backend.py). A
    run that cannot be read has `pipeline` and `state` None and a `problem`."""

    run_id: str
    pipeline: str | None
    backend: BackendValue
    state: State | None  # AWS: None until a poll saw every step end (then `status` has it)
    created: str  # ISO 8601; a local unreadable run: its directory's time; an AWS one: ""
    problem: NotRequired[str]


# --- JSON Schema ------------------------------------------------------------------------------

_SCALARS: dict[object, str] = {
    str: "string",
    int: "integer",
    float: "number",  # JSON has one number type: an integer is a float's value too
    bool: "boolean",
    type(None): "null",
}


def json_schema(tp: object) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) for values of `tp`, a TypedDict of this module (or any type
    built of TypedDicts, list, dict, Literal, unions and str, int, float, bool, None).

    A TypedDict's object admits no key the type does not name (`additionalProperties: false`),
    so a key one backend starts writing fails its test until the type says it."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_schema(tp)}


def _schema(tp: object) -> dict[str, Any]:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Required, NotRequired):  # a TypedDict key's marker: its requiredness is read apart
        return _schema(args[0])
    if is_typeddict(tp):
        typed = cast(Any, tp)  # a TypedDict class: its keys and hints are read, not typed
        hints = get_type_hints(typed, include_extras=True)
        return {
            "type": "object",
            "title": typed.__name__,
            "description": inspect.cleandoc(typed.__doc__ or ""),
            "properties": {key: _schema(hint) for key, hint in hints.items()},
            "required": sorted(typed.__required_keys__),
            "additionalProperties": False,
        }
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema(arg) for arg in args]}
    if origin is list:
        return {"type": "array", "items": _schema(args[0])}
    if origin is dict:
        keys = {} if args[0] is str else {"propertyNames": _schema(args[0])}
        return {"type": "object", **keys, "additionalProperties": _schema(args[1])}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    raise TypeError(f"json_schema: no JSON Schema for {tp!r}")


# --- from the plain counts of opsctl_contract (which cannot import this module) ---------------


_STATES: dict[JobState, State] = {
    JobState.SUBMITTED: "SUBMITTED",
    JobState.PENDING: "PENDING",
    JobState.RUNNABLE: "RUNNABLE",
    JobState.STARTING: "STARTING",
    JobState.RUNNING: "RUNNING",
    JobState.SUCCEEDED: "SUCCEEDED",
    JobState.FAILED: "FAILED",
}


def state_of(state: JobState) -> State:
    """A job state as records write it: its name (JSON has no enums)."""
    return _STATES[state]


def commands_of(figures: Mapping[str, int]) -> Commands:
    """A step's command figures (opsctl_contract.markers.step_figures) as `Commands`."""
    return {
        "total": figures["total"],
        "done": figures["done"],
        "failed": figures["failed"],
        "reexecuted": figures["reexecuted"],
    }


def requests_of(counts: Mapping[str, int]) -> RunRequests:
    """Storage requests by S3 price class as counted (markers' ledgers, a store's counter), the
    classes present and only those: a step's `Requests`, or a run's before its `dollars`."""
    found: RunRequests = {}
    if "put" in counts:
        found["put"] = counts["put"]
    if "get" in counts:
        found["get"] = counts["get"]
    if "delete" in counts:
        found["delete"] = counts["delete"]
    return found
