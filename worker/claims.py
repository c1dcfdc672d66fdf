"""Dynamic split: children claim commands one at a time, so fast children take more work.

A claim is `<step>/claims/<generation>/<k>`, created only if absent (O_EXCL-like locally,
`If-None-Match: *` on S3): of any number of children racing for k, exactly one runs it. Each
child tries the commands in `claim_order`, so children do not collide at the front, and
re-lists the claims when it meets one it did not know about.

Nothing is lost when a runner dies:
  - a retried attempt (same generation) first re-runs the commands its child claimed but did
    not finish: they were in flight when the previous attempt died;
  - `opsctl resume` starts a new generation, whose claims live in a new folder: a command
    claimed in an older generation but never done is simply claimed again.
Only those commands run twice, and each re-run leaves a `rerun/<k>` marker that status counts.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

from opsctl_contract.markers import RERUN, Ledger
from opsctl_contract.split import claim_order
from opsctl_contract.storage import NotFound, Store
from worker.env import WorkerEnv


class Claims:
    def __init__(self, store: Store, env: WorkerEnv, ledger: Ledger | None = None) -> None:
        self.store = store
        self.env = env
        self.ledger = ledger
        self.folder = f"{env.step}/claims/{env.generation}"
        self.record = json.dumps(
            {
                "run_id": env.run_id,
                "step": env.step,
                "child": env.index,
                "attempt": env.attempt,
                "generation": env.generation,
                "host": socket.gethostname(),
            },
            sort_keys=True,
        ).encode()

    def _claimed(self, folder: str) -> set[int]:
        return {
            int(key.rsplit("/", 1)[1]) for key in self.store.list(folder) if key.rsplit("/", 1)[1].isdigit()
        }

    def _older_generations(self) -> set[int]:
        """Commands claimed in an earlier generation: running them now is a re-run."""
        older: set[int] = set()
        for key in self.store.list(f"{self.env.step}/claims"):
            parts = key.split("/")  # <step>/claims/<generation>/<k>
            if (
                len(parts) == 4
                and parts[2].isdigit()
                and int(parts[2]) < self.env.generation
                and parts[3].isdigit()
            ):
                older.add(int(parts[3]))
        return older

    def _mine_unfinished(self, claimed: set[int], done: set[int]) -> list[int]:
        """This child's claims from an earlier attempt of this generation that never finished."""
        mine = []
        for k in sorted(claimed - done):
            try:
                record = json.loads(self.store.read(f"{self.folder}/{k}"))
            except NotFound:
                continue
            if record.get("child") == self.env.index and record.get("attempt", 0) < self.env.attempt:
                mine.append(k)
        return mine

    def mark_rerun(self, k: int) -> None:
        self.store.write(f"{self.env.step}/rerun/{k}", self.record)
        if self.ledger:
            self.ledger.note(RERUN)

    def commands(self, total: int, done: set[int]) -> Iterator[int]:
        """The command indices this child runs, each claimed (or re-claimed) before it is yielded."""
        claimed = self._claimed(self.folder)
        for k in self._mine_unfinished(claimed, done):
            self.mark_rerun(k)
            yield k
        older = self._older_generations() - done
        for k in claim_order(self.env.index, self.env.array_size, total):
            if k in done or k in claimed:
                continue
            if self.store.create(f"{self.folder}/{k}", self.record):
                if k in older:
                    self.mark_rerun(k)
                yield k
            else:
                claimed |= self._claimed(self.folder)  # someone got there first: catch up
