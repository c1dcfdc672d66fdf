"""The worker environment contract (docs/worker.md): the variables both sides agree on.

The operator side sets them for every child (`contract_environment` when it submits a step to
AWS Batch, `local_environment` on the local backend); the worker reads them (worker/env.py). AWS
Batch itself adds the array index and the attempt, and refuses overrides of AWS_BATCH_* names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"  # set by Batch for array children only
ATTEMPT = "AWS_BATCH_JOB_ATTEMPT"  # set by Batch, from 1
ARRAY_SIZE = "ARRAY_SIZE"
LIST_FILE = "LIST_FILE_S3_PATH"  # the seed's name
RUN_ID = "OPSCTL_RUN_ID"
STEP = "OPSCTL_STEP"
RUN_URI = "OPSCTL_RUN_URI"
STATE_URI = "OPSCTL_STATE_URI"
SPLIT = "OPSCTL_SPLIT"
GENERATION = "OPSCTL_GENERATION"  # bumped by each `opsctl resume` (dynamic split's claims)
COMMAND_INDEX = "OPSCTL_COMMAND_INDEX"  # set by the worker for each command it runs
SCRATCH_DIR = "OPSCTL_SCRATCH_DIR"  # set by the worker: the empty directory its commands start in

# Index sources in order of preference: AWS Batch, then Slurm and Kubernetes indexed jobs, so
# the same image also runs under those schedulers.
INDEX_VARS = (ARRAY_INDEX, "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
SIZE_VARS = (ARRAY_SIZE, "SLURM_ARRAY_TASK_COUNT")


def contract_environment(
    step: Mapping[str, Any], run_id: str, run_uri: str, generation: int = 1
) -> dict[str, str]:
    """What opsctl sets for every child of `step` (a step as the run manifest records it).

    `run_uri` is where the run lives (a directory or s3://…): commands keep their data under
    OPSCTL_RUN_URI, and the markers live under its state/.
    """
    return {
        **step["env"],
        ARRAY_SIZE: str(step["array_size"]),
        LIST_FILE: step["list_uri"],
        RUN_ID: run_id,
        STEP: step["name"],
        RUN_URI: run_uri,
        STATE_URI: f"{run_uri}/state",
        SPLIT: step["split"],
        GENERATION: str(generation),
    }


def local_environment(
    step: Mapping[str, Any], run_id: str, run_uri: str, index: int, attempt: int, generation: int = 1
) -> dict[str, str]:
    """The contract plus what AWS Batch would have set: the child's index and attempt."""
    env = {**contract_environment(step, run_id, run_uri, generation), ATTEMPT: str(attempt)}
    if step["array_size"] > 1:  # Batch sets the index for array children only
        env[ARRAY_INDEX] = str(index)
    return env
