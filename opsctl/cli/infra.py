"""`opsctl infra`: Terraform for the AWS side (IAM, ECR, S3, Batch), outputs to the infra file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli.options import Infra
from opsctl.infra import Terraform, write_outputs

app = typer.Typer(help="Manage the AWS infrastructure (Terraform in terraform/).")

Dir = Annotated[Path, typer.Option("--dir", help="Terraform root module.", file_okay=False)]
VarFile = Annotated[
    list[Path] | None,
    typer.Option("--var-file", help="Terraform variables file (repeatable).", dir_okay=False),
]
BackendConfig = Annotated[
    Path | None,
    typer.Option(
        "--backend-config",
        help="Keep the state in S3: a file with bucket, key and region (state locked with a lock file).",
        dir_okay=False,
    ),
]
Yes = Annotated[bool, typer.Option("--yes", help="Do not ask for approval (-auto-approve).")]
IMAGE_TAG_FILE = "image-tag.auto.tfvars.json"  # written by `push`; Terraform loads it by itself


def _terraform(directory: Path, var_files: list[Path] | None, backend_config: Path | None) -> Terraform:
    tf = Terraform(directory, var_files)
    tf.init(backend_config)
    return tf


@app.command()
def plan(
    terraform_dir: Dir = Path("terraform"), var_file: VarFile = None, backend_config: BackendConfig = None
) -> None:
    """Show what `apply` would change."""
    _terraform(terraform_dir, var_file, backend_config).plan()


@app.command()
def apply(
    terraform_dir: Dir = Path("terraform"),
    var_file: VarFile = None,
    backend_config: BackendConfig = None,
    yes: Yes = False,
    infra: Infra = None,
) -> None:
    """Create or update the infrastructure, then write its outputs to the infra file."""
    tf = _terraform(terraform_dir, var_file, backend_config)
    tf.apply(yes=yes)
    typer.echo(f"infra outputs written to {write_outputs(tf.outputs(), infra)}")


@app.command()
def destroy(
    terraform_dir: Dir = Path("terraform"),
    var_file: VarFile = None,
    backend_config: BackendConfig = None,
    yes: Yes = False,
) -> None:
    """Destroy the infrastructure (the run bucket must be empty; ECR repositories too)."""
    _terraform(terraform_dir, var_file, backend_config).destroy(yes=yes)


@app.command()
def output(
    terraform_dir: Dir = Path("terraform"), backend_config: BackendConfig = None, infra: Infra = None
) -> None:
    """Write the current outputs to the infra file (default .opsctl/infra.json) and print its path."""
    typer.echo(write_outputs(_terraform(terraform_dir, None, backend_config).outputs(), infra))


@app.command()
def push(
    tag: Annotated[
        str | None,
        typer.Option("--tag", help="Image tag. Default: the git commit, if the working tree is clean."),
    ] = None,
    terraform_dir: Dir = Path("terraform"),
    var_file: VarFile = None,
    backend_config: BackendConfig = None,
    yes: Yes = False,
    infra: Infra = None,
) -> None:
    """Build the worker images here, push them to the stack's ECR, and apply the stack with their tag.

    For a first AWS run without GitHub Actions (`make push`): needs a Docker engine and the infra
    file of an applied stack. The tag is kept in terraform/image-tag.auto.tfvars.json, so later
    `opsctl infra apply` runs keep using the pushed images.
    """
    from opsctl import images
    from opsctl.infra import load_outputs

    outputs = load_outputs(infra)
    root = terraform_dir.resolve().parent
    tag = tag or images.commit_tag(root)
    pushed = images.push(outputs, tag, root, say=typer.echo)
    (terraform_dir / IMAGE_TAG_FILE).write_text(json.dumps({"image_tag": tag}) + "\n")
    typer.echo(f"pushed {', '.join(pushed.values())}; applying the stack with image_tag = {tag}")
    tf = _terraform(terraform_dir, var_file, backend_config)
    tf.apply(yes=yes)
    typer.echo(f"infra outputs written to {write_outputs(tf.outputs(), infra)}")


@app.command()
def definitions(
    deregister: Annotated[
        bool,
        typer.Option("--deregister", help="Deregister the derived definitions that no active job uses."),
    ] = False,
    infra: Infra = None,
) -> None:
    """List the job definitions derived for steps' own images (`image:` in a spec).

    Shows each one's image, the stack definition it was derived from and how many jobs not yet
    ended on the stack's queues use it. A derived definition is re-registered by the next launch
    or resume that needs it, so deregistering unused ones loses nothing.
    """
    from opsctl.backends.batch import BatchAPI
    from opsctl.backends.definitions import derived
    from opsctl.infra import load_outputs

    outputs = load_outputs(infra)
    api = BatchAPI(outputs.region)
    stack = [
        ref.rsplit("/", 1)[-1].split(":")[0]
        for ref in (outputs.cpu_job_definition, outputs.gpu_job_definition)
    ]
    found = derived(api, stack, [outputs.cpu_queue, outputs.gpu_queue])
    if not found:
        typer.echo("no derived job definitions")
        return
    for d in found:
        use = f"{d.jobs} active job{'s' if d.jobs != 1 else ''}" if d.jobs else "unused"
        typer.echo(f"{d.name}:{d.revision}  {d.image}  from {d.source}  {use}")
    unused = [d for d in found if not d.jobs]
    if deregister:
        for d in unused:
            api.deregister_definition(d.arn)
        typer.echo(f"deregistered {len(unused)} unused of {len(found)}")
    elif unused:
        typer.echo(f"{len(unused)} unused: `opsctl infra definitions --deregister` removes them")
