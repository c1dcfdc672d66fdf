"""The local backend: the whole pipeline on this machine, no cloud and no server.

backend.py holds the operations that change a run (launch, kill, resume) and `LocalBackend`,
the scheduler a run service (opsctl/run/service.py) runs over; status.py the reads (the run as
run.db has it, the list, attempts and cost), logs.py the logs and the failed children;
supervisor.py the detached process that runs a run's DAG, and dag.py that DAG's states in
memory and what a child's change of state means for the rest; state.py the run directory, its
SQLite state and its lock, and schema.py that database's tables, migration and row shapes;
processes.py how a run's processes are found and stopped.
"""

from opsctl.backends.local.backend import LocalBackend, kill, launch, resume, start_supervisor, status
from opsctl.backends.local.processes import STOP_GRACE, pid_alive, runs_for
from opsctl.backends.local.prune import prune as prune_runs
from opsctl.backends.local.state import BrokenRun, LocalRun, create_run, runs_dir
from opsctl.backends.local.status import list_runs
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
    "pid_alive",
    "prune_runs",
    "resume",
    "runs_dir",
    "runs_for",
    "start_supervisor",
    "status",
]
