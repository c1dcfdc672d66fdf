"""`opsctl infra`: Terraform for the AWS side (IAM, ECR, S3, Batch), outputs to the infra file."""

from __future__ import annotations

from typing import Annotated

import typer

from opsctl import __version__
from opsctl.errors import OpsctlError

app = typer.Typer(help="Manage the AWS infrastructure (Terraform in terraform/).")

Dir = Annotated[str, typer.Option("--dir", help="Terraform root module.")]


def _not_yet(verb: str) -> OpsctlError:
    return OpsctlError(f"infra {verb}: not available in opsctl {__version__} yet")


@app.command()
def plan(terraform_dir: Dir = "terraform") -> None:
    """Show what `apply` would change."""
    raise _not_yet("plan")


@app.command()
def apply(terraform_dir: Dir = "terraform") -> None:
    """Create or update the infrastructure and write its outputs to .opsctl/infra.json."""
    raise _not_yet("apply")


@app.command()
def destroy(terraform_dir: Dir = "terraform") -> None:
    """Destroy the infrastructure."""
    raise _not_yet("destroy")


@app.command()
def output(terraform_dir: Dir = "terraform") -> None:
    """Write the current outputs to .opsctl/infra.json and print them."""
    raise _not_yet("output")
