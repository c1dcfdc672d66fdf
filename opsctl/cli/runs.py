"""Run commands: launch, watch, status, kill, resume, logs, list.

The options are the contract of docs/cli.md; the backends that carry them out land next (local
first, then AWS Batch). Until then each command says so plainly and exits 1.
"""

from __future__ import annotations

from typing import Annotated

import typer

from opsctl import __version__
from opsctl.cli.options import Backend, Infra, Json, RunId, Spec
from opsctl.errors import OpsctlError


def _not_yet(verb: str) -> OpsctlError:
    return OpsctlError(
        f"{verb}: no backend runs pipelines in opsctl {__version__} yet; "
        "`opsctl validate` checks a spec and shows its plan"
    )


def launch(
    spec: Spec,
    backend: Backend = None,
    infra: Infra = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the run until it ends.")] = False,
    max_parallel: Annotated[
        int | None,
        typer.Option(
            "--max-parallel", min=1, help="Local backend: most children running at once (default: CPUs)."
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Start a run and print its id.

    Validates SPEC first; the local backend is the default.
    """
    raise _not_yet("launch")


def watch(
    run_id: RunId,
    backend: Backend = None,
    infra: Infra = None,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")] = 2.0,
    as_json: Json = False,
) -> None:
    """Follow a run until it ends.

    A live table, refreshed every --interval seconds; exit 0 if the run succeeded, 1 if it failed.
    """
    raise _not_yet("watch")


def status(run_id: RunId, backend: Backend = None, infra: Infra = None, as_json: Json = False) -> None:
    """Print a run's state once.

    Each step with its children by state and its commands done.
    """
    raise _not_yet("status")


def kill(run_id: RunId, backend: Backend = None, infra: Infra = None) -> None:
    """Stop every job of a run.

    The run ends FAILED ("killed by user"). Killing a finished run changes nothing.
    """
    raise _not_yet("kill")


def resume(run_id: RunId, backend: Backend = None, infra: Infra = None) -> None:
    """Re-run what did not succeed.

    Every step that did not succeed runs again; commands already done are skipped.
    """
    raise _not_yet("resume")


def logs(
    run_id: RunId,
    step: Annotated[str, typer.Argument(help="Step name.")],
    index: Annotated[int | None, typer.Option("--index", min=0, help="Array child (default: all).")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    backend: Backend = None,
    infra: Infra = None,
) -> None:
    """Print a step's logs.

    Each child's output and the worker's events.
    """
    raise _not_yet("logs")


def list_runs(backend: Backend = None, infra: Infra = None, as_json: Json = False) -> None:
    """List runs, newest first."""
    raise _not_yet("list")


def register(app: typer.Typer) -> None:
    for command in (launch, watch, status, kill, resume, logs):
        app.command()(command)
    app.command("list")(list_runs)
