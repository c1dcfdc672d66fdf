"""The spec's checks: a loaded YAML document in, a `pipeline.Pipeline` out, or the first problem.

Validation is hand-written rather than delegated to a schema library: each message must point at
a YAML line, which needs the node tree anyway, and the schema is small enough that explicit
checks read better than a schema plus a translation layer for its error locations.

It is apart from the model (opsctl/pipeline.py) so that the model reads as what a spec is, and
this as what a spec may be; `pipeline.parse` imports it when a spec is parsed. Each problem is an
`_At` (opsctl/spec_yaml.py), which `parse` turns into a `SpecError` naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from opsctl.backends import step_problem
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
from opsctl.spec_graph import _check_dependencies, _topological
from opsctl.spec_model import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    IMAGE,
    MAX_IMAGE,
    MAX_TEMPLATE_RANGE,
    RESERVED_ENV,
    STORAGE_REFUSED,
    Dependency,
    Pipeline,
    Queue,
    Split,
    Step,
)
from opsctl.spec_yaml import _At, _Map, _Seq
from opsctl_contract.errors import brief
from opsctl_contract.files import LIST_FILE_LIMIT, Unreadable, read_text
from opsctl_contract.listfile import command_of, lines, problem

_PIPELINE_KEYS = ("name", "defaults", "steps")
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
        _check_dependencies(steps, self.dep_lines)
        for step in steps:
            if found := step_problem(name, step.record("")):
                raise _At(step.line, found)
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


def _empty_map(parent: _Map) -> _Map:
    m = _Map()
    m.line = parent.line
    m.key_lines = {}
    return m


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)
