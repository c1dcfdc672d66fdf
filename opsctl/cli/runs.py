"""Run commands: launch, watch, status, kill, resume, logs, list.

Each command finds its backend (opsctl.backends.base.get_backend), calls it and renders what
it returns; no command here knows how a backend does its work.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.backends.base import Backend, get_backend, registered, remember
from opsctl.backends.options import Containers
from opsctl.cli.options import Backend as BackendOption
from opsctl.cli.options import (
    Infra,
    LaunchJson,
    ListJson,
    ReportJson,
    RunId,
    Spec,
    StatusJson,
    StuckAfter,
    WatchJson,
    finite,
)
from opsctl.errors import LaunchIncomplete
from opsctl.run.states import STUCK_AFTER, TERMINAL
from opsctl_contract.errors import BadInput

if TYPE_CHECKING:  # types only: `opsctl --help` does not load them
    from opsctl.records import StatusDocument

COST_EVERY = 300.0  # seconds between the header's cost estimates (each lists the run's children)


def launch(
    spec: Spec,
    backend: BackendOption = None,
    infra: Infra = None,
    watch_run: Annotated[bool, typer.Option("--watch", help="Follow the run until it ends.")] = False,
    max_parallel: Annotated[
        int | None,
        typer.Option(
            "--max-parallel",
            min=1,
            max=10_000,  # an array step's most children
            help="Local backend: most children running at once (default: CPUs).",
        ),
    ] = None,
    containers: Annotated[
        bool,
        typer.Option(
            "--containers",
            help="Local backend: run every child in a container (docker or podman), as AWS Batch does: "
            "in its step's image, else its queue's worker image (opsctl-cpu or opsctl-gpu, `make images`).",
        ),
    ] = False,
    image_tag: Annotated[
        str | None,
        typer.Option(
            "--image-tag",
            help="With --containers: the worker images' tag (default: $OPSCTL_IMAGE_TAG, else local).",
        ),
    ] = None,
    no_gpus: Annotated[
        bool,
        typer.Option(
            "--no-gpus",
            help="With --containers: run `gpus:` steps without GPUs or the GPU preflight, for a trial "
            "on a machine whose engine has none.",
        ),
    ] = False,
    as_json: LaunchJson = False,
) -> None:
    """Start a run and print its id.

    Validates SPEC first; the local backend is the default. With --json: {"run_id": ...}, or
    with --watch as well, the final status document (which holds the run id).
    """
    if containers and not (chosen_entry := registered(backend)).containers:
        raise BadInput(
            f"--containers is for the local backend: on {chosen_entry.title} every child runs in a container"
        )
    for given, option in ((image_tag is not None, "--image-tag"), (no_gpus, "--no-gpus")):
        if given and not containers:
            raise BadInput(f"{option} is an option of --containers: without it, children run on this host")
    chosen = get_backend(backend, infra)
    try:
        boxed = Containers.chosen(image_tag, gpus=not no_gpus) if containers else None
        run_id = chosen.launch(spec, max_parallel, containers=boxed)
    except LaunchIncomplete as e:
        remember(chosen, e.run_id)  # the run exists: `opsctl resume` finds it by its id
        raise
    where = remember(chosen, run_id)
    if not as_json:
        typer.echo(run_id)
        if where:
            typer.echo(where, err=True)
    if watch_run:
        _watch(
            chosen, run_id, None, as_json, STUCK_AFTER / 60, COST_EVERY
        )  # with --json: the final status document
    elif as_json:
        typer.echo(json.dumps({"run_id": run_id}))


def watch(
    run_id: RunId,
    backend: BackendOption = None,
    infra: Infra = None,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            min=0.1,
            max=3600,
            callback=finite,
            help="Seconds between refreshes (default 1; Slurm: 2, doubling while nothing changes, up to 60).",
        ),
    ] = None,
    stuck_after: StuckAfter = STUCK_AFTER / 60,
    cost_every: Annotated[
        float,
        typer.Option(
            "--cost-every",
            min=0,
            max=86400,
            callback=finite,
            help="AWS: refresh the cost so far in the header every this many seconds (0: never). "
            "Each refresh lists the children (about 1 call per 100).",
        ),
    ] = COST_EVERY,
    as_json: WatchJson = False,
) -> None:
    """Follow a run until it ends.

    A live table, refreshed every --interval seconds; exit 0 if the run succeeded, 1 if it failed.
    At the end, each failed child's failed command and its stderr, its reason and its log's last
    lines. On AWS its header shows the cost so far, the estimate of `opsctl report`.
    """
    _watch(get_backend(backend, infra, run_id), run_id, interval, as_json, stuck_after, cost_every)


def _watch(
    chosen: Backend, run_id: str, interval: float | None, as_json: bool, stuck_after: float, cost_every: float
) -> None:
    poll = functools.partial(chosen.status, stuck_after=stuck_after * 60)
    every = chosen.poll_every if interval is None else interval
    pace = Pace(every, max(every, chosen.poll_ceiling))
    if as_json:
        doc = _follow(poll, run_id, pace)
        typer.echo(json.dumps(doc, indent=2))
    else:
        from rich.console import Console
        from rich.live import Live

        from opsctl.cli.render import status_table

        console = Console()
        cost = CostSoFar(chosen, run_id, cost_every if chosen.priced else 0)
        with Live(console=console, auto_refresh=False) as live:
            doc = _follow(
                poll,
                run_id,
                pace,
                lambda d: live.update(status_table(d, cost(d), chosen.notes(d)), refresh=True),
            )
        if not console.is_terminal:
            console.line()  # off a terminal, Live leaves its last frame without a line break
        for line in chosen.failures(run_id, doc):
            typer.echo(line, err=True)
    raise typer.Exit(0 if doc["state"] == "SUCCEEDED" else 1)


class CostSoFar:
    """The header's cost: `opsctl report`'s estimate, made again every `every` seconds and once
    more when the run ends. A price that cannot be had (no permission for the price list, say)
    shows as its reason; the watch goes on."""

    def __init__(self, chosen: Backend, run_id: str, every: float) -> None:
        self.chosen, self.run_id, self.every = chosen, run_id, every
        self.made = -float("inf")  # time.monotonic() of the last estimate
        self.final = False
        self.text: str | None = None

    def __call__(self, doc: StatusDocument) -> str | None:
        ended = doc["state"] in TERMINAL
        due = ended or time.monotonic() - self.made >= self.every
        if not self.every or self.final or not due:
            return self.text
        self.made, self.final = time.monotonic(), ended
        cost = self.chosen.cost(self.run_id, doc, self.chosen.attempts(self.run_id), None)
        if cost is not None and cost["dollars"] is None:
            self.text = f"cost not estimated: {cost['unavailable']}"
        elif cost is not None:
            from opsctl.costs import dollars

            self.text = f"{dollars(cost['dollars'])} so far (estimate)"
        return self.text


class Pace:
    """How long `watch` waits before its next poll: `every` seconds after a poll that saw the
    run change, twice the last wait after one that saw nothing new, up to `ceiling`.

    A Slurm controller is shared by the whole cluster, and a run whose children sleep for an
    hour needs no poll a second (bench/slurm_calls.py counts them); a change, even one command
    done, brings the pace back at once. Elapsed times are not a change.
    """

    def __init__(self, every: float, ceiling: float) -> None:
        self.every, self.ceiling = every, ceiling
        self.wait = every
        self._last: str | None = None

    def after(self, doc: StatusDocument) -> float:
        """The wait after a poll that gave `doc`."""
        steps = [{k: v for k, v in step.items() if k != "elapsed"} for step in doc["steps"]]
        seen = json.dumps([doc["state"], doc["reason"], steps], sort_keys=True)
        self.wait = self.every if seen != self._last else min(self.wait * 2, self.ceiling)
        self._last = seen
        return self.wait


def _follow(
    poll: Callable[[str], StatusDocument],
    run_id: str,
    pace: Pace,
    show: Callable[[StatusDocument], None] = lambda _: None,
) -> StatusDocument:
    """Poll the status until the run will not change by itself, showing each document.

    That is when it ended, or when nothing drives it any more (the status then carries a
    reason while the run is not terminal, and only `opsctl resume` moves it on).
    """
    while True:
        doc = poll(run_id)
        show(doc)
        if doc["state"] in TERMINAL or doc.get("reason"):
            return doc
        time.sleep(pace.after(doc))


def status(
    run_id: RunId,
    backend: BackendOption = None,
    infra: Infra = None,
    stuck_after: StuckAfter = STUCK_AFTER / 60,
    as_json: StatusJson = False,
) -> None:
    """Print a run's state once.

    Each step with its children by state (those that never started as cancelled), its attempts
    once a child was retried, and its commands done.
    """
    chosen = get_backend(backend, infra, run_id)
    doc = chosen.status(run_id, stuck_after=stuck_after * 60)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    from rich.console import Console

    from opsctl.cli.render import status_table

    Console().print(status_table(doc, notes=chosen.notes(doc)))


def kill(run_id: RunId, backend: BackendOption = None, infra: Infra = None) -> None:
    """Stop every job of a run.

    The run ends FAILED ("killed by user"). Killing a finished run changes nothing. AWS:
    TerminateJob for every job not ended, started or not; prints how many children were running.
    """
    typer.echo(get_backend(backend, infra, run_id).kill(run_id))


def resume(run_id: RunId, backend: BackendOption = None, infra: Infra = None) -> None:
    """Re-run what did not succeed.

    Every step that did not succeed runs again; commands already done are skipped. AWS: under
    the job definition the stack has now (said when its revision changed since the launch).
    """
    typer.echo(get_backend(backend, infra, run_id).resume(run_id))


def logs(
    run_id: RunId,
    step: Annotated[str, typer.Argument(help="Step name.")],
    index: Annotated[
        int | None, typer.Option("--index", min=0, help="Array child (local default: all; aws default: 0).")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Write the bytes exactly as logged, terminal escapes included (to keep in a file); "
            "without it they are made visible (\\x1b) and are not obeyed.",
        ),
    ] = False,
    backend: BackendOption = None,
    infra: Infra = None,
) -> None:
    """Print a step's logs.

    Each child's output and the worker's events, streamed whatever their size. Control
    characters (escape sequences, bidirectional overrides) and bytes that are not UTF-8 are
    shown as backslash escapes unless --raw.
    """
    from opsctl.visible import VisibleStream

    out = sys.stdout.buffer
    shown = None if raw else VisibleStream()
    for chunk in get_backend(backend, infra, run_id).logs(run_id, step, index, follow=follow):
        out.write(chunk if shown is None else shown.decode(chunk).encode())
        out.flush()
    if shown is not None:
        out.write(shown.decode(b"", final=True).encode())  # a log that ends inside a character
        out.flush()


def list_runs(backend: BackendOption = None, infra: Infra = None, as_json: ListJson = False) -> None:
    """List runs, newest first.

    One line a run: its id, state and creation time; in a terminal too narrow for the time
    (run ids reach 61 characters), without it: the id holds it, to the second (UTC). A run that
    cannot be read has its problem on the next line.
    """
    rows = get_backend(backend, infra).list_runs()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    import shutil
    import textwrap

    from opsctl.visible import visible

    width = shutil.get_terminal_size().columns  # $COLUMNS, else the terminal's, else 80
    ids = max((len(row["run_id"]) for row in rows), default=0)
    for row in rows:
        line = f"{row['run_id']:<{ids}}  {row['state'] or '-':<9}"
        dated = f"{line}  {row['created']}"
        typer.echo(dated if len(dated) <= width else line.rstrip())
        if row.get("problem"):
            typer.echo(
                textwrap.fill(visible(row["problem"]), width, initial_indent="  ", subsequent_indent="  ")
            )


def report(
    run_id: RunId,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write the HTML page (default RUN.html here)."),
    ] = None,
    as_json: ReportJson = False,
    price: Annotated[
        str | None,
        typer.Option(
            "--price",
            metavar="vcpu=DOLLARS,gpu=DOLLARS",
            help="Price the run by hand, per vCPU-hour and GPU-hour, instead of from AWS's price list.",
        ),
    ] = None,
    backend: BackendOption = None,
    infra: Infra = None,
) -> None:
    """Write a run's report: a self-contained HTML page with its timeline, steps, cost, failures.

    Headline (state, wall time, children, attempts, commands, CPU time, cost), per step wall time,
    busy share, commands per second and slowest children, one timeline bar per child attempt.
    --json prints the same facts instead. AWS: attempts from Batch (ListJobs by array job,
    DescribeJobs 100 ids a call), kept beside the run's manifest once it ended, so later reports
    outlive Batch's 7-day retention; the cost is an estimate from the compute environment's
    instance types at on-demand (price list) or spot (price history) prices, its method and
    inputs in the report; the number of AWS calls is printed. Local: a cost only with --price.
    """
    from opsctl import report as pages
    from opsctl.costs import parse_prices

    by_hand = parse_prices(price) if price is not None else None
    chosen = get_backend(backend, infra, run_id)
    doc = chosen.status(run_id)
    attempts = chosen.attempts(run_id)
    cost = chosen.cost(run_id, doc, attempts, by_hand)
    facts = pages.facts(doc, attempts, chosen.failures(run_id, doc), cost)
    for warning in chosen.warnings:  # a record it could not write
        typer.echo(f"opsctl: warning: {warning}", err=True)
    calls = chosen.calls
    if calls is not None:  # what the report cost in calls, where the backend counts them
        facts["aws_calls"] = dict(calls)
        made = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
        typer.echo(f"{sum(calls.values())} AWS calls: {made}", err=True)
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    path = output or Path(f"{run_id}.html")
    try:
        path.write_text(pages.render(facts), encoding="utf-8")
    except OSError as e:
        raise BadInput(f"{path}: cannot write the report: {e.strerror}") from None
    typer.echo(str(path))


def prune(
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            min=0,
            max=36500,
            callback=finite,
            help="Delete finished local runs that ended this many days ago.",
        ),
    ] = 30,
    yes: Annotated[bool, typer.Option("--yes", help="Delete; without it, only print what would go.")] = False,
) -> None:
    """Remove old finished local runs and files killed writers left staged.

    A dry run unless --yes: prints each run directory (finished more than --older-than days ago)
    and each run's stale staged files, with their size. Running runs are never touched.
    """
    from opsctl.backends.local import prune_runs

    prune_runs(older_than, apply=yes, say=typer.echo)


def register(app: typer.Typer) -> None:
    for command in (launch, watch, status, kill, resume, logs):
        app.command()(command)
    app.command("list")(list_runs)
    app.command()(report)
    app.command()(prune)
