"""What every backend offers, and the registry that finds the backend a command talks to.

A backend is registered by name (`REGISTRY`): how to build it, whether it takes `launch
--containers`, and which runs were launched on it from this machine. A run launched here is
found without `--backend`: local runs by their directory under `$OPSCTL_HOME/runs/`, AWS runs
by a small record under `$OPSCTL_HOME/aws-runs/` naming the infra file they were launched with.
With `--backend aws --infra FILE`, any machine finds an AWS run from its manifest in the bucket.

The CLI asks only this module and the `Backend` protocol: it never compares backend names and
never imports a backend's modules. Building a backend imports its package then, and only then
(boto3 alone costs an AWS-less command 100 ms).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from opsctl.backends import BackendName
from opsctl.run.ids import RUN_ID, check_run_id, opsctl_home
from opsctl_contract.errors import BadInput

if TYPE_CHECKING:  # types only: `opsctl --help` does not load them
    from opsctl.backends.options import Containers
    from opsctl.costs import HandPrices
    from opsctl.records import AttemptRecord, ListRow, StatusDocument


class Backend(Protocol):
    """All the CLI knows of a backend: 12 methods and 5 attributes. Every backend is a run
    service (opsctl/run/service.py `RunService`) over its engine's port (docs/architecture.md)."""

    name: str
    # Whether the backend prices a run by itself (the cost in `watch`'s header); else only by hand.
    priced: bool
    # What a read could not record (a denied write), each said once: `status` and `report` show them.
    warnings: list[str]
    # `watch`: seconds between polls by default, and the most it waits while nothing changes.
    poll_every: float
    poll_ceiling: float

    @property
    def calls(self) -> Counter[str] | None:
        """The calls this process made to the backend's services, by operation, where it counts
        them (`opsctl report` prints them); None where there is nothing to count."""
        ...

    def launch(
        self, spec_path: Path, max_parallel: int | None = None, *, containers: Containers | None = None
    ) -> str: ...

    def launched(self, run_id: str) -> tuple[str | None, dict[str, str] | None]:
        """After a launch made `run_id` (complete or not): a line for the operator, and what
        this machine must keep to find the run again without flags (`remember` keeps it), each
        None where there is none (a local run's directory is its own record)."""
        ...

    def status(self, run_id: str, *, stuck_after: float = ...) -> StatusDocument:
        """The status document (docs/cli.md); `warnings` for jobs RUNNABLE over `stuck_after` s."""
        ...

    def notes(self, doc: StatusDocument) -> list[str]:
        """Lines the status table shows under itself, about how the run's steps run."""
        ...

    def failures(self, run_id: str, doc: StatusDocument) -> list[str]:
        """Lines explaining each failed child: reasons, exit code, last log lines."""
        ...

    def kill(self, run_id: str) -> str: ...

    def resume(self, run_id: str) -> str: ...

    def logs(self, run_id: str, step: str, index: int | None, *, follow: bool) -> Iterator[bytes]: ...

    def list_runs(self) -> list[ListRow]: ...

    def attempts(self, run_id: str) -> list[AttemptRecord]:
        """Every child attempt: step, index, generation, attempt, started, finished (epoch
        seconds), exit_code, reason, cpu_seconds (None where the backend cannot tell)."""
        ...

    def cost(
        self, run_id: str, doc: StatusDocument, attempts: list[AttemptRecord], by_hand: HandPrices | None
    ) -> dict[str, Any] | None:
        """The estimate of opsctl.costs for the run's `attempts`, or None where the backend has
        no prices and none were given by hand."""
        ...


@dataclass(frozen=True)
class Entry:
    """A backend as the registry knows it before it is built (no import of its package)."""

    name: BackendName
    title: str  # as messages name it
    containers: bool  # takes `launch --containers` (its children can run in a local engine)
    # The backend, for `infra` (--infra) and, when a command names one, the run it is for.
    build: Callable[[Path | None, str | None], Backend]
    # The run ids launched on it from this machine: directory names only (shell completion
    # calls this on every Tab).
    here: Callable[[], Iterable[str]]
    # Whether run `run_id` (a checked id) was launched on it from this machine.
    has: Callable[[str], bool]


def _build_local(_infra: Path | None, _run_id: str | None) -> Backend:
    from opsctl.backends.local import LocalBackend

    return LocalBackend()


def _build_aws(infra: Path | None, run_id: str | None) -> Backend:
    from opsctl.backends.aws.backend import AwsBackend
    from opsctl.infra import load_outputs

    if infra is None and run_id is not None and _aws_has(run_id):
        infra = _recorded(BackendName.AWS, run_id, "infra", "--backend aws --infra FILE")
    return AwsBackend(load_outputs(infra))


def _build_slurm(_infra: Path | None, run_id: str | None) -> Backend:
    from dataclasses import replace

    from opsctl.backends.slurm.backend import SlurmBackend
    from opsctl.backends.slurm.settings import SlurmSettings

    settings = SlurmSettings.from_environment()
    if run_id is not None and _record(BackendName.SLURM, run_id).is_file():
        settings = replace(settings, root=_recorded(BackendName.SLURM, run_id, "dir", "--backend slurm"))
    return SlurmBackend(settings)


def _recorded(name: BackendName, run_id: str, key: str, flags: str) -> Path:
    """The path `key` of this machine's record of run `run_id` on backend `name` (`remember`):
    the infra file an AWS run was launched with, the root a Slurm run's directory is under."""
    record = _record(name, run_id)
    try:
        return Path(json.loads(record.read_text())[key])
    except (OSError, ValueError, KeyError, TypeError):
        raise BadInput(f"{record}: unreadable record of run '{run_id}'; pass {flags}") from None


def _local_here() -> Iterable[str]:
    return (p.name for p in _entries(opsctl_home() / "runs"))


def _local_has(run_id: str) -> bool:
    return (opsctl_home() / "runs" / run_id).is_dir()


def _recorded_here(name: BackendName) -> Callable[[], Iterable[str]]:
    """The runs launched on backend `name` from this machine, by their records (`remember`)."""

    def here() -> Iterable[str]:
        found = _entries(_records(name))
        return (p.name.removesuffix(".json") for p in found if p.name.endswith(".json"))

    return here


def _recorded_has(name: BackendName) -> Callable[[str], bool]:
    return lambda run_id: _record(name, run_id).is_file()


def _aws_has(run_id: str) -> bool:
    return _recorded_has(BackendName.AWS)(run_id)


REGISTRY: dict[BackendName, Entry] = {
    entry.name: entry
    for entry in (
        Entry(
            BackendName.LOCAL,
            "this machine",
            containers=True,
            build=_build_local,
            here=_local_here,
            has=_local_has,
        ),
        Entry(
            BackendName.AWS,
            "AWS",
            containers=False,
            build=_build_aws,
            here=_recorded_here(BackendName.AWS),
            has=_aws_has,
        ),
        Entry(
            BackendName.SLURM,
            "Slurm",
            containers=False,
            build=_build_slurm,
            here=_recorded_here(BackendName.SLURM),
            has=_recorded_has(BackendName.SLURM),
        ),
    )
}
DEFAULT = BackendName.LOCAL


def known_runs(prefix: str = "") -> list[str]:
    """The run ids this machine knows, starting with `prefix`, newest first: the runs every
    backend launched from here. Directory names only: no database or manifest is read."""
    names = {name for entry in REGISTRY.values() for name in entry.here()}
    found = [n for n in names if n.startswith(prefix) and RUN_ID.fullmatch(n)]
    return sorted(found, key=lambda n: (n[-20:], n), reverse=True)  # by "<date>-<time>-<hex>"


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def get_backend(name: BackendName | None, infra: Path | None, run_id: str | None = None) -> Backend:
    """The backend for a command: the one asked for, else the one `run_id` was launched on
    from this machine, else the default."""
    if run_id is not None:
        check_run_id(run_id)  # before any path or key is built from it
    if name is None and run_id is not None:
        name = next((entry.name for entry in REGISTRY.values() if entry.has(run_id)), None)
        if name is None:
            raise BadInput(
                f"run '{run_id}' was not launched from this machine ({opsctl_home()}); "
                "for an AWS run pass --backend aws --infra FILE"
            )
    return REGISTRY[name or DEFAULT].build(infra, run_id)


def registered(name: BackendName | None) -> Entry:
    """What the registry knows of backend `name` (the default where None), without building it."""
    return REGISTRY[name or DEFAULT]


def remember(chosen: Backend, run_id: str) -> str | None:
    """After a launch made `run_id`: keep what `chosen` says this machine needs to find the run
    again, and return its line for the operator, if any."""
    note, record = chosen.launched(run_id)
    if record is not None:
        path = _record(BackendName(chosen.name), run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    return note


def _records(name: BackendName) -> Path:
    """Where this machine keeps its records of the runs launched on backend `name`."""
    return opsctl_home() / f"{name.value}-runs"


def _record(name: BackendName, run_id: str) -> Path:
    return _records(name) / f"{run_id}.json"
