"""Slurm's client commands, as the backend calls them: each a subprocess, counted, with a timeout.

A busy controller is shared by everyone on the cluster, so the backend asks little of it: one
`sbatch` per step, one poll per status for the whole run (by the run's job name: `sacct` where
the cluster keeps accounting, which slurmdbd answers and not the controller, else `squeue`), one
`scancel` per kill. Every call is counted by command (`calls`: `opsctl report` prints them and
bench/slurm_calls.py holds them to their targets).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opsctl_contract.errors import BadInput, OpsctlError

TIMEOUT = 120.0  # seconds a client command may take: Slurm's own retries take 60 s
NO_ACCOUNTING = "accounting_storage/none"  # AccountingStorageType of a cluster without slurmdbd
# sacct's times as epoch seconds (its default is the local time of day, to the second).
SACCT_TIMES = {"SLURM_TIME_FORMAT": "%s"}


class SlurmError(OpsctlError):
    """A Slurm command that refused or failed: its own words."""


@dataclass(frozen=True)
class QueueRow:
    """One line of `squeue`: a job, an array task, or the pending rest of an array."""

    array_job: str  # the array's job id (a plain job's own)
    tasks: str  # the task ids: "3", a pending range "4-9%2", or "N/A" for a plain job
    state: str  # Slurm's state name (PENDING, RUNNING, COMPLETED, FAILED, ...)
    reason: str  # why it waits, or why it ended (Dependency, Resources, NonZeroExitCode, ...)


@dataclass
class Allocation:
    """One run of one job on a node, as `sacct --duplicates` records it: a requeued job (its node
    failed) has one per start. Its CPU time and peak memory cover every attempt the batch script
    ran in it."""

    job: str  # the job's own id (JobIDRaw: an array task's, not its array's)
    started: float | None
    finished: float | None  # None while it runs
    cpu_seconds: float | None = None  # TotalCPU: user + system time of all its steps
    max_rss: int | None = None  # bytes: the largest MaxRSS of its steps; None where never sampled
    steps: list[str] = field(default_factory=list)


class SlurmClient:
    """The client commands of the cluster the environment names (SLURM_CONF, or the default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if environ is None else environ)
        self.calls: Counter[str] = Counter()

    def check(self, *commands: str) -> None:
        """Refuse at once a setup that would fail after minutes: a client command not installed,
        or SLURM_CONF naming no file (every client retries 60 s before saying so)."""
        for command in commands:
            if shutil.which(command, path=self.env.get("PATH")) is None:
                raise BadInput(
                    f"{command}: not on PATH; the Slurm backend needs Slurm's client commands "
                    "(Debian's slurm-client, or the site's `module load slurm`)"
                )
        conf = self.env.get("SLURM_CONF")
        if conf is not None and not Path(conf).is_file():
            raise BadInput(
                f"SLURM_CONF={conf}: no such file; unset it for the default, or name the cluster's slurm.conf"
            )

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        """`argv`'s standard output; `SlurmError` with its last line of stderr when it fails."""
        self.calls[argv[0]] += 1
        try:
            done = subprocess.run(
                list(argv),
                env=dict(env or self.env),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise BadInput(
                f"{argv[0]}: not on PATH; the Slurm backend needs Slurm's client commands"
            ) from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"`{argv[0]}` did not answer in {TIMEOUT:.0f} s: is slurmctld up?") from None
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise SlurmError(
                f"`{' '.join(argv[:2])} …` failed: {said[-1] if said else f'exit {done.returncode}'}"
            )
        return done.stdout

    def submit(self, options: Sequence[str], script: Path, env: Mapping[str, str]) -> str:
        """sbatch: the new job's id (`--parsable` prints `id` or `id;cluster`). The job starts
        with `env`, sbatch's own environment (`--export=ALL`)."""
        out = self.run(["sbatch", "--parsable", *options, str(script)], env)
        return out.strip().split(";")[0]

    def queue(self, name: str) -> list[QueueRow]:
        """Every job named `name` that the controller still holds, live or ended (it keeps an
        ended one MinJobAge seconds, 300 by default): one squeue, whatever the run's size."""
        out = self.run(["squeue", "--noheader", "--states=all", f"--name={name}", "--format=%F|%K|%T|%r"])
        rows = []
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4:
                rows.append(QueueRow(*parts))
        return rows

    def accounted(self, name: str, job_ids: Sequence[str]) -> list[QueueRow]:
        """The same rows as `queue`, from the accounting database: one `sacct -X` for the run,
        which slurmdbd answers rather than the controller, and which keeps ended jobs for good.

        `-j` as well as the name: without it sacct leaves out the jobs that were never
        eligible (a pending array's rest, jobs ended by their dependency). sacct writes `by
        <uid>` after CANCELLED when someone cancelled the job; one that Slurm itself ended
        before it started is a bare CANCELLED, its reason the last one it waited for
        (`Dependency`, or `None` where the scheduler had not looked at it yet): with
        `--kill-on-invalid-dep`, its dependency failed, and it is given squeue's reason for
        that (measured on 22.05)."""
        rows = []
        for job, state, reason in self._sacct(name, job_ids, "JobID,State,Reason", "--allocations"):
            array_job, _, tasks = job.partition("_")
            words = state.split()
            if words == ["CANCELLED"] and reason in ("Dependency", "None"):
                reason = "DependencyNeverSatisfied"
            rows.append(QueueRow(array_job, tasks or "N/A", words[0] if words else "", reason))
        return rows

    def allocations(self, name: str, job_ids: Sequence[str]) -> list[Allocation]:
        """Every allocation of the jobs `job_ids` (requeued ones once per start), with the CPU
        time and peak memory sacct recorded: one sacct, of jobs and their steps."""
        found: list[Allocation] = []
        rows = self._sacct(name, job_ids, "JobIDRaw,Start,End,TotalCPU,MaxRSS", "--duplicates", "--noconvert")
        for raw, start, end, cpu, rss in rows:
            job, dot, step = raw.partition(".")
            if not dot:  # the job's own row: an allocation, its CPU time the sum of its steps'
                found.append(Allocation(job, epoch(start), epoch(end), cpu_seconds(cpu)))
            elif found and found[-1].job == job:  # a step of the allocation just listed
                found[-1].steps.append(step)
                if (size := size_bytes(rss)) is not None:
                    found[-1].max_rss = max(found[-1].max_rss or 0, size)
        return found

    def _sacct(self, name: str, job_ids: Sequence[str], fields: str, *flags: str) -> list[list[str]]:
        """One `sacct` of the jobs `job_ids` named `name`: its rows, each as the `fields` asked
        for, times in epoch seconds."""
        if not job_ids:
            return []
        argv = ["sacct", "--noheader", "--parsable2", *flags, f"--name={name}", f"--jobs={','.join(job_ids)}"]
        out = self.run([*argv, f"--format={fields}"], {**self.env, **SACCT_TIMES})
        width = fields.count(",") + 1
        return [parts for line in out.splitlines() if len(parts := line.strip().split("|")) == width]

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self.run(["scancel", *job_ids])

    def config(self) -> dict[str, str]:
        """`scontrol show config` as keys and values."""
        found = {}
        for line in self.run(["scontrol", "show", "config"]).splitlines():
            key, eq, value = line.partition("=")
            if eq:
                found[key.strip()] = value.strip()
        return found

    @staticmethod
    def keeps_accounting(config: Mapping[str, str]) -> bool:
        """Whether the cluster records jobs in slurmdbd, so that `sacct` answers for them."""
        return config.get("AccountingStorageType", NO_ACCOUNTING) != NO_ACCOUNTING

    def partitions(self) -> set[str]:
        """The cluster's partition names."""
        out = self.run(["scontrol", "--oneliner", "show", "partition"])
        return {
            word.removeprefix("PartitionName=")
            for line in out.splitlines()
            for word in line.split()
            if word.startswith("PartitionName=")
        }


def epoch(text: str) -> float | None:
    """A sacct time under SLURM_TIME_FORMAT=%s; None for `Unknown`, `None` (never started)."""
    return float(text) if text.isdigit() else None


def cpu_seconds(text: str) -> float | None:
    """sacct's TotalCPU, `[D-][HH:]MM:SS[.mmm]` ("00:03.148", "01:02:03", "1-00:00:00"), as
    seconds; None where it is not that."""
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    if not 2 <= len(values) <= 3 or (days and not days.isdigit()):
        return None
    seconds = 0.0
    for value in values:
        seconds = seconds * 60 + value
    return seconds + int(days or 0) * 86400


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def size_bytes(text: str) -> int | None:
    """sacct's MaxRSS under --noconvert (bytes, or a number with a K/M/G/T suffix of 1024s) as
    bytes; None where it is empty (never sampled)."""
    unit = text[-1:] if text[-1:].isalpha() else ""
    number = text.removesuffix(unit)
    try:
        return round(float(number) * _UNITS[unit]) if number else None
    except (ValueError, KeyError):
        return None
