"""The pipeline spec: good specs become a plan, every bad one is one line with file and line."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsctl import pipeline
from opsctl.cli import main
from opsctl.errors import SpecError
from tests.conftest import ROOT

MARK = "# <-"  # the line a case's error must point at


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 0), out, err


STEP = "  - name: pre\n    queue: cpu\n"

# (id, spec text, expected fragment). The expected line is the one marked with MARK, else 1.
BAD_SPECS = [
    ("yaml-syntax", "name: x\nsteps: [a, b\nother: 1  # <-\n", "invalid YAML"),
    ("not-a-mapping", "- name: x\n", "the spec must be a mapping, got list"),
    ("empty", "", "spec is empty"),
    ("only-comments", "# nothing here\n", "spec is empty"),
    ("unknown-top-key", "name: x\nnmae: y  # <-\nsteps: []\n", "unknown key 'nmae'"),
    ("name-uppercase", "name: Tomo_1  # <-\nsteps: []\n", "name = 'Tomo_1'"),
    ("name-too-long", f"name: {'a' * 41}  # <-\nsteps: []\n", "1..40 characters"),
    ("name-missing", "steps:\n" + STEP + "    command: 'true'\n", "name (missing) must be 1..40 characters"),
    ("steps-missing", "name: x  \n", "steps must be a non-empty list"),
    ("steps-empty", "name: x\nsteps: []  # <-\n", "steps must be a non-empty list"),
    (
        "step-not-mapping",
        "name: x\nsteps:\n  - just-a-string  # <-\n",
        "steps[0] must be a mapping, got string",
    ),
    (
        "step-name-bad",
        "name: x\nsteps:\n  - name: Pre Process  # <-\n    queue: cpu\n",
        "name = 'Pre Process'",
    ),
    (
        "duplicate-step",
        "name: x\nsteps:\n"
        + STEP
        + "    command: 'true'\n  - name: pre  # <-\n    queue: cpu\n    command: 'true'\n",
        "duplicate step name 'pre' (first at line 3)",
    ),
    (
        "unknown-step-key",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    depend_on: [a]  # <-\n",
        "unknown key 'depend_on'",
    ),
    ("queue-missing", "name: x\nsteps:\n  - name: pre  # <-\n    command: 'true'\n", "queue is required"),
    (
        "queue-bad",
        "name: x\nsteps:\n  - name: pre\n    queue: tpu  # <-\n    command: 'true'\n",
        "queue = 'tpu' is not one of cpu | gpu",
    ),
    (
        "array-zero",
        "name: x\nsteps:\n" + STEP + "    array_size: 0  # <-\n    command: 'true'\n",
        "array_size = 0 is outside 1..10000",
    ),
    (
        "array-too-big",
        "name: x\nsteps:\n" + STEP + "    array_size: 10001  # <-\n    command: 'true'\n",
        "array_size = 10001 is outside 1..10000",
    ),
    (
        "array-string",
        "name: x\nsteps:\n" + STEP + "    array_size: four  # <-\n    command: 'true'\n",
        "array_size must be an integer 1..10000, got 'four'",
    ),
    (
        "array-bool",
        "name: x\nsteps:\n" + STEP + "    array_size: true  # <-\n    command: 'true'\n",
        "got True",
    ),
    (
        "command-and-commands",
        "name: x\nsteps:\n  - name: pre  # <-\n    queue: cpu\n    command: a\n    commands: [b]\n",
        "exactly one of",
    ),
    ("no-commands", "name: x\nsteps:\n  - name: pre  # <-\n    queue: cpu\n", "exactly one of"),
    (
        "list-file-missing",
        "name: x\nsteps:\n" + STEP + "    commands: lists/nope.txt  # <-\n",
        "list file 'lists/nope.txt' not found",
    ),
    (
        "list-file-empty",
        "name: x\nsteps:\n" + STEP + "    commands: empty.txt  # <-\n",
        "list file 'empty.txt' has no commands",
    ),
    ("list-file-binary", "name: x\nsteps:\n" + STEP + "    commands: binary.txt  # <-\n", "not UTF-8"),
    ("inline-empty", "name: x\nsteps:\n" + STEP + "    commands: []  # <-\n", "commands is an empty list"),
    (
        "inline-not-string",
        "name: x\nsteps:\n" + STEP + "    commands:\n      - echo a\n      - 42  # <-\n",
        "commands[1] must be a string, got integer",
    ),
    (
        "inline-multiline",
        "name: x\nsteps:\n" + STEP + '    commands:\n      - "echo a\\necho b"  # <-\n',
        "spans several lines",
    ),
    (
        "inline-blank",
        "name: x\nsteps:\n" + STEP + "    commands:\n      - '   '  # <-\n",
        "commands[0] is empty",
    ),
    (
        "command-comment",
        "name: x\nsteps:\n" + STEP + "    command: '# not a command'  # <-\n",
        "starts with '#'",
    ),
    (
        "template-no-i",
        "name: x\nsteps:\n" + STEP + "    commands: {template: run --slice, range: 4}  # <-\n",
        "must contain {i}",
    ),
    (
        "template-range-zero",
        "name: x\nsteps:\n" + STEP + "    commands: {template: 'run {i}', range: 0}  # <-\n",
        "range = 0 is outside 1..1000000",
    ),
    (
        "template-no-range",
        "name: x\nsteps:\n" + STEP + "    commands: {template: 'run {i}'}  # <-\n",
        "range is required",
    ),
    (
        "template-unknown-key",
        "name: x\nsteps:\n" + STEP + "    commands: {template: 'run {i}', range: 2, step: 1}  # <-\n",
        "unknown key 'step'",
    ),
    ("commands-number", "name: x\nsteps:\n" + STEP + "    commands: 12  # <-\n", "got integer"),
    (
        "depends-unknown",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    depends_on: [prep]  # <-\n",
        "unknown step 'prep' (steps: pre)",
    ),
    (
        "depends-self",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    depends_on:\n      - pre  # <-\n",
        "'pre' is the step itself",
    ),
    (
        "cycle",
        "name: x\nsteps:\n  - name: a  # <-\n    queue: cpu\n    command: 'true'\n    depends_on: [b]\n"
        "  - name: b\n    queue: cpu\n    command: 'true'\n    depends_on: [a]\n",
        "dependency cycle: a -> b -> a",
    ),
    (
        "too-many-deps",
        "name: x\nsteps:\n"
        + STEP
        + "    command: 'true'\n    depends_on: ["
        + ", ".join(f"s{i}" for i in range(21))
        + "]  # <-\n",
        "21 entries; AWS Batch allows at most 20",
    ),
    (
        "n-to-n-sizes",
        "name: x\nsteps:\n"
        + STEP
        + "    array_size: 4\n    command: 'true'\n  - name: post\n    queue: cpu\n    array_size: 8\n"
        "    command: 'true'\n    depends_on:\n      - {step: pre, type: N_TO_N}  # <-\n",
        "'post' has array_size 8 and 'pre' has 4",
    ),
    (
        "dep-type-bad",
        "name: x\nsteps:\n"
        + STEP
        + "    command: 'true'\n  - name: b\n    queue: cpu\n    command: 'true'\n    depends_on:\n      - {step: pre, type: ALL_TO_ONE}  # <-\n",
        "type = 'ALL_TO_ONE' is not one of ALL | N_TO_N",
    ),
    (
        "retries-too-many",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    retries: 10  # <-\n",
        "retries = 10 is outside 0..9",
    ),
    (
        "timeout-too-short",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    timeout: 30  # <-\n",
        "timeout = 30 is outside 60..2147483647",
    ),
    (
        "gpus-on-cpu",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    gpus: 1  # <-\n",
        "gpus = 1 needs queue: gpu",
    ),
    (
        "env-reserved",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    env:\n      ARRAY_SIZE: 3  # <-\n",
        "ARRAY_SIZE is set by opsctl",
    ),
    (
        "env-bad-name",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    env:\n      2FAST: yes  # <-\n",
        "'2FAST' is not a valid variable name",
    ),
    (
        "env-nested",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    env:\n      OPTS: [a, b]  # <-\n",
        "OPTS must be a string or number, got list",
    ),
    (
        "duplicate-key",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    queue: gpu  # <-\n",
        "duplicate key 'queue' (first at line 4)",
    ),
    (
        "split-bad",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    split: random  # <-\n",
        "split = 'random' is not one of contiguous | dynamic",
    ),
    (
        "storage-refused",
        "name: x\nstorage: /data/runs  # <-\nsteps:\n" + STEP + "    command: 'true'\n",
        "storage is not supported: a local run's data lives under $OPSCTL_HOME/runs/<run id>",
    ),
    (
        "defaults-unknown",
        "name: x\ndefaults:\n  retry: 2  # <-\nsteps:\n" + STEP + "    command: 'true'\n",
        "defaults: unknown key 'retry'",
    ),
    (
        "defaults-not-mapping",
        "name: x\ndefaults: 3  # <-\nsteps:\n" + STEP + "    command: 'true'\n",
        "defaults must be a mapping",
    ),
    ("python-tag", "name: !!python/object:os.system x  # <-\nsteps: []\n", "invalid YAML"),
    (
        "env-over-ecs-overrides",
        "name: x\nsteps:\n  - name: pre  # <-\n    queue: cpu\n    command: 'true'\n"
        f"    env: {{BIG: {'v' * 8_000}}}\n",
        "step 'pre': its container overrides as ECS receives them would be 9,257 characters, over "
        "ECS RunTask's 8,192 (env: 1 variable, 8,003 characters), and AWS would fail every child "
        "('Container Overrides length must be at most 8192')",
    ),
    (
        "env-over-ecs-overrides-in-many-variables",
        "name: x\nsteps:\n  - name: pre  # <-\n    queue: cpu\n    command: 'true'\n    env:\n"
        + "".join(f"      V{k}: {'v' * 60}\n" for k in range(90)),
        "would be 8,961 characters, over ECS RunTask's 8,192 (env: 90 variables, 5,660 characters)",
    ),
    (
        "name-leading-dash",
        "name: -tomo  # <-\nsteps:\n" + STEP + "    command: 'true'\n",
        "name = '-tomo' must be 1..40 characters of a-z, 0-9, '-' and '_', starting with a letter or digit",
    ),
    (
        "timeout-past-the-api-integer",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    timeout: 2147483648  # <-\n",
        "timeout = 2147483648 is outside 60..2147483647",
    ),
    (
        "memory-past-the-api-integer",
        "name: x\ndefaults:\n  memory: 4294967296  # <-\nsteps:\n" + STEP + "    command: 'true'\n",
        "defaults: memory = 4294967296 is outside 4..2147483647",
    ),
    (
        "vcpus-past-the-api-integer",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    vcpus: 10000000000  # <-\n",
        "vcpus = 10000000000 is outside 1..2147483647",
    ),
    ("non-string-key", "name: x\n[1, 2]: 2  # <-\nsteps: []\n", "key [1, 2] must be a string"),
    (
        "plain-key-is-text",
        "name: x\n1: 2  # <-\nsteps: []\n",
        "unknown key '1' (allowed: name, defaults, steps)",
    ),
    (
        "image-uppercase",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    image: Tomo:1  # <-\n",
        "image = 'Tomo:1' is not an image reference",
    ),
    (
        "image-not-string",
        "name: x\ndefaults:\n  image: [a]  # <-\nsteps:\n" + STEP + "    command: 'true'\n",
        "defaults: image = ['a'] must be an image reference, got list",
    ),
    (
        "image-too-long",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    image: " + "a" * 256 + "  # <-\n",
        "is 256 characters, over AWS Batch's 255",
    ),
    (
        "image-space",
        "name: x\nsteps:\n" + STEP + "    command: 'true'\n    image: 'tomo latest'  # <-\n",
        "is not an image reference",
    ),
]


def expected_line(text: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if MARK in line:
            return number
    return 1


def test_every_key_a_spec_accepts_has_a_case_refusing_a_bad_value(tmp_path: Path) -> None:
    """The validator names the keys it accepts in its own words (`unknown key 'x' (allowed:
    ...)`, at the top, in defaults, in a step, in a template); every one of them must be what
    some case's error is about, the first word of a part of the message (`step 'pre': retries =
    10 ...`). A key added to the spec without a case of a bad value fails here: the table's size
    said nothing of what it covers."""
    (tmp_path / "empty.txt").write_text("# only a comment\n\n   \n")
    (tmp_path / "binary.txt").write_bytes(b"echo \xff\xfe\n")
    messages = []
    for case, text, _ in BAD_SPECS:
        with pytest.raises(SpecError) as refused:
            pipeline.parse(text, "p.yaml", tmp_path)
        messages.append(str(refused.value))
        assert messages[-1].startswith(f"p.yaml:{expected_line(text)}: "), case
    allowed = [
        key
        for message in messages
        for listed in re.findall(r"unknown key '[^']*' \(allowed: ([^)]*)\)", message)
        for key in listed.split(", ")
    ]
    assert {"name", "defaults", "steps", "queue", "commands", "retries", "template"} <= set(allowed)
    subjects = {
        found.group(0)
        for message in messages
        for part in message.split(": ")[1:]
        if (found := re.match(r"\w+", part))
    }
    assert sorted(set(allowed) - subjects) == [], "keys the spec accepts that no case refuses a value of"


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_is_one_line_with_file_and_line(
    text: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.txt").write_text("# only a comment\n\n   \n")
    (tmp_path / "binary.txt").write_bytes(b"echo \xff\xfe\n")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(text)

    code, out, err = run_cli(["validate", str(spec)], capsys)

    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err.startswith(f"opsctl: {spec}:{expected_line(text)}: "), err
    assert fragment in err


def _widest(env_chars: int) -> str:
    """The step that asks AWS for the most: the longest names, the biggest GPU array, every
    retry, the largest integers, 20 dependencies, and `env_chars` characters of env."""
    deps = "".join(f"  - name: d{k}\n    queue: cpu\n    command: 'true'\n" for k in range(20))
    return (
        f"name: {'p' * 40}\nsteps:\n{deps}  - name: {'s' * 40}\n    queue: gpu\n    array_size: 10000\n"
        "    retries: 9\n    gpus: 1\n    vcpus: 2147483647\n    memory: 2147483647\n"
        "    timeout: 2147483647\n    commands: {template: 'echo {i}', range: 10000}\n"
        f"    depends_on: [{', '.join(f'd{k}' for k in range(20))}]\n    env: {{A: {'v' * env_chars}}}\n"
    )


def test_the_most_env_a_step_may_carry_fits_every_aws_limit(tmp_path: Path) -> None:
    """The widest step's env may take about 6.4 KB: one character more and ECS would refuse its
    container overrides, which validate says at the step's line. Its SubmitJob request is then
    far under Batch's 30 KiB, which is why that limit has no check of its own."""
    from opsctl.backends.aws.batch import (
        MAX_ECS_OVERRIDES,
        MAX_SUBMIT_BYTES,
        ecs_overrides,
        overrides_chars,
        request_bytes,
    )
    from opsctl.backends.aws.limits import longest_submit_request

    low, high = 0, 10_000
    while low < high:  # the most env that validates
        middle = (low + high + 1) // 2
        try:
            pipeline.parse(_widest(middle), "p.yaml", tmp_path)
            low = middle
        except SpecError:
            high = middle - 1
    assert 6_000 < low < MAX_ECS_OVERRIDES
    with pytest.raises(SpecError, match="container overrides as ECS receives them would be 8,193 characters"):
        pipeline.parse(_widest(low + 1), "p.yaml", tmp_path)
    pipe = pipeline.parse(_widest(low), "p.yaml", tmp_path)
    request, added = longest_submit_request(pipe.name, pipe.step("s" * 40).record(""))
    assert overrides_chars(ecs_overrides(request, added)) == MAX_ECS_OVERRIDES
    assert request_bytes(request) < 12 * 1024 < MAX_SUBMIT_BYTES


def test_the_longest_job_name_fits_aws_batch() -> None:
    """A resubmitted step of a 40-character pipeline's 40-character step: 111 characters, within
    SubmitJob's 128 of letters, digits, '-' and '_', starting with a letter or digit."""
    from opsctl.backends.aws.batch import JOB_NAME, job_name
    from opsctl.run.ids import RUN_ID, new_run_id

    run_id = new_run_id("p" * 40)
    assert RUN_ID.fullmatch(run_id) and pipeline.PIPELINE_NAME.fullmatch("p" * 40)
    name = job_name(run_id, "s" * 40, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    assert len(name) == 111 and JOB_NAME.fullmatch(name)
    assert job_name(run_id, "s" * 40) == f"{run_id}-{'s' * 40}"


def test_missing_spec_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["validate", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2
    assert err == f"opsctl: {tmp_path / 'nope.yaml'}: spec file not found\n"


def test_example_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["validate", str(ROOT / "examples" / "hello.yaml"), "--json"], capsys)
    assert (code, err) == (0, "")
    plan = json.loads(out)
    assert plan["pipeline"] == "hello"
    assert [s["name"] for s in plan["steps"]] == ["preprocess", "process", "calibrate", "reconstruct"]
    pre, process, calibrate, reconstruct = plan["steps"]
    assert (pre["array_size"], pre["commands"], pre["commands_per_child"]) == (4, 10, {"min": 2, "max": 3})
    assert (process["commands"], process["commands_per_child"]) == (64, {"min": 8, "max": 8})
    assert calibrate["depends_on"] == [{"step": "process", "type": "ALL"}]
    assert (reconstruct["queue"], reconstruct["gpus"], reconstruct["commands_per_child"]["min"]) == (
        "gpu",
        1,
        0,
    )
    assert pre["retries"] == 2 and pre["timeout"] == 600, "defaults apply"
    assert any("reconstruct" in note for note in plan["notes"])


def test_the_plan_says_how_many_children_a_step_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`children_with_work` per step; a note for each step with children left without work,
    naming the array size that would do, which an N_TO_N dependency ties across its steps."""
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: p\nsteps:\n"
        "  - {name: a, queue: cpu, array_size: 1000, command: echo a}\n"
        "  - {name: b, queue: cpu, array_size: 50, commands: {template: 'echo {i}', range: 20}}\n"
        "  - name: c\n    queue: cpu\n    array_size: 50\n    commands: {template: 'echo {i}', range: 7}\n"
        "    depends_on: [{step: b, type: N_TO_N}]\n"
        "  - {name: d, queue: cpu, array_size: 8, commands: {template: 'echo {i}', range: 8}}\n"
        "  - name: e\n    queue: cpu\n    array_size: 8\n    command: echo e\n"
        "    depends_on: [{step: d, type: N_TO_N}]\n"
    )
    code, out, err = run_cli(["validate", str(spec), "--json"], capsys)
    assert (code, err) == (0, "")
    plan = json.loads(out)
    assert [s["children_with_work"] for s in plan["steps"]] == [1, 20, 7, 8, 1]
    idle = "(the local backend does not start them; AWS Batch starts each, which exits at once)"
    assert plan["notes"] == [
        f"step 'a' has 1000 children for 1 command: 999 have none {idle}: array_size: 1 would do",
        f"step 'b' has 50 children for 20 commands: 30 have none {idle}: array_size: 20 would do, "
        "here and in c (N_TO_N)",
        f"step 'c' has 50 children for 7 commands: 43 have none {idle}: array_size: 20 would do, "
        "here and in b (N_TO_N)",
        f"step 'e' has 8 children for 1 command: 7 have none {idle}; its N_TO_N dependencies (d) "
        "keep array_size at 8",
    ]


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["validate", str(ROOT / "examples" / "hello.yaml")], capsys)
    assert code == 0
    assert "hello: 4 steps, 79 commands" in out
    assert "preprocess" in out and "2-3" in out


def test_order_sources_and_dependencies(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "a.txt").write_text("# header\n\necho 0\n  echo 1  \n#echo skipped\necho 2\n")
    spec = tmp_path / "p.yaml"
    spec.write_text(
        """
name: order
defaults: {retries: 0, vcpus: 2}
steps:
  - name: last
    queue: gpu
    array_size: 3
    commands: {template: "awk '{print $1}' in/{i}.txt > out/{i}", range: 3}
    depends_on: [{step: middle, type: N_TO_N}, first]
    env: {THREADS: 4, MODE: fast}
  - name: middle
    queue: cpu
    array_size: 3
    commands: [echo a, echo b, echo c]
    depends_on: [first]
    retries: 5
  - name: first
    queue: cpu
    commands: lists/a.txt
"""
    )
    p = pipeline.load(spec)
    assert [s.name for s in p.steps] == ["first", "middle", "last"]
    first, middle, last = p.steps
    assert first.commands == ("echo 0", "echo 1", "echo 2")
    assert first.source == "lists/a.txt" and first.array_size == 1
    assert last.commands[2] == "awk '{print $1}' in/2.txt > out/2", "braces other than {i} survive"
    assert last.depends_on == (pipeline.Dependency("middle", n_to_n=True), pipeline.Dependency("first"))
    assert dict(last.env) == {"THREADS": "4", "MODE": "fast"}
    assert (first.retries, middle.retries, last.vcpus) == (0, 5, 2)
    assert last.queue is pipeline.Queue.GPU and first.split is pipeline.Split.CONTIGUOUS
    with pytest.raises(AttributeError):
        first.name = "changed"  # type: ignore[misc]


def test_dates_and_yes_stay_as_written(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: x\nsteps:\n  - name: a\n    queue: cpu\n    command: 'true'\n    env: {DAY: 2024-13-01}\n"
    )
    assert dict(pipeline.load(spec).steps[0].env) == {"DAY": "2024-13-01"}


# --- junk never escapes as an unhandled exception ----------------------------------------------

yaml_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
spec_like = st.fixed_dictionaries(
    {},
    optional={
        "name": yaml_values | st.sampled_from(["tomo", "a-b"]),
        "defaults": yaml_values,
        "steps": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": yaml_values | st.sampled_from(["a", "b"]),
                    "queue": yaml_values | st.sampled_from(["cpu", "gpu"]),
                    "array_size": yaml_values,
                    "commands": yaml_values,
                    "command": yaml_values,
                    "depends_on": yaml_values,
                    "env": yaml_values,
                },
            ),
            max_size=3,
        ),
    },
)


def _parse_or_spec_error(text: str, base: Path) -> None:
    try:
        pipeline.parse(text, "junk.yaml", base)
    except SpecError as e:
        assert "\n" not in str(e)
        assert str(e).startswith("junk.yaml")


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=st.text(alphabet=st.sampled_from(list("abn:-[]{}!&*|>'\"#%@` \n\t0123456789.,?")), max_size=80))
def test_junk_text_never_raises_unhandled(text: str, tmp_path: Path) -> None:
    _parse_or_spec_error(text, tmp_path)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=spec_like)
def test_junk_structures_never_raise_unhandled(document: dict[str, object], tmp_path: Path) -> None:
    _parse_or_spec_error(yaml.safe_dump(document), tmp_path)


@pytest.mark.parametrize(
    "image",
    [
        "python:3.11-slim",
        "ghcr.io/org/team/tomo:2024.1",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/opsctl-cpu:abc123",
        "localhost:5000/tomo",
        "public.ecr.aws/docker/library/busybox@sha256:" + "a" * 64,
        "registry.example.com:443/a__b/c-d.e:v1_2.3",
    ],
)
def test_image_references_docker_accepts_are_accepted(image: str, tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        f"name: x\nsteps:\n  - name: a\n    queue: cpu\n    command: 'true'\n    image: '{image}'\n"
    )
    assert pipeline.load(spec).steps[0].image == image


def test_a_step_image_overrides_the_default(tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "name: x\ndefaults:\n  image: tomo:1\nsteps:\n"
        "  - name: a\n    queue: cpu\n    command: 'true'\n"
        "  - name: b\n    queue: gpu\n    command: 'true'\n    image: tomo-gpu:1\n"
    )
    a, b = pipeline.load(spec).steps
    assert (a.image, b.image) == ("tomo:1", "tomo-gpu:1")
    assert a.record("s3://b/l")["image"] == "tomo:1"


def test_a_pipeline_name_with_an_underscore_runs_and_is_found_by_its_run_id(tmp_path: Path) -> None:
    """Step names and AWS job names allow `_`; pipeline names do too (issue 28, item 7), and the
    run id built from one is accepted back by every command that takes a run id."""
    from tests.helpers import cli

    spec = tmp_path / "p.yaml"
    spec.write_text("name: my_pipe_2\nsteps:\n" + STEP + "    command: 'true'\n")
    assert pipeline.load(spec).name == "my_pipe_2"
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    launched = cli("launch", str(spec), "--watch", "--json", env=env)
    assert launched.returncode == 0, launched.stderr
    run_id = json.loads(launched.stdout)["run_id"]
    assert run_id.startswith("my_pipe_2-")
    status = cli("status", run_id, "--json", env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "SUCCEEDED", status.stderr
    assert cli("report", run_id, "--json", env=env).returncode == 0
