"""The `opsctl` command line: Typer only. Each module parses, calls the core and renders.

Start-up matters (every `opsctl status` pays it): nothing here imports boto3, and rendering
libraries are imported inside the commands that use them.
"""

from __future__ import annotations

import re
import sys

import typer

from opsctl import __version__
from opsctl.cli import infra, runs
from opsctl.cli.validate import validate
from opsctl_contract.awsclient import AwsUnavailable
from opsctl_contract.errors import OpsctlError

app = typer.Typer(
    name="opsctl",
    help="Run scientific batch pipelines on AWS Batch, or on this machine with no cloud.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion: commands, options, run ids
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opsctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Run scientific batch pipelines on AWS Batch, or on this machine with no cloud."""


app.command()(validate)
runs.register(app)
app.add_typer(infra.app, name="infra")


# The commands that take a RUN argument, and what a run id with a leading '-' looks like: an
# argument Click would otherwise read as options ("No such option: -x"), or worse, as a cluster
# of short options with a value (`report -tomo-...` is `-t`, then `-o mo-...`).
RUN_COMMANDS = frozenset({"watch", "status", "kill", "resume", "logs", "report"})
DASHED_RUN_ID = re.compile(r"-[a-z0-9_-]*-[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")


def _dashed_run_id(argv: list[str]) -> str | None:
    """A run id starting with '-' among the arguments of a run command, before any `--`.

    No run id opsctl makes starts with '-' (pipeline names start with a letter or digit), so
    such an argument is a bad run id, and says so, rather than an unknown option.
    """
    if not argv or argv[0] not in RUN_COMMANDS:
        return None
    for arg in argv[1:]:
        if arg == "--":
            return None
        if DASHED_RUN_ID.fullmatch(arg):
            return arg
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: our errors become one line on stderr and their exit code, not a traceback.

    Usage errors (unknown option, missing argument) are Typer's own, printed with a usage hint
    and exit code 2; an argument that reads as a run id starting with '-' is refused as a bad run
    id, one line (see `_dashed_run_id`).
    """
    try:
        dashed = _dashed_run_id(sys.argv[1:] if argv is None else argv)
        if dashed is not None:
            from opsctl.run.ids import check_run_id

            check_run_id(dashed)
        app(args=argv, prog_name="opsctl")
    except OpsctlError as e:
        # An AWS service that cannot be reached stops only this command, not the run.
        after = "; jobs already submitted keep running on AWS Batch" if isinstance(e, AwsUnavailable) else ""
        print(f"opsctl: {e}{after}", file=sys.stderr)
        sys.exit(e.exit_code)
