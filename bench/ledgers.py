"""Storage requests of the children's ledgers at 10^4 children: replacing each ledger object (a PUT
of the new name, a DELETE of the old: the design opsctl uses, and why the job role may delete
ledgers) against keeping every one (PUTs only, nothing ever deleted: the peer).

Each child of a step writes a ledger every LEDGER_EVERY commands and once at its end
(opsctl_contract/markers.py); `status` reads a running step's figures with one listing of the
ledger folder. Deleting costs nothing per request (S3 Standard: DELETE is free) but keeps that
listing at one key per child attempt; keeping every ledger makes the folder, and so every poll,
grow with the commands done. Both designs run here for real: the workers' `Ledger` class on a
directory store with 10,000 children of 100 commands each (10^6 commands), every ledger
written, and the listing that a poll makes counted at the end and half way.

Usage: python bench/ledgers.py [--children 10000] [--commands-per-child 100] [--polls 360]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opsctl_contract.markers import DONE, LEDGER, Ledger, ledgers  # noqa: E402
from opsctl_contract.storage import LocalStore, request_cost  # noqa: E402

PAGE = 1000  # keys per ListObjectsV2 page


class Keeping(LocalStore):
    """The peer: a store on which a ledger update never deletes the one before."""

    def delete(self, key: str) -> None:
        pass


def run(store: LocalStore, children: int, per_child: int) -> tuple[Counter[str], int, int]:
    """Every child's ledger over its commands: (requests, keys listed half way, keys at the end)."""
    requests: Counter[str] = Counter()
    half = 0
    for child in range(children):
        before = Counter(store.usage.requests)
        ledger = Ledger(store, "step", child, 1, 1)
        for _ in range(per_child):
            ledger.note(DONE)
        ledger.save()
        requests += Counter(store.usage.requests) - before  # the worker's requests, not the listings
        if child == children // 2:
            half = len(store.list(f"step/{LEDGER}"))
    end = len(store.list(f"step/{LEDGER}"))
    assert sum(e.done for e in ledgers(store, "step")) == children * per_child, "every command counted"
    return requests, half, end


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--commands-per-child", type=int, default=100)
    parser.add_argument("--polls", type=int, default=360, help="status polls over the step (an hour at 10 s)")
    args = parser.parse_args()
    rows = {}
    for name, kind in (("replace (opsctl)", LocalStore), ("keep every ledger", Keeping)):
        with tempfile.TemporaryDirectory() as folder:
            requests, half, end = run(kind(Path(folder)), args.children, args.commands_per_child)
        writes = requests["put"]
        # A poll lists the folder: a page per 1,000 keys; over the step its size grows from 0
        # to `end` (half way: `half`), so the polls' pages are about polls x the mean size.
        pages = args.polls * math.ceil((half + end) / 2 / PAGE)
        dollars = request_cost({"put": writes + pages, "delete": requests["delete"]})
        rows[name] = (writes, requests["delete"], end, math.ceil(end / PAGE), pages, dollars)
    print(
        f"{args.children} children x {args.commands_per_child} commands, {args.polls} status polls "
        "(S3 Standard request prices)"
    )
    print(
        f"{'design':<20} {'PUT':>8} {'DELETE':>8} {'keys':>8} {'pages/poll':>10} {'poll pages':>10} {'$':>8}"
    )
    for name, (puts, deletes, keys, per_poll, pages, dollars) in rows.items():
        print(f"{name:<20} {puts:>8} {deletes:>8} {keys:>8} {per_poll:>10} {pages:>10} {dollars:>8.3f}")
    ours, peer = rows["replace (opsctl)"], rows["keep every ledger"]
    print(f"RESULT ledger_poll_pages_vs_keeping {ours[3] / peer[3]:.2f} ratio target <= 0.5")
    print(f"RESULT ledger_dollars_vs_keeping {ours[5] / peer[5]:.2f} ratio target <= 1.0")


if __name__ == "__main__":
    main()
