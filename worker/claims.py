"""Dynamic split: each child runs its own shard and then helps with others', so fast children take
more work, without a coordinator and without listing what others did.

The yardstick is self-scheduling from one queue: each free child takes the next command in list
order (bench/balance.py's greedy floor). Shards come from the step's work pack
(opsctl_contract/work.py) and shard i holds every n-th command, so children going through their
shards together run the list about in its order, heaviest first where the user put those first.

A shard is run as a chain of claims. A claim of the shard's positions [start, stop) is the object
`<step>/claims/<generation>/<shard>/<start>`, created only if absent (O_EXCL-like locally,
`If-None-Match: *` on S3) and naming its stop. The chain begins at 0, and each claim is made at
the chain's end, the stop of the claim before it; a claimer that finds its position taken reads
that claim and tries at its stop. So claims never overlap and leave no gap, of any number of
children racing for a position exactly one runs what follows it, and since the owner goes on to
its shard's end whoever else claims there, nothing is left unclaimed.

How much one claim takes is the claimer's choice (`block_size`): one command while its pace is
unknown, then a quarter of what is left but at most BLOCK_SECONDS of work at its pace, and all
that is left once that is less than a thief's visit is worth (STEAL_AFTER). Long commands are
claimed one at a time, so that none waits behind another; fast ones in long runs, so that claims
stay a small part of the requests.

A child whose shard is done steals: from one listing of the children's ledgers it picks the
started shard with most left per thief that is worth a visit, finds that chain's end (a listing
of the shard's claims and a read of the last) and claims there until the chain ends.

Nothing is lost when a runner dies. A child holds one claim at a time, and before its first claim
in a shard its ledger names that shard and a position at or before each claim it makes there.
Its retried attempt (same generation) reads that ledger, reads the shard's claims from the back
down to that position until it meets its own last one, and runs again what of it has no marker,
the command that was in flight first; it also runs again the commands whose last run in this
child failed, which its ledger lists. `opsctl resume` starts a new generation with a pack of the
commands not done, flagging those the old generation left in flight. Only in-flight commands run
twice, and each such re-run leaves a `rerun/<k>` marker that status counts.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from opsctl_contract.markers import DONE, FAILED, RERUN, Ledger, Markers, failed_places, ledgers
from opsctl_contract.storage import NotFound, Store
from opsctl_contract.work import Command, DamagedWork
from worker.env import WorkerEnv

# A claim holds at most about BLOCK_SECONDS of work at the claimer's pace, and at most 1/SHARE of
# what is left: a request per second of work is little, and a claim delays what it holds. A shard
# is worth a thief's visit (a few requests) while what it has left per thief takes at least
# STEAL_AFTER seconds at its owner's pace; a claimer takes all that is left below that, since no
# thief would come for it.
BLOCK_SECONDS = 1.0
SHARE = 4
STEAL_AFTER = 0.25


def block_size(left: int, pace: float | None) -> int:
    """How many of the `left` commands at a chain's end to claim at once, at `pace` seconds a
    command (None: none ran yet)."""
    if pace is None:
        return min(1, left)
    if left * pace <= STEAL_AFTER:
        return left
    return max(1, min(-(-left // SHARE), int(BLOCK_SECONDS / pace)))


def worth_visit(left: int, pace_ms: int, thieves: int) -> bool:
    """Whether a shard with `left` commands unclaimed per thief (this one included), run at
    `pace_ms` (0: not known yet) and with `thieves` other thieves on it, is worth stealing from.
    While its pace is unknown, one thief tries it; more join once it is known to be long."""
    if left < 1:
        return False
    if not pace_ms:
        return thieves == 0
    return left * pace_ms >= 1000 * STEAL_AFTER


class Commands(Protocol):
    """A shard's commands by position: a list, or a pack's tail that loads as it is indexed."""

    def __len__(self) -> int: ...

    def __getitem__(self, position: int) -> Command: ...


class Shards(Protocol):
    """Where shards come from: a work pack (ranged reads) or a list file read whole."""

    def tail(self, child: int) -> Commands: ...


@dataclass(frozen=True)
class Claim:
    """One link of a shard's chain, as its object says."""

    start: int
    stop: int
    child: int
    attempt: int


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

    def commands(self) -> Iterator[int]:
        """The command indices this child runs, each in a claim it made before it is yielded."""
        me = self.env.index
        shard, at = me, 0
        if self.env.attempt > 1:
            shard, at = yield from self._recover()
        tried = {me, shard}
        if shard == me:
            yield from self._march(me, self.own, at)
        else:  # an earlier attempt was stealing: its own shard was done
            yield from self._march(shard, self.source.tail(shard), at)
        self.ledger.left = 0
        yield from self._steal(tried)

    # --- the chain ----------------------------------------------------------------------------

    def _key(self, shard: int, start: int) -> str:
        return f"{self.folder}/{shard}/{start}"

    def _claim(self, shard: int, start: int, stop: int) -> bool:
        record = {
            "run_id": self.env.run_id,
            "step": self.env.step,
            "child": self.env.index,
            "attempt": self.env.attempt,
            "generation": self.env.generation,
            "host": self.host,
            "shard": shard,
            "positions": [start, stop],
        }
        return self.store.create(self._key(shard, start), json.dumps(record).encode())

    def _read(self, shard: int, start: int, length: int) -> Claim:
        """The claim at `start` of `shard` (of `length` commands). One opsctl did not write is
        damaged state, exit 2: guessing where the chain goes on could run a command twice."""
        where = f"{self.store.uri}/{self._key(shard, start)}"
        try:
            record = json.loads(self.store.read(self._key(shard, start)))
        except NotFound:
            raise DamagedWork(f"{where}: a claim vanished (the run's state was edited)") from None
        except ValueError:
            record = None
        if isinstance(record, dict):
            positions, child, attempt = record.get("positions"), record.get("child"), record.get("attempt")
            if (
                isinstance(positions, list)
                and len(positions) == 2
                and positions[0] == start
                and isinstance(positions[1], int)
                and start < positions[1] <= length
                and isinstance(child, int)
                and isinstance(attempt, int)
            ):
                return Claim(start, positions[1], child, attempt)
        raise DamagedWork(f"{where}: damaged (not a claim of positions {start} to at most {length})")

    def _starts(self, shard: int) -> list[int]:
        """First positions of the claims of `shard`, in order: one listing (a page per 1,000)."""
        names = (key.rsplit("/", 1)[1] for key in self.store.list(f"{self.folder}/{shard}"))
        return sorted(int(name) for name in names if name.isdigit())

    def _march(
        self, shard: int, commands: Commands, position: int, pace: float | None = None
    ) -> Iterator[int]:
        """Claim and run `shard` from chain position `position` to its end, sizing claims by the
        pace of what this child ran of it (`pace`, the owner's, until then: a thief's own
        commands may have been much faster). The owner publishes its ledger when it starts
        (thieves only visit started shards) and when its first claim ends (its pace, by which
        they judge the shard)."""
        length = len(commands)
        owner = shard == self.env.index
        first = owner and self.ran == 0
        ran, busy = self.ran, self.busy
        while position < length:
            here = self.ran - ran
            stop = position + block_size(length - position, (self.busy - busy) / here if here else pace)
            if not self._claim(shard, position, stop):
                position = self._read(shard, position, length).stop
                continue
            self.ledger.at = position
            if owner:
                self.ledger.left = length - stop
            if first:
                self.ledger.publish()
            yield from self._run(shard, [(p, commands[p]) for p in range(position, stop)])
            if first and self.ledger.left:
                self.ledger.publish()
            first = False
            position = stop

    def _mark_rerun(self, k: int) -> None:
        self.markers.mark(RERUN, k, {"child": self.env.index, "attempt": self.env.attempt, "host": self.host})
        self.ledger.note(RERUN)

    def _run(
        self, shard: int, commands: Iterable[tuple[int, Command]], in_flight: int | None = None
    ) -> Iterator[int]:
        for position, command in commands:
            self.texts[command.index] = command.text
            self.ledger.places[command.index] = (shard, position)
            if command.rerun or command.index == in_flight:
                self._mark_rerun(command.index)
            began = time.monotonic()
            yield command.index  # the runner runs it and writes its marker before coming back
            self.ran += 1
            self.busy += time.monotonic() - began
            self.ledger.pace = max(1, round(1000 * self.busy / self.ran))

    # --- a thief ------------------------------------------------------------------------------

    def _steal(self, tried: set[int]) -> Iterator[int]:
        """Steal until a fresh look finds nothing to take: a pass lists the ledgers once and
        visits its candidates in turn; after a visit that ran something the next pass looks
        again, so a thief's cost is its victims plus one pass, not the array size."""
        stole = True
        while stole:
            stole = False
            for victim, pace in self._victims(tried):
                tried.add(victim)
                stole = yield from self._visit(victim, pace / 1000 if pace else None)
                if stole:
                    break
        self.ledger.victim = None  # off every shard: the exit's save tells other thieves

    def _victims(self, tried: set[int]) -> list[tuple[int, int]]:
        """Shards worth a visit, most work left per thief first, with their owners' pace (ms):
        one listing of the ledgers (a page per 1,000 children). Only a started owner's shard is
        a candidate: a child that has not started will run its own shard when it does."""
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
        # An owner whose first claim has not ended has no pace yet: a long first command is the
        # likeliest reason, so the thief's own pace stands in (shards deal the list alike).
        pace = {j: pace[j] or self.ledger.pace for j in pace}
        candidates = [j for j in left if j not in tried and worth_visit(share[j], pace[j], thieves[j])]
        ordered = sorted(candidates, key=lambda j: (-share[j], (j - self.env.index) % size))
        return [(j, pace[j]) for j in ordered]

    def _visit(self, victim: int, pace: float | None) -> Generator[int, None, bool]:
        """Claim and run `victim`'s shard, whose owner's pace is `pace`, from its chain's end (a
        listing of its claims and a read of the last) to its end; whether this child ran any."""
        commands = self.source.tail(victim)
        starts = self._starts(victim)
        end = self._read(victim, starts[-1], len(commands)).stop if starts else 0
        if end >= len(commands):
            return False
        self.ledger.aim(victim, end)  # saved before the first claim there: see _recover
        ran = self.ran
        yield from self._march(victim, commands, end, pace)
        return self.ran > ran

    # --- a retried attempt --------------------------------------------------------------------

    def _recover(self) -> Generator[int, None, tuple[int, int]]:
        """Run again what earlier attempts of this child left: the rest of the claim the last
        one held, the command in flight first, then the commands whose last run here failed.
        Returns the shard it worked on and the position there to go on from.

        Costs a bounded listing of this child's ledgers, a read of the latest one's body where
        it counted failures, a listing of the shard's claims and a read of each from the back
        down to its own, and a look for the markers of about log2(claim size) of its commands.
        """
        me = self.env.index
        earlier = ledgers(self.store, self.env.step, child=me, generation=self.env.generation)
        last = max(
            (e for e in earlier if e.attempt < self.env.attempt), key=lambda e: e.attempt, default=None
        )
        shard = me if last is None or last.victim is None else last.victim
        at = 0 if last is None else last.at
        failed = failed_places(self.store, last) if last is not None and last.failed else {}
        self.ledger.failed.update(failed)  # kept until they succeed, should this attempt die too
        commands = self.own if shard == me else self.source.tail(shard)
        if shard != me:
            self.ledger.left = 0
            self.ledger.aim(shard, at)
        self.ledger.at = at
        end, held = at, None
        for start in reversed([s for s in self._starts(shard) if s >= at]):
            claim = self._read(shard, start, len(commands))
            end = max(end, claim.stop)
            if claim.child == me and claim.attempt < self.env.attempt:
                held = claim
                break
        again = set()
        if held is not None:
            again = yield from self._finish(shard, commands, held)
        tails: dict[int, Commands] = {me: self.own, shard: commands}
        for k, (where, position) in sorted(failed.items()):
            if k in again or self.markers.exists(DONE, k):
                continue  # just run again above, or done since
            if where not in tails:
                tails[where] = self.source.tail(where)
            yield from self._run(where, [(position, tails[where][position])])
        return shard, end

    def _finish(self, shard: int, commands: Commands, claim: Claim) -> Generator[int, None, set[int]]:
        """Run the commands of `claim` after the last that has a marker. Its commands ran in
        order and each got a done or failed marker before the next began, so those with one are
        a prefix: a binary search finds its end, and the first command past it was in flight."""
        low, high = claim.start, claim.stop
        while low < high:
            middle = (low + high) // 2
            k = commands[middle].index
            if self.markers.exists(DONE, k) or self.markers.exists(FAILED, k):
                low = middle + 1
            else:
                high = middle
        rest = [(p, commands[p]) for p in range(low, claim.stop)]
        if rest:
            yield from self._run(shard, rest, in_flight=rest[0][1].index)
        return {command.index for _, command in rest}
