"""`opsctl infra`: Terraform for the AWS side (IAM, ECR, S3, Batch), outputs to the infra file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli.options import Infra
from opsctl.stack import Stack, write_outputs

app = typer.Typer(help="Manage the AWS infrastructure (Terraform in terraform/).")

Dir = Annotated[Path, typer.Option("--dir", help="Terraform root module.", file_okay=False)]
VarFile = Annotated[
    list[Path] | None,
    typer.Option(
        "--var-file",
        help="Terraform variables file (repeatable; later ones win). Overrides the stored variables.",
        dir_okay=False,
    ),
]
BackendConfig = Annotated[
    Path | None,
    typer.Option(
        "--backend-config",
        help="Keep the state in S3: a file with bucket, key and region (state locked with a lock "
        "file; the applied variables are stored next to it, as <key>.tfvars.json).",
        dir_okay=False,
    ),
]
Yes = Annotated[bool, typer.Option("--yes", help="Do not ask for approval (-auto-approve).")]
ImageTag = Annotated[
    str | None,
    typer.Option(
        "--image-tag",
        help="Roll the job definitions to this image tag. Without it the stored tag stays, and a "
        "--var-file that changes it is refused.",
    ),
]
RollOnly = Annotated[
    bool,
    typer.Option(
        "--roll-only",
        help="Stop before applying a plan that changes anything but the job definitions' new "
        "revisions (exit 2, naming each change): what a deploy may do. The deploy workflow uses it.",
    ),
]
RequireStored = Annotated[
    bool,
    typer.Option(
        "--require-stored-vars",
        help="Stop (exit 2) if no variables are stored next to the state, rather than apply the "
        "defaults. The deploy workflow uses it.",
    ),
]


def _approve() -> bool:
    """Terraform's approval, asked by opsctl: the plan is saved, shown, then applied as shown."""
    try:
        answer = typer.prompt("Apply the plan above? Only 'yes' applies it", default="", show_default=False)
    except typer.Abort:  # end of input: no answer is no
        return False
    return str(answer).strip() == "yes"


@app.command()
def plan(
    terraform_dir: Dir = Path("terraform"),
    var_file: VarFile = None,
    backend_config: BackendConfig = None,
    image_tag: ImageTag = None,
    roll_only: RollOnly = False,
    require_stored_vars: RequireStored = False,
) -> None:
    """Show what `apply` would change, with the stored variables, and refuse what it would refuse."""
    stack = Stack(terraform_dir, var_file or [], backend_config, image_tag=image_tag, say=typer.echo)
    stack.plan(roll_only=roll_only, require_stored=require_stored_vars)


@app.command()
def apply(
    terraform_dir: Dir = Path("terraform"),
    var_file: VarFile = None,
    backend_config: BackendConfig = None,
    image_tag: ImageTag = None,
    roll_only: RollOnly = False,
    require_stored_vars: RequireStored = False,
    yes: Yes = False,
    infra: Infra = None,
) -> None:
    """Create or update the infrastructure, store the variables applied, write the infra file.

    Variables, each source overriding the ones before: those stored next to the state by the
    last apply, each --var-file, then --image-tag. The plan is saved and checked before anything
    changes: an image_tag changed by a --var-file is refused (pass --image-tag), and so, with
    --roll-only, is any change but the job definitions' new revisions.
    """
    stack = Stack(terraform_dir, var_file or [], backend_config, image_tag=image_tag, say=typer.echo)
    stack.apply(yes=yes, confirm=_approve, roll_only=roll_only, require_stored=require_stored_vars)
    typer.echo(f"infra outputs written to {write_outputs(stack.outputs(), infra)}")


@app.command()
def destroy(
    terraform_dir: Dir = Path("terraform"),
    var_file: VarFile = None,
    backend_config: BackendConfig = None,
    yes: Yes = False,
) -> None:
    """Destroy the infrastructure (the run bucket must be empty; ECR repositories too).

    It uses the stored variables (region, name...) like an apply, and leaves them stored.
    """
    Stack(terraform_dir, var_file or [], backend_config, say=typer.echo).destroy(yes=yes)


@app.command()
def output(
    terraform_dir: Dir = Path("terraform"), backend_config: BackendConfig = None, infra: Infra = None
) -> None:
    """Write the current outputs to the infra file (default .opsctl/infra.json) and print its path."""
    typer.echo(write_outputs(Stack(terraform_dir, (), backend_config, say=typer.echo).outputs(), infra))


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
    file of an applied stack. The apply is `apply --image-tag TAG`, so the tag is stored with the
    other variables, next to the state, and later applies keep using the pushed images.
    """
    from opsctl import images
    from opsctl.infra import check_image_tag, load_outputs

    outputs = load_outputs(infra)
    root = terraform_dir.resolve().parent
    tag = check_image_tag(tag, "--tag") if tag is not None else images.commit_tag(root)
    # Everything the apply needs is checked before the images are built, which takes minutes.
    stack = Stack(terraform_dir, var_file or [], backend_config, image_tag=tag, say=typer.echo)
    pushed = images.push(outputs, tag, root, say=typer.echo)
    typer.echo(f"pushed {', '.join(pushed.values())}; applying the stack with image_tag = {tag}")
    stack.apply(yes=yes, confirm=_approve)
    typer.echo(f"infra outputs written to {write_outputs(stack.outputs(), infra)}")


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
    from opsctl.backends.aws.api import BatchAPI
    from opsctl.backends.aws.definitions import derived
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
