"""Tables for humans: the plan-free views of a run (status, watch).

Every text of a run goes in as rich `Text`, never as markup (a reason holding `[bold]` is shown
as written), and made visible first (opsctl.visible: an escape sequence in a reason is shown,
not obeyed). The table is laid out at the width it is drawn in: in 80 columns each step's name,
state and commands done/total stay whole, and the other columns give way first (`LAYOUTS`).

Children that never started are shown as cancelled, apart from those that failed (states.CANCELLED),
and once a child of any step has been retried the table has an attempts column: a retry is
otherwise seen only when the run's report is made.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from opsctl.run.states import CANCELLED, CANCELLED_STYLE, ORDER, STYLE, JobState
from opsctl.visible import visible

if TYPE_CHECKING:  # types only: `opsctl --help` does not load them
    from opsctl.records import StatusDocument, StatusStep

BAR = 12  # the progress bar's width


@dataclass(frozen=True)
class Layout:
    """Which optional columns the table shows, and which cells go on several lines: children
    one state a line (`stack_children`), a step's retried children under its attempts
    (`stack_attempts`), its failed commands under its done/total (`stack_commands`)."""

    bar: bool = True
    queue: bool = True
    elapsed: bool = True
    attempts: bool = True  # drawn only where a child was retried
    children: bool = True
    stack_children: bool = False
    stack_attempts: bool = False
    stack_commands: bool = False


# Tried in turn; the first that fits the width is drawn: the bar goes first, then the queue;
# children, retried children and failed commands go one to a line; then elapsed, the attempts
# and the children go. The last keeps step, state and commands only, and folds a step name
# onto lines where even those do not fit.
_NARROW = Layout(bar=False, queue=False, stack_children=True, stack_attempts=True, stack_commands=True)
_BARE = replace(_NARROW, elapsed=False, attempts=False, children=False)
LAYOUTS = (
    Layout(),
    Layout(bar=False),
    Layout(bar=False, queue=False),
    Layout(bar=False, queue=False, stack_children=True),
    Layout(bar=False, queue=False, stack_children=True, stack_attempts=True),
    _NARROW,
    replace(_NARROW, elapsed=False),
    replace(_NARROW, elapsed=False, attempts=False),
    replace(_BARE, stack_commands=False),
    _BARE,
)


@dataclass(frozen=True)
class Row:
    """One step's cells, each in both of its forms where it has two."""

    name: Text
    queue: Text
    state: Text
    children: Text
    children_stacked: Text
    done: str  # "done/total"
    failed: str  # "(n failed)", or ""
    bar: ProgressBar
    elapsed: Text
    attempts: str  # attempts made, or "-" where unknown
    retried: str  # "(n retried)", or ""

    @classmethod
    def of(cls, step: StatusStep) -> Row:
        state = JobState(step["state"])
        # `counts` is the scheduler's: its FAILED holds the children that never started.
        cancelled = step.get("cancelled") or 0
        shown = {
            **step["counts"],
            JobState.FAILED.value: max(0, step["counts"].get(JobState.FAILED.value, 0) - cancelled),
        }
        counts = [Text(f"{s.value.lower()} {n}", style=STYLE[s]) for s in ORDER if (n := shown.get(s.value))]
        if cancelled:
            counts.append(Text(f"{CANCELLED} {cancelled}", style=CANCELLED_STYLE))
        made = step.get("attempts")
        commands = step["commands"]
        return cls(
            name=Text(visible(step["name"])),
            queue=Text(visible(step["queue"])),
            state=Text(state.value, style=STYLE[state]),
            children=Text(" ").join(counts),
            children_stacked=Text("\n").join(counts),
            done=f"{commands['done']}/{commands['total']}",
            failed=f"({commands['failed']} failed)" if commands["failed"] else "",
            bar=ProgressBar(total=max(commands["total"], 1), completed=commands["done"], width=BAR),
            elapsed=Text("-" if step["elapsed"] is None else f"{step['elapsed']:.1f} s"),
            attempts="-" if made is None else str(made["total"]),
            retried=f"({made['retried']} retried)" if made and made["retried"] else "",
        )

    def commands(self, stacked: bool) -> Text:
        return Text(("\n" if stacked else " ").join(filter(None, (self.done, self.failed))))

    def tries(self, stacked: bool) -> Text:
        return Text(("\n" if stacked else " ").join(filter(None, (self.attempts, self.retried))))


def _columns(layout: Layout, rows: list[Row]) -> list[tuple[str, list[Text | ProgressBar]]]:
    """The table's columns under `layout`: each header with its cells, in order."""
    columns: list[tuple[str, list[Text | ProgressBar]]] = [("step", [r.name for r in rows])]
    if layout.queue:
        columns.append(("queue", [r.queue for r in rows]))
    columns.append(("state", [r.state for r in rows]))
    if layout.children:
        columns.append(
            ("children", [r.children_stacked if layout.stack_children else r.children for r in rows])
        )
    if layout.attempts and any(r.retried for r in rows):
        columns.append(("attempts", [r.tries(layout.stack_attempts) for r in rows]))
    columns.append(("commands", [r.commands(layout.stack_commands) for r in rows]))
    if layout.bar:
        columns.append(("", [r.bar for r in rows]))
    if layout.elapsed:
        columns.append(("elapsed", [r.elapsed for r in rows]))
    return columns


def _width(columns: list[tuple[str, list[Text | ProgressBar]]]) -> int:
    """The table's width in cells: each column's widest line, its padding and the rules."""

    def cells(cell: Text | ProgressBar) -> int:
        if isinstance(cell, ProgressBar):
            return BAR
        return max(cell_len(line) for line in cell.plain.split("\n"))

    return sum(max([cell_len(header), *map(cells, body)]) + 3 for header, body in columns) + 1


class StatusView:
    """The live table of a status document, laid out when drawn: step, queue, state, children
    by state, attempts (once a child was retried), commands done/total, a progress bar,
    elapsed; `cost` (watch on AWS) joins the header; the steps' images, the backend's `notes`
    (Backend.notes) and the document's warnings follow it."""

    def __init__(self, doc: StatusDocument, cost: str | None = None, notes: list[str] | None = None) -> None:
        self.doc, self.cost, self.notes = doc, cost, notes or []

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        doc = self.doc
        state = JobState(doc["state"])
        title = Text.assemble((doc["run_id"], "bold"), "  ", (state.value, STYLE[state]))
        if doc.get("elapsed") is not None:
            title.append(f"  {doc['elapsed']:.0f} s")
        if self.cost:
            title.append(f"  {visible(self.cost)}")
        if reason := doc.get("reason"):
            title.append(f"  ({visible(reason)})")
        rows = [Row.of(step) for step in doc["steps"]]
        layouts = (_columns(layout, rows) for layout in LAYOUTS)
        columns = next((c for c in layouts if _width(c) <= options.max_width), _columns(LAYOUTS[-1], rows))
        table = Table(title=title, title_justify="left")
        for header, _ in columns:
            # Only the step column may wrap (fold): when nothing else gives way, the rest stay whole.
            table.add_column(
                header,
                justify="right" if header == "elapsed" else "left",
                no_wrap=header != "step",
                overflow="fold",
            )
        for cells in zip(*(body for _, body in columns), strict=True):
            table.add_row(*cells)
        yield table
        steps = doc["steps"]
        yield from (
            Text(visible(f"{s['name']}: image {s['image']}"), style="dim") for s in steps if s.get("image")
        )
        yield from (Text(visible(note), style="dim") for note in self.notes)
        yield from (Text(visible(f"warning: {w}"), style="yellow") for w in doc.get("warnings", []))


def status_table(doc: StatusDocument, cost: str | None = None, notes: list[str] | None = None) -> StatusView:
    """The live table of `doc` (`StatusView`), for `status` and each refresh of `watch`."""
    return StatusView(doc, cost, notes)
