"""The local backend: the whole pipeline on this machine, no cloud and no server.

backend.py holds the operations the CLI calls (launch, status, kill, resume, logs, list);
supervisor.py the detached process that runs a run's DAG; state.py the run directory, its
SQLite state and its lock; processes.py how a run's processes are found and stopped.
"""

from opsctl.backends.local.backend import (
    LocalBackend,
    kill,
    launch,
    list_runs,
    logs,
    resume,
    start_supervisor,
    status,
)
from opsctl.backends.local.processes import STOP_GRACE, pid_alive, runs_for
from opsctl.backends.local.state import BrokenRun, LocalRun, create_run, runs_dir
from opsctl.backends.local.supervisor import Supervisor

__all__ = [
    "STOP_GRACE",
    "BrokenRun",
    "LocalBackend",
    "LocalRun",
    "Supervisor",
    "create_run",
    "kill",
    "launch",
    "list_runs",
    "logs",
    "pid_alive",
    "resume",
    "runs_dir",
    "runs_for",
    "start_supervisor",
    "status",
]
