"""Dynamic split: each child works through its own shard and then steals from others', so fast
children take more work, without a coordinator and without listing what others did.

Shards and their claim blocks come from the step's work pack (opsctl_contract/work.py). A block
is claimed by creating `<step>/claims/<generation>/<shard>/<first position>` only if absent
(O_EXCL-like locally, `If-None-Match: *` on S3): of any number of children racing for a block,
exactly one runs it. The owner claims its shard's blocks front to back and stops at its first
lost claim; thieves claim another shard's blocks back to front. A thief that loses a block
reads who holds it: another thief's, it goes on below; the owner's, it stops, since the owner
holds every block below its own. So each block is claimed exactly once, none is left unclaimed,
and several thieves can share a long shard. Thieves choose shards from one listing of the
children's ledgers (how much each owner has left, its pace, which shard each thief is on).

Nothing is lost when a runner dies:
  - a child holds one block at a time; its retried attempt (same generation) lists the claims of
    its own shard and of the shard its last ledger names as its victim, and runs again what it
    claimed and did not finish, the command that was in flight first;
  - `opsctl resume` starts a new generation with a new pack of the commands not done and new
    claims, flagging the commands the old generation left in flight.
Only those commands run twice, and each such re-run leaves a `rerun/<k>` marker that status counts.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, MutableMapping, Sequence
from typing import Protocol

from opsctl_contract.markers import DONE, FAILED, RERUN, Ledger, Markers, ledgers
from opsctl_contract.storage import NotFound, Store
from opsctl_contract.work import Command, blocks
from worker.env import WorkerEnv

# A shard is worth stealing from while its owner has at least MIN_LEFT commands unclaimed per
# thief and they would take at least STEAL_AFTER seconds at the owner's pace (unknown until its
# first block ends: then worth one thief's try): stealing costs a few requests and a round trip
# each, which long commands repay and `true` does not.
MIN_LEFT = 2
STEAL_AFTER = 1.0


class Commands(Protocol):
    """A shard's commands by position: a list, or a pack's tail that loads as it is indexed."""

    def __len__(self) -> int: ...

    def __getitem__(self, position: int) -> Command: ...


class Shards(Protocol):
    """Where shards come from: a work pack (ranged reads) or a list file read whole."""

    def tail(self, child: int) -> Commands: ...


class Claims:
    def __init__(
        self,
        store: Store,
        env: WorkerEnv,
        ledger: Ledger,
        source: Shards,
        own: Sequence[Command],
        texts: MutableMapping[int, str],
    ) -> None:
        self.store = store
        self.env = env
        self.ledger = ledger
        self.source = source
        self.own = own
        self.texts = texts  # every command this child runs, by index, for the runner
        self.markers = Markers(store, env.step)
        self.folder = f"{env.step}/claims/{env.generation}"
        self.host = socket.gethostname()
        self.ran, self.busy = 0, 0.0  # commands this child ran, and the seconds they took
        ledger.left = len(own)

    def _claim(self, shard: int, block: range) -> bool:
        record = {
            "run_id": self.env.run_id,
            "step": self.env.step,
            "child": self.env.index,
            "attempt": self.env.attempt,
            "generation": self.env.generation,
            "host": self.host,
            "shard": shard,
            "positions": [block.start, block.stop],
        }
        return self.store.create(f"{self.folder}/{shard}/{block.start}", json.dumps(record).encode())

    def _claimed(self, shard: int) -> set[int]:
        """First positions of the claimed blocks of `shard`: one listing (a page per 1,000 blocks)."""
        names = (key.rsplit("/", 1)[1] for key in self.store.list(f"{self.folder}/{shard}"))
        return {int(name) for name in names if name.isdigit()}

    def _mark_rerun(self, k: int) -> None:
        self.markers.mark(RERUN, k, {"child": self.env.index, "attempt": self.env.attempt, "host": self.host})
        self.ledger.note(RERUN)

    def _run(self, commands: Iterable[Command], in_flight: int | None = None) -> Iterator[int]:
        for command in commands:
            self.texts[command.index] = command.text
            if command.rerun or command.index == in_flight:
                self._mark_rerun(command.index)
            began = time.monotonic()
            yield command.index  # the runner runs it and writes its marker before coming back
            self.ran += 1
            self.busy += time.monotonic() - began
            self.ledger.pace = max(1, round(1000 * self.busy / self.ran))

    def commands(self) -> Iterator[int]:
        """The command indices this child runs, each in a block it claimed before it is yielded."""
        front, victim, below = 0, None, None
        if self.env.attempt > 1:
            front, victim, below = yield from self._recover()
        yield from self._own(front)
        yield from self._steal(victim, below)

    # --- the owner ----------------------------------------------------------------------------

    def _own(self, front: int) -> Iterator[int]:
        """Claim and run this child's own shard front to back. Thieves judge it by its ledger,
        so the ledger is written when the owner starts (thieves only look at started shards)
        and when its first block ends (its pace); after that, every LEDGER_EVERY commands.
        (Writing it at every halving of what is left was tried: no gain in bench/balance.py.)"""
        for block in blocks(len(self.own)):
            if block.start < front:
                continue
            if not self._claim(self.env.index, block):
                break  # a thief came from the back this far: the rest is taken
            self.ledger.left = len(self.own) - block.stop
            if block.start == front:
                self.ledger.publish()
            yield from self._run([self.own[p] for p in block])
            if block.start == front and self.ledger.left:
                self.ledger.publish()
        self.ledger.left = 0

    # --- a thief ------------------------------------------------------------------------------

    def _steal(self, resume_from: int | None, below: int | None) -> Iterator[int]:
        """Steal until a fresh look finds nothing to take: a pass lists the ledgers once and
        tries its candidates in turn; after a successful steal the next pass looks again, so a
        thief's cost is its victims plus one pass, not the array size."""
        tried = {self.env.index}
        if resume_from is not None:  # where this child's earlier attempt was stealing
            tried.add(resume_from)
            yield from self._steal_from(resume_from, below)
        stole = True
        while stole:
            stole = False
            for victim in self._victims(tried):
                tried.add(victim)
                stole = yield from self._steal_from(victim)
                if stole:
                    break
            self.ledger.aim(None)  # off that shard: others need not share it with this child

    def _victims(self, tried: set[int]) -> list[int]:
        """Shards worth a try, most work left first: one listing of the ledgers (a page per
        1,000 children).

        Only a started owner's shard is a candidate, and only while its owner last reported at
        least MIN_LEFT commands unclaimed per thief (this one included) that would take
        STEAL_AFTER seconds at its pace (`_worth`): a child that has not started will run its
        own shard when it does, and stealing a few short commands saves less than it costs."""
        left: dict[int, int] = {}
        pace: dict[int, int] = {}
        latest: dict[int, int | None] = {}  # each other child's victim, by its latest attempt
        for entry in ledgers(self.store, self.env.step):
            if entry.generation != self.env.generation:
                continue
            left[entry.child] = entry.left  # attempts are listed in order: the latest wins
            pace[entry.child] = entry.pace
            latest[entry.child] = entry.victim
        thieves = Counter(v for c, v in latest.items() if v is not None and c != self.env.index)
        share = {j: left[j] // (thieves[j] + 1) for j in left}
        size = self.env.array_size
        candidates = [j for j in left if j not in tried and _worth(share[j], pace[j], thieves[j])]
        return sorted(candidates, key=lambda j: (-share[j], (j - self.env.index) % size))

    def _steal_from(self, victim: int, below: int | None = None) -> Generator[int, None, bool]:
        """Claim `victim`'s blocks from its back (or from position `below` down) until a claim
        fails; whether it took any."""
        tail = self.source.tail(victim)
        first = True
        for block in reversed(blocks(len(tail))):
            if below is not None and block.start >= below:
                continue
            # Named in the ledger before the claim, saved right after it (and by the exit on
            # SIGTERM): a retry of this child looks for its unfinished block where it names.
            self.ledger.aim(victim)
            if not self._claim(victim, block):
                if self._holder(victim, block) in (victim, None):
                    return not first  # met the owner: every block below is its own
                continue  # another thief's: go on below it
            if first:
                self.ledger.save()
                first = False
            yield from self._run([tail[p] for p in block])
        return not first

    def _holder(self, shard: int, block: range) -> int | None:
        """The child whose claim holds `block` (None if unreadable: then treated as the
        owner's, which only ends this thief's pass early)."""
        try:
            record = json.loads(self.store.read(f"{self.folder}/{shard}/{block.start}"))
        except (NotFound, ValueError):
            return None
        child = record.get("child") if isinstance(record, dict) else None
        return child if isinstance(child, int) else None

    # --- a retried attempt --------------------------------------------------------------------

    def _recover(self) -> Generator[int, None, tuple[int, int | None, int | None]]:
        """Run again what an earlier attempt of this child claimed and did not finish; return
        where the owner goes on (a position of its own shard), the shard it was stealing from,
        and the position there below which it goes on stealing.

        Costs a bounded listing of this child's ledgers, and per shard involved (its own, its
        victim's) a listing of the shard's claims, of its done and failed markers in the claimed
        span, and a read of each claimed block that has unfinished commands.
        """
        earlier = ledgers(self.store, self.env.step, child=self.env.index, generation=self.env.generation)
        victim = next((e.victim for e in reversed(earlier) if e.attempt < self.env.attempt), None)
        own_blocks = blocks(len(self.own))
        claimed = self._claimed(self.env.index)
        prefix = []  # the owner's claims are a run of blocks from the front
        for block in own_blocks:
            if block.start not in claimed:
                break
            prefix.append(block)
        yield from self._rerun_mine(self.env.index, self.own, prefix)
        front = prefix[-1].stop if prefix else 0
        below = None
        if victim is not None and victim != self.env.index:
            tail = self.source.tail(victim)
            taken = self._claimed(victim)
            suffix = []  # a thief's claims are a run of blocks from the back
            for block in reversed(blocks(len(tail))):
                if block.start not in taken:
                    break
                suffix.append(block)
            yield from self._rerun_mine(victim, tail, suffix)
            below = suffix[-1].start if suffix else None
        return front, victim, below

    def _rerun_mine(self, shard: int, commands: Commands, claimed: list[range]) -> Iterator[int]:
        if not claimed:
            return
        span = [commands[p].index for b in claimed for p in b]
        done = self.markers.between(DONE, min(span), max(span))
        failed = None
        for block in claimed:
            unfinished = [commands[p] for p in block if commands[p].index not in done]
            if not unfinished:
                continue
            try:
                record = json.loads(self.store.read(f"{self.folder}/{shard}/{block.start}"))
            except (NotFound, ValueError):
                continue
            attempt = record.get("attempt", 0) if isinstance(record, dict) else None
            if not isinstance(attempt, int):
                continue  # not a claim opsctl wrote: like an unreadable one, not this child's
            if record.get("child") != self.env.index or attempt >= self.env.attempt:
                continue  # another child's block, in progress or its own to recover
            if failed is None:
                failed = self.markers.between(FAILED, min(span), max(span))
            # The first command with no marker at all was running when the attempt died.
            in_flight = next((c.index for c in unfinished if c.index not in failed), None)
            yield from self._run(unfinished, in_flight)


def _worth(left: int, pace_ms: int, thieves: int) -> bool:
    """Whether a shard with `left` commands unclaimed per thief (this one included), run at
    `pace_ms` (0: not known yet) and with `thieves` other thieves on it, is worth stealing from.
    While its pace is unknown, one thief tries it; more join once it is known to be long."""
    if left < MIN_LEFT:
        return False
    if not pace_ms:
        return thieves == 0
    return left * pace_ms >= 1000 * STEAL_AFTER
