"""Slurm's client commands, as the backend calls them: each a subprocess, counted, with a timeout.

A busy controller is shared by everyone on the cluster, so the backend asks little of it: one
`sbatch` per step, one `squeue` per poll for the whole run (by the run's job name), one
`scancel` per kill. Every call is counted by command (`calls`: `opsctl report` prints them and
bench/slurm_calls.py holds them to their targets).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from opsctl_contract.errors import BadInput, OpsctlError

TIMEOUT = 120.0  # seconds a client command may take: Slurm's own retries take 60 s


class SlurmError(OpsctlError):
    """A Slurm command that refused or failed: its own words."""


@dataclass(frozen=True)
class QueueRow:
    """One line of `squeue`: a job, an array task, or the pending rest of an array."""

    array_job: str  # the array's job id (a plain job's own)
    tasks: str  # the task ids: "3", a pending range "4-9%2", or "N/A" for a plain job
    state: str  # Slurm's state name (PENDING, RUNNING, COMPLETED, FAILED, ...)
    reason: str  # why it waits, or why it ended (Dependency, Resources, NonZeroExitCode, ...)


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

    def partitions(self) -> set[str]:
        """The cluster's partition names."""
        out = self.run(["scontrol", "--oneliner", "show", "partition"])
        return {
            word.removeprefix("PartitionName=")
            for line in out.splitlines()
            for word in line.split()
            if word.startswith("PartitionName=")
        }
