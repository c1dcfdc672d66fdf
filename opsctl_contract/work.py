"""A step's work in one generation: which commands each child owns, packed so that a child reads
its own share with two small ranged reads instead of the whole list file.

Why a pack: a child that downloads the list file and lists the step's `done/` folder before its
first command pays for the step's size, not its share; at 10^6 commands over 10,000 children
that is 10,000 copies of the list and, on a resume, 10^7 LIST requests. opsctl writes the pack
once per step and generation (at launch, and at each resume with only the commands not done),
so the share a child reads is already exactly its work.

`<step>/work/<generation>` holds, little-endian:

    b"OPSCTLW1", uint64 children,
    children + 1 entries of (uint64 byte offset, uint64 commands before), then
    the shards: shard i is the bytes [offset[i], offset[i+1]), one line per command it owns,
    "<k>\\t<flag>\\t<command>\\n" in order, where k is the command's index in the list file and
    flag is "r" for a command an earlier generation left in flight (running it again is a
    re-execution), else "-".

Child i reads entries i and i+1 (32 bytes), then its shard. Contiguous split: shard i holds the
commands of the seed's slice `[total*i//n, total*(i+1)//n)` that are not done, so generation 1
is exactly the seed's formula. Dynamic split: the commands not done are cut into n equal runs,
and children claim blocks of their own shard front to back and steal blocks from the back of
others' (worker/claims.py); `blocks` fixes the block boundaries both sides agree on.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from opsctl_contract.errors import OpsctlError
from opsctl_contract.split import contiguous_slice
from opsctl_contract.storage import NotFound, Store

MAGIC = b"OPSCTLW1"
_ENTRY = struct.Struct("<QQ")
_HEADER = len(MAGIC) + 8
MAX_BLOCK = 16  # commands in one dynamic-split claim, at most


class DamagedWork(OpsctlError):
    """The pack does not read as opsctl wrote it (truncated, edited): exit 2, not worth a retry."""

    exit_code = 2


@dataclass(frozen=True)
class Command:
    index: int  # k, the command's index in the step's list file
    text: str
    rerun: bool = False  # left in flight by an earlier generation


def work_key(step: str, generation: int) -> str:
    return f"{step}/work/{generation}"


def shards(total: int, remaining: Sequence[int], split: str, children: int) -> list[Sequence[int]]:
    """The command indices each child owns, from `remaining` (sorted: the commands not done)."""
    if split == "contiguous":
        starts = [contiguous_slice(total, i, children).start for i in range(children)] + [total]
        cuts = [bisect.bisect_left(remaining, start) for start in starts]
    else:
        cuts = [len(remaining) * i // children for i in range(children + 1)]
    return [remaining[cuts[i] : cuts[i + 1]] for i in range(children)]


def blocks(length: int) -> list[range]:
    """A shard's claim blocks: a quarter of what is left, 2 to MAX_BLOCK commands.

    Blocks shrink towards the shard's end, which is where thieves take from: the owner claims
    few times while its shard is long, and the last commands are shared two at a time. (Of the
    shapes bench/balance.py's schedule on paper was tried with, this one kept heavy-tailed
    durations within 1.06 of the bound at 125 commands a child, at 0.11 claims a command.)
    """
    out, start = [], 0
    while start < length:
        size = min(MAX_BLOCK, max(2, -(-(length - start) // 4)), length - start)
        out.append(range(start, start + size))
        start += size
    return out


def pack(
    commands: Sequence[str], owned: Sequence[Sequence[int]], reruns: frozenset[int] = frozenset()
) -> bytes:
    """The pack's bytes for shards `owned` of `commands` (see the module docstring)."""
    bodies = [
        "".join(f"{k}\t{'r' if k in reruns else '-'}\t{commands[k]}\n" for k in shard).encode()
        for shard in owned
    ]
    offset = _HEADER + _ENTRY.size * (len(owned) + 1)
    before = 0
    entries = []
    for shard, body in zip(owned, bodies, strict=True):
        entries.append(_ENTRY.pack(offset, before))
        offset += len(body)
        before += len(shard)
    entries.append(_ENTRY.pack(offset, before))
    return b"".join([MAGIC, struct.pack("<Q", len(owned)), *entries, *bodies])


def _parse(data: bytes, where: str) -> list[Command]:
    out = []
    try:
        for line in data.decode("utf-8").split("\n")[:-1]:
            index, flag, text = line.split("\t", 2)
            out.append(Command(int(index), text, flag == "r"))
    except (UnicodeDecodeError, ValueError):
        raise DamagedWork(f"{where}: damaged (a line is not index, flag and command between tabs)") from None
    return out


class Pack:
    """One step's pack of one generation, read a shard (or a shard's tail) at a time."""

    def __init__(self, store: Store, step: str, generation: int) -> None:
        self.store = store
        self.key = work_key(step, generation)
        self.where = f"{store.uri}/{self.key}"

    def bounds(self, child: int) -> tuple[int, int, int]:
        """Shard `child`'s (first byte, end byte, number of commands): one 32-byte read.
        `NotFound` if this generation has no pack (a run from before packs, a hand-run worker)."""
        at = _HEADER + _ENTRY.size * child
        data = self.store.read_range(self.key, at, at + 2 * _ENTRY.size)
        if len(data) != 2 * _ENTRY.size:
            raise DamagedWork(f"{self.where}: damaged (no entry for child {child})")
        (start, before), (stop, after) = _ENTRY.iter_unpack(data)
        if not (_HEADER <= start <= stop and before <= after):
            raise DamagedWork(f"{self.where}: damaged (entry of child {child})")
        return start, stop, after - before

    def sizes(self, children: int) -> list[int]:
        """How many commands each of the `children` shards holds: the whole index, one read of
        16 bytes a child (160 KB at 10,000 children). The local supervisor reads it once, so
        that a child with nothing to run is not started. `NotFound` if there is no pack."""
        data = self.store.read_range(self.key, 0, _HEADER + _ENTRY.size * (children + 1))
        if (
            len(data) != _HEADER + _ENTRY.size * (children + 1)
            or data[: len(MAGIC)] != MAGIC
            or struct.unpack_from("<Q", data, len(MAGIC)) != (children,)
        ):
            raise DamagedWork(f"{self.where}: damaged (not an index of {children} shards)")
        before = [b for _, b in _ENTRY.iter_unpack(data[_HEADER:])]
        sizes = [after - b for b, after in itertools.pairwise(before)]
        if min(sizes, default=0) < 0:
            raise DamagedWork(f"{self.where}: damaged (an entry counts backwards)")
        return sizes

    def shard(self, child: int) -> list[Command]:
        """Shard `child` whole: two reads."""
        start, stop, count = self.bounds(child)
        commands = _parse(self.store.read_range(self.key, start, stop), self.where)
        if len(commands) != count:
            raise DamagedWork(f"{self.where}: damaged (shard {child} has {len(commands)} of {count} lines)")
        return commands

    def tail(self, child: int) -> Tail:
        start, stop, count = self.bounds(child)
        return Tail(self, start, stop, count)


class Tail:
    """A shard read from its end, a chunk at a time, as a thief needs it: a thief runs the last
    commands of a shard, so it should not download the rest."""

    FIRST_CHUNK = 4096

    def __init__(self, pack: Pack, start: int, stop: int, count: int) -> None:
        self.pack = pack
        self.start = start
        self.low = stop  # bytes [low, stop) are parsed
        self.count = count
        self.loaded: list[Command] = []  # positions count - len(loaded) .. count - 1
        self.chunk = self.FIRST_CHUNK
        self.partial = b""  # the incomplete first line of the last chunk read

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, position: int) -> Command:
        while position < self.count - len(self.loaded):
            if self.low <= self.start:
                raise DamagedWork(f"{self.pack.where}: damaged (a shard is shorter than its entry)")
            low = max(self.start, self.low - self.chunk)
            data = self.pack.store.read_range(self.pack.key, low, self.low) + self.partial
            self.chunk *= 2
            self.low = low
            if low > self.start:  # the first line may begin before this chunk
                cut = data.find(b"\n") + 1
                if not cut:
                    self.partial = data
                    continue
                self.partial, data = data[:cut], data[cut:]
            else:
                self.partial = b""
            self.loaded[:0] = _parse(data, self.pack.where)
        return self.loaded[position - (self.count - len(self.loaded))]


class InMemory:
    """The same interface over a list file read whole: the worker's way when a generation has
    no pack (a hand-run worker, or a run created before packs). Its shards are generation 1's,
    whatever the generation: every child must agree on them, and done commands are skipped."""

    def __init__(self, commands: Sequence[str], split: str, children: int) -> None:
        self.commands = commands
        self.owned = shards(len(commands), range(len(commands)), split, children)

    def shard(self, child: int) -> list[Command]:
        return [Command(k, self.commands[k]) for k in self.owned[child]]

    def tail(self, child: int) -> list[Command]:
        return self.shard(child)


def read_pack_whole(store: Store, step: str, generation: int) -> Iterator[tuple[int, list[Command]]]:
    """Every shard of a generation's pack: for opsctl at resume (in-flight commands). Nothing
    when the generation has no pack."""
    key = work_key(step, generation)
    try:
        data = store.read_range(key, 0, 1 << 62)  # whole, past the limit of `read`: a pack may be
    except NotFound:  # a little larger than the largest list file
        return
    where = f"{store.uri}/{key}"
    if data[: len(MAGIC)] != MAGIC:
        raise DamagedWork(f"{where}: damaged (not an opsctl work pack)")
    (children,) = struct.unpack_from("<Q", data, len(MAGIC))
    entries = [_ENTRY.unpack_from(data, _HEADER + _ENTRY.size * i) for i in range(children + 1)]
    for child in range(children):
        (start, _), (stop, _) = entries[child], entries[child + 1]
        yield child, _parse(data[start:stop], where)
