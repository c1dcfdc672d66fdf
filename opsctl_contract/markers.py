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
        """(done, failed, rerun) command indices from one listing of the step's folder.

        `failed` holds only commands without a `done` marker: one that failed and later
        succeeded counts as done. Status polls call this: on S3 it costs a LIST request per
        1,000 keys under the step (markers and claims), so a poll grows with the work done.
        """
        found: dict[str, set[int]] = {DONE: set(), FAILED: set(), RERUN: set()}
        for key in self.store.list(self.step):
            parts = key.split("/")  # <step>/<kind>/<k>
            if len(parts) == 3 and parts[1] in found and parts[2].isdigit():
                found[parts[1]].add(int(parts[2]))
        return found[DONE], found[FAILED] - found[DONE], found[RERUN]

    def mark(self, kind: str, index: int, record: dict[str, Any]) -> None:
        self.store.write(self._key(kind, index), json.dumps(record, sort_keys=True).encode())

    def read(self, kind: str, index: int) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(self.store.read(self._key(kind, index)))
        return record
