"""Launch and resume on AWS Batch: check the stack, upload the run, submit its steps in order.

One SubmitJob per step, each depending on the jobs of the steps before it (Batch's own
`dependsOn` carries the DAG), and each job id recorded in the manifest the moment it is
known, so that nothing has to stay running and a launch that dies half way is completed by
`resume` without submitting anything twice.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsctl import pipeline as spec
from opsctl.backends.aws.batch import job_name, submit_request
from opsctl.backends.aws.definitions import DERIVED_FROM, IMAGE_TAG, Definitions
from opsctl.backends.aws.runs import AwsRuns, Manifest, record_job
from opsctl.backends.aws.status import view_of
from opsctl.errors import LaunchIncomplete
from opsctl.run.ids import new_run_id
from opsctl.run.plan import plan_resume, restage, stage
from opsctl.run.states import STUCK_AFTER, JobState
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.storage import Usage

if TYPE_CHECKING:
    from opsctl.backends.aws.backend import AwsBackend
    from opsctl.backends.options import Containers
    from opsctl.records import AwsManifest, ManifestStep

# The tags opsctl puts on each job (batch.submit_request). With propagateTags, "if the total
# number of combined tags from the job and job definition is over 50, the job is moved to the
# FAILED state" (botocore batch model, SubmitJobRequest.propagateTags).
JOB_TAGS = 3
MAX_TAGS = 50


def launch(
    runs: AwsRuns, spec_path: Path, max_parallel: int | None = None, *, containers: Containers | None = None
) -> str:
    """Validate; check the queues, job definitions and images; upload; submit in order. Every
    child runs in a container here: `containers` is refused before (the registry's `containers`)."""
    pipe = spec.load(spec_path)  # before any AWS call
    definitions = job_definitions(runs, [step.record("") for step in pipe.steps])
    run_id = new_run_id(pipe.name)
    usage = Usage()  # what the launch's writes cost, recorded in the manifest
    store = runs.store(run_id, usage)

    def put_list(step: str, text: bytes) -> str:
        store.write(f"lists/{step}.txt", text)
        return f"{store.uri}/lists/{step}.txt"

    staged = stage(pipe, run_id, "aws", runs.state_store(run_id, usage), put_list)
    for recorded in staged["steps"]:
        recorded["job_definition"] = definitions[recorded["name"]]
    # The list files, work packs and this manifest, and (counted ahead) its update after
    # each submit.
    launched = usage.requests + Counter(put=1 + len(pipe.steps))
    doc: AwsManifest = {
        "run_id": run_id,
        "pipeline": staged["pipeline"],
        "backend": "aws",
        "created": staged["created"],
        "spec": staged.get("spec"),
        "spec_text": staged.get("spec_text"),
        "steps": staged["steps"],
        "infra": {"bucket": runs.infra.bucket, "region": runs.infra.region},
        "jobs": {},
        "generation": 1,
        "launch_requests": dict(launched),
    }
    record = Manifest.create(store, doc)
    submitted: list[str] = []
    try:
        submit(runs, record, [s["name"] for s in doc["steps"]], submitted=submitted)
    except OpsctlError as e:
        raise LaunchIncomplete(run_id, submitted, e) from None
    return run_id


def job_definitions(runs: AwsRuns, steps: Sequence[ManifestStep]) -> dict[str, str]:
    """Each step's job definition ARN, by step name: the stack's for its queue as it is now,
    or one derived from it for the step's own image (opsctl/backends/aws/definitions.py).
    Checked before anything is uploaded or submitted: queues ENABLED, stack definitions
    with an ACTIVE revision (an infra file naming one a deploy deregistered stands for the
    newest: BatchAPI.unusable), their tags within what a job may carry, and every image the
    steps run present in ECR where it is an ECR image."""
    queues = sorted({step["queue"] for step in steps})
    problems, stack = runs.api.unusable(
        [runs.infra.queue(q) for q in queues], [runs.infra.job_definition(q) for q in queues]
    )
    if problems:
        raise BadInput(
            f"{runs.infra.source}: {'; '.join(problems)}: not found or not usable in {runs.infra.region} "
            "(run `opsctl infra output` after `make infra`, or pass the right --infra)"
        )
    for step in steps:
        described = stack[runs.infra.job_definition(step["queue"])]
        tags = len(described.get("tags") or {})
        derived = len((DERIVED_FROM, IMAGE_TAG)) if step.get("image") else 0
        if tags + derived + JOB_TAGS > MAX_TAGS:
            raise BadInput(
                f"{runs.infra.source}: job definition {short(described['jobDefinitionArn'])} has "
                f"{tags} tags; with opsctl's {JOB_TAGS} on each job"
                + (f" and the {derived} of its derived definition" if derived else "")
                + f", step '{step['name']}' would carry {tags + derived + JOB_TAGS}, over the "
                f"{MAX_TAGS} AWS Batch allows a job, and every job would end FAILED: remove tags "
                "from the stack's job definitions"
            )
    ours = {q: stack_image(runs, q, stack[runs.infra.job_definition(q)]) for q in queues}
    images = {step.get("image") or ours[step["queue"]] for step in steps}
    missing = runs.api.images_missing(sorted(images))
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
    own = Definitions(runs.api, stack)
    return {
        step["name"]: own.arn(runs.infra.job_definition(step["queue"]), image)
        if (image := step.get("image"))
        else str(stack[runs.infra.job_definition(step["queue"])]["jobDefinitionArn"])
        for step in steps
    }


def stack_image(runs: AwsRuns, queue: str, described: dict[str, Any]) -> str:
    """The image the stack's job definition for `queue` runs: the infra file's, unless the
    file names a revision a deploy has since replaced, and then the newest revision's."""
    ref = runs.infra.job_definition(queue)
    if ref in (described["jobDefinitionArn"], short(described["jobDefinitionArn"])):
        return runs.infra.image(queue)
    image = (described.get("containerProperties") or {}).get("image")
    return str(image) if image else runs.infra.image(queue)


def submit(
    runs: AwsRuns,
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
        queue = runs.infra.queue(step["queue"])
        orphans = runs.api.jobs_named(queue, named) if adopt else []
        if orphans:
            job_id = orphans[0]  # submitted by a launch that died before recording it
        else:
            after = {d: j for d, j in doc["jobs"].items() if d not in succeeded}
            job_id = runs.api.submit_step(
                **submit_request(
                    step,
                    run_id=doc["run_id"],
                    pipeline=doc["pipeline"],
                    generation=doc.get("generation", 1),
                    job_name=named,
                    queue=queue,
                    job_definition=step.get("job_definition") or runs.infra.job_definition(step["queue"]),
                    region=runs.infra.region,
                    run_uri=runs.store(doc["run_id"]).uri,
                    after=after,
                )
            )
            submitted.append(name)
        record.update(functools.partial(record_job, name=name, job_id=job_id, at=time.time()))
        doc = record.doc
    return submitted


def resume(runs: AwsBackend, run_id: str) -> str:
    """Submit again every step that did not succeed, in a new generation (opsctl/run/plan.py).

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
    runs.submitted.pop(run_id, None)  # its job ids are about to change
    record = runs.manifest(run_id)
    view = runs.status_of(view_of(runs, record, STUCK_AFTER))
    states = {s["name"]: JobState(s["state"]) if s["job_id"] else None for s in view["steps"]}
    redo, generation = plan_resume(record.doc["steps"], states, record.doc.get("generation", 1))
    if not redo:
        if view["state"] == JobState.SUCCEEDED:
            return f"{run_id} already SUCCEEDED; nothing to resume"
        return f"{run_id}: every step is running or succeeded; nothing to resume"
    replaced = {n: record.doc["jobs"][n] for n in redo if n in record.doc["jobs"]}
    again = [s for s in record.doc["steps"] if s["name"] in redo]
    definitions = job_definitions(runs, again)
    changed: dict[tuple[str, str], list[str]] = {}
    for step in again:
        was, now = step.get("job_definition"), definitions[step["name"]]
        if was and short(was) != short(now):
            changed.setdefault((short(was), short(now)), []).append(step["name"])

    def new_generation(d: AwsManifest) -> None:
        d["generation"] = max(d.get("generation", 1), generation)
        for step in d["steps"]:
            if step["name"] in definitions:
                step["job_definition"] = definitions[step["name"]]
        if replaced and replaced not in d.setdefault("replaced", []):
            d["replaced"].append(replaced)
        d.pop("state", None)  # the run is live again

    record.update(new_generation)
    store = runs.store(run_id)
    restage(
        record.doc["steps"],
        redo,
        record.doc["generation"],
        runs.state_store(run_id),
        lambda step: store.read(f"lists/{step}.txt").decode("utf-8"),
    )
    succeeded = frozenset(n for n, s in states.items() if s is JobState.SUCCEEDED)
    submitted = submit(runs, record, redo, succeeded=succeeded, adopt=True)
    generation = record.doc["generation"]
    message = f"{run_id} resumed: submitted {', '.join(submitted) or 'nothing'} (generation {generation})"
    for (was, now), names in changed.items():
        message += f"; {', '.join(names)} now under job definition {now} (was {was})"
    return message


def short(arn: str) -> str:
    """A job definition as people name it, `name:revision`, from its ARN (or that already)."""
    return arn.rsplit("/", 1)[-1]
