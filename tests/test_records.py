"""opsctl/records.py held to what the backends really print: `status --json` and `list --json` of
a local run and of an AWS run (moto, with Batch played by tests/batch_player.py), and their
attempts, each validated against the JSON Schema `json_schema` makes of its TypedDict.

Why: the records cross layers as plain dicts, and scripts read them from `--json`. A key one
backend renames or starts writing, or a value that turns null, would go unnoticed until a
reader breaks; here it fails until the type (and so the documented shape) says it. The schema
admits no key its type does not name, so the unit cases below check that it can fail at all: an
unknown key, a missing key and a wrong type are each refused, on the real documents too.

No `from __future__ import annotations`: the TypedDicts below use `NotRequired`, which Python
3.11 does not see in string annotations (see opsctl/records.py).
"""

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, get_args, get_type_hints

import jsonschema
import pytest

from opsctl.backends import BackendName
from opsctl.backends.aws.runs import AWS_MANIFEST
from opsctl.pipeline import Queue as QueueEnum
from opsctl.pipeline import Split as SplitEnum
from opsctl.records import (
    AttemptRecord,
    Attempts,
    AwsManifest,
    BackendValue,
    Commands,
    Dependency,
    FinalRecord,
    ListRow,
    ManifestStep,
    Queue,
    Requests,
    RunManifest,
    Split,
    State,
    StatusDocument,
    json_schema,
)
from opsctl.run import manifest as runs
from opsctl.run.states import JobState
from opsctl_contract.shapes import Absent, Maybe, problem
from tests.batch_player import BatchPlayer
from tests.helpers import cli

LOCAL_SPEC = """\
name: records
steps:
  - name: pre
    queue: cpu
    array_size: 2
    commands: {template: "echo pre {i}", range: 4}
  - name: flaky
    queue: cpu
    retries: 1
    command: exit 3
    depends_on: [pre]
  - name: after
    queue: cpu
    command: echo never
    depends_on: [flaky]
"""

AWS_SPEC = """\
name: records
steps:
  - name: pre
    queue: cpu
    array_size: 2
    commands: {template: "echo pre {i}", range: 4}
  - name: post
    queue: cpu
    command: echo post
    depends_on: [pre]
"""


def problems(value: object, tp: object) -> list[str]:
    """Where `value` departs from the schema of `tp`, one line each (none: it fits)."""
    validator = jsonschema.Draft202012Validator(json_schema(tp))
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(value)
    ]


def json_of(*args: str, code: int = 0) -> Any:
    """`opsctl ARGS` as a user runs it, its stdout read as JSON; `code`: the exit it must give."""
    result = cli(*args)
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout)


def assert_mutations_caught(doc: dict[str, Any]) -> None:
    """A real status document, changed in a copy: an added key (at the top and in a step), a
    dropped key and a wrong type are each refused, so the green result above it means the
    document fits, not that the schema takes anything."""
    mutations: dict[str, Callable[[dict[str, Any]], object]] = {
        "a key at the top": lambda d: d.update(surprise=1),
        "a key in a step": lambda d: d["steps"][0].update(surprise=1),
        "a key in a step's commands": lambda d: d["steps"][0]["commands"].update(surprise=1),
        "no state": lambda d: d.pop("state"),
        "no steps[0].commands": lambda d: d["steps"][0].pop("commands"),
        "a state no scheduler has": lambda d: d.update(state="DONE"),
        "a count as text": lambda d: d["steps"][0].update(cancelled="0"),
        "a null array_size": lambda d: d["steps"][0].update(array_size=None),
    }
    for what, mutate in mutations.items():
        changed = copy.deepcopy(doc)
        mutate(changed)
        assert problems(changed, StatusDocument), f"{what}: not caught"


# --- (a), (c): the local backend ---------------------------------------------------------------


def test_local_status_list_and_attempts_fit_their_types(home: Path) -> None:
    """A local run to its end (one step retried and failed, one failed by its dependency), so
    failed children, retries and cancelled children are all in the document."""
    from opsctl.backends.local import LocalBackend

    spec = home / "records.yaml"
    spec.write_text(LOCAL_SPEC)
    run_id = json_of("launch", str(spec), "--json")["run_id"]
    watched = json_of("watch", run_id, "--json", "--interval", "0.1", code=1)
    doc = json_of("status", run_id, "--json")
    assert (watched["state"], doc["state"]) == ("FAILED", "FAILED")
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["flaky"]["failed_children"] and steps["flaky"]["attempts"] == {"total": 2, "retried": 1}
    assert steps["after"]["cancelled"] == 1
    assert problems(doc, StatusDocument) == []
    assert problems(watched, StatusDocument) == []
    assert_mutations_caught(doc)

    broken = home / "home" / "runs" / "records-20260101-000000-abcd"
    broken.mkdir()  # a run directory with no state in it: listed with its problem
    rows = json_of("list", "--json")
    assert {r["run_id"] for r in rows} == {run_id, broken.name}
    assert any("problem" in r for r in rows)
    assert problems(rows, list[ListRow]) == []

    attempts = LocalBackend().attempts(run_id)
    assert len(attempts) == 2 + 2 and {a["step"] for a in attempts} == {"pre", "flaky"}
    assert problems(attempts, list[AttemptRecord]) == []


# --- (b), (c): the AWS backend on moto ---------------------------------------------------------


def test_aws_status_list_and_attempts_fit_their_types(player: BatchPlayer, bucket: str, home: Path) -> None:
    """One short AWS run: launched, watched to its end (the watch records the final states), then
    read again by a new process, from Batch's answers and the manifest's final records."""
    from opsctl.backends.aws.backend import AwsBackend
    from opsctl.infra import load_outputs
    from opsctl_contract.storage import s3_client

    spec = home / "records.yaml"
    spec.write_text(AWS_SPEC)
    aws = ("--backend", "aws", "--infra", str(player.infra))
    run_id = json_of("launch", str(spec), *aws, "--json")["run_id"]
    watched = json_of("watch", run_id, *aws, "--json", "--interval", "0.1")
    doc = json_of("status", run_id, *aws, "--json")
    assert (watched["state"], doc["state"]) == ("SUCCEEDED", "SUCCEEDED")
    assert all(s["job_id"] and s["gone"] is False for s in doc["steps"])
    assert problems(doc, StatusDocument) == []
    assert problems(watched, StatusDocument) == []
    assert_mutations_caught(doc)

    bad = "records-20260101-000000-abcd"  # a manifest of the wrong shape: listed with its problem
    s3_client().put_object(Bucket=bucket, Key=f"runs/{bad}/manifest.json", Body=b"{}")
    rows = json_of("list", *aws, "--json")
    assert {r["run_id"] for r in rows} == {run_id, bad}
    assert any("problem" in r for r in rows)
    assert problems(rows, list[ListRow]) == []

    attempts = AwsBackend(load_outputs(player.infra)).attempts(run_id)
    assert len(attempts) == 2 + 1
    assert problems(attempts, list[AttemptRecord]) == []


# --- the types against the code's own descriptions ---------------------------------------------


def test_the_literals_are_the_enums_values() -> None:
    """A state, backend, queue or split added to its enum must be added to the type too."""
    for literal, enum in (
        (State, JobState),
        (BackendValue, BackendName),
        (Queue, QueueEnum),
        (Split, SplitEnum),
    ):
        assert list(get_args(literal)) == [member.value for member in enum]


@pytest.mark.parametrize(
    ("tp", "shape"),
    [
        (RunManifest, runs.MANIFEST),
        (AwsManifest, AWS_MANIFEST),
        (ManifestStep, runs._STEP),
        (FinalRecord, runs._FINAL),
        (Dependency, runs._STEP["depends_on"].shape),  # type: ignore[attr-defined]
        (Commands, runs._COMMANDS),
        (Attempts, runs._FINAL["attempts"].shape),  # type: ignore[attr-defined]
    ],
    ids=lambda p: getattr(p, "__name__", None),
)
def test_the_manifest_types_are_the_shape_checker_key_for_key(tp: Any, shape: dict[str, object]) -> None:
    """The manifest's types name the keys opsctl/run/manifest.py checks, and only those; a key the
    checker calls `Maybe` (missing or null) is NotRequired and admits None, one it calls `Absent`
    (missing, never null) is NotRequired and refuses None, as the checker does; any other required."""
    assert set(get_type_hints(tp)) == set(shape)
    assert tp.__required_keys__ == {k for k, v in shape.items() if not isinstance(v, Maybe | Absent)}
    for key in tp.__optional_keys__:
        nulled = {**_minimal(tp), key: None}
        if isinstance(shape[key], Maybe):
            assert problems(nulled, tp) == [] and problem(nulled, shape) is None, key
        else:
            assert problems(nulled, tp) and problem(nulled, shape), key


def _minimal(tp: Any) -> dict[str, Any]:
    """The manifest records' required keys, with values of their types, for one key's check."""
    step = {
        "name": "s",
        "queue": "cpu",
        "array_size": 1,
        "commands": 1,
        "list_uri": "file:///l.txt",
        "split": "contiguous",
        "depends_on": [],
        "retries": 0,
        "timeout": 60,
        "env": {},
    }
    manifest = {
        "run_id": "r-20261203-120000-abcd",
        "pipeline": "p",
        "backend": "aws",
        "created": "",
        "steps": [step],
    }
    final = {
        "job_id": "j",
        "state": "SUCCEEDED",
        "commands": {"total": 1, "done": 1, "failed": 0, "reexecuted": 0},
    }
    by_type: dict[object, dict[str, Any]] = {
        RunManifest: manifest,
        AwsManifest: {**manifest, "jobs": {}},
        ManifestStep: step,
        FinalRecord: final,
    }
    return by_type[tp]


# --- (d): the generator refuses what the type does not say ------------------------------------


class Sample(TypedDict):
    """A record of every kind json_schema handles, for its unit cases."""

    name: str
    count: int
    seconds: float
    ok: bool
    kind: Literal["a", "b"]
    note: str | None
    tags: list[str]
    sizes: dict[str, int]
    inner: Commands
    extra: NotRequired[int]


GOOD: dict[str, Any] = {
    "name": "x",
    "count": 1,
    "seconds": 2,  # an integer is a number, as in JSON
    "ok": True,
    "kind": "a",
    "note": None,
    "tags": ["t"],
    "sizes": {"s": 1},
    "inner": {"total": 1, "done": 1, "failed": 0, "reexecuted": 0},
}


def test_a_record_that_fits_passes_with_or_without_its_optional_key() -> None:
    jsonschema.Draft202012Validator.check_schema(json_schema(Sample))
    assert problems(GOOD, Sample) == []
    assert problems({**GOOD, "extra": 3, "seconds": 2.5, "note": "n"}, Sample) == []
    assert problems({}, Requests) == [], "every key NotRequired"


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("an unknown key", {"surprise": 1}),
        ("an unknown key inside", {"inner": {**GOOD["inner"], "surprise": 1}}),
        ("a wrong type", {"count": "1"}),
        ("a bool for an int", {"count": True}),
        ("a float for an int", {"count": 1.5}),
        ("text for a number", {"seconds": "2"}),
        ("null where it is not allowed", {"name": None}),
        ("a value outside the literal", {"kind": "c"}),
        ("a wrong item type", {"tags": [1]}),
        ("a wrong value type in a map", {"sizes": {"s": "1"}}),
        ("a wrong optional key's type", {"extra": "3"}),
    ],
)
def test_the_schema_refuses(what: str, change: dict[str, Any]) -> None:
    assert problems({**GOOD, **change}, Sample), what


@pytest.mark.parametrize("key", ["name", "inner", "note"])
def test_the_schema_refuses_a_missing_required_key(key: str) -> None:
    """`note` may be null but not missing: `X | None` is not NotRequired."""
    assert problems({k: v for k, v in GOOD.items() if k != key}, Sample) == [
        f"(top): '{key}' is a required property"
    ]


def test_a_type_json_schema_cannot_describe_is_an_error() -> None:
    with pytest.raises(TypeError, match="no JSON Schema"):
        json_schema(set[int])


def test_every_record_type_makes_a_valid_schema() -> None:
    for tp in (StatusDocument, AttemptRecord, RunManifest, AwsManifest, ListRow):
        jsonschema.Draft202012Validator.check_schema(json_schema(tp))
