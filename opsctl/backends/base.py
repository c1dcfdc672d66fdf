"""What every backend offers, and which backend a command talks to.

A run launched from this machine is found without `--backend`: local runs by their directory
under `$OPSCTL_HOME/runs/`, AWS runs by a small record under `$OPSCTL_HOME/aws-runs/` naming the
infra file they were launched with. With `--backend aws --infra FILE`, any machine finds an AWS
run from its manifest in the bucket.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from opsctl.backends import BackendName
from opsctl.runs import check_run_id, opsctl_home
from opsctl_contract.errors import BadInput

if TYPE_CHECKING:
    from opsctl.backends.local.containers import Containers
    from opsctl.costs import HandPrices


class Backend(Protocol):
    name: str

    def launch(
        self, spec_path: Path, max_parallel: int | None = None, *, containers: Containers | None = None
    ) -> str: ...

    def status(self, run_id: str, *, stuck_after: float = ...) -> dict[str, Any]:
        """The status document (docs/cli.md); `warnings` for jobs RUNNABLE over `stuck_after` s."""
        ...

    def failures(self, run_id: str, doc: dict[str, Any]) -> list[str]:
        """Lines explaining each failed child: reasons, exit code, last log lines."""
        ...

    def kill(self, run_id: str) -> str: ...

    def resume(self, run_id: str) -> str: ...

    def logs(self, run_id: str, step: str, index: int | None, *, follow: bool) -> Iterator[bytes]: ...

    def list_runs(self) -> list[dict[str, Any]]: ...

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        """Every child attempt: step, index, generation, attempt, started, finished (epoch
        seconds), exit_code, reason, cpu_seconds (None where the backend cannot tell)."""
        ...

    def cost(
        self, run_id: str, doc: dict[str, Any], attempts: list[dict[str, Any]], by_hand: HandPrices | None
    ) -> dict[str, Any] | None:
        """The estimate of opsctl.costs for the run's `attempts`, or None where the backend has
        no prices and none were given by hand."""
        ...


def _aws_record(run_id: str) -> Path:
    return opsctl_home() / "aws-runs" / f"{run_id}.json"


def known_runs(prefix: str = "") -> list[str]:
    """The run ids this machine knows, starting with `prefix`, newest first: its local runs and
    the AWS runs launched from here. Directory names only (shell completion calls this on every
    Tab): no database or manifest is read."""
    from opsctl.runs import RUN_ID

    home = opsctl_home()
    names = {p.name for p in _entries(home / "runs")}
    names |= {p.name.removesuffix(".json") for p in _entries(home / "aws-runs") if p.name.endswith(".json")}
    found = [n for n in names if n.startswith(prefix) and RUN_ID.fullmatch(n)]
    return sorted(found, key=lambda n: (n[-20:], n), reverse=True)  # by "<date>-<time>-<hex>"


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def get_backend(name: BackendName | None, infra: Path | None, run_id: str | None = None) -> Backend:
    """The backend for a command: the one asked for, else the one `run_id` was launched on."""
    if run_id is not None:
        check_run_id(run_id)  # before any path or key is built from it
    if name is None and run_id is not None:
        from opsctl.backends import local

        if (local.runs_dir() / run_id).is_dir():
            name = BackendName.LOCAL
        elif _aws_record(run_id).is_file():
            name = BackendName.AWS
            infra = infra or _recorded_infra(run_id)
        else:
            raise BadInput(
                f"run '{run_id}' was not launched from this machine ({opsctl_home()}); "
                "for an AWS run pass --backend aws --infra FILE"
            )
    if name is BackendName.AWS:
        from opsctl.backends.aws import AwsBackend
        from opsctl.infra import load_outputs

        return AwsBackend(load_outputs(infra))
    from opsctl.backends.local import LocalBackend

    return LocalBackend()


def _recorded_infra(run_id: str) -> Path:
    record = _aws_record(run_id)
    try:
        return Path(json.loads(record.read_text())["infra"])
    except (OSError, ValueError, KeyError, TypeError):
        raise BadInput(
            f"{record}: unreadable record of run '{run_id}'; pass --backend aws --infra FILE"
        ) from None


def remember(backend: Backend, run_id: str, infra: Path | None) -> None:
    """Note where an AWS run was launched from, so later commands here need no flags."""
    if backend.name == BackendName.AWS.value:
        from opsctl.infra import DEFAULT_INFRA_FILE

        record = _aws_record(run_id)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"infra": str((infra or DEFAULT_INFRA_FILE).resolve())}))
