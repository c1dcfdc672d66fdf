"""A real one-node Slurm for the tests: munged, slurmctld and slurmd from a scratch directory.

Nothing is installed here (`make system` installs Debian's slurm-wlm and munge); the daemons run
as root on free ports of 127.0.0.1 with their configuration, state, spool and logs in one
directory, and are stopped by their pids. The configuration is the one measured on this machine
kind (../shared/notes/slurm.md): cpu and gpu partitions on the one node, two stand-in GPUs
(character devices that read as /dev/null: Slurm hands them out, nothing computes on them),
MaxArraySize as given, no accounting (`sacct` refuses, `squeue` keeps an ended job 300 s).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol")


def missing() -> str | None:
    """Why a Slurm cannot be started here (a program not installed, not root), or None."""
    absent = [name for name in (*DAEMONS, *CLIENTS, "mungekey") if shutil.which(name) is None]
    if absent:
        return f"no {', '.join(absent)} on PATH: `make system` installs Debian's slurm-wlm and munge"
    if os.geteuid() != 0:
        return "the test Slurm runs its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlurmCluster:
    """One node, partitions `cpu` and `gpu`; `env` is what a client needs (SLURM_CONF)."""

    def __init__(self, root: Path, *, max_array_size: int = 10001, cpus: int = 2) -> None:
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        self.max_array_size = max_array_size
        self.cpus = cpus
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.pids: list[Path] = []

    def start(self) -> SlurmCluster:
        # munge checks every directory above its socket is searchable by all.
        for sub in ("munge", "state", "spool", "log", "dev"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.root / "munge"):
            folder.chmod(0o755)
        munge = self.root / "munge"
        key = munge / "munge.key"
        subprocess.run(["mungekey", "-c", "-f", "-k", str(key)], check=True, capture_output=True)
        key.chmod(0o600)
        socket_path = munge / "munge.socket.2"
        self._daemon(
            munge / "munged.pid",
            "munged",
            f"--key-file={key}",
            f"--socket={socket_path}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}",
            f"--seed-file={munge / 'seed'}",
            "--force",
        )
        for i in range(2):
            device = self.root / "dev" / f"gpu{i}"
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a character device: /dev/null's
        self.conf.write_text(self._config(socket_path))
        (self.root / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File={self.root}/dev/gpu[0-1]\n")
        self._daemon(self.root / "slurmctld.pid", "slurmctld", "-f", str(self.conf))
        self._daemon(self.root / "slurmd.pid", "slurmd", "-f", str(self.conf))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True, check=False
            )
            if shown.returncode == 0 and shown.stdout.split() and "idle" in shown.stdout.split()[0]:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the test Slurm did not come up in 30 s: see {self.root / 'log'}")

    def _daemon(self, pid_file: Path, *argv: str) -> None:
        subprocess.run(argv, check=True, env=self.env, capture_output=True)
        self.pids.append(pid_file)

    def _config(self, munge_socket: Path) -> str:
        memory = 4096
        return "\n".join(
            [
                f"ClusterName=opsctl{os.getpid()}",
                "SlurmctldHost=localhost(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={munge_socket}",
                f"StateSaveLocation={self.root / 'state'}",
                f"SlurmdSpoolDir={self.root / 'spool'}",
                f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "MpiDefault=none",
                "MailProg=/bin/true",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "SchedulerParameters=batch_sched_delay=0",
                "JobAcctGatherType=jobacct_gather/linux",
                "AccountingStorageType=accounting_storage/none",
                f"MaxArraySize={self.max_array_size}",
                "MaxJobCount=100000",
                "MinJobAge=300",
                "KillWait=5",
                "ReturnToService=2",
                "GresTypes=gpu",
                f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} SocketsPerBoard=1 "
                f"CoresPerSocket={self.cpus} ThreadsPerCore=1 RealMemory={memory} Gres=gpu:2",
                f"PartitionName=cpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                f"PartitionName=gpu Nodes={self.node} MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def stop_node(self) -> None:
        """Stop slurmd, as a node that dies: its running jobs go with it."""
        self._signal(self.root / "slurmd.pid", signal.SIGKILL)

    def stop(self) -> None:
        for pid_file in reversed(self.pids):
            self._signal(pid_file, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pid_file in self.pids:
            while self._alive(pid_file) and time.monotonic() < deadline:
                time.sleep(0.05)
            self._signal(pid_file, signal.SIGKILL)

    @staticmethod
    def _pid(pid_file: Path) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(pid_file.read_text().strip())
        return None

    def _alive(self, pid_file: Path) -> bool:
        pid = self._pid(pid_file)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _signal(self, pid_file: Path, signum: int) -> None:
        pid = self._pid(pid_file)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
