"""Tables for humans: the plan-free views of a run (status, watch)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from opsctl.states import ORDER, STYLE, JobState


def status_table(doc: dict[str, Any], cost: str | None = None) -> Group:
    """The live table: step, queue, state, children by state, commands done/total, elapsed;
    `cost` (watch on AWS) joins the header."""
    state = JobState(doc["state"])
    title = Text.assemble((doc["run_id"], "bold"), "  ", (state.value, STYLE[state]))
    if doc.get("elapsed") is not None:
        title.append(f"  {doc['elapsed']:.0f} s")
    if cost:
        title.append(f"  {cost}")
    if doc.get("reason"):
        title.append(f"  ({doc['reason']})")
    table = Table(title=title, title_justify="left")
    for column in ("step", "queue", "state", "children", "commands", "", "elapsed"):
        table.add_column(
            column,
            justify="right" if column == "elapsed" else "left",
            no_wrap=column in ("step", "state", "children"),
        )
    for step in doc["steps"]:
        step_state = JobState(step["state"])
        counts = Text(" ").join(
            Text(f"{s.value.lower()} {n}", style=STYLE[s])
            for s in ORDER
            if (n := step["counts"].get(s.value))
        )
        commands = step["commands"]
        done_text = f"{commands['done']}/{commands['total']}"
        if commands["failed"]:
            done_text += f" ({commands['failed']} failed)"
        table.add_row(
            step["name"],
            step["queue"],
            Text(step_state.value, style=STYLE[step_state]),
            counts,
            done_text,
            ProgressBar(total=max(commands["total"], 1), completed=commands["done"], width=12),
            "-" if step["elapsed"] is None else f"{step['elapsed']:.1f} s",
        )
    warnings = [Text(f"warning: {w}", style="yellow") for w in doc.get("warnings", [])]
    images = [Text(f"{s['name']}: image {s['image']}", style="dim") for s in doc["steps"] if s.get("image")]
    if images and doc.get("backend") == "local" and not doc.get("engine"):
        images.append(Text("(images not used: launched without --containers, so on this host)", style="dim"))
    return Group(table, *images, *warnings)
