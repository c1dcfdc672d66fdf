"""The AWS Batch backend: one SubmitJob per step, and nothing that has to stay running.

The run lives in the infra bucket under `runs/<run_id>/`: `manifest.json` (the pipeline as
launched, every step's job id as soon as it is submitted, the run's generation, and each step's
final state once it ended), `lists/<step>.txt` and the workers' markers under `state/`. Batch's
own `dependsOn` carries the DAG, so any machine with credentials and the infra outputs can
watch, kill, resume or read the logs of a run.

Batch keeps a job about 7 days after it ends; the manifest is the long-term record. A step's
final state, counts and times are written to it when a poll first sees the step ended, and a
run whose jobs Batch no longer knows is read from there and from its markers.

AWS calls go through `batch.BatchAPI` (Batch, CloudWatch Logs) and `opsctl_contract.storage` (S3).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl import pipeline as spec
from opsctl.backends.batch import STARTED, BatchAPI, job_name, job_state, submit_request
from opsctl.backends.definitions import DERIVED_FROM, IMAGE_TAG, Definitions
from opsctl.backends.prices import Prices
from opsctl.costs import HandPrices, Rate, estimate
from opsctl.errors import LaunchIncomplete
from opsctl.failures import child_failure, failed_indices, log_lines, summary
from opsctl.infra import InfraOutputs
from opsctl.limits import MAX_ARRAY_SIZE, MAX_INTEGER, STEP_NAME
from opsctl.runs import (
    RUN_ID,
    BadState,
    check_run_id,
    manifest,
    new_run_id,
    plan_resume,
    read_manifest,
    write_work,
)
from opsctl.states import TERMINAL, Attempts, JobState, attempts_of, settle
from opsctl.visible import visible
from opsctl_contract.awsclient import aws_call
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.listfile import parse_commands, render_commands
from opsctl_contract.markers import Entry, ledgers, step_figures
from opsctl_contract.shapes import Int, ListOf, MapOf, Maybe, Text, problem
from opsctl_contract.storage import REQUESTS, NotFound, S3Store, request_cost

if TYPE_CHECKING:
    from opsctl.backends.local.containers import Containers

KILLED = "killed by user"
STUCK_AFTER = 15 * 60.0  # seconds RUNNABLE before status warns
# The tags opsctl puts on each job (batch.submit_request). With propagateTags, "if the total
# number of combined tags from the job and job definition is over 50, the job is moved to the
# FAILED state" (botocore batch model, SubmitJobRequest.propagateTags).
JOB_TAGS = 3
MAX_TAGS = 50
# A job submitted this recently that DescribeJobs does not return yet is taken as SUBMITTED;
# later, as gone (past Batch's retention).
UNSEEN_GRACE = 60.0
RETENTION = "AWS Batch keeps jobs about 7 days after they end"
MANIFEST = "manifest.json"
ATTEMPTS = "attempts.json"  # beside the manifest: a finished run's child attempts


class Manifest:
    """A run's manifest.json, updated by several opsctl processes at once.

    A watch records final states while a resume records new job ids: each update is a
    conditional PUT (If-Match on the ETag last seen); when another process got there first,
    the manifest is read again and the change applied again, so nobody's update is lost.
    Changes must therefore be safe to apply to a newer document.
    """

    def __init__(self, store: S3Store, doc: dict[str, Any], etag: str) -> None:
        self.store = store
        self.doc = doc
        self.etag = etag

    @classmethod
    def read(cls, store: S3Store, run_id: str, where: str) -> Manifest:
        try:
            data, etag = store.read_tagged(MANIFEST)
        except NotFound:
            raise BadInput(f"run '{run_id}' not found in {store.uri.rsplit('/', 1)[0]}/ ({where})") from None
        return cls(store, read_manifest(data, run_id, f"{store.uri}/{MANIFEST}"), etag)

    @classmethod
    def create(cls, store: S3Store, doc: dict[str, Any]) -> Manifest:
        etag = store.create_tagged(MANIFEST, _dump(doc))
        if etag is None:
            raise OpsctlError(f"{store.uri}/{MANIFEST} exists already: run id collision, launch again")
        return cls(store, doc, etag)

    def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        change(self.doc)
        for _ in range(20):
            etag = self.store.replace(MANIFEST, _dump(self.doc), self.etag)
            if etag is not None:
                self.etag = etag
                return
            data, self.etag = self.store.read_tagged(MANIFEST)
            self.doc = read_manifest(data, self.doc["run_id"], f"{self.store.uri}/{MANIFEST}")
            change(self.doc)
        raise OpsctlError(f"{self.store.uri}/{MANIFEST} kept changing under this update; try again")


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2).encode()


class AwsBackend:
    """launch, status, kill, resume, logs and list for runs on AWS Batch."""

    name = "aws"

    def __init__(self, infra: InfraOutputs, api: BatchAPI | None = None) -> None:
        self.infra = infra
        self._api = api
        # Manifests of fully submitted runs, for repeated polls by this process: their job ids
        # only change through `resume`, and a run a watch follows cannot be resumed until it ended.
        self._submitted: dict[str, Manifest] = {}
        # What a read could not record (a denied write); each said once, in `status`'s warnings.
        self.warnings: list[str] = []

    @functools.cached_property
    def api(self) -> BatchAPI:
        return self._api or BatchAPI(self.infra.region)

    def store(self, run_id: str) -> S3Store:
        """Where a run lives: s3://BUCKET/runs/<run_id>/."""
        return S3Store(self.infra.bucket, f"runs/{run_id}")

    def state_store(self, run_id: str) -> S3Store:
        """The run's markers (OPSCTL_STATE_URI)."""
        return S3Store(self.infra.bucket, f"runs/{run_id}/state")

    def manifest(self, run_id: str) -> Manifest:
        check_run_id(run_id)
        return Manifest.read(self.store(run_id), run_id, f"infra: {self.infra.source}")

    def read_manifest(self, run_id: str) -> dict[str, Any]:
        return self.manifest(run_id).doc

    # --- launch and resume ----------------------------------------------------------------

    def launch(
        self, spec_path: Path, max_parallel: int | None = None, *, containers: Containers | None = None
    ) -> str:
        """Validate; check the queues, job definitions and images; upload; submit in order."""
        if containers:
            raise BadInput("--containers is for the local backend: on AWS every child runs in a container")
        pipe = spec.load(spec_path)  # before any AWS call
        definitions = self._job_definitions([step.record("") for step in pipe.steps])
        run_id = new_run_id(pipe.name)
        store = self.store(run_id)
        before = Counter(REQUESTS)
        list_uris = {}
        for step in pipe.steps:
            store.write(f"lists/{step.name}.txt", render_commands(step.commands).encode())
            list_uris[step.name] = f"{store.uri}/lists/{step.name}.txt"
        doc = manifest(pipe, run_id, "aws", list_uris)
        for recorded in doc["steps"]:
            recorded["job_definition"] = definitions[recorded["name"]]
        state = self.state_store(run_id)
        for step, recorded in zip(pipe.steps, doc["steps"], strict=True):
            write_work(state, recorded, step.commands, 1)
        doc.update(infra={"bucket": self.infra.bucket, "region": self.infra.region}, jobs={}, generation=1)
        # The list files, work packs and this manifest, and (counted ahead) its update after
        # each submit.
        launched = Counter(REQUESTS) - before + Counter(put=1 + len(pipe.steps))
        doc["launch_requests"] = dict(launched)
        record = Manifest.create(store, doc)
        submitted: list[str] = []
        try:
            self._submit(record, [s["name"] for s in doc["steps"]], submitted=submitted)
        except OpsctlError as e:
            raise LaunchIncomplete(run_id, submitted, e) from None
        return run_id

    def _job_definitions(self, steps: list[dict[str, Any]]) -> dict[str, str]:
        """Each step's job definition ARN, by step name: the stack's for its queue as it is now,
        or one derived from it for the step's own image (opsctl/backends/definitions.py).
        Checked before anything is uploaded or submitted: queues ENABLED, stack definitions
        with an ACTIVE revision (an infra file naming one a deploy deregistered stands for the
        newest: BatchAPI.unusable), their tags within what a job may carry, and every image the
        steps run present in ECR where it is an ECR image."""
        queues = sorted({step["queue"] for step in steps})
        problems, stack = self.api.unusable(
            [self.infra.queue(q) for q in queues], [self.infra.job_definition(q) for q in queues]
        )
        if problems:
            raise BadInput(
                f"{self.infra.source}: {'; '.join(problems)}: not found or not usable in {self.infra.region} "
                "(run `opsctl infra output` after `make infra`, or pass the right --infra)"
            )
        for step in steps:
            described = stack[self.infra.job_definition(step["queue"])]
            tags = len(described.get("tags") or {})
            derived = len((DERIVED_FROM, IMAGE_TAG)) if step.get("image") else 0
            if tags + derived + JOB_TAGS > MAX_TAGS:
                raise BadInput(
                    f"{self.infra.source}: job definition {_short(described['jobDefinitionArn'])} has "
                    f"{tags} tags; with opsctl's {JOB_TAGS} on each job"
                    + (f" and the {derived} of its derived definition" if derived else "")
                    + f", step '{step['name']}' would carry {tags + derived + JOB_TAGS}, over the "
                    f"{MAX_TAGS} AWS Batch allows a job, and every job would end FAILED: remove tags "
                    "from the stack's job definitions"
                )
        ours = {q: self._stack_image(q, stack[self.infra.job_definition(q)]) for q in queues}
        images = {step.get("image") or ours[step["queue"]] for step in steps}
        missing = self.api.images_missing(sorted(images))
        if set(missing) & set(ours.values()):
            stack_images = ", ".join(m for m in missing if m in ours.values())
            raise BadInput(
                f"{stack_images}: not in ECR, so every child would fail to pull it; `make push` builds "
                "and pushes the worker images and applies the stack with their tag"
            )
        if missing:
            raise BadInput(
                f"{', '.join(missing)}: not in ECR, so every child would fail to pull it "
                '(a step\'s `image:`): push it first (docs/worker.md, "Your own image")'
            )
        own = Definitions(self.api, stack)
        return {
            step["name"]: own.arn(self.infra.job_definition(step["queue"]), step["image"])
            if step.get("image")
            else str(stack[self.infra.job_definition(step["queue"])]["jobDefinitionArn"])
            for step in steps
        }

    def _stack_image(self, queue: str, described: dict[str, Any]) -> str:
        """The image the stack's job definition for `queue` runs: the infra file's, unless the
        file names a revision a deploy has since replaced, and then the newest revision's."""
        ref = self.infra.job_definition(queue)
        if ref in (described["jobDefinitionArn"], _short(described["jobDefinitionArn"])):
            return self.infra.image(queue)
        image = (described.get("containerProperties") or {}).get("image")
        return str(image) if image else self.infra.image(queue)

    def _submit(
        self,
        record: Manifest,
        names: list[str],
        *,
        succeeded: frozenset[str] = frozenset(),
        adopt: bool = False,
        submitted: list[str] | None = None,
    ) -> list[str]:
        """Submit the steps `names`, in manifest order; each job id is recorded at once.

        A launch that dies half way is thus completed by `resume` without submitting anything
        twice. With `adopt` (resume), a job is first looked up by the name it would be
        submitted under, in case an earlier launch or resume died between SubmitJob and
        recording the id (batch.job_name). Dependencies in `succeeded` are not waited for
        (their jobs may be past Batch's retention).
        """
        submitted = [] if submitted is None else submitted
        doc = record.doc
        for step in doc["steps"]:
            name = step["name"]
            if name not in names:
                continue
            named = job_name(doc["run_id"], name, doc["jobs"].get(name))
            queue = self.infra.queue(step["queue"])
            orphans = self.api.jobs_named(queue, named) if adopt else []
            if orphans:
                job_id = orphans[0]  # submitted by a launch that died before recording it
            else:
                after = {d: j for d, j in doc["jobs"].items() if d not in succeeded}
                job_id = self.api.submit_step(
                    **submit_request(
                        doc,
                        step,
                        job_name=named,
                        queue=queue,
                        job_definition=step.get("job_definition") or self.infra.job_definition(step["queue"]),
                        region=self.infra.region,
                        run_uri=self.store(doc["run_id"]).uri,
                        after=after,
                    )
                )
                submitted.append(name)
            record.update(functools.partial(_record_job, name=name, job_id=job_id, at=time.time()))
            doc = record.doc
        return submitted

    def resume(self, run_id: str) -> str:
        """Submit again every step that did not succeed, in a new generation (runs.plan_resume).

        Steps never submitted are submitted; steps still running are left alone. The new
        generation is recorded in the manifest before any SubmitJob, so a resubmitted
        dynamic-split step's children take over the commands claimed but never done.
        Workers skip commands that have done markers, so only unfinished work runs again.

        Each step submitted again runs under the job definition the stack has now, looked up
        again rather than taken from the manifest: a deploy since the launch registered a new
        revision and deregistered the one recorded, which SubmitJob refuses (INACTIVE), and a
        step's own image gets its derived definition derived anew (registered again if it was
        deregistered: `opsctl infra definitions`). The message says when a revision changed.
        """
        self._submitted.pop(run_id, None)  # its job ids are about to change
        record = self.manifest(run_id)
        view = self._status(record, STUCK_AFTER)
        states = {s["name"]: JobState(s["state"]) if s["job_id"] else None for s in view["steps"]}
        redo, generation = plan_resume(record.doc["steps"], states, record.doc.get("generation", 1))
        if not redo:
            if view["state"] == JobState.SUCCEEDED:
                return f"{run_id} already SUCCEEDED; nothing to resume"
            return f"{run_id}: every step is running or succeeded; nothing to resume"
        replaced = {n: record.doc["jobs"][n] for n in redo if n in record.doc["jobs"]}
        again = [s for s in record.doc["steps"] if s["name"] in redo]
        definitions = self._job_definitions(again)
        changed: dict[tuple[str, str], list[str]] = {}
        for step in again:
            was, now = step.get("job_definition"), definitions[step["name"]]
            if was and _short(was) != _short(now):
                changed.setdefault((_short(was), _short(now)), []).append(step["name"])

        def new_generation(d: dict[str, Any]) -> None:
            d["generation"] = max(d.get("generation", 1), generation)
            for step in d["steps"]:
                if step["name"] in definitions:
                    step["job_definition"] = definitions[step["name"]]
            if replaced and replaced not in d.setdefault("replaced", []):
                d["replaced"].append(replaced)
            d.pop("state", None)  # the run is live again

        record.update(new_generation)
        state = self.state_store(run_id)
        for step in record.doc["steps"]:
            if step["name"] in redo:
                text = self.store(run_id).read(f"lists/{step['name']}.txt").decode("utf-8")
                commands = parse_commands(text)
                write_work(state, step, commands, record.doc["generation"])
        succeeded = frozenset(n for n, s in states.items() if s is JobState.SUCCEEDED)
        submitted = self._submit(record, redo, succeeded=succeeded, adopt=True)
        generation = record.doc["generation"]
        message = f"{run_id} resumed: submitted {', '.join(submitted) or 'nothing'} (generation {generation})"
        for (was, now), names in changed.items():
            message += f"; {', '.join(names)} now under job definition {now} (was {was})"
        return message

    # --- report ---------------------------------------------------------------------------

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        """Every child attempt, as `opsctl report` takes them: ListJobs by array job id for the
        children's ids, then DescribeJobs, 100 a call, for their `attempts` (start, stop, exit
        code, reason, vCPUs, GPUs). The `generation` is the step's submission: 1 for the launch's
        job, 2 for the first resume that submitted it again. Batch does not give CPU time.

        Batch forgets a job about 7 days after it ends, so once every step has ended the
        attempts are kept beside the manifest (ATTEMPTS); a later call reads them there, with no
        Batch call, as long as no resume has submitted a step since.
        """
        doc = self._record(run_id).doc
        history = {
            step["name"]: [r[step["name"]] for r in doc.get("replaced", []) if step["name"] in r]
            + ([doc["jobs"][step["name"]]] if step["name"] in doc["jobs"] else [])
            for step in doc["steps"]
        }
        ended = all(_final(doc, step["name"]) for step in doc["steps"])
        store = self.store(run_id)
        if ended:
            with contextlib.suppress(NotFound, ValueError):
                kept = json.loads(store.read(ATTEMPTS))
                # A record of another shape is no record: the attempts are read again from Batch.
                if problem(kept, KEPT_ATTEMPTS) is None and kept["jobs"] == history:
                    return list(kept["attempts"])
        found: list[dict[str, Any]] = []
        complete = True  # every job still known to Batch
        for step in doc["steps"]:
            name = step["name"]
            for generation, job_id in enumerate(history[name], start=1):
                ids = self.api.children(job_id) if step["array_size"] > 1 else [job_id]
                jobs = self.api.describe(ids).values()
                complete = complete and bool(jobs)
                for job in jobs:
                    index = int(job.get("arrayProperties", {}).get("index", 0))
                    found.extend(_attempts_of(job, name, index, generation))
        found.sort(key=lambda a: (a["started"] is None, a["started"] or 0, a["step"], a["index"]))
        if ended and complete:
            try:
                store.write(ATTEMPTS, json.dumps({"jobs": history, "attempts": found}).encode())
            except BadInput as e:
                if not _denied(e):
                    raise
                self._warn(
                    f"the attempts were not kept: {e}; s3:PutObject on {store.uri}/{ATTEMPTS} keeps "
                    "them, so that reports outlive Batch's retention (about 7 days after a job ends)"
                )
        return found

    def cost(
        self, run_id: str, doc: dict[str, Any], attempts: list[dict[str, Any]], by_hand: HandPrices | None
    ) -> dict[str, Any]:
        """The estimate of opsctl.costs for `attempts`, priced by opsctl/backends/prices.py (or
        `by_hand`); a price that cannot be had (not listed, or the price list or EC2 refused or
        unreachable) leaves the estimate out, with the reason, and the report goes on."""
        timed = {a["step"] for a in attempts}
        forgotten = [s["name"] for s in doc["steps"] if s["commands"]["done"] and s["name"] not in timed]
        if forgotten:
            return {
                "dollars": None,
                "unavailable": f"the attempts of {', '.join(forgotten)} are unknown ({RETENTION})",
            }
        queues = {step["name"]: self.infra.queue(step["queue"]) for step in doc["steps"]}
        now = time.time()
        since = min((a["started"] for a in attempts if a["started"] is not None), default=now)
        until = max((a["finished"] or now for a in attempts), default=now)

        def rate_of(queue: str, vcpus: float, gpus: float) -> Rate:
            if by_hand is not None:
                return by_hand.rate(vcpus, gpus)
            return self.prices.rate(queue, vcpus, gpus, since, until)

        try:
            return estimate(attempts, queues, rate_of, doc.get("requests"), now)
        except OpsctlError as e:  # no price to be had (prices.NoPrice), no permission, EC2 unreachable
            by_hand_hint = "`--price vcpu=DOLLARS,gpu=DOLLARS` prices it by hand"
            return {"dollars": None, "unavailable": f"{e}; {by_hand_hint}"}

    @functools.cached_property
    def prices(self) -> Prices:
        return Prices(self.infra.region, self.api.batch)

    @property
    def calls(self) -> Counter[str]:
        """The AWS calls this process made, by operation: Batch's, and EC2's and the price
        list's where a cost was estimated (`opsctl report` prints them)."""
        made = Counter(self.api.calls)
        if "prices" in self.__dict__:
            made.update(self.prices.calls)
        return made

    # --- status ---------------------------------------------------------------------------

    def status(self, run_id: str, *, stuck_after: float = STUCK_AFTER) -> dict[str, Any]:
        """The status document: ceil(steps/100) DescribeJobs calls and a listing of each
        step's markers (one LIST page per 1,000 markers).

        `warnings` names steps that have waited RUNNABLE for more than `stuck_after` seconds.
        """
        return self._status(self._record(run_id), stuck_after)

    def _record(self, run_id: str) -> Manifest:
        """The run's manifest, read once per process for a fully submitted run (`watch` polls,
        `report` asks for status and attempts)."""
        record = self._submitted.get(run_id) or self.manifest(run_id)
        if len(record.doc["jobs"]) == len(record.doc["steps"]):
            self._submitted[run_id] = record
        return record

    def _status(self, record: Manifest, stuck_after: float) -> dict[str, Any]:
        doc = record.doc
        run_id = doc["run_id"]
        jobs = self.api.describe(list(doc["jobs"].values()))
        now = time.time()
        steps = [self._step_status(doc, step, jobs, now) for step in doc["steps"]]
        warnings = [
            _stuck_warning(step, waited)
            for step in doc["steps"]
            if (job := jobs.get(doc["jobs"].get(step["name"], "")))
            and (waited := _runnable_for(job, jobs, now * 1000)) > stuck_after
        ]
        self._record_final(record, steps)
        warnings += self.warnings
        submitted = len(doc["jobs"]) == len(steps)
        total = Counter(doc.get("launch_requests", {}))
        for s in steps:
            total.update(s["requests"])
        return {
            "run_id": run_id,
            "pipeline": doc["pipeline"],
            "backend": "aws",
            "state": _run_state([JobState(s["state"]) for s in steps], submitted=submitted),
            "reason": None if submitted else f"launch incomplete: `opsctl resume {run_id}` submits the rest",
            "created": doc["created"],
            "elapsed": None,
            "steps": steps,
            "warnings": warnings,
            # The run's storage requests (launch and workers) at S3 Standard's request prices.
            "requests": {**total, "dollars": round(request_cost(total), 6)},
        }

    def _step_status(
        self, doc: dict[str, Any], step: dict[str, Any], jobs: dict[str, dict[str, Any]], now: float
    ) -> dict[str, Any]:
        """One step's entry: Batch's view of its job, settled against its markers.

        A job Batch no longer returns is read from the final state recorded when it ended; with
        no such record, from its markers alone, once it was submitted long enough ago to be seen.
        """
        name = step["name"]
        job_id = doc["jobs"].get(name)
        job = jobs.get(job_id or "")
        final = _final(doc, name)
        state = job_state(job) if job is not None else None
        if final and (job is None or state in TERMINAL):
            # Counted once when the step ended: no listing.
            commands, requests = final["commands"], final.get("requests", {})
            attempts = final.get("attempts")  # a record before opsctl kept them: None
        elif not job_id:
            commands, requests = _no_commands(step), {}
            attempts = attempts_of([])
        else:
            # A step that ended is counted exactly, from its markers; a running one from its
            # children's ledgers: one LIST, a page per 1,000 children, however much is done.
            # The same listing gives its attempts (`_ListedOnce`).
            exact = job is None or state in TERMINAL
            store = _ListedOnce.of(self.state_store(doc["run_id"]))
            commands, requests = step_figures(store, step["name"], step["commands"], exact=exact)
            attempts = _ledger_attempts(ledgers(store, step["name"]))
        entry: dict[str, Any] = {
            "name": name,
            "queue": step["queue"],
            "image": step.get("image"),
            "array_size": step["array_size"],
            "commands": commands,
            "requests": requests,
            "job_id": job_id,
            "gone": False,
            "cancelled": 0,  # of counts' FAILED: children that never started (states.CANCELLED)
            "attempts": attempts,
        }
        done = commands["done"]
        final = _final(doc, name)
        if job is not None and state is not None:
            state, short = settle(state, done, step["commands"], doc["run_id"])
            summary = job.get("arrayProperties", {}).get("statusSummary")
            if final and state in TERMINAL:
                entry["cancelled"] = final.get("cancelled") or 0
            elif state is JobState.FAILED:
                entry["cancelled"] = self._cancelled(job, step["array_size"])
            return {
                **entry,
                "state": state.value,
                "reason": short or (job.get("statusReason") if state is JobState.FAILED else None),
                "counts": {k: v for k, v in summary.items() if v}
                if summary and step["array_size"] > 1
                else {job["status"]: 1},
                "elapsed": _elapsed(job.get("startedAt"), job.get("stoppedAt")),
                "started_at": job.get("startedAt"),
                "stopped_at": job.get("stoppedAt"),
                "log_stream": job.get("container", {}).get("logStreamName"),
            }
        if job_id and final:
            # Past retention: as recorded when it ended (its markers may have expired too).
            return {
                **entry,
                **{k: final[k] for k in ("state", "counts", "commands")},
                "cancelled": final.get("cancelled") or 0,
                "reason": final["reason"],
                "elapsed": _elapsed(final.get("started_at"), final.get("stopped_at")),
                "gone": True,
            }
        submitted_at = doc.get("submitted_at", {}).get(name) or _epoch(doc["created"])
        if not job_id or now - submitted_at < UNSEEN_GRACE:
            return {**entry, "state": JobState.SUBMITTED.value, "reason": None, "counts": {}, "elapsed": None}
        missing = step["commands"] - done
        return {
            **entry,
            "state": (JobState.FAILED if missing else JobState.SUCCEEDED).value,
            "reason": f"job {job_id} is unknown to AWS Batch ({RETENTION}) and no final state was recorded"
            + (
                f": {missing} of {step['commands']} commands have no done marker; "
                f"`opsctl resume {doc['run_id']}` runs them"
                if missing
                else ": every command has a done marker"
            ),
            "counts": {},
            "elapsed": None,
            "gone": True,
        }

    def _cancelled(self, job: dict[str, Any], array_size: int) -> int:
        """How many children of a FAILED step's job never started: those Batch ended FAILED
        with no attempt (TerminateJob or CancelJob before they ran, "Dependent Job failed").
        Asked once, when a poll first sees the step ended (the final record keeps it): an array's
        FAILED children listed, 1,000 a page, and described, 100 a call; a single job says so
        itself."""
        if array_size == 1 or "statusSummary" not in job.get("arrayProperties", {}):
            return int(_never_started(job))
        if not job["arrayProperties"]["statusSummary"].get(JobState.FAILED.value):
            return 0
        return sum(_never_started(child) for child in self._failed_children(job["jobId"]))

    @functools.cache  # noqa: B019 - one backend per command; an ended job's children do not change
    def _failed_children(self, array_job_id: str) -> list[dict[str, Any]]:
        """Every FAILED child of an ended array job, described: ListJobs (1,000 a page) and
        DescribeJobs (100 a call). Kept for the process: `watch` and `report` then print the
        failures from the same answers."""
        with aws_call("AWS Batch", f"failed children of {array_job_id}", self.infra.region):
            pages = self.api.batch.get_paginator("list_jobs").paginate(
                arrayJobId=array_job_id, jobStatus="FAILED", PaginationConfig={"PageSize": 1000}
            )
            ids = [job["jobId"] for page in pages for job in page.get("jobSummaryList", [])]
        return list(self.api.describe(ids).values()) if ids else []

    def _record_final(self, record: Manifest, steps: list[dict[str, Any]]) -> None:
        """Write each step's final state to the manifest the first time it is seen ended.

        One conditional PUT per step over the run's life; once every step's job has a final
        record, the run's own state and end time too (what `opsctl list` shows).

        The write is kept on reads because it is how a run outlives Batch's retention, but a
        reader without s3:PutObject still gets its answer: a denied write is one warning (in
        `status`'s warnings), and this process does not try again (the change stays in its copy).
        """
        kept = (
            "state",
            "reason",
            "counts",
            "cancelled",
            "attempts",
            "commands",
            "requests",
            "started_at",
            "stopped_at",
        )
        new = {
            s["name"]: {
                "job_id": s["job_id"],
                **{k: s.get(k) for k in kept},
                "log_stream": s.get("log_stream") if s["array_size"] == 1 else None,
            }
            for s in steps
            if s["job_id"] and s["state"] in TERMINAL and _final(record.doc, s["name"]) is None
        }
        if not new:
            return

        def change(d: dict[str, Any]) -> None:
            for name, final in new.items():
                if d["jobs"].get(name) == final["job_id"]:  # not since resubmitted by a resume
                    d.setdefault("final", {})[name] = final
            finals = [_final(d, step["name"]) for step in d["steps"]]
            if all(finals):
                d["state"] = _run_state([JobState(f["state"]) for f in finals if f], submitted=True)
                d["finished"] = time.time()

        try:
            record.update(change)
        except BadInput as e:
            if not _denied(e):
                raise
            self._warn(
                f"the final state of {', '.join(new)} was not recorded: {e}; s3:PutObject on "
                f"{record.store.uri}/{MANIFEST} records it, and the run is read from that record once "
                "Batch forgets its jobs (about 7 days after they end)"
            )

    def _warn(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)

    def failures(self, run_id: str, doc: dict[str, Any]) -> list[str]:
        """Each failed child's failed command and its stderr (from its marker and the work
        pack: opsctl/failures.py), its reasons and exit code, and its last log lines (for
        `watch`), read from the end of its stream (batch.BatchAPI.log_tail). Children that
        never started (`cancelled`) are not failures: where a step has some, its FAILED children
        are all described to find the ones that ran, else up to 10 are."""
        store = self.state_store(run_id)
        lines = []
        for step in doc["steps"]:
            if step["state"] != JobState.FAILED or not step["job_id"]:
                continue
            if step["gone"]:
                children = []
            elif step["array_size"] > 1 and step.get("cancelled"):
                ran = [c for c in self._failed_children(step["job_id"]) if not _never_started(c)]
                children = sorted(ran, key=_index)[:10]
            elif step["array_size"] > 1:
                children = self.api.failed_children(step["job_id"])
            else:
                job = self.api.describe([step["job_id"]]).get(step["job_id"])
                children = (
                    [job] if job and job["status"] == JobState.FAILED and not _never_started(job) else []
                )
            if not children or step["gone"]:
                lines.append(f"{step['name']}: {step['reason'] or 'failed'}")
            failed = failed_indices(store, step["name"]) if children else []
            # The manifest's record of the step (its split, its commands), read once there are
            # failed commands to find: it is in this process already after a status.
            record = self._record(run_id).doc if failed else {}
            known = next((s for s in record.get("steps", []) if s["name"] == step["name"]), None)
            for child in children:
                container = child.get("container", {})
                index = _index(child)
                reason = child.get("statusReason", "no reason given")
                stream = container.get("logStreamName")
                # its last lines, however long the stream
                tail = self.api.log_tail(self.infra.log_group, stream) if stream else []
                lines += summary(
                    f"{step['name']}[{index}]",
                    f"{reason} (container: {container.get('reason', '-')}, "
                    f"exit code {container.get('exitCode', '-')})",
                    child_failure(store, known, index, record.get("generation", 1), failed)
                    if known and failed
                    else None,
                    log_lines(tail, len(tail)),
                    f"opsctl logs {run_id} {step['name']} --index {index}",
                )
        return [visible(line) for line in lines]  # log lines and reasons: shown, never obeyed

    # --- kill, logs, list -----------------------------------------------------------------

    def kill(self, run_id: str) -> str:
        """TerminateJob for every step whose job has not ended; array parents cascade to their
        children. It stops the children STARTING or RUNNING and cancels those not started (API
        Reference, "TerminateJob"). CancelJob, for jobs not started (docs/cli.md, `kill`), would not
        do: it succeeds without stopping a child that started between the DescribeJobs and it.
        Says how many children were running, from each array parent's statusSummary."""
        doc = self.read_manifest(run_id)
        jobs = self.api.describe(list(doc["jobs"].values()))
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
            self.api.terminate(job_id, KILLED)
            done.append(f"terminated {step['name']} ({_running(job)})")
        message = f"{run_id}: " + ("; ".join(done) if done else "nothing left to stop")
        if gone:
            message += f"; jobs unknown to AWS Batch, nothing to stop ({RETENTION}): {', '.join(gone)}"
        return message

    def logs(
        self, run_id: str, step: str, index: int | None, *, follow: bool, poll: float = 2.0
    ) -> Iterator[bytes]:
        """CloudWatch events of one child (`--index`, default 0), paginated, `--follow`ing.

        A retried child writes each attempt to a new stream: when DescribeJobs names a new
        one, the old stream is read to its end and the new one from its start.
        """
        doc = self.read_manifest(run_id)
        steps = {s["name"]: s for s in doc["steps"]}
        if step not in steps:
            raise BadInput(f"step '{step}' is not in run {run_id} (steps: {', '.join(steps)})")
        size = steps[step]["array_size"]
        index = index or 0
        if index >= size:
            raise BadInput(f"--index {index}: step '{step}' has children 0..{size - 1}")
        if step not in doc["jobs"]:
            raise OpsctlError(f"{run_id}: step '{step}' was never submitted")
        job_id = doc["jobs"][step] + (f":{index}" if size > 1 else "")
        stream: str | None = None
        token: str | None = None
        while True:
            job = self.api.describe([job_id]).get(job_id)
            if job is None:
                job = self._gone_job(doc, step, job_id)
            newest = job.get("container", {}).get("logStreamName")
            if not newest:
                if JobState(job.get("status", "SUBMITTED")) in TERMINAL or not follow:
                    reason = job.get("statusReason", "none given")
                    raise OpsctlError(f"no log stream: the job never started (reason: {reason})")
                time.sleep(poll)
                continue
            if stream and newest != stream:
                yield from self._drain(stream, token)  # the end of the previous attempt's stream
            if newest != stream:
                stream, token = newest, None
            token = yield from self._drain(newest, token)
            if not follow or JobState(job["status"]) in TERMINAL:
                return
            time.sleep(poll)

    def _drain(self, stream: str, token: str | None) -> Generator[bytes, None, str | None]:
        """Every message of `stream` after `token`, a page at a time (at most 1 MB, so memory
        stays flat however long the stream); returns the token to continue from."""
        while True:
            messages, next_token = self.api.child_log_events(self.infra.log_group, stream, token)
            if messages:
                # surrogates (a message that was not UTF-8) as escapes: never a traceback
                yield "".join(f"{m}\n" for m in messages).encode(errors="backslashreplace")
            if next_token == token:
                return token
            token = next_token

    def _gone_job(self, doc: dict[str, Any], step: str, job_id: str) -> dict[str, Any]:
        """A job DescribeJobs no longer returns, as far as the manifest remembers it."""
        final = doc.get("final", {}).get(step, {})
        if final.get("job_id") == job_id and final.get("log_stream"):
            return {"status": final["state"], "container": {"logStreamName": final["log_stream"]}}
        raise OpsctlError(
            f"job {job_id} (step '{step}') is unknown to AWS Batch ({RETENTION}), and its log stream "
            f"name went with it; the streams stay in log group {self.infra.log_group} for its retention"
        )

    def list_runs(self) -> list[dict[str, Any]]:
        """Runs from their manifests, newest first: a delimiter listing of the bucket's runs/
        (a request per 1,000 runs) and one GET per manifest; no run's markers are listed."""
        bucket = S3Store(self.infra.bucket, "runs")
        rows = []
        for run_id in bucket.folders():
            if not RUN_ID.fullmatch(run_id):
                continue  # not a run: something else put there
            try:
                doc = read_manifest(
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


# attempts.json as `attempts` keeps it: the Batch jobs it was read from, and their attempts.
KEPT_ATTEMPTS = {
    "jobs": MapOf(ListOf(str), keys=STEP_NAME),
    "attempts": ListOf(
        {
            "step": Text(STEP_NAME),
            "index": Int(0, MAX_ARRAY_SIZE - 1),
            "generation": Int(1, MAX_INTEGER),
            "attempt": Int(1, MAX_INTEGER),
            "started": Maybe(float),
            "finished": Maybe(float),
            "exit_code": Maybe(int),
            "reason": Maybe(str),
            "cpu_seconds": Maybe(float),
            "vcpus": Maybe(float),
            "gpus": Maybe(float),
        }
    ),
}


def _attempts_of(job: dict[str, Any], step: str, index: int, generation: int) -> list[dict[str, Any]]:
    """A described child's attempts (API Reference, "DescribeJobs": `attempts[]` of AttemptDetail,
    times in epoch milliseconds), and the one running now, which `attempts` lists only once ended.
    vCPUs and GPUs are the job's (`container.resourceRequirements`, or the older `vcpus`)."""
    container = job.get("container", {})
    asked = {r["type"]: float(r["value"]) for r in container.get("resourceRequirements", [])}
    shape = {"vcpus": asked.get("VCPU", container.get("vcpus")), "gpus": asked.get("GPU", 0.0)}
    rows = []
    tried = job.get("attempts", [])
    for n, attempt in enumerate(tried, start=1):
        ended = attempt.get("container", {})
        reason = attempt.get("statusReason") or ended.get("reason")
        if n == len(tried) and job.get("status") == JobState.FAILED:
            reason = _last_reason(job.get("statusReason"), reason)
        rows.append(
            {
                "step": step,
                "index": index,
                "generation": generation,
                "attempt": n,
                "started": _seconds_or_none(attempt.get("startedAt")),
                "finished": _seconds_or_none(attempt.get("stoppedAt")),
                "exit_code": ended.get("exitCode"),
                "reason": reason,
                "cpu_seconds": None,
                **shape,
            }
        )
    if job.get("status") in ("STARTING", "RUNNING") and job.get("startedAt"):
        rows.append(
            {
                "step": step,
                "index": index,
                "generation": generation,
                "attempt": len(rows) + 1,
                "started": job["startedAt"] / 1000,
                "finished": None,
                "exit_code": None,
                "reason": None,
                "cpu_seconds": None,
                **shape,
            }
        )
    return rows


def _last_reason(job_reason: str | None, attempt_reason: str | None) -> str | None:
    """The reason of a FAILED job's last attempt: the job's own status reason first, which is
    what ended it (the reason `opsctl kill` gave TerminateJob, "killed by user"), where the
    attempt's (its container's end, "Essential container in task exited") says something else."""
    if not job_reason or job_reason == attempt_reason:
        return attempt_reason
    return job_reason if not attempt_reason else f"{job_reason} ({attempt_reason})"


def _never_started(job: dict[str, Any]) -> bool:
    """A FAILED job (or array child) that Batch ended before it ran: no attempt, no start."""
    return job.get("status") == JobState.FAILED and not job.get("attempts") and not job.get("startedAt")


def _index(job: dict[str, Any]) -> int:
    return int(job.get("arrayProperties", {}).get("index", 0))


class _ListedOnce(S3Store):
    """A run's state store for one step of one poll, each listing made once: the ledger listing
    that counts a running step's commands (markers.step_figures) gives its attempts too
    (`_ledger_attempts`) without a second LIST."""

    def __init__(self, bucket: str, prefix: str) -> None:
        super().__init__(bucket, prefix)
        self._listed: dict[tuple[str, str, str], list[str]] = {}

    @classmethod
    def of(cls, store: S3Store) -> _ListedOnce:
        return cls(store.bucket, store.prefix)

    def list(self, folder: str = "", *, after: str = "", upto: str = "") -> list[str]:
        key = (folder, after, upto)
        if key not in self._listed:
            self._listed[key] = super().list(folder, after=after, upto=upto)
        return list(self._listed[key])


def _ledger_attempts(entries: list[Entry]) -> Attempts:
    """A step's attempts from its children's ledgers (one per child attempt that ran the
    worker): each child's attempt number in its newest generation. An attempt that ended
    before the worker ran (an image not pulled, a failed GPU preflight) counts once a later
    attempt of its child has run."""
    newest: dict[int, tuple[int, int]] = {}
    for e in entries:
        newest[e.child] = max(newest.get(e.child, (0, 0)), (e.generation, e.attempt))
    return attempts_of(attempt for _, attempt in newest.values())


def _seconds_or_none(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _short(arn: str) -> str:
    """A job definition as people name it, `name:revision`, from its ARN (or that already)."""
    return arn.rsplit("/", 1)[-1]


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


def _denied(error: BaseException) -> bool:
    """Whether `error` is AWS refusing for want of a permission: opsctl_contract.awsclient turns
    an AccessDenied into BadInput, with the botocore ClientError it came from as its context."""
    from botocore.exceptions import ClientError

    from opsctl_contract.awsclient import DENIED, error_code

    cause = error.__context__
    while cause is not None:
        if isinstance(cause, ClientError):
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return error_code(cause) in DENIED or status == 403
        cause = cause.__context__
    return False


def _record_job(doc: dict[str, Any], *, name: str, job_id: str, at: float) -> None:
    doc["jobs"][name] = job_id
    doc.setdefault("submitted_at", {})[name] = at


def _run_state(states: list[JobState], *, submitted: bool) -> str:
    if submitted and all(s is JobState.SUCCEEDED for s in states):
        return JobState.SUCCEEDED.value
    if any(s is JobState.FAILED for s in states) and all(s in TERMINAL for s in states):
        return JobState.FAILED.value
    if any(s in STARTED for s in states):
        return JobState.RUNNING.value
    if any(s is JobState.RUNNABLE for s in states):
        return JobState.RUNNABLE.value
    return JobState.PENDING.value if submitted else JobState.SUBMITTED.value


def _stuck_warning(step: dict[str, Any], waited: float) -> str:
    return (
        f"step '{step['name']}' has been RUNNABLE for {waited / 60:.0f} min: likely "
        + ("no GPU instance types in the gpu compute environment, or " if step["queue"] == "gpu" else "")
        + "no capacity for its instance types (spot), or its compute environment's maxvCpus is "
        "reached or smaller than the job's vCPUs/memory"
    )


def _runnable_for(job: dict[str, Any], jobs: dict[str, dict[str, Any]], now_ms: float) -> float:
    """Seconds a job has been waiting for capacity (RUNNABLE with nothing started), else 0.

    Batch does not say when a job became RUNNABLE; it is when it was created or, later, when
    the last job it depends on stopped.
    """
    summary = job.get("arrayProperties", {}).get("statusSummary", {})
    waiting = job["status"] == JobState.RUNNABLE or (
        summary.get("RUNNABLE", 0) > 0 and not any(summary.get(s.value) for s in (*STARTED, *TERMINAL))
    )
    if not waiting:
        return 0.0
    since = max(
        [float(job.get("createdAt", now_ms))]
        + [
            float(jobs[d["jobId"]].get("stoppedAt", 0))
            for d in job.get("dependsOn", [])
            if d["jobId"] in jobs
        ]
    )
    return max(0.0, (now_ms - since) / 1000)


def _no_commands(step: dict[str, Any]) -> dict[str, int]:
    return {"total": step["commands"], "done": 0, "failed": 0, "reexecuted": 0}


def _final(doc: dict[str, Any], step: str) -> dict[str, Any] | None:
    """The final record of a step's current job, if one was written."""
    final: dict[str, Any] | None = doc.get("final", {}).get(step)
    return final if final and final["job_id"] == doc["jobs"].get(step) else None


def _elapsed(started_ms: float | None, stopped_ms: float | None) -> float | None:
    if not started_ms:
        return None
    end = float(stopped_ms or time.time() * 1000)
    # Never below 0: Batch's times and this machine's clock may disagree, or a clock step back.
    return max(0.0, round((end - float(started_ms)) / 1000, 1))


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
