"""`AwsBackend`: AWS Batch as the scheduler of a run service, and kill and list.

The work is done by one module a concern: submit.py (launch, resume), status.py (the run as
Batch sees it), history.py (attempts and cost), logs.py (logs and failed children); `AwsRuns`
(runs.py) is what they share.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl.backends.aws import history, logs, status, submit
from opsctl.backends.aws.batch import STARTED, job_state
from opsctl.backends.aws.runs import MANIFEST, RETENTION, AwsRuns, read_aws_manifest
from opsctl.backends.aws.status import AwsView
from opsctl.costs import HandPrices
from opsctl.records import AttemptRecord, ListRow, StatusDocument, StatusStep
from opsctl.run.ids import RUN_ID
from opsctl.run.manifest import BadState
from opsctl.run.service import FailedStep, LogPass, Recorded, RunService
from opsctl.run.states import KILLED, STUCK_AFTER, TERMINAL, JobState
from opsctl.run.status import RunView
from opsctl_contract.storage import NotFound, S3Store

if TYPE_CHECKING:
    from opsctl.backends.options import Containers


class AwsBackend(AwsRuns, RunService):
    """Runs on AWS Batch: the scheduler a run service (opsctl/run/service.py) runs over."""

    name = "aws"
    priced = True  # from the compute environments' instance types (prices.py)
    log_poll = 2.0

    def view(self, run_id: str, *, stuck_after: float = STUCK_AFTER) -> AwsView:
        return status.view_of(self, self.record(run_id), stuck_after)

    def ended(self, view: RunView, steps: list[StatusStep]) -> None:
        """Each step's final state, into the manifest the first time a poll sees it ended."""
        if isinstance(view, AwsView) and view.record is not None:  # as `view` makes them
            status.record_final(self, view.record, steps)

    def failed(self, run_id: str, step: StatusStep) -> FailedStep:
        return logs.failed(self, step)

    def recorded(self, run_id: str) -> Recorded:
        """The manifest's steps and generation: in this process already after a status."""
        doc = self.record(run_id).doc
        return Recorded({s["name"]: s for s in doc["steps"]}, doc.get("generation", 1))

    def log_pass(self, run_id: str, step: str, index: int | None, cursor: Any, *, follow: bool) -> LogPass:
        return logs.log_pass(self, run_id, step, index, cursor, follow=follow)

    def launched(self, run_id: str) -> tuple[str | None, dict[str, str] | None]:
        """The infra file the run was launched with, for later commands here to need no flags."""
        return None, {"infra": str(Path(self.infra.source).resolve())}

    def notes(self, doc: StatusDocument) -> list[str]:
        return []  # every child runs in its step's image

    def launch(
        self, spec_path: Path, max_parallel: int | None = None, *, containers: Containers | None = None
    ) -> str:
        return submit.launch(self, spec_path, max_parallel, containers=containers)

    def resume(self, run_id: str) -> str:
        return submit.resume(self, run_id)

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        return history.attempts(self, run_id)

    def cost(
        self, run_id: str, doc: StatusDocument, attempts: list[AttemptRecord], by_hand: HandPrices | None
    ) -> dict[str, Any]:
        return history.cost(self, run_id, doc, attempts, by_hand)

    def kill(self, run_id: str) -> str:
        return kill(self, run_id)

    def list_runs(self) -> list[ListRow]:
        return list_runs(self)


def kill(runs: AwsRuns, run_id: str) -> str:
    """TerminateJob for every step whose job has not ended; array parents cascade to their
    children. It stops the children STARTING or RUNNING and cancels those not started (API
    Reference, "TerminateJob"). CancelJob, for jobs not started (docs/cli.md, `kill`), would not
    do: it succeeds without stopping a child that started between the DescribeJobs and it.
    Says how many children were running, from each array parent's statusSummary."""
    doc = runs.read_manifest(run_id)
    jobs = runs.api.describe(list(doc["jobs"].values()))
    done, gone = [], []
    for step in doc["steps"]:
        job_id = doc["jobs"].get(step["name"])
        if not job_id:
            continue
        job = jobs.get(job_id)
        if job is None:
            gone.append(f"{step['name']} ({job_id})")
            continue
        if job_state(job) in TERMINAL:
            continue
        runs.api.terminate(job_id, KILLED)
        done.append(f"terminated {step['name']} ({_running(job)})")
    message = f"{run_id}: " + ("; ".join(done) if done else "nothing left to stop")
    if gone:
        message += f"; jobs unknown to AWS Batch, nothing to stop ({RETENTION}): {', '.join(gone)}"
    return message


def list_runs(runs: AwsRuns) -> list[ListRow]:
    """Runs from their manifests, newest first: a delimiter listing of the bucket's runs/
    (a request per 1,000 runs) and one GET per manifest; no run's markers are listed."""
    bucket = S3Store(runs.infra.bucket, "runs")
    rows: list[ListRow] = []
    for run_id in bucket.folders():
        if not RUN_ID.fullmatch(run_id):
            continue  # not a run: something else put there
        try:
            doc = read_aws_manifest(
                bucket.read(f"{run_id}/{MANIFEST}"), run_id, f"{bucket.uri}/{run_id}/{MANIFEST}"
            )
        except NotFound:
            continue  # a launch that stopped before its manifest: nothing to show
        except BadState as e:
            rows.append(
                {
                    "run_id": run_id,
                    "pipeline": None,
                    "backend": "aws",
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
                "backend": "aws",
                "state": doc.get("state"),  # recorded once every step ended; else see status
                "created": doc["created"],
            }
        )
    return sorted(rows, key=lambda r: (r["created"], r["run_id"]), reverse=True)


def _running(job: dict[str, Any]) -> str:
    """How much of a job was running when it was stopped: an array's children STARTING or
    RUNNING from its parent's statusSummary, or the job itself."""
    props = job.get("arrayProperties") or {}
    if "statusSummary" in props:
        summary = props["statusSummary"]
        running = sum(summary.get(s.value, 0) for s in STARTED)
        size = props.get("size") or sum(summary.values())
        return f"{running} of {size} children running"
    return "running" if JobState(job["status"]) in STARTED else "not started"
