"""Launch and resume on Slurm: one `sbatch --array` per step (several above MaxArraySize), in the
order of the manifest, each waiting on the jobs of the steps it depends on.

Dependencies are Slurm's: `afterok` on every job of an upstream step, `aftercorr` for an N_TO_N
one (child i waits for child i), and `--kill-on-invalid-dep=yes`, so that a step after a failed
one ends at once instead of waiting forever. A launch checks the partitions and reads
MaxArraySize before it writes anything; each array's job id goes into the manifest as soon as
sbatch gives it, so a launch stopped half way is finished by `resume`.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from opsctl import pipeline as spec
from opsctl.backends.slurm.job import SCRIPT, exits
from opsctl.backends.slurm.runs import SlurmRun
from opsctl.backends.slurm.settings import PREFIX
from opsctl.backends.slurm.status import Seen, children, job_name
from opsctl.errors import LaunchIncomplete
from opsctl.run.ids import new_run_id
from opsctl.run.plan import plan_resume, restage, stage
from opsctl.run.states import JobState
from opsctl_contract.environment import contract_environment
from opsctl_contract.errors import BadInput, OpsctlError
from opsctl_contract.files import LIST_FILE_LIMIT, read_text
from opsctl_contract.storage import LocalStore

if TYPE_CHECKING:
    from opsctl.backends.slurm.backend import SlurmBackend
    from opsctl.records import ManifestStep, SlurmArray, SlurmManifest

KILL_GRACE = 5  # seconds `timeout` waits after TERM before KILL (job.py)


def launch(backend: SlurmBackend, spec_path: Path, max_parallel: int | None) -> str:
    """Validate; check the client commands and the partitions; write the run; submit in order."""
    pipe = spec.load(spec_path)
    backend.client.check("sbatch", "squeue", "scancel", "scontrol")
    settings = backend.settings
    known = backend.client.partitions()
    for queue in sorted({step.queue.value for step in pipe.steps}):
        partition = settings.partitions[queue]
        if partition not in known:
            raise BadInput(
                f"partition '{partition}' (for queue {queue}) is not on this cluster (partitions: "
                f"{', '.join(sorted(known)) or 'none'}); {PREFIX}PARTITION_{queue.upper()} names another"
            )
    max_array, accounting = _cluster(backend)
    run_id = new_run_id(pipe.name)
    path = settings.root / run_id
    building = settings.root / f".building-{run_id}"
    try:
        (building / "lists").mkdir(parents=True)
        (building / "state").mkdir()

        def put_list(step: str, text: bytes) -> str:
            (building / "lists" / f"{step}.txt").write_bytes(text)
            return str(path / "lists" / f"{step}.txt")

        staged = stage(pipe, run_id, "slurm", LocalStore(building / "state"), put_list)
        doc: SlurmManifest = {
            "run_id": run_id,
            "pipeline": staged["pipeline"],
            "backend": "slurm",
            "created": staged["created"],
            "spec": staged.get("spec"),
            "spec_text": staged.get("spec_text"),
            "steps": staged["steps"],
            "generation": 1,
            "arrays": {},
            "earlier": [],
            "submitted_at": {},
        }
        if accounting:
            doc["accounting"] = True
        (building / "job.sh").write_text(SCRIPT)
        (building / "job.sh").chmod(0o755)
        run = SlurmRun(settings.root, run_id)
        run.path = building
        run.save(doc)
        building.rename(path)
        run.path = path
    except OSError as e:
        shutil.rmtree(building, ignore_errors=True)
        raise OpsctlError(
            f"cannot create the run under {settings.root}: {e.strerror}; nothing was submitted"
        ) from None
    submitted: list[str] = []
    try:
        submit(backend, run, [s["name"] for s in doc["steps"]], max_array, max_parallel, submitted=submitted)
    except OpsctlError as e:
        raise LaunchIncomplete(run_id, submitted, e) from None
    return run_id


def _cluster(backend: SlurmBackend) -> tuple[int, bool]:
    """From one `scontrol show config`: the cluster's MaxArraySize (task ids run from 0 to one
    less), and whether it keeps accounting."""
    config = backend.client.config()
    value = config.get("MaxArraySize", "1001")
    return int(value) if value.isdigit() and int(value) > 1 else 1001, backend.client.keeps_accounting(config)


def submit(
    backend: SlurmBackend,
    run: SlurmRun,
    names: Sequence[str],
    max_array: int,
    max_parallel: int | None,
    *,
    only: dict[str, list[int]] | None = None,
    succeeded: Collection[str] = (),
    submitted: list[str] | None = None,
) -> list[str]:
    """Submit steps `names` in manifest order (each child, or those `only` names), waiting on
    the steps they depend on except those `succeeded` already; each array recorded at once."""
    submitted = [] if submitted is None else submitted
    for step in run.doc["steps"]:
        name = step["name"]
        if name not in names:
            continue
        kids = (only or {}).get(name) or list(range(step["array_size"]))
        arrays: list[SlurmArray] = []
        for offset in range(0, step["array_size"], max_array):
            chunk = [i for i in kids if offset <= i < offset + max_array]
            if not chunk:
                continue
            after = _dependencies(run.doc, step, offset, chunk, succeeded)
            job_id = backend.client.submit(
                _options(backend, run, step, offset, chunk, after, max_parallel),
                run.path / "job.sh",
                env=_environment(backend, run, step, offset),
            )
            arrays.append({"job": job_id, "offset": offset, "children": ranges(chunk)})

            run.change(functools.partial(_record, name=name, arrays=arrays))
        submitted.append(name)
    return submitted


def _record(doc: SlurmManifest, *, name: str, arrays: list[SlurmArray]) -> None:
    doc["arrays"][name] = arrays
    doc["submitted_at"][name] = time.time()


def _dependencies(
    doc: SlurmManifest, step: ManifestStep, offset: int, chunk: list[int], succeeded: Collection[str]
) -> list[str]:
    """sbatch's `--dependency` terms for one array of `step`: `aftercorr` on the upstream array
    of the same children (N_TO_N), `afterok` on every upstream job otherwise."""
    terms = []
    for dep in step["depends_on"]:
        if dep["step"] in succeeded:
            continue  # done: nothing to wait for (its jobs may be long forgotten)
        upstream = doc["arrays"].get(dep["step"], [])
        same = next((a for a in upstream if a["offset"] == offset and a["children"] == ranges(chunk)), None)
        if dep["n_to_n"] and same is not None:
            terms.append(f"aftercorr:{same['job']}")
        else:
            terms += [f"afterok:{a['job']}" for a in upstream]
    return terms


def _options(
    backend: SlurmBackend,
    run: SlurmRun,
    step: ManifestStep,
    offset: int,
    chunk: list[int],
    after: list[str],
    max_parallel: int | None,
) -> list[str]:
    settings = backend.settings
    queue = step["queue"]
    tries = step["retries"] + 1
    minutes = math.ceil((tries * (step["timeout"] + KILL_GRACE) + 60) / 60)
    options = [
        f"--job-name={job_name(run.run_id)}",
        f"--partition={settings.partitions[queue]}",
        f"--time={minutes}",
        f"--chdir={run.path}",
        f"--output={run.path / 'logs' / step['name']}/slurm-%A_%a.out",
        "--requeue",  # a node that fails: the child runs again elsewhere, as on a spot loss
        "--kill-on-invalid-dep=yes",
        "--export=ALL",
    ]
    if step["array_size"] > 1:
        tasks = ranges([i - offset for i in chunk])
        options.append(f"--array={tasks}" + (f"%{max_parallel}" if max_parallel else ""))
    if vcpus := step.get("vcpus"):
        options.append(f"--cpus-per-task={vcpus}")
    if memory := step.get("memory"):
        options.append(f"--mem={memory}M")
    if gpus := step.get("gpus"):
        options.append(f"--gres=gpu:{gpus}")
    if after:
        options.append("--dependency=" + ",".join(after))
    if settings.account:
        options.append(f"--account={settings.account}")
    if settings.qos:
        options.append(f"--qos={settings.qos}")
    return options + list(settings.extra[queue])


def _environment(backend: SlurmBackend, run: SlurmRun, step: ManifestStep, offset: int) -> dict[str, str]:
    """What the batch script and its worker get: the worker contract, and the script's own."""
    settings = backend.settings
    (run.path / "logs" / step["name"]).mkdir(parents=True, exist_ok=True)
    return {
        **backend.client.env,
        # Commands find the worker's interpreter first, as in an activated venv.
        "PATH": os.pathsep.join([str(Path(settings.python).parent), backend.client.env.get("PATH", "")]),
        **contract_environment(step, run.run_id, str(run.path), run.doc["generation"]),
        "OPSCTL_TRIES": str(step["retries"] + 1),
        "OPSCTL_TIMEOUT": str(step["timeout"]),
        "OPSCTL_PYTHON": settings.python,
        "OPSCTL_INDEX_OFFSET": str(offset),
        "OPSCTL_WORKER_FLAGS": "--preflight-gpu" if step["queue"] == "gpu" and settings.gpu_preflight else "",
    }


def ranges(ids: list[int]) -> str:
    """Task ids as sbatch's --array takes them: "0-999", "3,7,10-12"."""
    parts, start, prev = [], None, None
    for i in sorted(ids):
        if start is None:
            start = prev = i
        elif i == prev + 1:  # type: ignore[operator]
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)


def resume(backend: SlurmBackend, run_id: str) -> str:
    """Submit again the steps that did not succeed, in a new generation: of each, only the
    children that did not succeed (all of them on the dynamic split, whose new pack deals what
    is left to every child, or when every child exited 0 but commands have no done marker)."""
    run = backend.run(run_id)
    doc = backend.status_of(backend.view(run_id))
    states = {
        s["name"]: JobState(s["state"]) if s["name"] in run.doc["arrays"] else None for s in doc["steps"]
    }
    redo, generation = plan_resume(run.doc["steps"], states, run.doc["generation"])
    if not redo:
        if doc["state"] == JobState.SUCCEEDED:
            return f"{run_id} already SUCCEEDED; nothing to resume"
        return f"{run_id}: every step is running or succeeded; nothing to resume"
    backend.client.check("sbatch", "squeue", "scancel", "scontrol")
    seen = Seen.poll(backend.client, run)
    only: dict[str, list[int]] = {}
    for step in run.doc["steps"]:
        name = step["name"]
        if name not in redo or name not in run.doc["arrays"] or step["split"] == "dynamic":
            continue
        records = exits(run.exits, name)
        kids = children(
            step, run.doc["arrays"][name], seen, records, run.doc["generation"], step["retries"] + 1
        )
        left = [i for i, k in sorted(kids.items()) if k.state is not JobState.SUCCEEDED]
        if left:
            only[name] = left

    max_array, accounting = _cluster(backend)

    def new_generation(d: SlurmManifest) -> None:
        d["generation"] = generation
        for name in redo:
            d["earlier"] += [a["job"] for a in d["arrays"].pop(name, [])]
        d.pop("killed", None)  # the run is live again
        d.pop("accounting", None)
        if accounting:
            d["accounting"] = True

    run.change(new_generation)
    restage(
        run.doc["steps"],
        redo,
        generation,
        run.state,
        lambda step: read_text(run.path / "lists" / f"{step}.txt", LIST_FILE_LIMIT, "list file"),
    )
    succeeded = {n for n, s in states.items() if s is JobState.SUCCEEDED}
    done = submit(backend, run, redo, max_array, None, only=only, succeeded=succeeded)
    return f"{run_id} resumed: submitted {', '.join(done)} (generation {generation})"
