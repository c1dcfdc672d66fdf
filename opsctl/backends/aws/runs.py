"""Where a stack's runs live and what is kept of each: `AwsRuns`, and the run's manifest.

A run lives in the infra bucket under `runs/<run_id>/`: `manifest.json` (the pipeline as
launched, every step's job id as soon as it is submitted, the run's generation, and each step's
final state once it ended), `lists/<step>.txt`, the workers' markers under `state/` and, once
the run ended, `attempts.json`. Every part of the backend (submit, status, history, logs) reads
and writes them through the `AwsRuns` of one infra file, which also keeps what one process
learns once: the manifest of a fully submitted run, an ended job's failed children, the prices.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from opsctl.backends.aws.api import BatchAPI
from opsctl.backends.aws.prices import Prices
from opsctl.infra import InfraOutputs
from opsctl.records import AwsManifest, FinalRecord
from opsctl.run.ids import check_run_id
from opsctl.run.manifest import AWS, COMMON, read_manifest
from opsctl_contract.awsclient import aws_call
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.shapes import Absent
from opsctl_contract.storage import NotFound, S3Store, Usage

MANIFEST = "manifest.json"
ATTEMPTS = "attempts.json"  # beside the manifest: a finished run's child attempts
RETENTION = "AWS Batch keeps jobs about 7 days after they end"
# An AWS run's manifest (records.py `AwsManifest`): its job ids always, its other keys where
# they were written, and none of them null.
AWS_MANIFEST = {**COMMON, **{key: Absent(shape) for key, shape in AWS.items()}, "jobs": AWS["jobs"]}


def read_aws_manifest(data: bytes | str, run_id: str, where: str) -> AwsManifest:
    """An AWS run's manifest from the bytes of `where`, checked for `AWS_MANIFEST`."""
    return cast("AwsManifest", read_manifest(data, run_id, where, AWS_MANIFEST))


class Manifest:
    """A run's manifest.json, updated by several opsctl processes at once.

    A watch records final states while a resume records new job ids: each update is a
    conditional PUT (If-Match on the ETag last seen); when another process got there first,
    the manifest is read again and the change applied again, so nobody's update is lost.
    Changes must therefore be safe to apply to a newer document.
    """

    def __init__(self, store: S3Store, doc: AwsManifest, etag: str) -> None:
        self.store = store
        self.doc = doc
        self.etag = etag

    @classmethod
    def read(cls, store: S3Store, run_id: str, where: str) -> Manifest:
        try:
            data, etag = store.read_tagged(MANIFEST)
        except NotFound:
            raise BadInput(f"run '{run_id}' not found in {store.uri.rsplit('/', 1)[0]}/ ({where})") from None
        return cls(store, read_aws_manifest(data, run_id, f"{store.uri}/{MANIFEST}"), etag)

    @classmethod
    def create(cls, store: S3Store, doc: AwsManifest) -> Manifest:
        etag = store.create_tagged(MANIFEST, _dump(doc))
        if etag is None:
            raise OpsctlError(f"{store.uri}/{MANIFEST} exists already: run id collision, launch again")
        return cls(store, doc, etag)

    def update(self, change: Callable[[AwsManifest], None]) -> None:
        change(self.doc)
        for _ in range(20):
            etag = self.store.replace(MANIFEST, _dump(self.doc), self.etag)
            if etag is not None:
                self.etag = etag
                return
            data, self.etag = self.store.read_tagged(MANIFEST)
            self.doc = read_aws_manifest(data, self.doc["run_id"], f"{self.store.uri}/{MANIFEST}")
            change(self.doc)
        raise OpsctlError(f"{self.store.uri}/{MANIFEST} kept changing under this update; try again")


def _dump(doc: AwsManifest) -> bytes:
    return json.dumps(doc, indent=2).encode()


def denied(error: BaseException) -> bool:
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


def record_job(doc: AwsManifest, *, name: str, job_id: str, at: float) -> None:
    doc["jobs"][name] = job_id
    doc.setdefault("submitted_at", {})[name] = at


def final_record(doc: AwsManifest, step: str) -> FinalRecord | None:
    """The final record of a step's current job, if one was written."""
    kept = doc.get("final", {}).get(step)
    return kept if kept and kept["job_id"] == doc["jobs"].get(step) else None


class AwsRuns:
    """The runs of one infra stack, and what this process learned of them.

    One is made per command; its caches hold only what cannot change while the command runs.
    """

    def __init__(self, infra: InfraOutputs, api: BatchAPI | None = None) -> None:
        self.infra = infra
        self._api = api
        # Manifests of fully submitted runs, for repeated polls by this process: their job ids
        # only change through `resume`, and a run a watch follows cannot be resumed until it ended.
        self.submitted: dict[str, Manifest] = {}
        # What a read could not record (a denied write); each said once, in `status`'s warnings.
        self.warnings: list[str] = []
        self._failed: dict[str, list[dict[str, Any]]] = {}

    @functools.cached_property
    def api(self) -> BatchAPI:
        return self._api or BatchAPI(self.infra.region)

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

    def store(self, run_id: str, usage: Usage | None = None) -> S3Store:
        """Where a run lives: s3://BUCKET/runs/<run_id>/; its requests counted in `usage`."""
        return S3Store(self.infra.bucket, f"runs/{run_id}", usage)

    def state_store(self, run_id: str, usage: Usage | None = None) -> S3Store:
        """The run's markers (OPSCTL_STATE_URI); its requests counted in `usage`."""
        return S3Store(self.infra.bucket, f"runs/{run_id}/state", usage)

    def manifest(self, run_id: str) -> Manifest:
        check_run_id(run_id)
        return Manifest.read(self.store(run_id), run_id, f"infra: {self.infra.source}")

    def read_manifest(self, run_id: str) -> AwsManifest:
        return self.manifest(run_id).doc

    def record(self, run_id: str) -> Manifest:
        """The run's manifest, read once per process for a fully submitted run (`watch` polls,
        `report` asks for status and attempts)."""
        record = self.submitted.get(run_id) or self.manifest(run_id)
        if len(record.doc["jobs"]) == len(record.doc["steps"]):
            self.submitted[run_id] = record
        return record

    def failed_children(self, array_job_id: str) -> list[dict[str, Any]]:
        """Every FAILED child of an ended array job, described: ListJobs (1,000 a page) and
        DescribeJobs (100 a call). Kept for the process: `watch` and `report` then print the
        failures from the same answers (an ended job's children do not change)."""
        if array_job_id not in self._failed:
            with aws_call("AWS Batch", f"failed children of {array_job_id}", self.infra.region):
                pages = self.api.batch.get_paginator("list_jobs").paginate(
                    arrayJobId=array_job_id, jobStatus="FAILED", PaginationConfig={"PageSize": 1000}
                )
                ids = [job["jobId"] for page in pages for job in page.get("jobSummaryList", [])]
            self._failed[array_job_id] = list(self.api.describe(ids).values()) if ids else []
        return self._failed[array_job_id]

    def warn(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)
