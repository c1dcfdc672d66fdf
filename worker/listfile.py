"""The list file format: one shell command a line.

Blank lines and lines starting with `#` are skipped; a command's index is its position among the
remaining lines, from 0, and that index is its identity (markers and claims are keyed by it).
"""

from __future__ import annotations


def parse_commands(text: str) -> list[str]:
    """Commands of a list file, in index order."""
    commands = []
    for line in text.splitlines():
        command = line.strip()
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def render_commands(commands: list[str] | tuple[str, ...]) -> str:
    """A list file whose `parse_commands` gives back exactly `commands`.

    Callers guarantee each command is one non-empty line that does not start with `#`
    (the spec validation enforces it), so the round trip keeps every index.
    """
    return "".join(f"{command}\n" for command in commands)
