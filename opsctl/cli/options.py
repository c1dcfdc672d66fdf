"""Options shared by several commands, defined once so their names and help never drift."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from opsctl.backends import BackendName

# `--json` on each command that has it, its help saying what that command prints instead.
PlanJson = Annotated[bool, typer.Option("--json", help="Print the plan as JSON instead of a table.")]
LaunchJson = Annotated[
    bool,
    typer.Option("--json", help='Print {"run_id": ...} as JSON (with --watch: the final status document).'),
]
WatchJson = Annotated[
    bool,
    typer.Option(
        "--json", help="Print nothing while the run goes on, then its final status document as JSON."
    ),
]
StatusJson = Annotated[
    bool, typer.Option("--json", help="Print the status document as JSON (docs/cli.md) instead of a table.")
]
ListJson = Annotated[
    bool, typer.Option("--json", help="Print the runs as a JSON list instead of a line each.")
]
ReportJson = Annotated[
    bool, typer.Option("--json", help="Print the report's facts as JSON instead of writing the HTML page.")
]
Backend = Annotated[
    BackendName | None,
    typer.Option(
        "--backend",
        help="Where the run lives. Runs launched from this machine are found without it.",
    ),
]
Infra = Annotated[
    Path | None,
    typer.Option(
        "--infra",
        help="Infra outputs file (terraform output -json shape). Default: .opsctl/infra.json.",
    ),
]


def _complete_run(incomplete: str) -> list[str]:
    from opsctl.backends.base import known_runs

    return known_runs(incomplete)


RunId = Annotated[
    str,
    typer.Argument(
        help="Run id, as printed by launch and listed by `opsctl list`.",
        metavar="RUN",
        autocompletion=_complete_run,
    ),
]
Spec = Annotated[Path, typer.Argument(help="Pipeline spec (YAML); see docs/spec.md.", metavar="SPEC")]


def finite(value: float | None) -> float | None:
    """A float option's guard beside its range: click's ranges let nan through (every comparison
    with it is false), and time.sleep then fails on it, or waits for ever on inf."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


StuckAfter = Annotated[
    float,
    typer.Option(
        "--stuck-after",
        min=0,
        max=7 * 24 * 60,  # a week, in minutes
        callback=finite,
        help="AWS: warn about jobs RUNNABLE for more than this many minutes.",
    ),
]
