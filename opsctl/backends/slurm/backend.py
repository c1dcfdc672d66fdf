"""`SlurmBackend`: a Slurm cluster as the scheduler of a run service, and kill, list and attempts.

submit.py launches and resumes, status.py reads the run as Slurm (sacct or squeue) and its exit
records tell it, logs.py reads its log files; the run's directory and manifest are runs.py's, the
batch script job.py's, the client commands client.py's and the `OPSCTL_SLURM_*` settings
settings.py's.
"""

from __future__ import annotations

import time
from collections import Counter
from math import inf
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.backends.slurm import logs, status, submit
from opsctl.backends.slurm.client import Allocation, QueueRow, SlurmClient
from opsctl.backends.slurm.job import TIMED_OUT, Exit, exits
from opsctl.backends.slurm.runs import MANIFEST, SlurmRun
from opsctl.backends.slurm.settings import SlurmSettings
from opsctl.costs import HandPrices, estimate
from opsctl.records import AttemptRecord, ListRow, StatusDocument, StatusStep
from opsctl.run.ids import RUN_ID
from opsctl.run.manifest import BadState
from opsctl.run.service import FailedStep, LogPass, Recorded, RunService
from opsctl.run.status import RunView
from opsctl_contract.errors import OpsctlError
from opsctl_contract.storage import LocalStore

if TYPE_CHECKING:
    from opsctl.backends.options import Containers

STOP_WAIT = 30.0  # seconds `kill` waits for Slurm to show none of the run's jobs live


class SlurmBackend(RunService):
    """Runs on a Slurm cluster, in directories under the settings' root."""

    name = "slurm"
    priced = False  # a cluster has no price list: a cost only with `--price`
    log_poll = 2.0
    # A controller serves the whole cluster: a watch asks it every 2 s at most, and backs off to
    # once a minute while nothing changes (Snakemake's Slurm plugin polls every 40-180 s).
    poll_every = 2.0
    poll_ceiling = 60.0

    def __init__(self, settings: SlurmSettings | None = None, client: SlurmClient | None = None) -> None:
        self.settings = settings or SlurmSettings.from_environment()
        self.client = client or SlurmClient()
        self.warnings: list[str] = []  # never added to: a read here writes nothing
        self._runs: dict[str, SlurmRun] = {}

    @property
    def calls(self) -> Counter[str]:
        """The Slurm commands this process ran, by command (`opsctl report` prints them)."""
        return Counter(self.client.calls)

    def run(self, run_id: str) -> SlurmRun:
        if run_id not in self._runs:
            self._runs[run_id] = SlurmRun(self.settings.root, run_id)
        return self._runs[run_id]

    def view(self, run_id: str, *, stuck_after: float = 0.0) -> RunView:
        self.client.check("squeue")
        return status.view(self.run(run_id), self.client)

    def state_store(self, run_id: str) -> LocalStore:
        return self.run(run_id).state

    def ended(self, view: RunView, steps: list[StatusStep]) -> None:
        """Nothing to keep: each child's exit records are the run's own history."""

    def failed(self, run_id: str, step: StatusStep) -> FailedStep:
        return logs.failed(self, run_id, step)

    def recorded(self, run_id: str) -> Recorded:
        return logs.recorded(self, run_id)

    def log_pass(self, run_id: str, step: str, index: int | None, cursor: Any, *, follow: bool) -> LogPass:
        return logs.log_pass(self, run_id, step, index, cursor, follow=follow)

    def launch(
        self, spec_path: Path, max_parallel: int | None = None, *, containers: Containers | None = None
    ) -> str:
        return submit.launch(self, spec_path, max_parallel)

    def launched(self, run_id: str) -> tuple[str | None, dict[str, str] | None]:
        """Where the run's directory is; the settings' root, for later commands here."""
        return f"run directory (logs, markers): {self.settings.root / run_id}", {
            "dir": str(self.settings.root)
        }

    def resume(self, run_id: str) -> str:
        return submit.resume(self, run_id)

    def kill(self, run_id: str) -> str:
        return kill(self, run_id)

    def list_runs(self) -> list[ListRow]:
        return list_runs(self.settings.root)

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        return attempts(self, self.run(run_id))

    def cost(
        self, run_id: str, doc: StatusDocument, attempts: list[AttemptRecord], by_hand: HandPrices | None
    ) -> dict[str, Any] | None:
        """What the run would cost at the prices given by hand (a child takes its step's vCPUs,
        1 unless set, and GPUs); with none given, nothing: a cluster has no price list."""
        if by_hand is None:
            return None
        shape = {s["name"]: (s.get("vcpus") or 1, s.get("gpus") or 0) for s in self.run(run_id).doc["steps"]}
        sized: list[AttemptRecord] = [
            {**a, "vcpus": float(shape[a["step"]][0]), "gpus": float(shape[a["step"]][1])} for a in attempts
        ]
        queues = {s["name"]: s["queue"] for s in doc["steps"]}
        return estimate(sized, queues, lambda _queue, vcpus, gpus: by_hand.rate(vcpus, gpus), None)

    def notes(self, doc: StatusDocument) -> list[str]:
        return []


def kill(backend: SlurmBackend, run_id: str) -> str:
    """scancel every job of the run (its earlier generations' too), then wait until Slurm
    (sacct where there is accounting, else squeue) shows none of them pending or running; the
    manifest records the kill."""
    backend.client.check("scancel", "squeue")
    run = backend.run(run_id)
    doc = run.doc
    jobs = run.jobs()
    # Jobs submitted this recently may not be in sacct yet: unlisted, they count as live.
    now = time.time()
    recent = [
        a["job"]
        for step, arrays in doc["arrays"].items()
        for a in arrays
        if now - doc["submitted_at"].get(step, 0.0) < status.UNSEEN_GRACE
    ]

    def live(seen: status.Seen) -> list[QueueRow]:
        rows = [row for job in jobs for row in seen.rows.get(job, []) if row.state in status.LIVE]
        return rows + [QueueRow(job, "N/A", "PENDING", "") for job in recent if not seen.rows.get(job)]

    running = live(status.Seen.poll(backend.client, run, earlier=True))
    if not running:
        return f"{run_id}: nothing left to stop"
    started = sum(len(status.tasks(r.tasks)) for r in running if r.state in ("RUNNING", "COMPLETING"))
    backend.client.cancel(jobs)
    deadline = time.monotonic() + STOP_WAIT
    while live(status.Seen.poll(backend.client, run, earlier=True)):
        if time.monotonic() > deadline:
            raise OpsctlError(
                f"{run_id}: Slurm still shows jobs of the run live {STOP_WAIT:.0f} s after scancel; "
                f"nothing recorded; `opsctl kill {run_id}` tries again"
            )
        time.sleep(0.5)
    run.change(lambda d: d.__setitem__("killed", time.time()))
    return f"{run_id} killed: cancelled {len(jobs)} jobs ({started} children were running)"


def list_runs(root: Path) -> list[ListRow]:
    """Every run under `root`, newest first, from its manifest: a run that cannot be read is
    listed with `state: null` and its `problem`. No Slurm command is run."""
    rows: list[ListRow] = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if not RUN_ID.fullmatch(path.name) or not (path / MANIFEST).exists():
            continue
        try:
            doc = SlurmRun(root, path.name).doc
        except (BadState, OpsctlError) as e:
            rows.append(
                {
                    "run_id": path.name,
                    "pipeline": None,
                    "backend": "slurm",
                    "state": None,
                    "created": "",
                    "problem": str(e),
                }
            )
            continue
        rows.append(
            {
                "run_id": doc["run_id"],
                "pipeline": doc["pipeline"],
                "backend": "slurm",
                "state": None,
                "created": doc["created"],
            }
        )
    return sorted(rows, key=lambda r: (r["created"], r["run_id"]), reverse=True)


def attempts(backend: SlurmBackend, run: SlurmRun) -> list[AttemptRecord]:
    """Every child attempt that ended, from its exit record, in the order they started; where
    the cluster keeps accounting, with its allocation's CPU time and peak memory (one sacct)."""
    ended: list[tuple[Exit, AttemptRecord]] = []
    for step in run.doc["steps"]:
        for e in exits(run.exits, step["name"]):
            reason = None
            if e.exit_code == TIMED_OUT:
                reason = f"timed out after {step['timeout']} s"
            elif e.exit_code:
                reason = f"exit code {e.exit_code}"
            record: AttemptRecord = {
                "step": step["name"],
                "index": e.index,
                "generation": e.generation,
                "attempt": e.attempt,
                "started": e.started,
                "finished": e.finished,
                "exit_code": e.exit_code,
                "reason": reason,
                "cpu_seconds": None,
            }
            ended.append((e, record))
    if run.doc.get("accounting"):
        backend.client.check("sacct")
        # slurmdbd records a job's end a few seconds after it: a report of attempts that ended
        # this recently asks sacct again, once a second, until it has them.
        name, jobs = status.job_name(run.run_id), run.jobs()
        deadline = time.monotonic() + status.SACCT_LAG
        while not _measure(ended, backend.client.allocations(name, jobs)):
            if time.monotonic() > deadline:
                break
            time.sleep(1.0)
    return sorted((r for _, r in ended), key=lambda a: (a["started"] or 0.0, a["step"], a["index"]))


SKEW = 2.0  # seconds: sacct's times are whole seconds, and a node's clock the controller's within that


def _measure(ended: list[tuple[Exit, AttemptRecord]], allocations: list[Allocation]) -> bool:
    """Give each allocation's CPU time and peak memory to the last attempt that started in it
    (the batch script retries inside one allocation; sacct measures the allocation): earlier
    attempts of the same allocation keep None, so a sum over attempts is the run's. False where
    an attempt that ended under status.SACCT_LAG ago has no ended allocation yet."""
    of_job: dict[str, list[Allocation]] = {}
    for alloc in allocations:
        of_job.setdefault(alloc.job, []).append(alloc)
    last: dict[int, tuple[float, AttemptRecord, Allocation]] = {}
    measured: set[int] = set()  # the attempts whose allocation has ended in sacct
    for e, record in ended:
        began = e.started
        if e.job is None or began is None:
            continue
        for alloc in of_job.get(e.job, []):
            if alloc.started is not None and alloc.started - SKEW <= began <= (alloc.finished or inf) + SKEW:
                if id(alloc) not in last or last[id(alloc)][0] < began:
                    last[id(alloc)] = (began, record, alloc)
                if alloc.finished is not None:
                    measured.add(id(record))
                break
    for _, record, alloc in last.values():
        record["cpu_seconds"] = alloc.cpu_seconds
        record["max_rss"] = alloc.max_rss
    now = time.time()
    return not any(
        e.job is not None
        and e.finished is not None
        and now - e.finished < status.SACCT_LAG
        and id(r) not in measured
        for e, r in ended
    )
