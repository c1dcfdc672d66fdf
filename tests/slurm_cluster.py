"""A real one-node Slurm for the tests: munged, slurmctld and slurmd from a scratch directory, and
with `accounting=True` a MariaDB and slurmdbd beside them, so that `sacct` answers.

Nothing is installed here (`make system` installs Debian's slurm-wlm, munge, slurmdbd and
mariadb-server); the daemons run as root on free ports of 127.0.0.1 with their configuration,
state, spool, database and logs in one directory, and are stopped by their pids. The
configuration is the one measured on this machine kind (../shared/notes/slurm.md): cpu and gpu
partitions on the one node, two stand-in GPUs (character devices that read as /dev/null: Slurm
hands them out, nothing computes on them), MaxArraySize as given. Without accounting (the
default) `sacct` refuses and `squeue` keeps an ended job 300 s, as on a cluster without slurmdbd;
with it, every job is recorded as on a site's cluster. The node can die and come back
(`kill_node`, `start_node`), with `slurmd_timeout` and `cred_expire` shortened so that a test
sees Slurm notice the death and requeue within seconds rather than minutes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol")
# Accounting: slurmdbd stores in a MariaDB (MySQL's names where Debian's MariaDB lacks its own).
ACCOUNTING = (
    ("slurmdbd",),
    ("mariadbd", "mysqld"),
    ("mariadb-install-db", "mysql_install_db"),
    ("sacct",),
    ("sacctmgr",),
)
# Slurm refuses a shorter credential lifetime (and falls back to its 120 s default).
MIN_CRED_EXPIRE = 5


def missing(*, accounting: bool = False) -> str | None:
    """Why a Slurm (with accounting: and its slurmdbd and MariaDB) cannot be started here (a
    program not installed, not root), or None."""
    absent = [name for name in (*DAEMONS, *CLIENTS, "mungekey") if shutil.which(name) is None]
    if accounting:
        absent += [" or ".join(names) for names in ACCOUNTING if not any(map(shutil.which, names))]
    if absent:
        packages = (
            "slurm-wlm, munge, slurmdbd, slurm-wlm-mysql-plugin and mariadb-server"
            if accounting
            else "slurm-wlm and munge"
        )
        return f"no {', '.join(absent)} on PATH: `make system` installs Debian's {packages}"
    if os.geteuid() != 0:
        return "the test Slurm runs its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _program(*names: str) -> str:
    """The first of these programs on PATH (MariaDB's name, then MySQL's)."""
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    raise RuntimeError(f"no {' or '.join(names)} on PATH: `make system` installs Debian's mariadb-server")


class SlurmCluster:
    """One node, partitions `cpu` and `gpu`; `env` is what a client needs (SLURM_CONF).

    `accounting`: a MariaDB and slurmdbd too, so that jobs are recorded and `sacct` answers.

    For a node that dies (`kill_node`) and comes back (`start_node`), each None keeps Slurm's
    default, which a test would wait out in minutes:
    `slurmd_timeout` (SlurmdTimeout, 300 s): how long slurmctld waits on a silent slurmd before
    it sets the node DOWN and requeues its jobs. `message_timeout` (MessageTimeout, 10 s): each
    ping of the dead slurmd waits this long before it counts as failed, so the node is DOWN
    about slurmd_timeout + 2 x message_timeout after its death (measured, slurmd_timeout 5:
    9 s with message_timeout 2, 12 s with 3, 15 s with 5, 25 s with the default).
    `cred_expire` (AuthInfo's cred_expire, 120 s, at least 5): a requeued job is held (Reason
    BeginTime) for cred_expire + 1 s. `bf_interval` (SchedulerParameters' bf_interval, 30 s):
    nothing schedules a job when that hold ends but a periodic pass, backfill's the soonest.
    Measured with 5, 2, 5 and 1, a node killed 3 s into two tasks and started again once DOWN:
    DOWN 9 s after the kill, the tasks requeued then, running again (SLURM_RESTART_COUNT=1)
    15 s after the kill. A slurmd restarted at once is slower whatever these are: slurmctld,
    never seeing the node DOWN, finds the batch jobs missing only about 20 s after they started.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_array_size: int = 10001,
        cpus: int = 2,
        accounting: bool = False,
        slurmd_timeout: int | None = None,
        message_timeout: int | None = None,
        cred_expire: int | None = None,
        bf_interval: int | None = None,
    ) -> None:
        if cred_expire is not None and cred_expire < MIN_CRED_EXPIRE:
            raise ValueError(f"cred_expire={cred_expire}: Slurm ignores one under {MIN_CRED_EXPIRE} s")
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        self.max_array_size = max_array_size
        self.cpus = cpus
        self.accounting = accounting
        self.slurmd_timeout = slurmd_timeout
        self.message_timeout = message_timeout
        self.cred_expire = cred_expire
        self.bf_interval = bf_interval
        self.cluster_name = f"opsctl{os.getpid()}"
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.munge_socket = root / "munge" / "munge.socket.2"
        self.pids: list[Path] = []
        # mariadbd stays in the foreground: its process is ours to reap once stopped.
        self._children: list[subprocess.Popen[bytes]] = []

    def start(self) -> SlurmCluster:
        # munge checks every directory above its socket is searchable by all.
        for sub in ("munge", "state", "spool", "log", "dev"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.root / "munge"):
            folder.chmod(0o755)
        try:
            munge = self.root / "munge"
            key = munge / "munge.key"
            subprocess.run(["mungekey", "-c", "-f", "-k", str(key)], check=True, capture_output=True)
            key.chmod(0o600)
            self._daemon(
                munge / "munged.pid",
                "munged",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'seed'}",
                "--force",
            )
            for i in range(2):
                device = self.root / "dev" / f"gpu{i}"
                if not device.exists():
                    os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a character device: /dev/null's
            dbd_port = self._start_accounting() if self.accounting else None
            self.conf.write_text(self._config(dbd_port))
            (self.root / "gres.conf").write_text(
                f"NodeName={self.node} Name=gpu File={self.root}/dev/gpu[0-1]\n"
            )
            self._daemon(self.root / "slurmctld.pid", "slurmctld", "-f", str(self.conf))
            self._daemon(self.root / "slurmd.pid", "slurmd", "-f", str(self.conf))
            self._wait(30, "the node idle", lambda: "idle" in self.node_state())
        except BaseException:
            self.stop()  # what did start, by its pid
            raise
        return self

    def _start_accounting(self) -> int:
        """A MariaDB of its own (a scratch data directory, root with no password, on a free
        port of 127.0.0.1) and slurmdbd storing in it; returns slurmdbd's port. slurmctld
        registers its cluster on its first start, with the root account and user that the
        root-submitted jobs are then recorded under (AccountingStorageEnforce unset: no other
        association is needed)."""
        db = self.root / "mariadb"
        db.mkdir(exist_ok=True)
        # Small InnoDB buffers and logs: a test database, initialised in about a second.
        innodb = ["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"]
        subprocess.run(
            [
                _program("mariadb-install-db", "mysql_install_db"),
                "--no-defaults",
                f"--datadir={db / 'data'}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *innodb,
            ],
            check=True,
            capture_output=True,
        )
        db_port = _free_port()
        with (self.root / "log" / "mariadbd.out").open("wb") as out:
            self._children.append(
                subprocess.Popen(
                    [
                        _program("mariadbd", "mysqld"),
                        "--no-defaults",
                        f"--datadir={db / 'data'}",
                        "--user=root",
                        "--bind-address=127.0.0.1",
                        f"--port={db_port}",
                        f"--socket={db / 'mariadbd.sock'}",
                        f"--pid-file={db / 'mariadbd.pid'}",
                        f"--log-error={self.root / 'log' / 'mariadbd.log'}",
                        "--skip-name-resolve",
                        "--skip-log-bin",
                        *innodb,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        mariadbd = self._children[-1]
        # MariaDB opens its port once InnoDB is up, just before "ready for connections".
        self._wait(30, "MariaDB listening", lambda: _listening(db_port) or mariadbd.poll() is not None)
        if mariadbd.poll() is not None:
            raise RuntimeError(
                f"mariadbd exited with {mariadbd.returncode}: see {self.root / 'log' / 'mariadbd.log'}"
            )
        dbd_port = _free_port()
        dbd_conf = self.root / "slurmdbd.conf"  # slurmdbd reads it beside $SLURM_CONF
        dbd_conf.touch(mode=0o600)
        dbd_conf.chmod(0o600)  # slurmdbd refuses a configuration (it holds StoragePass) others can read
        dbd_conf.write_text(
            "\n".join(
                [
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    "DbdHost=localhost",
                    f"DbdPort={dbd_port}",
                    "SlurmUser=root",
                    f"PidFile={self.root / 'slurmdbd.pid'}",
                    f"LogFile={self.root / 'log' / 'slurmdbd.log'}",
                    "StorageType=accounting_storage/mysql",
                    "StorageHost=127.0.0.1",
                    f"StoragePort={db_port}",
                    "StorageUser=root",
                    f"StorageLoc={self.cluster_name}_acct",
                    "",
                ]
            )
        )
        self._daemon(self.root / "slurmdbd.pid", "slurmdbd")
        self._wait(30, "slurmdbd listening", lambda: _listening(dbd_port))
        return dbd_port

    def _wait(self, seconds: float, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the test Slurm did not see {what} in {seconds:g} s: see {self.root / 'log'}"
                )
            time.sleep(0.1)

    def node_state(self) -> str:
        """The node's state as `sinfo` shows it (idle, mixed, down*...), "" while none answers."""
        shown = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True, check=False
        )
        words = shown.stdout.split() if shown.returncode == 0 else []
        return words[0] if words else ""

    def _daemon(self, pid_file: Path, *argv: str) -> None:
        subprocess.run(argv, check=True, env=self.env, capture_output=True)
        if pid_file not in self.pids:
            self.pids.append(pid_file)

    def _config(self, dbd_port: int | None) -> str:
        memory = 4096
        auth_info = f"socket={self.munge_socket}"
        if self.cred_expire is not None:
            auth_info += f",cred_expire={self.cred_expire}"
        if dbd_port is None:
            accounting = ["AccountingStorageType=accounting_storage/none"]
        else:
            accounting = [
                "AccountingStorageType=accounting_storage/slurmdbd",
                "AccountingStorageHost=localhost",
                f"AccountingStoragePort={dbd_port}",
                f"AccountingStoragePass={self.munge_socket}",  # the munge socket slurmdbd's auth uses
            ]
        scheduler = "batch_sched_delay=0"
        if self.bf_interval is not None:
            scheduler += f",bf_interval={self.bf_interval}"
        timeouts = [
            f"{name}={value}"
            for name, value in (
                ("SlurmdTimeout", self.slurmd_timeout),
                ("MessageTimeout", self.message_timeout),
            )
            if value is not None
        ]
        return "\n".join(
            [
                f"ClusterName={self.cluster_name}",
                "SlurmctldHost=localhost(127.0.0.1)",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo={auth_info}",
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
                f"SchedulerParameters={scheduler}",
                "JobAcctGatherType=jobacct_gather/linux",
                *accounting,
                f"MaxArraySize={self.max_array_size}",
                "MaxJobCount=100000",
                "MinJobAge=300",
                "KillWait=5",
                "ReturnToService=2",
                *timeouts,
                "GresTypes=gpu",
                f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} SocketsPerBoard=1 "
                f"CoresPerSocket={self.cpus} ThreadsPerCore=1 RealMemory={memory} Gres=gpu:2",
                f"PartitionName=cpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                f"PartitionName=gpu Nodes={self.node} MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def kill_node(self) -> None:
        """The node dies: slurmd, every slurmstepd of this cluster and all they started (the job
        shells and their children) are SIGKILLed, so nothing reports an end to slurmctld; it
        learns of the death only as a real one, by slurmd not answering (SlurmdTimeout).

        All are stopped (SIGSTOP) first, so that no step sees a child die and reports it, and
        none forks on meanwhile. The steps are this cluster's by their environment: slurmd
        passes its own (our SLURM_CONF) to the slurmstepd it forks, which another Slurm on the
        machine (a concurrent test run) does not share."""
        doomed: set[int] = set()
        while True:
            found = self._node_processes() - doomed
            if not found:
                break
            for pid in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            doomed |= found
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # A dead slurmd leaves its pid file: its pid, reused, is no longer ours to signal.
        (self.root / "slurmd.pid").unlink(missing_ok=True)

    def _node_processes(self) -> set[int]:
        """slurmd, this cluster's slurmstepds, and every descendant of either."""
        parent: dict[int, int] = {}
        roots: set[int] = set()
        slurmd = self._pid(self.root / "slurmd.pid")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            with contextlib.suppress(OSError, ValueError, IndexError):
                # /proc/PID/stat: "pid (comm) state ppid ...", comm may hold spaces and parens.
                stat = (entry / "stat").read_text()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                parent[pid] = int(stat[stat.rindex(")") + 2 :].split()[1])
                if (pid == slurmd and comm == "slurmd") or (comm == "slurmstepd" and self._ours(entry)):
                    roots.add(pid)
        children: dict[int, list[int]] = {}
        for pid, ppid in parent.items():
            children.setdefault(ppid, []).append(pid)
        found, todo = set(), list(roots)
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.add(pid)
                todo.extend(children.get(pid, []))
        return found

    def _ours(self, process: Path) -> bool:
        with contextlib.suppress(OSError):
            return f"SLURM_CONF={self.conf}".encode() in (process / "environ").read_bytes().split(b"\0")
        return False

    def start_node(self) -> None:
        """slurmd again, with the same configuration: the node registers and, DOWN for not
        responding, returns to service by itself (ReturnToService=2)."""
        self._daemon(self.root / "slurmd.pid", "slurmd", "-f", str(self.conf))

    def stop(self) -> None:
        """Stop everything started, by pid: the node first as `kill_node` kills it (a slurmstepd
        outlives slurmd by design, and would otherwise stay, retrying to report its job to a
        slurmctld that is gone), then the other Slurm daemons (slurmctld, slurmdbd), then what
        they talk to while they shut down (MariaDB, munged)."""
        self.kill_node()
        munged = self.root / "munge" / "munged.pid"
        deadline = time.monotonic() + 10
        self._stop([pid_file for pid_file in self.pids if pid_file != munged], deadline)
        for child in self._children:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
        self._stop([pid_file for pid_file in self.pids if pid_file == munged], deadline)
        for child in self._children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def _stop(self, pid_files: list[Path], deadline: float) -> None:
        """SIGTERM, and SIGKILL what still runs at the deadline."""
        for pid_file in reversed(pid_files):
            self._signal(pid_file, signal.SIGTERM)
        for pid_file in pid_files:
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
