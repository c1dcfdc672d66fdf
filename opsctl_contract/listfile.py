"""The list file format: one shell command a line. The one definition of "a line" in opsctl.

A line ends at `\\n` (a `\\r` just before it is part of a Windows line break and dropped); nothing
else ends a line. Spaces and tabs around a command are dropped; blank lines and lines starting
with `#` are skipped. A command's index is its position among the remaining lines, from 0, and
that index is its identity: markers and claims are keyed by it.

Python's `str.splitlines` also breaks at `\\r`, `\\v`, `\\f`, `\\x1c`-`\\x1e`, `\\x85`, U+2028 and
U+2029, and other tools have rules of their own; a command holding one of those would be one
command to one reader and two to another, and the indices would disagree. So the spec's
validation refuses them (`problem`), with NUL, which no command line can carry, and commands
longer than the kernel takes as one argument. The plan, the list-file writer (`render_commands`)
and the worker's reader (`parse_commands`) all use this module.
"""

from __future__ import annotations

# Characters some line-splitting function treats as a line break, besides "\n", and NUL.
AMBIGUOUS = {
    "\0": "NUL",
    "\r": "CARRIAGE RETURN",
    "\v": "LINE TABULATION",
    "\f": "FORM FEED",
    "\x1c": "FILE SEPARATOR",
    "\x1d": "GROUP SEPARATOR",
    "\x1e": "RECORD SEPARATOR",
    "\x85": "NEXT LINE",
    "\u2028": "LINE SEPARATOR",
    "\u2029": "PARAGRAPH SEPARATOR",
}
# Linux's MAX_ARG_STRLEN (32 pages of 4 KiB) bounds each argument of execve, terminating NUL
# included; a command is one argument of `/bin/sh -c`.
MAX_COMMAND_BYTES = 32 * 4096 - 1
_BLANKS = " \t"


BOM = "\ufeff"  # a byte-order mark: some editors start UTF-8 files with one


def lines(text: str) -> list[str]:
    """The lines of `text`, each without its line break. A byte-order mark that starts the text
    is the file's encoding signature, not part of its first command: it is dropped."""
    parts = text.removeprefix(BOM).split("\n")
    if parts and parts[-1] == "":
        parts.pop()  # the break after the last line ends it; it does not start another
    return [part.removesuffix("\r") for part in parts]


def command_of(line: str) -> str | None:
    """The command a line holds, or None for a blank line or a comment."""
    command = line.strip(_BLANKS)
    return command if command and not command.startswith("#") else None


def parse_commands(text: str) -> list[str]:
    """Commands of a list file, in index order."""
    return [command for line in lines(text) if (command := command_of(line)) is not None]


def problem(command: str) -> str | None:
    """Why `command` cannot be one line of a list file and one argument of `sh -c`, or None."""
    for char in command:
        if char in AMBIGUOUS:
            name = AMBIGUOUS[char]
            return f"contains U+{ord(char):04X} ({name}), which a command line cannot hold unambiguously"
        if char == BOM:  # invisible, and no shell takes it for a blank: `\ufeffecho` is not found
            return "contains U+FEFF (a byte-order mark), invisible, and not a blank to the shell"
    size = len(command.encode())
    if size > MAX_COMMAND_BYTES:
        return f"is {size} bytes long, over the {MAX_COMMAND_BYTES} bytes the kernel takes as one argument"
    return None


def render_commands(commands: list[str] | tuple[str, ...]) -> str:
    """A list file whose `parse_commands` gives back exactly `commands`.

    Callers guarantee each command is non-empty, has no `problem`, no blank at either end and
    does not start with `#` (the spec validation enforces it), so the round trip keeps every index.
    """
    return "".join(f"{command}\n" for command in commands)
