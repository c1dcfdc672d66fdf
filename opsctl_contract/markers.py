"""Per-command markers under `OPSCTL_STATE_URI/<step>/`: the durable record of what ran.

`done/<k>` is written after command k exits 0 and is what makes a retried or resumed attempt
skip it; `failed/<k>` holds the exit code and the tail of stderr for the status report. A
command that failed once and later succeeded has both: done wins.
"""

from __future__ import annotations

import json
from typing import Any

from opsctl_contract.storage import Store

DONE = "done"
FAILED = "failed"
RERUN = "rerun"  # dynamic split: a command run again because its runner died mid-way


class Markers:
    """Marker I/O for one step of one run."""

    def __init__(self, store: Store, step: str) -> None:
        self.store = store
        self.step = step

    def _key(self, kind: str, index: int) -> str:
        return f"{self.step}/{kind}/{index}"

    def indices(self, kind: str) -> set[int]:
        """Command indices with a marker of `kind`: one listing of its folder (on S3, a LIST
        request per 1,000 markers)."""
        folder = f"{self.step}/{kind}"
        return {
            int(key.rsplit("/", 1)[1]) for key in self.store.list(folder) if key.rsplit("/", 1)[1].isdigit()
        }

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


LEDGER = "ledger"
LEDGER_EVERY = 16  # commands between two updates of a child's ledger


class Ledger:
    """One child attempt's running counts, kept in the *name* of one object per attempt.

    `status` reads every child's counts of a running step with one LIST of `<step>/ledger/` (a
    page per 1,000 children), instead of listing every marker: a poll then costs the same at
    10^3 or 10^6 commands done. The name is
    `<child>-<generation>-<attempt>-<seq>-<done>-<failed>-<rerun>-<put>-<get>`; an update writes
    the next name and deletes the previous one, every LEDGER_EVERY commands and when the attempt
    ends. The put/get figures are the attempt's storage requests by S3 price class.

    Counts are what the attempt did: `done` are done markers it wrote. A killed attempt's last
    up to LEDGER_EVERY - 1 commands are missing from its ledger, so a running step's figures may
    trail; a step that ended is counted exactly from its markers, once.
    """

    def __init__(self, store: Store, step: str, child: int, generation: int, attempt: int) -> None:
        self.store = store
        self.folder = f"{step}/{LEDGER}"
        self.stem = f"{child}-{generation}-{attempt}"
        self.counts = {DONE: 0, FAILED: 0, RERUN: 0}
        self.seq = 0
        self.key: str | None = None
        self.unsaved = 0

    def note(self, kind: str) -> None:
        self.counts[kind] += 1
        self.unsaved += 1
        if self.unsaved >= LEDGER_EVERY:
            self.save()

    def save(self) -> None:
        if self.key is not None and not self.unsaved:
            return
        from opsctl_contract.storage import REQUESTS

        self.seq += 1
        puts = REQUESTS["put"] + 1  # this write included
        figures = f"{self.counts[DONE]}-{self.counts[FAILED]}-{self.counts[RERUN]}-{puts}-{REQUESTS['get']}"
        key = f"{self.folder}/{self.stem}-{self.seq}-{figures}"
        self.store.write(key, b"")
        if self.key is not None:
            self.store.delete(self.key)
        self.key = key
        self.unsaved = 0


def ledger_totals(store: Store, step: str) -> dict[str, int]:
    """A step's figures from its children's ledgers: one listing, a page per 1,000 attempts.

    done, reexecuted and requests add up over every attempt; failed is each child's latest
    attempt's (a retry runs its failures again).
    """
    latest: dict[tuple[int, int, int], tuple[int, ...]] = {}
    for key in store.list(f"{step}/{LEDGER}"):
        parts = key.rsplit("/", 1)[1].split("-")
        if len(parts) != 9 or not all(p.isdigit() for p in parts):
            continue  # a staging file, or a key of another layout
        child, generation, attempt, seq, *figures = (int(p) for p in parts)
        attempt_key = (child, generation, attempt)
        if attempt_key not in latest or latest[attempt_key][0] < seq:
            latest[attempt_key] = (seq, *figures)
    newest: dict[int, tuple[int, int]] = {}
    totals = {"done": 0, "failed": 0, "reexecuted": 0, "put": 0, "get": 0}
    for (child, generation, attempt), (_, done, _, rerun, put, get) in latest.items():
        totals["done"] += done
        totals["reexecuted"] += rerun
        totals["put"] += put
        totals["get"] += get
        if child not in newest or newest[child] < (generation, attempt):
            newest[child] = (generation, attempt)
    totals["failed"] = sum(latest[(c, g, a)][2] for c, (g, a) in newest.items())
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
