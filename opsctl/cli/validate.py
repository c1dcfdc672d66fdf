"""`opsctl validate`: check a spec and show what would run, before anything is submitted."""

from __future__ import annotations

import json
from typing import Any

import typer

from opsctl.cli.options import PlanJson, Spec


def validate(spec: Spec, as_json: PlanJson = False) -> None:
    """Check a spec and print its plan.

    The plan lists the steps in the order they run, with queue, array size, command count,
    commands per child and dependencies. The first problem found exits 2 with one line naming
    the file, the line, the value and the limit.
    """
    from opsctl import pipeline  # the YAML parser: only the commands that read a spec pay for it

    plan = pipeline.load(spec).plan()
    if as_json:
        typer.echo(json.dumps(plan, indent=2))
    else:
        render_plan(plan)


def render_plan(plan: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    steps = plan["steps"]
    total = sum(step["commands"] for step in steps)
    table = Table(title=f"{plan['pipeline']}: {len(steps)} steps, {total} commands", title_justify="left")
    for column in ("step", "queue", "array", "commands", "per child", "split", "depends on"):
        table.add_column(column, justify="right" if column in ("array", "commands", "per child") else "left")
    for step in steps:
        per_child = step["commands_per_child"]
        spread = (
            str(per_child["min"])
            if per_child["min"] == per_child["max"]
            else "{min}-{max}".format(**per_child)
        )
        deps = ", ".join(
            d["step"] + (" (N_TO_N)" if d["type"] == "N_TO_N" else "") for d in step["depends_on"]
        )
        table.add_row(
            step["name"],
            step["queue"],
            str(step["array_size"]),
            str(step["commands"]),
            spread,
            step["split"],
            deps or "-",
        )
    console = Console()
    console.print(table)
    for note in plan["notes"]:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
