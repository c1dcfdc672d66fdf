"""The pipeline spec: YAML in, frozen and validated objects out, steps in dependency order.

Pure: the only I/O is reading the spec and the list files it names. Every problem becomes a
`SpecError` that names the file, the line, the offending value and the limit it broke, so that
a user fixes the spec before anything is submitted anywhere.

Validation is hand-written rather than delegated to a schema library: each message must point at
a YAML line, which needs the node tree anyway, and the schema is small enough that explicit
checks read better than a schema plus a translation layer for its error locations.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from opsctl.errors import SpecError
from opsctl.limits import (
    ENV_NAME,
    MAX_ARRAY_SIZE,
    MAX_DEPENDS_ON,
    MAX_GPUS,
    MAX_INTEGER,
    MAX_RETRIES,
    MIN_TIMEOUT,
    PIPELINE_NAME,
    STEP_NAME,
)
from opsctl_contract.errors import brief
from opsctl_contract.files import LIST_FILE_LIMIT, SPEC_LIMIT, Unreadable, read_text
from opsctl_contract.listfile import command_of, lines, problem
from opsctl_contract.split import slice_sizes

# A container image reference as Docker and ECR read one: [registry[:port]/]path[:tag][@digest],
# path components lowercase. AWS Batch takes up to 255 characters.
_REGISTRY = (
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?"
)
_PATH = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
IMAGE = re.compile(
    rf"(?:{_REGISTRY}/)?{_PATH}(?:/{_PATH})*(?::\w[\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?"
)
MAX_IMAGE = 255

MAX_TEMPLATE_RANGE = 1_000_000
MAX_YAML_NODES = 2_000_000  # values a spec may expand to through YAML aliases
# Names the worker environment contract owns; a step's `env` must not shadow them.
RESERVED_ENV = re.compile(r"(AWS_BATCH_.*|OPSCTL_.*|ARRAY_SIZE|LIST_FILE_S3_PATH)")

DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT = 3600


class Queue(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


class Split(StrEnum):
    CONTIGUOUS = "contiguous"
    DYNAMIC = "dynamic"


@dataclass(frozen=True)
class Dependency:
    step: str
    n_to_n: bool = False  # child i waits for child i only (Batch's N_TO_N)


@dataclass(frozen=True)
class Step:
    name: str
    queue: Queue
    array_size: int
    commands: tuple[str, ...]
    source: str  # where the commands came from: a list file path, "inline" or "template"
    split: Split
    depends_on: tuple[Dependency, ...]
    retries: int
    timeout: int
    vcpus: int | None = None
    memory: int | None = None  # MiB
    gpus: int | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    image: str | None = None  # the step's own container image; None: the stack's for its queue
    line: int = 0  # where the step starts in the spec, for later messages

    def record(self, list_uri: str) -> dict[str, Any]:
        """The step as the run manifest keeps it: all a backend needs to run it, plain JSON."""
        return {
            "name": self.name,
            "queue": self.queue.value,
            "array_size": self.array_size,
            "commands": len(self.commands),
            "list_uri": list_uri,
            "split": self.split.value,
            "depends_on": [{"step": d.step, "n_to_n": d.n_to_n} for d in self.depends_on],
            "retries": self.retries,
            "timeout": self.timeout,
            "vcpus": self.vcpus,
            "memory": self.memory,
            "gpus": self.gpus,
            "env": dict(self.env),
            "image": self.image,
        }


@dataclass(frozen=True)
class Pipeline:
    name: str
    spec_path: Path
    steps: tuple[Step, ...]  # topological order: every step after the steps it depends on

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def plan(self) -> dict[str, Any]:
        """The plan document printed by `opsctl validate --json` (and shown as a table)."""
        steps = []
        notes = []
        for step in self.steps:
            low, high = slice_sizes(len(step.commands), step.array_size)
            if low == 0:
                notes.append(self._idle_note(step))
            steps.append(
                {
                    "name": step.name,
                    "queue": step.queue.value,
                    "array_size": step.array_size,
                    "commands": len(step.commands),
                    "commands_per_child": {"min": low, "max": high},
                    "children_with_work": min(step.array_size, len(step.commands)),
                    "split": step.split.value,
                    "source": step.source,
                    "depends_on": [
                        {"step": d.step, "type": "N_TO_N" if d.n_to_n else "ALL"} for d in step.depends_on
                    ],
                    "retries": step.retries,
                    "timeout": step.timeout,
                    "vcpus": step.vcpus,
                    "memory": step.memory,
                    "gpus": step.gpus,
                    "image": step.image,
                }
            )
        return {
            "pipeline": self.name,
            "spec": str(self.spec_path),
            "steps": steps,
            "notes": notes,
        }

    def _idle_note(self, step: Step) -> str:
        """What `validate` says of a step with more children than commands: how many have
        none, what they cost, and the array size that would do. An N_TO_N dependency ties the
        sizes of the steps it joins (child i waits for child i), so the size that would do is
        the most commands of any of them, and it is said of them all."""
        tied, pending = {step.name}, [step.name]
        while pending:
            name = pending.pop()
            for other in self.steps:
                joined = any(d.n_to_n and d.step == name for d in other.depends_on) or any(
                    d.n_to_n and d.step == other.name for d in self.step(name).depends_on
                )
                if joined and other.name not in tied:
                    tied.add(other.name)
                    pending.append(other.name)
        needed = min(step.array_size, max(len(self.step(name).commands) for name in tied))
        commands = len(step.commands)
        head = (
            f"step '{step.name}' has {step.array_size} children for {commands} "
            f"command{'s' if commands > 1 else ''}: {step.array_size - commands} have none "
            "(the local backend does not start them; AWS Batch starts each, which exits at once)"
        )
        others = ", ".join(sorted(tied - {step.name}))
        if needed == step.array_size:
            return f"{head}; its N_TO_N dependencies ({others}) keep array_size at {needed}"
        if others:
            return f"{head}: array_size: {needed} would do, here and in {others} (N_TO_N)"
        return f"{head}: array_size: {needed} would do"


def load(path: str | Path) -> Pipeline:
    """Read and validate a pipeline spec; raise `SpecError` on the first problem."""
    spec_path = Path(path)
    shown = str(path)
    try:
        text = read_text(spec_path, SPEC_LIMIT, "spec file")
    except Unreadable as e:
        raise SpecError(e.reason, shown) from None
    return parse(text, shown, spec_path.parent)


def parse(text: str, source: str, base_dir: Path) -> Pipeline:
    """Validate spec text; list files are resolved against `base_dir`."""
    try:
        document = _load_yaml(text)
    except _At as e:
        raise SpecError(e.message, source, e.line) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(f"invalid YAML: {e.problem or e.context}", source, line) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as e:
        # Explicit tags such as `!!float abc` fail in the constructor with no YAML mark.
        raise SpecError(f"invalid YAML: {e}", source) from None
    try:
        return _Validator(source, base_dir).pipeline(document)
    except _At as e:
        raise SpecError(e.message, source, e.line) from None


# --- YAML with line numbers -------------------------------------------------------------------


class _At(Exception):
    """A problem at a line of the spec; `parse` adds the file name."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _Map(dict[str, Any]):
    """A YAML mapping that remembers where it and each of its keys were written, and the source
    text of each plain scalar value (`env` keeps what the user wrote: 01234, not 668)."""

    line: int
    key_lines: dict[str, int]
    plain: dict[str, str]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class _Seq(list[Any]):
    """A YAML sequence that remembers the line of each item."""

    line: int
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose containers carry line numbers and whose keys must be unique strings."""


# Dates stay strings: nothing in a spec is a date, and PyYAML's timestamp constructor raises
# plain ValueErrors on values like 2024-13-01.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    result.plain = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        # An unquoted key is the text written: YES, ON and NO are variable names, not booleans.
        plain_key = isinstance(key_node, yaml.ScalarNode) and not key_node.style
        key = key_node.value if plain_key else loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise _At(line, f"key {brief(key)} must be a string")
        if key in result:
            raise _At(line, f"duplicate key '{key}' (first at line {result.key_lines[key]})")
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
        if isinstance(value_node, yaml.ScalarNode) and not value_node.style:  # unquoted
            result.plain[key] = value_node.value
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_object(item, deep=True) for item in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [item.start_mark.line + 1 for item in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def _load_yaml(text: str) -> Any:
    """The document, once its node graph is known not to expand past MAX_YAML_NODES.

    Aliases share nodes, so a few lines can describe a structure of billions of values (the
    "billion laughs"); anything that walks the values (validation, an error message) would then
    run out of memory or time. The composed graph is measured first, each node once.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node)
        if size > MAX_YAML_NODES:
            raise _At(
                node.start_mark.line + 1,
                f"the spec expands to more than {MAX_YAML_NODES:,} YAML values through its aliases",
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """How many values `root` stands for once every alias is expanded (capped past the limit).

    Each node is sized once, after its children, with an explicit stack: the input decides how
    deep the graph goes, so no recursion may follow it."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_sized = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_sized or not children:
            total = 1 + sum(sizes[id(child)] for child in children)
            sizes[id(node)] = min(total, MAX_YAML_NODES + 1)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


# --- validation -------------------------------------------------------------------------------

_PIPELINE_KEYS = ("name", "defaults", "steps")
# Where a run's data lives is the backend's: a spec that names a place is refused, not ignored.
STORAGE_REFUSED = (
    "storage is not supported: a local run's data lives under $OPSCTL_HOME/runs/<run id> (set "
    "OPSCTL_HOME to move it) and an AWS run's under s3://<the stack's bucket>/runs/<run id>; "
    "remove the key"
)
_DEFAULT_KEYS = ("retries", "timeout", "vcpus", "memory", "image")
_STEP_KEYS = (
    "name",
    "queue",
    "array_size",
    "commands",
    "command",
    "split",
    "depends_on",
    "retries",
    "timeout",
    "vcpus",
    "memory",
    "gpus",
    "env",
    "image",
)


def _shown(key: str, value: Any) -> str:
    """`key = value` for a message, or `key (missing)` when the spec does not set it."""
    return f"{key} (missing)" if value is None else f"{key} = {brief(value)}"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        type(value), "mapping" if isinstance(value, dict) else "list"
    )


class _Validator:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        # (step, dependency) -> line, kept until the whole DAG has been checked.
        self.dep_lines: dict[tuple[str, str], int] = {}

    # Typed field readers. `where` prefixes each message so it names the value's place.

    def _keys(self, m: _Map, allowed: tuple[str, ...], where: str) -> None:
        for key in m:
            if key not in allowed:
                raise _At(m.line_of(key), f"{where}unknown key '{key}' (allowed: {', '.join(allowed)})")

    def _mapping(self, value: Any, line: int, what: str) -> _Map:
        if not isinstance(value, _Map):
            raise _At(line, f"{what} must be a mapping, got {_type_name(value)}")
        return value

    def _int(self, m: _Map, key: str, where: str, low: int, high: int | None) -> int | None:
        if key not in m:
            return None
        value = m[key]
        limit = f"{low}..{high}" if high is not None else f">= {low}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise _At(m.line_of(key), f"{where}{key} must be an integer {limit}, got {brief(value)}")
        if value < low or (high is not None and value > high):
            raise _At(m.line_of(key), f"{where}{key} = {brief(value)} is outside {limit}")
        return value

    def _choice(self, m: _Map, key: str, where: str, enum: type[StrEnum], default: str) -> Any:
        value = m.get(key, default)
        allowed = [member.value for member in enum]
        if value not in allowed:
            raise _At(m.line_of(key), f"{where}{key} = {brief(value)} is not one of {' | '.join(allowed)}")
        return enum(value)

    def pipeline(self, document: Any) -> Pipeline:
        if document is None:
            raise _At(1, "spec is empty: expected a mapping with name and steps")
        top = self._mapping(document, 1, "the spec")
        if "storage" in top:
            raise _At(top.line_of("storage"), STORAGE_REFUSED)
        self._keys(top, _PIPELINE_KEYS, "")

        name = top.get("name")
        if not isinstance(name, str) or not PIPELINE_NAME.fullmatch(name):
            raise _At(
                top.line_of("name"),
                f"{_shown('name', name)} must be 1..40 characters of a-z, 0-9, '-' and '_', "
                "starting with a letter or digit",
            )

        defaults = self._mapping(top.get("defaults", _empty_map(top)), top.line_of("defaults"), "defaults")
        self._keys(defaults, _DEFAULT_KEYS, "defaults: ")
        base = {
            "retries": self._int(defaults, "retries", "defaults: ", 0, MAX_RETRIES),
            "timeout": self._int(defaults, "timeout", "defaults: ", MIN_TIMEOUT, MAX_INTEGER),
            "vcpus": self._int(defaults, "vcpus", "defaults: ", 1, MAX_INTEGER),
            "memory": self._int(defaults, "memory", "defaults: ", 4, MAX_INTEGER),
            "image": self._image(defaults, "defaults: "),
        }

        raw_steps = top.get("steps")
        if not isinstance(raw_steps, _Seq) or not raw_steps:
            raise _At(top.line_of("steps"), "steps must be a non-empty list of steps")
        steps: list[Step] = []
        seen: dict[str, int] = {}
        for i, (raw, line) in enumerate(zip(raw_steps, raw_steps.item_lines, strict=True)):
            step = self.step(self._mapping(raw, line, f"steps[{i}]"), i, base)
            if step.name in seen:
                raise _At(
                    step.line,
                    f"duplicate step name '{step.name}' (first at line {seen[step.name]})",
                )
            seen[step.name] = step.line
            steps.append(step)
        self._check_dependencies(steps)
        for step in steps:
            _check_aws_request(name, step)
        return Pipeline(
            name=name,
            spec_path=Path(self.source),
            steps=tuple(_topological(steps)),
        )

    def _image(self, m: _Map, where: str) -> str | None:
        if "image" not in m:
            return None
        value = m["image"]
        shown = f"{where}image = {brief(value)}"
        if not isinstance(value, str):
            raise _At(m.line_of("image"), f"{shown} must be an image reference, got {_type_name(value)}")
        if len(value) > MAX_IMAGE:
            raise _At(m.line_of("image"), f"{shown} is {len(value)} characters, over AWS Batch's {MAX_IMAGE}")
        if not IMAGE.fullmatch(value):
            raise _At(
                m.line_of("image"),
                f"{shown} is not an image reference ([registry/]name[:tag][@sha256:digest], "
                "name in lowercase, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/tomo:1.2)",
            )
        return value

    def step(self, m: _Map, i: int, base: dict[str, Any]) -> Step:
        name = m.get("name")
        if not isinstance(name, str) or not STEP_NAME.fullmatch(name):
            raise _At(
                m.line_of("name"),
                f"steps[{i}]: {_shown('name', name)} must be 1..40 characters of a-z, 0-9, '-' and '_'",
            )
        where = f"step '{name}': "
        self._keys(m, _STEP_KEYS, where)
        if "queue" not in m:
            raise _At(m.line, f"{where}queue is required (cpu | gpu)")
        queue = self._choice(m, "queue", where, Queue, "cpu")
        array_size = self._int(m, "array_size", where, 1, MAX_ARRAY_SIZE) or 1
        split = self._choice(m, "split", where, Split, Split.CONTIGUOUS.value)
        commands, source = self._commands(m, where)

        gpus = self._int(m, "gpus", where, 0, MAX_GPUS)
        if gpus and queue is Queue.CPU:
            raise _At(
                m.line_of("gpus"),
                f"{where}gpus = {gpus} needs queue: gpu (the cpu queue has no GPUs)",
            )

        retries = _first(self._int(m, "retries", where, 0, MAX_RETRIES), base["retries"])
        timeout = _first(self._int(m, "timeout", where, MIN_TIMEOUT, MAX_INTEGER), base["timeout"])
        return Step(
            name=name,
            queue=queue,
            array_size=array_size,
            commands=commands,
            source=source,
            split=split,
            depends_on=self._depends_on(m, where),
            retries=DEFAULT_RETRIES if retries is None else retries,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            vcpus=_first(self._int(m, "vcpus", where, 1, MAX_INTEGER), base["vcpus"]),
            memory=_first(self._int(m, "memory", where, 4, MAX_INTEGER), base["memory"]),
            gpus=gpus,
            env=self._env(m, where),
            image=self._image(m, where) or base["image"],
            line=m.line,
        )

    def _commands(self, m: _Map, where: str) -> tuple[tuple[str, ...], str]:
        if ("commands" in m) == ("command" in m):
            raise _At(
                m.line,
                f"{where}give exactly one of commands (list file, list or template) or command",
            )
        if "command" in m:
            line = m.line_of("command")
            command = m["command"]
            if not isinstance(command, str):
                raise _At(line, f"{where}command must be a string, got {_type_name(command)}")
            return (self._one_command(command, line, f"{where}command"),), "command"

        line = m.line_of("commands")
        value = m["commands"]
        if isinstance(value, str):
            return self._list_file(value, line, where), value
        if isinstance(value, _Seq):
            if not value:
                raise _At(line, f"{where}commands is an empty list")
            commands = []
            for k, (command, item_line) in enumerate(zip(value, value.item_lines, strict=True)):
                if not isinstance(command, str):
                    raise _At(
                        item_line,
                        f"{where}commands[{k}] must be a string, got {_type_name(command)}",
                    )
                commands.append(self._one_command(command, item_line, f"{where}commands[{k}]"))
            return tuple(commands), "inline"
        if isinstance(value, _Map):
            return self._template(value, where), "template"
        raise _At(
            line,
            f"{where}commands must be a list file, a list or {{template, range}}, got {_type_name(value)}",
        )

    def _one_command(self, command: str, line: int, what: str) -> str:
        # The list file the backends ship is one command a line, so a command must stay one line
        # for every reader (opsctl_contract/listfile.py).
        stripped = command.strip(" \t")
        if not stripped:
            raise _At(line, f"{what} is empty")
        if "\n" in stripped:
            raise _At(line, f"{what} spans several lines; a command must be one line")
        if stripped.startswith("#"):
            raise _At(
                line, f"{what} = {brief(stripped)} starts with '#', which a list file reads as a comment"
            )
        if why := problem(stripped):
            raise _At(line, f"{what} {why}")
        return stripped

    def _list_file(self, name: str, line: int, where: str) -> tuple[str, ...]:
        path = self.base_dir / name
        if not name.strip():
            raise _At(line, f"{where}commands is an empty path")
        try:
            text = read_text(path, LIST_FILE_LIMIT, "list file")
        except Unreadable as e:
            if not path.exists() and not path.is_symlink():
                raise _At(line, f"{where}list file '{name}' not found (looked for {path})") from None
            raise _At(line, f"{where}list file '{name}': {e.reason}") from None
        commands = []
        for number, text_line in enumerate(lines(text), start=1):
            command = command_of(text_line)
            if command is None:
                continue
            if why := problem(command):
                raise _At(line, f"{where}list file '{name}' line {number}: the command {why}")
            commands.append(command)
        if not commands:
            raise _At(line, f"{where}list file '{name}' has no commands (only blank lines and # comments)")
        return tuple(commands)

    def _template(self, m: _Map, where: str) -> tuple[str, ...]:
        self._keys(m, ("template", "range"), f"{where}commands: ")
        template = m.get("template")
        if not isinstance(template, str):
            raise _At(
                m.line_of("template"),
                f"{where}commands: template must be a string, got {_type_name(template)}",
            )
        template = self._one_command(template, m.line_of("template"), f"{where}commands: template")
        if "{i}" not in template:
            raise _At(
                m.line_of("template"), f"{where}commands: template {brief(template)} must contain {{i}}"
            )
        count = self._int(m, "range", f"{where}commands: ", 1, MAX_TEMPLATE_RANGE)
        if count is None:
            raise _At(m.line, f"{where}commands: range is required with template (1..{MAX_TEMPLATE_RANGE})")
        if why := problem(template.replace("{i}", str(count - 1))):  # the longest command
            raise _At(m.line_of("template"), f"{where}commands: template {count - 1} {why}")
        # Plain replacement, not str.format: shell commands are full of braces (awk, ${VAR}).
        return tuple(template.replace("{i}", str(i)) for i in range(count))

    def _depends_on(self, m: _Map, where: str) -> tuple[Dependency, ...]:
        if "depends_on" not in m:
            return ()
        value = m["depends_on"]
        line = m.line_of("depends_on")
        if not isinstance(value, _Seq):
            raise _At(line, f"{where}depends_on must be a list of step names, got {_type_name(value)}")
        if len(value) > MAX_DEPENDS_ON:
            raise _At(
                line,
                f"{where}depends_on has {len(value)} entries; AWS Batch allows at most {MAX_DEPENDS_ON}",
            )
        deps: list[Dependency] = []
        for k, (item, item_line) in enumerate(zip(value, value.item_lines, strict=True)):
            if isinstance(item, str):
                dep = Dependency(item)
            elif isinstance(item, _Map):
                self._keys(item, ("step", "type"), f"{where}depends_on[{k}]: ")
                if not isinstance(item.get("step"), str):
                    raise _At(item_line, f"{where}depends_on[{k}]: step must be a step name")
                kind = item.get("type", "ALL")
                if kind not in ("ALL", "N_TO_N"):
                    raise _At(
                        item.line_of("type"),
                        f"{where}depends_on[{k}]: type = {brief(kind)} is not one of ALL | N_TO_N",
                    )
                dep = Dependency(item["step"], n_to_n=kind == "N_TO_N")
            else:
                raise _At(
                    item_line,
                    f"{where}depends_on[{k}] must be a step name or {{step, type}}, got {_type_name(item)}",
                )
            if any(d.step == dep.step for d in deps):
                raise _At(item_line, f"{where}depends_on lists '{dep.step}' twice")
            deps.append(dep)
            self.dep_lines[(str(m["name"]), dep.step)] = item_line
        return tuple(deps)

    def _env(self, m: _Map, where: str) -> Mapping[str, str]:
        if "env" not in m:
            return MappingProxyType({})
        env = self._mapping(m["env"], m.line_of("env"), f"{where}env")
        result = {}
        for key, value in env.items():
            line = env.line_of(key)
            if not ENV_NAME.fullmatch(key):
                raise _At(
                    line,
                    f"{where}env: {brief(key)} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
                )
            if RESERVED_ENV.fullmatch(key):
                raise _At(line, f"{where}env: {key} is set by opsctl (worker environment contract)")
            if value is None:
                raise _At(line, f'{where}env: {key} has no value; write {key}: "" for an empty one')
            if not isinstance(value, str | int | float):  # bool is an int
                raise _At(line, f"{where}env: {key} must be a string or number, got {_type_name(value)}")
            # A number or boolean is taken as written: YAML 1.1 would read 01234 as 668, 1:30 as
            # 90, 1.10 as 1.1 and yes as true, none of which the user typed.
            text = value if isinstance(value, str) else env.plain[key]
            if "\0" in text:
                raise _At(line, f"{where}env: {key} contains a NUL byte, which no environment can hold")
            result[key] = text
        return MappingProxyType(result)

    def _check_dependencies(self, steps: list[Step]) -> None:
        by_name = {step.name: step for step in steps}
        for step in steps:
            for dep in step.depends_on:
                line = self.dep_lines.get((step.name, dep.step), step.line)
                where = f"step '{step.name}': depends_on: "
                if dep.step == step.name:
                    raise _At(line, f"{where}'{dep.step}' is the step itself")
                other = by_name.get(dep.step)
                if other is None:
                    raise _At(line, f"{where}unknown step '{dep.step}' (steps: {', '.join(by_name)})")
                if dep.n_to_n and (step.array_size != other.array_size or step.array_size < 2):
                    raise _At(
                        line,
                        f"{where}N_TO_N needs two array steps of the same size, but "
                        f"'{step.name}' has array_size {step.array_size} and "
                        f"'{other.name}' has {other.array_size}",
                    )
        cycle = _find_cycle(steps)
        if cycle:
            first = by_name[cycle[0]]
            raise _At(first.line, f"dependency cycle: {' -> '.join([*cycle, cycle[0]])}")


def longest_submit_request(pipeline_name: str, step: Step) -> tuple[dict[str, Any], dict[str, str]]:
    """The SubmitJob request the AWS backend would send for `step`, built with the longest
    values the infrastructure can give it (bucket name, queue and job definition ARNs, region, a
    resubmitted job's name, a generation) and this pipeline's own run id length; and what Batch
    adds to a child's environment, at its longest too (batch.batch_environment: 128-character
    compute environment and queue names, the step's last attempt and highest index)."""
    from opsctl.backends.batch import batch_environment, job_name, submit_request

    run_id = f"{pipeline_name}-00000000-000000-0000"
    run_uri = f"s3://{'b' * 63}/runs/{run_id}"
    arn = "arn:aws-us-gov:batch:us-gov-west-1:000000000000:"
    record = step.record(f"{run_uri}/lists/{step.name}.txt")
    request = submit_request(
        {"run_id": run_id, "pipeline": pipeline_name, "generation": 999_999},
        record,
        job_name=job_name(run_id, step.name, "0" * 36),
        queue=f"{arn}job-queue/{'q' * 128}",
        job_definition=f"{arn}job-definition/{'d' * 128}:999999",
        region="us-gov-west-1",
        run_uri=run_uri,
        after={d.step: "0" * 36 for d in step.depends_on},
    )
    return request, batch_environment(record, "c" * 128, "q" * 128, "0" * 36)


def _check_aws_request(pipeline_name: str, step: Step) -> None:
    """Refuse a step whose requests AWS would refuse, at the step's line, before anything runs.

    - The jobName must fit Batch's pattern (batch.JOB_NAME), which the name rules above make
      sure of; checked all the same, since a name AWS refuses stops a launch half way.
    - The container overrides ECS receives for each child must fit RunTask's 8,192 characters
      (batch.MAX_ECS_OVERRIDES), counted as batch.ecs_overrides builds them from the longest
      request (`longest_submit_request`). This is the limit a big `env` meets: AWS accepts the
      SubmitJob, then fails every child, unretried.

    SubmitJob's own 30 KiB payload (batch.MAX_SUBMIT_BYTES) needs no check of its own: the
    overrides are most of the request, and a request whose overrides fit 8,192 characters is
    under 12 KiB (tests/test_spec.py holds the largest one to it).
    """
    from opsctl.backends.batch import JOB_NAME, MAX_ECS_OVERRIDES, ecs_overrides, overrides_chars

    request, added = longest_submit_request(pipeline_name, step)
    if not JOB_NAME.fullmatch(request["jobName"]):
        raise _At(
            step.line, f"step '{step.name}': job name {brief(request['jobName'])} is not one AWS Batch takes"
        )
    chars = overrides_chars(ecs_overrides(request, added))
    if chars > MAX_ECS_OVERRIDES:
        env = sum(len(k) + len(v) for k, v in step.env.items())
        share = (
            f"env: {len(step.env)} {'variable' if len(step.env) == 1 else 'variables'}, {env:,} characters"
        )
        raise _At(
            step.line,
            f"step '{step.name}': its container overrides as ECS receives them would be {chars:,} "
            f"characters, over ECS RunTask's {MAX_ECS_OVERRIDES:,} ({share}), and AWS would fail "
            "every child ('Container Overrides length must be at most 8192'): keep large values "
            "in a file the commands read",
        )


def _empty_map(parent: _Map) -> _Map:
    m = _Map()
    m.line = parent.line
    m.key_lines = {}
    return m


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _find_cycle(steps: list[Step]) -> list[str] | None:
    """A dependency cycle as a list of step names, or None. Depth-first in spec order, with an
    explicit stack: a chain of thousands of steps must not exhaust Python's recursion limit."""
    graph = {step.name: [d.step for d in step.depends_on] for step in steps}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for step in steps:
        if step.name in state:
            continue
        path = [step.name]
        state[step.name] = 1
        pending = [iter(graph[step.name])]  # the edges still to follow from each step on the path
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                pending.append(iter(graph[nxt]))
    return None


def _topological(steps: list[Step]) -> list[Step]:
    """Steps ordered so each follows its dependencies; ties keep spec order (Kahn's algorithm,
    the ready steps in a heap by position: linear but for the heap's log)."""
    waiting = [len(step.depends_on) for step in steps]
    dependents: dict[str, list[int]] = {step.name: [] for step in steps}
    for i, step in enumerate(steps):
        for dep in step.depends_on:
            dependents[dep.step].append(i)
    ready = [i for i, count in enumerate(waiting) if not count]
    heapq.heapify(ready)
    ordered: list[Step] = []
    while ready:
        step = steps[heapq.heappop(ready)]
        ordered.append(step)
        for i in dependents[step.name]:
            waiting[i] -= 1
            if not waiting[i]:
                heapq.heappush(ready, i)
    return ordered
