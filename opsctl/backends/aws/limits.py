"""AWS Batch's limits on a step, as `opsctl validate` asks every engine for them.

Asked through opsctl/backends/__init__.py (`step_problem`) before anything is
uploaded or submitted, from the spec alone: no credentials, no AWS call. The request is sized
with the longest values the infrastructure could give it, so a step that passes here cannot
be refused at launch for its size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from opsctl.backends.aws.batch import (
    JOB_NAME,
    MAX_ECS_OVERRIDES,
    batch_environment,
    ecs_overrides,
    job_name,
    overrides_chars,
    submit_request,
)
from opsctl_contract.errors import brief

if TYPE_CHECKING:
    from opsctl.records import ManifestStep


def longest_submit_request(
    pipeline_name: str, step: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The SubmitJob request the AWS backend would send for `step` (as the manifest records it:
    opsctl.pipeline.Step.record), built with the longest
    values the infrastructure can give it (bucket name, queue and job definition ARNs, region, a
    resubmitted job's name, a generation) and this pipeline's own run id length; and what Batch
    adds to a child's environment, at its longest too (`batch_environment`: 128-character
    compute environment and queue names, the step's last attempt and highest index)."""
    run_id = f"{pipeline_name}-00000000-000000-0000"
    run_uri = f"s3://{'b' * 63}/runs/{run_id}"
    arn = "arn:aws-us-gov:batch:us-gov-west-1:000000000000:"
    name = step["name"]
    # The step as the manifest will record it (the spec layer's Step.record, unchecked here).
    record = cast("ManifestStep", {**step, "list_uri": f"{run_uri}/lists/{name}.txt"})
    request = submit_request(
        record,
        run_id=run_id,
        pipeline=pipeline_name,
        generation=999_999,
        job_name=job_name(run_id, name, "0" * 36),
        queue=f"{arn}job-queue/{'q' * 128}",
        job_definition=f"{arn}job-definition/{'d' * 128}:999999",
        region="us-gov-west-1",
        run_uri=run_uri,
        after={d["step"]: "0" * 36 for d in step["depends_on"]},
    )
    return request, batch_environment(record, "c" * 128, "q" * 128, "0" * 36)


def step_problem(pipeline_name: str, step: Mapping[str, Any]) -> str | None:
    """Why AWS would refuse the requests of `step`, or None: `opsctl validate` says it at the
    step's line, before anything runs (every engine's limits are asked: opsctl/backends/base.py).

    - The jobName must fit Batch's pattern (JOB_NAME), which the name rules above make
      sure of; checked all the same, since a name AWS refuses stops a launch half way.
    - The container overrides ECS receives for each child must fit RunTask's 8,192 characters
      (MAX_ECS_OVERRIDES), counted as `ecs_overrides` builds them from the longest
      request (`longest_submit_request`). This is the limit a big `env` meets: AWS accepts the
      SubmitJob, then fails every child, unretried.

    SubmitJob's own 30 KiB payload (MAX_SUBMIT_BYTES) needs no check of its own: the
    overrides are most of the request, and a request whose overrides fit 8,192 characters is
    under 12 KiB (tests/test_spec.py holds the largest one to it).
    """
    request, added = longest_submit_request(pipeline_name, step)
    if not JOB_NAME.fullmatch(request["jobName"]):
        return f"step '{step['name']}': job name {brief(request['jobName'])} is not one AWS Batch takes"
    chars = overrides_chars(ecs_overrides(request, added))
    if chars > MAX_ECS_OVERRIDES:
        env = step["env"]
        chars_of_env = sum(len(k) + len(v) for k, v in env.items())
        share = f"env: {len(env)} {'variable' if len(env) == 1 else 'variables'}, {chars_of_env:,} characters"
        return (
            f"step '{step['name']}': its container overrides as ECS receives them would be {chars:,} "
            f"characters, over ECS RunTask's {MAX_ECS_OVERRIDES:,} ({share}), and AWS would fail "
            "every child ('Container Overrides length must be at most 8192'): keep large values "
            "in a file the commands read"
        )
    return None
