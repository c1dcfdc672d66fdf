"""The spec's YAML, read with line numbers and within bounds: the loader `pipeline.parse` uses.

A YAML library alone would give values without their place, take YES for true and 2024-13-01 for a
date, keep the last of two equal keys, and expand a few lines of aliases into billions of values.
The loader here gives each mapping and sequence the lines it was written at, keeps unquoted keys as
written, refuses a duplicate key or one that is not a string, and measures the node graph before
anything walks it. It is apart from the model (opsctl/pipeline.py) and the checks
(opsctl/spec_check.py) because what it guards against is YAML's, not the spec's.
"""

from __future__ import annotations

from typing import Any

import yaml

from opsctl_contract.errors import brief

MAX_YAML_NODES = 2_000_000  # values a spec may expand to through YAML aliases


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
