"""Per-command markers under `OPSCTL_STATE_URI/<step>/`: the durable record of what ran.

`done/<k>` is written after command k exits 0 and is what makes a retried or resumed attempt
skip it; `failed/<k>` holds the exit code and the tail of stderr for the status report. A
command that failed once and later succeeded has both: done wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from opsctl_contract.storage import Store

WIDTH = 9  # digits of a marker's index: 10^9 - 1 is beyond any list file opsctl reads
DONE = "done"
FAILED = "failed"
RERUN = "rerun"  # dynamic split: a command run again because its runner died mid-way


class Markers:
    """Marker I/O for one step of one run."""

    def __init__(self, store: Store, step: str) -> None:
        self.store = store
        self.step = step

    def _key(self, kind: str, index: int) -> str:
        return f"{self.step}/{kind}/{index:0{WIDTH}d}"

    def indices(self, kind: str) -> set[int]:
        """Command indices with a marker of `kind`: one listing of its folder (on S3, a LIST
        request per 1,000 markers)."""
        return _indices(self.store.list(f"{self.step}/{kind}"))

    def between(self, kind: str, first: int, last: int) -> set[int]:
        """Command indices in [first, last] with a marker of `kind`: a bounded listing, a LIST
        request per 1,000 markers *in that range* (keys are zero-padded, so they sort as numbers)."""
        after = f"{first - 1:0{WIDTH}d}" if first > 0 else ""
        return _indices(self.store.list(f"{self.step}/{kind}", after=after, upto=f"{last:0{WIDTH}d}"))

    def scan(self) -> tuple[set[int], set[int], set[int]]:
        """(done, failed, rerun) command indices, exactly: a listing of each kind's folder.

        `failed` holds only commands without a `done` marker: one that failed and later
        succeeded counts as done. On S3 this costs a LIST request per 1,000 markers, so it is
        for a step that ended (counted once) and for resume; polls of a running step read the
        children's ledgers instead.
        """
        done, failed, rerun = (self.indices(kind) for kind in (DONE, FAILED, RERUN))
        return done, failed - done, rerun

    def mark(self, kind: str, index: int, record: dict[str, Any]) -> None:
        self.store.write(self._key(kind, index), json.dumps(record, sort_keys=True).encode())

    def read(self, kind: str, index: int) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(self.store.read(self._key(kind, index)))
        return record


def _indices(keys: list[str]) -> set[int]:
    return {int(name) for key in keys if (name := key.rsplit("/", 1)[1]).isdigit()}


LEDGER = "ledger"
LEDGER_EVERY = 16  # commands between two updates of a child's ledger


class Ledger:
    """One child attempt's running counts, kept in the *name* of one object per attempt.

    `status` reads every child's counts of a running step with one LIST of `<step>/ledger/` (a
    page per 1,000 children), instead of listing every marker: a poll then costs the same at
    10^3 or 10^6 commands done. The name is
    `<child>-<generation>-<attempt>-<seq>-<done>-<failed>-<rerun>-<put>-<get>-<left>-<victim>-<pace>`;
    an update writes the next name and deletes the previous one, every LEDGER_EVERY commands,
    when a dynamic-split child starts stealing from another shard, and when the attempt ends.
    put/get are the attempt's storage requests by S3 price class; `left` is how much of its own
    shard the child has not claimed yet, `victim` the shard it steals from, plus one (0: none),
    and `pace` the milliseconds its commands took on average (0: none ran yet), which is how
    dynamic-split thieves choose where to steal (worker/claims.py).

    Counts are what the attempt did: `done` are done markers it wrote. A killed attempt's last
    up to LEDGER_EVERY - 1 commands are missing from its ledger, so a running step's figures may
    trail; a step that ended is counted exactly from its markers, once.
    """

    def __init__(self, store: Store, step: str, child: int, generation: int, attempt: int) -> None:
        self.store = store
        self.folder = f"{step}/{LEDGER}"
        self.stem = f"{child}-{generation}-{attempt}"
        self.counts = {DONE: 0, FAILED: 0, RERUN: 0}
        self.left = 0
        self.victim: int | None = None
        self.pace = 0  # milliseconds per command, for thieves; 0 until one has run
        self.seq = 0
        self.key: str | None = None
        self.unsaved = 0

    def note(self, kind: str) -> None:
        self.counts[kind] += 1
        self.unsaved += 1
        if self.unsaved >= LEDGER_EVERY:
            self.save()

    def aim(self, victim: int | None) -> None:
        """Name shard `victim` (None: none) as the one this attempt steals from, for the next
        save: other thieves share it only where it has enough left, and a retry of this child
        finds the block it may have left in flight there."""
        if victim != self.victim:
            self.victim = victim
            self.unsaved += 1

    def publish(self) -> None:
        """Save now, even with no new count: `left` or `pace` changed for thieves to see."""
        self.unsaved += 1
        self.save()

    def save(self) -> None:
        if self.key is not None and not self.unsaved:
            return
        requests = self.store.usage.requests  # the worker's stores share one Usage
        self.seq += 1
        puts = requests["put"] + 1  # this write included
        victim = 0 if self.victim is None else self.victim + 1
        figures = (
            f"{self.counts[DONE]}-{self.counts[FAILED]}-{self.counts[RERUN]}-{puts}-{requests['get']}"
            f"-{self.left}-{victim}-{self.pace}"
        )
        key = f"{self.folder}/{self.stem}-{self.seq}-{figures}"
        self.store.write(key, b"")
        if self.key is not None:
            self.store.delete(self.key)
        self.key = key
        self.unsaved = 0


@dataclass(frozen=True)
class Entry:
    """One child attempt's latest ledger."""

    child: int
    generation: int
    attempt: int
    done: int
    failed: int
    rerun: int
    put: int
    get: int
    left: int
    victim: int | None
    pace: int  # milliseconds per command; 0: unknown


def ledgers(
    store: Store, step: str, *, child: int | None = None, generation: int | None = None
) -> list[Entry]:
    """The latest ledger of every child attempt: one listing, a page per 1,000 attempts (with
    `child` and `generation`, a bounded listing of that child's attempts only)."""
    bound = {}
    if child is not None and generation is not None:
        # Names run "<child>-<generation>-<digits and dashes>"; ":" sorts after those.
        bound = {"after": f"{child}-{generation}-", "upto": f"{child}-{generation}-:"}
    return _entries(store.list(f"{step}/{LEDGER}", **bound))


def _entries(keys: list[str]) -> list[Entry]:
    latest: dict[tuple[int, int, int], tuple[int, ...]] = {}
    for key in keys:
        parts = key.rsplit("/", 1)[1].split("-")
        if len(parts) != 12 or not all(p.isdigit() for p in parts):
            continue  # a staging file, or a key of another layout
        c, g, a, seq, *figures = (int(p) for p in parts)
        if (c, g, a) not in latest or latest[(c, g, a)][0] < seq:
            latest[(c, g, a)] = (seq, *figures)
    return [
        Entry(c, g, a, done, failed, rerun, put, get, left, victim - 1 if victim else None, pace)
        for (c, g, a), (_, done, failed, rerun, put, get, left, victim, pace) in sorted(latest.items())
    ]


def ledger_totals(store: Store, step: str) -> dict[str, int]:
    """A step's figures from its children's ledgers: one listing, a page per 1,000 attempts.

    done, reexecuted and requests add up over every attempt; failed is each child's latest
    attempt's (a retry runs its failures again).
    """
    totals = {"done": 0, "failed": 0, "reexecuted": 0, "put": 0, "get": 0}
    newest: dict[int, Entry] = {}
    for entry in ledgers(store, step):
        totals["done"] += entry.done
        totals["reexecuted"] += entry.rerun
        totals["put"] += entry.put
        totals["get"] += entry.get
        if entry.child not in newest or (newest[entry.child].generation, newest[entry.child].attempt) < (
            entry.generation,
            entry.attempt,
        ):
            newest[entry.child] = entry
    totals["failed"] = sum(e.failed for e in newest.values())
    return totals


def step_figures(
    store: Store, step: str, total: int, *, exact: bool
) -> tuple[dict[str, int], dict[str, int]]:
    """A step's command figures for `status`: exact from its markers (`exact`, once it ended),
    else from its children's ledgers; and its workers' storage requests, from the ledgers."""
    ledger = ledger_totals(store, step)
    if exact:
        done, failed, rerun = Markers(store, step).scan()
        figures = {"done": len(done), "failed": len(failed), "reexecuted": len(rerun)}
    else:
        figures = {
            "done": min(ledger["done"], total),
            "failed": ledger["failed"],
            "reexecuted": ledger["reexecuted"],
        }
    return {"total": total, **figures}, {"put": ledger["put"], "get": ledger["get"]}
