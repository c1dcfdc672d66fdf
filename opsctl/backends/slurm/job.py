"""The batch script every child of a Slurm run runs, and the records it leaves.

Slurm retries nothing by itself but a job on a node that failed (`--requeue`), and no process of
opsctl's stays on the submitting machine, so a child's retries happen inside its own allocation:
the script runs the worker up to `retries + 1` times, each attempt under `timeout` of the step's
own, and stops early on success or a timed-out attempt (not retried, as on AWS Batch). The worker
skips the commands that have done markers, so an attempt runs only what is left.

Each attempt has a record, `exits/<step>/<index>-<generation>-<attempt>` in the run's
directory, written when it starts (`{"started": …, "job": …}`, the job id Slurm gave the child)
and again when it ends (with `finished` and `exit_code`), each time to a temporary name and
renamed. It is what `status` and `report` read once Slurm has forgotten the job (squeue keeps
an ended job 300 s, and `sacct` is not on every cluster), and what they trust over sacct, which
lags: the run carries its own history. An attempt whose node died leaves its
start record alone; Slurm runs the job again (`--requeue`), and the script counts the records
to number the next attempt, so a lost attempt uses one of the child's tries, as a spot loss
does on AWS Batch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from opsctl_contract.storage import Store

EXITS = "exits"  # the records' folder in the run's directory
# The worker's exit code for a step past its time: `timeout`'s, as on the local backend.
TIMED_OUT = 124

SCRIPT = """#!/bin/sh
# opsctl: one child of a step on Slurm (docs/slurm.md). Up to OPSCTL_TRIES attempts of the
# worker in this allocation; each attempt recorded as it starts and ends, in exits/<step>/.
index=$(( ${SLURM_ARRAY_TASK_ID:-0} + ${OPSCTL_INDEX_OFFSET:-0} ))
if [ "$ARRAY_SIZE" -gt 1 ]; then
  AWS_BATCH_JOB_ARRAY_INDEX=$index
  export AWS_BATCH_JOB_ARRAY_INDEX
fi
exits="$OPSCTL_RUN_URI/exits/$OPSCTL_STEP"
mkdir -p "$exits" "$OPSCTL_RUN_URI/logs/$OPSCTL_STEP"
exec >>"$OPSCTL_RUN_URI/logs/$OPSCTL_STEP/$index.log" 2>&1
job="$SLURM_JOB_ID"  # this child's own job id (an array task has one): sacct's JobIDRaw
# Attempts begun before this allocation (one lost with its node: `--requeue`) count too.
attempt=$(( $(ls "$exits" 2>/dev/null | grep -c "^$index-$OPSCTL_GENERATION-[0-9]*$") + 1 ))
while [ "$attempt" -le "$OPSCTL_TRIES" ]; do
  echo "== $OPSCTL_RUN_ID $OPSCTL_STEP[$index] attempt $attempt =="
  record="$exits/$index-$OPSCTL_GENERATION-$attempt"
  started=$(date +%s.%N)
  printf '{"started": %s, "job": "%s"}\\n' "$started" "$job" >"$record.tmp" && mv "$record.tmp" "$record"
  AWS_BATCH_JOB_ATTEMPT=$attempt timeout -k 5 "$OPSCTL_TIMEOUT" \\
    "$OPSCTL_PYTHON" -I -m worker run $OPSCTL_WORKER_FLAGS
  code=$?
  printf '{"started": %s, "finished": %s, "exit_code": %d, "job": "%s"}\\n' \\
    "$started" "$(date +%s.%N)" "$code" "$job" >"$record.tmp" && mv "$record.tmp" "$record"
  if [ "$code" -eq 0 ] || [ "$code" -eq 124 ]; then
    exit "$code"
  fi
  attempt=$((attempt + 1))
done
if [ -z "${code:-}" ]; then
  echo "== $OPSCTL_RUN_ID $OPSCTL_STEP[$index]: no attempt left of $OPSCTL_TRIES (the last one's node died)"
fi
exit "${code:-1}"
"""

_NAME = re.compile(r"(\d+)-(\d+)-(\d+)")


@dataclass(frozen=True)
class Exit:
    """One attempt's end, as the script recorded it."""

    index: int
    generation: int
    attempt: int
    started: float | None
    finished: float | None
    exit_code: int | None
    job: str | None = None  # the child's own job id, where the record has one


def exits(store: Store, step: str) -> list[Exit]:
    """Every attempt's record of `step` in `store` (the run's exits/): one listing, and a read
    of each (under 100 bytes)."""
    found = []
    for key in store.list(step):
        name = key.rsplit("/", 1)[-1]
        match = _NAME.fullmatch(name)
        if match is None:
            continue  # a record being written (`.tmp`), or not one
        index, generation, attempt = map(int, match.groups())
        try:
            record = json.loads(store.read(key))
        except (OSError, ValueError):
            record = {}
        if not isinstance(record, dict):
            record = {}
        found.append(
            Exit(
                index,
                generation,
                attempt,
                _number(record.get("started")),
                _number(record.get("finished")),
                code if isinstance(code := record.get("exit_code"), int) else None,
                job if isinstance(job := record.get("job"), str) and job.isdigit() else None,
            )
        )
    return found


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
