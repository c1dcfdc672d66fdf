"""The `opsctl` command line: Typer only. Each module parses, calls the core and renders.

Start-up matters (every `opsctl status` pays it): nothing here imports boto3, and rendering
libraries are imported inside the commands that use them.
"""

from __future__ import annotations

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


def main(argv: list[str] | None = None) -> None:
    """Entry point: our errors become one line on stderr and their exit code, not a traceback.

    Usage errors (unknown option, missing argument) are Typer's own, printed with a usage hint
    and exit code 2.
    """
    try:
        app(args=argv, prog_name="opsctl")
    except OpsctlError as e:
        # An AWS service that cannot be reached stops only this command, not the run.
        after = "; jobs already submitted keep running on AWS Batch" if isinstance(e, AwsUnavailable) else ""
        print(f"opsctl: {e}{after}", file=sys.stderr)
        sys.exit(e.exit_code)
