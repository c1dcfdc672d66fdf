"""Reading the files a user hands opsctl: a regular file, of a bounded size, or one line saying why not.

A spec, a list file or an infra file can be anything a path can name: a FIFO (opening it for
reading waits for a writer, forever), a device (`/dev/zero` never ends), a directory, a file of
gigabytes. Each is opened without blocking, checked to be a regular file, and read only up to a
limit, before any parser sees a byte.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from opsctl_contract.errors import BadInput

MiB = 1024 * 1024
SPEC_LIMIT = 8 * MiB
LIST_FILE_LIMIT = 512 * MiB  # 10^6 commands of up to ~500 bytes
INFRA_LIMIT = 1 * MiB

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class Unreadable(BadInput):
    """A file that cannot be read as input; `reason` completes "FILE <reason>"."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def size_text(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size} bytes"


def read_file(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them; `Unreadable` otherwise."""
    try:
        # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unreadable(path, f"{what} not found") from None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            shown = str(path)[:80] + "..."
            raise Unreadable(shown, f"{what}: the path is longer than the system allows") from None
        raise Unreadable(path, f"cannot read the {what}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        for test, kind in _KINDS:
            if test(mode):
                raise Unreadable(path, f"the {what} is {kind}, not a regular file")
        size = os.fstat(fd).st_size
        if size > limit:
            raise Unreadable(path, f"the {what} is {size_text(size)}, over the limit of {size_text(limit)}")
        chunks, total = [], 0
        while chunk := os.read(fd, min(limit + 1 - total, MiB)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise Unreadable(path, f"the {what} grew past the limit of {size_text(limit)} while read")
        return b"".join(chunks)
    except OSError as e:
        raise Unreadable(path, f"cannot read the {what}: {e.strerror}") from None
    finally:
        os.close(fd)


def read_text(path: str | Path, limit: int, what: str = "file") -> str:
    """`read_file` as UTF-8 text."""
    data = read_file(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Unreadable(path, f"the {what} is not UTF-8 text (byte {e.start})") from None
