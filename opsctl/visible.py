"""What commands printed, made visible: control sequences written out, never obeyed.

A command's output reaches the user's terminal through `opsctl logs`, the failure summary of
`watch` and the tables, and `opsctl report`. Written as it is, an escape sequence in it acts on
that terminal: it retitles it (OSC 0), sets its clipboard (OSC 52), moves the cursor over lines
already shown, or reorders what is read (bidirectional overrides). `visible` writes each such
character as a backslash escape instead (`\\x1b`, `\\u009b`, `\\u202e`), and each byte that is
not UTF-8 as `\\xNN`, so what is shown is what was written. Line breaks and tabs stay.
`opsctl logs --raw` is the way to the bytes as logged.
"""

from __future__ import annotations

import codecs
import re

# C0 controls but tab and line feed; DEL; C1 controls; the bidirectional embeddings, overrides
# and isolates; surrogates, which are bytes that are not UTF-8 (decoded with surrogateescape)
# or text no terminal can be sent.
_RANGES = ((0x00, 0x08), (0x0B, 0x1F), (0x7F, 0x9F), (0x202A, 0x202E), (0x2066, 0x2069), (0xD800, 0xDFFF))
_HIDDEN = re.compile("[" + "".join(f"\\U{first:08x}-\\U{last:08x}" for first, last in _RANGES) + "]")


def _written_out(code: int) -> str:
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # the byte surrogateescape kept: shown as that byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"  # C1 as \u0080..\u009f, so never mistaken for a byte


class _Escapes(dict[str, str]):
    """Each hidden character's escape, made the first time it is met: a dictionary lookup a
    match is what keeps a log dense with colour codes near 20 MB/s."""

    def __missing__(self, char: str) -> str:
        shown = self[char] = _written_out(ord(char))
        return shown


_SHOWN = _Escapes()


def visible(text: str | bytes) -> str:
    """`text` with every character that would act on a terminal written out as an escape;
    bytes are read as UTF-8, a byte that is not UTF-8 shown as `\\xNN`. Applying it twice
    changes nothing more: its output holds none of those characters."""
    if isinstance(text, bytes):
        text = text.decode(errors="surrogateescape")
    return _HIDDEN.sub(lambda match: _SHOWN[match[0]], text)


class VisibleStream:
    """`visible` over bytes that come in chunks (a log read a MiB at a time): a character
    split between two chunks is decoded whole, not shown as two bytes that are not UTF-8."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")

    def decode(self, chunk: bytes, *, final: bool = False) -> str:
        """The visible text of `chunk`, but for a character it ends inside of (kept for the
        next chunk); with `final`, all of it."""
        return visible(self._decoder.decode(chunk, final))
