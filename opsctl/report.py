"""`opsctl report`: one run's facts (`--json`) and a self-contained HTML page of them.

The facts come from what the backend already records: its status document (states, command
counts from the markers), its failure lines (reasons, exit codes, log tails, as `watch` prints
them) and every child attempt's start, end, exit code and CPU time. The page is built from the
facts alone, with its styles inline, no script and nothing fetched from anywhere, so it opens
anywhere and its figures are the `--json` figures.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from opsctl.costs import dollars
from opsctl.records import AttemptRecord, StatusDocument, StatusStep
from opsctl.visible import visible

SLOWEST = 5  # children listed per step


def facts(
    status: StatusDocument,
    attempts: Sequence[AttemptRecord],
    failures: list[str],
    cost: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's figures: the run's headline, each step's, every attempt, the failures, and
    the cost estimate of opsctl.costs where the backend made one."""
    # Times are wall-clock records: a clock stepped back mid-attempt would end it before it
    # began. Such an attempt took no time, so no duration, wall time or bar is negative.
    attempts = [_clamped(a) for a in attempts]
    by_step: dict[str, list[AttemptRecord]] = defaultdict(list)
    for a in attempts:
        by_step[a["step"]].append(a)
    starts = [a["started"] for a in attempts if a["started"] is not None]
    ends = [a["finished"] for a in attempts if a["finished"] is not None]
    begin = min(starts) if starts else None
    steps = [_step(step, by_step[step["name"]]) for step in status["steps"]]
    commands = {
        k: sum(s["commands"][k] for s in status["steps"]) for k in ("total", "done", "failed", "reexecuted")
    }
    return {
        "run_id": status["run_id"],
        "pipeline": status["pipeline"],
        "backend": status["backend"],
        "state": status["state"],
        "reason": _shown(status.get("reason")),
        "started": begin,
        "finished": max(ends) if ends and len(ends) == len(attempts) else None,
        "wall_seconds": round(max(ends) - begin, 3) if begin is not None and ends else None,
        "children": sum(s["array_size"] for s in status["steps"]),
        "attempts": len(attempts),
        "commands": commands,
        "cpu_seconds": _cpu(attempts),
        "max_rss_bytes": _peak(attempts),
        "steps": steps,
        "timeline": [_bar(a, begin) for a in attempts],
        "failures": [visible(line) for line in failures],  # as the backend made them visible
        "cost": cost,
    }


def _cpu(attempts: Sequence[AttemptRecord]) -> float | None:
    """The attempts' CPU time, None where the backend measured none."""
    cpu = [seconds for a in attempts if (seconds := a["cpu_seconds"]) is not None]
    return round(sum(cpu), 3) if cpu else None


def _peak(attempts: Sequence[AttemptRecord]) -> int | None:
    """The largest resident memory of any attempt (Slurm's MaxRSS), None where none was measured."""
    sizes = [size for a in attempts if (size := a.get("max_rss")) is not None]
    return max(sizes) if sizes else None


def _clamped(a: AttemptRecord) -> AttemptRecord:
    """`a`, ended no earlier than it began."""
    if a["started"] is None or a["finished"] is None:
        return a
    return {**a, "finished": max(a["finished"], a["started"])}


def _shown(text: str | None) -> str | None:
    """A reason as the report shows it: control characters written out (opsctl.visible), in
    the page and `--json` alike."""
    return None if text is None else visible(text)


def _step(step: StatusStep, attempts: list[AttemptRecord]) -> dict[str, Any]:
    timed = [
        (a["index"], began, ended)
        for a in attempts
        if (began := a["started"]) is not None and (ended := a["finished"]) is not None
    ]
    wall = max(ended for _, _, ended in timed) - min(began for _, began, _ in timed) if timed else None
    busy = sum(ended - began for _, began, ended in timed)
    per_child: dict[int, float] = defaultdict(float)
    for index, began, ended in timed:
        per_child[index] += ended - began
    slowest = sorted(per_child.items(), key=lambda item: (-item[1], item[0]))[:SLOWEST]
    retries = [
        {
            "index": a["index"],
            "attempt": a["attempt"],
            "exit_code": a["exit_code"],
            "reason": _shown(a["reason"]),
        }
        for a in attempts
        if a["exit_code"] not in (0, None) or a["reason"]
    ]
    size = step["array_size"]
    return {
        "name": step["name"],
        "queue": step["queue"],
        "state": step["state"],
        "array_size": size,
        "attempts": len(attempts),
        "wall_seconds": round(wall, 3) if wall is not None else None,
        # sum of child time / (children * step wall): how much of the step's capacity did work.
        "busy_share": round(busy / (size * wall), 3) if wall else None,
        "commands": step["commands"],
        "commands_per_second": round(step["commands"]["done"] / wall, 3) if wall else None,
        "cpu_seconds": _cpu(attempts),
        "max_rss_bytes": _peak(attempts),
        "slowest": [{"index": i, "seconds": round(t, 3)} for i, t in slowest],
        # Work was done but no attempt is known: an AWS run whose jobs Batch forgot (about 7 days
        # after they ended) before any report kept their attempts.
        "attempts_unknown": not attempts and step["commands"]["done"] > 0,
        "retries": retries,
        "reexecuted": step["commands"]["reexecuted"],
    }


def _bar(a: AttemptRecord, begin: float | None) -> dict[str, Any]:
    def offset(t: float | None) -> float | None:
        return None if t is None or begin is None else round(t - begin, 3)

    if a["finished"] is None:
        outcome = "running"
    elif a["exit_code"] == 0:
        outcome = "succeeded"
    else:
        outcome = "failed"
    return {
        "step": a["step"],
        "index": a["index"],
        "generation": a["generation"],
        "attempt": a["attempt"],
        "start": offset(a["started"]),
        "end": offset(a["finished"]),
        "exit_code": a["exit_code"],
        "reason": _shown(a["reason"]),
        "cpu_seconds": a.get("cpu_seconds"),
        "max_rss": a.get("max_rss"),
        "outcome": outcome,
    }


# --- the page ---------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.head{display:flex;flex-wrap:wrap;gap:8px 24px;margin:12px 0}
.fig b{display:block;font-size:18px} .fig{color:#555}
table{border-collapse:collapse}
td,th{padding:3px 10px;border-bottom:1px solid #e3e6ec;text-align:left;white-space:nowrap}
.tl{position:relative;border-left:1px solid #999;margin:4px 0 12px}
.axis{position:sticky;top:0;z-index:1;height:22px;margin:4px 0 6px;background:#fff;
border-left:1px solid #999;border-bottom:1px solid #999}
.tick{position:absolute;bottom:5px;transform:translateX(-50%);font-size:11px;color:#555;white-space:nowrap}
.tick::after{content:"";position:absolute;left:50%;top:100%;height:5px;border-left:1px solid #999}
.tick:first-child{transform:none} .tick:first-child::after{left:0}
.axis-title{color:#555;font-size:12px}
.row{position:relative;height:4px;margin:0 0 1px}
.bar{position:absolute;top:0;height:100%;min-width:1px}
.succeeded{background:#2e8b57} .failed{background:#c0392b} .running{background:#e0a800}
.SUCCEEDED{color:#2e8b57} .FAILED{color:#c0392b}
pre{background:#f5f6f8;padding:8px;overflow:auto}
"""


def render(report: dict[str, Any]) -> str:
    """The HTML page of `report` (from `facts`): inline styles, nothing to run or fetch."""
    e = html.escape
    wall = report["wall_seconds"] or 0.0
    heads = [
        ("state", report["state"]),
        ("wall time", _seconds(report["wall_seconds"])),
        ("children", report["children"]),
        ("attempts", report["attempts"]),
        ("commands done", f"{report['commands']['done']} / {report['commands']['total']}"),
        ("failed", report["commands"]["failed"]),
        ("re-executed", report["commands"]["reexecuted"]),
        ("CPU time", _seconds(report["cpu_seconds"])),
        ("peak memory", _bytes(report["max_rss_bytes"])),
    ]
    cost = report.get("cost")
    if cost is not None:
        heads.append(("cost (estimate)", dollars(cost["dollars"])))
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>opsctl report {e(report['run_id'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(report['run_id'])}</h1><div>pipeline {e(report['pipeline'])}, {e(report['backend'])} backend"
        + (f" — {e(report['reason'])}" if report.get("reason") else "")
        + "</div>",
        '<div class="head" id="headline">',
        *(
            f'<div class="fig" data-fig="{e(name)}"><b class="{e(str(v))}">{e(str(v))}</b>{e(name)}</div>'
            for name, v in heads
        ),
        "</div>",
        "<h2>Steps</h2><table id=steps><tr><th>step</th><th>queue</th><th>state</th><th>children</th>"
        "<th>attempts</th><th>wall</th><th>busy share</th><th>commands/s</th><th>done</th>"
        "<th>re-executed</th><th>CPU time</th><th>peak memory</th><th>slowest children</th></tr>",
    ]
    for s in report["steps"]:
        slow = ", ".join(f"[{c['index']}] {c['seconds']:.1f} s" for c in s["slowest"])
        out.append(
            f'<tr data-step="{e(s["name"])}"><td>{e(s["name"])}</td><td>{e(s["queue"])}</td>'
            f'<td class="{e(s["state"])}">{e(s["state"])}</td>'
            f"<td>{s['array_size']}</td><td>{s['attempts']}</td>"
            f"<td>{_seconds(s['wall_seconds'])}</td><td>{_share(s['busy_share'])}</td>"
            f"<td>{'-' if s['commands_per_second'] is None else s['commands_per_second']}</td>"
            f"<td>{s['commands']['done']} / {s['commands']['total']}</td><td>{s['reexecuted']}</td>"
            f"<td>{_seconds(s['cpu_seconds'])}</td><td>{_bytes(s['max_rss_bytes'])}</td>"
            f"<td>{e(slow)}</td></tr>"
        )
    out.append("</table><h2>Timeline</h2>")
    out.extend(_axis_html(wall))
    rows: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for bar in report["timeline"]:
        rows[(bar["step"], bar["index"])].append(bar)
    for s in report["steps"]:
        unknown = (
            " (attempts unknown: Batch keeps jobs about 7 days after they end)"
            if s["attempts_unknown"]
            else ""
        )
        out.append(f'<div>{e(s["name"] + unknown)}</div><div class="tl" data-step="{e(s["name"])}">')
        for index in range(s["array_size"]):
            out.append('<div class="row">')
            for bar in rows.get((s["name"], index), []):
                out.append(_bar_html(bar, wall))
            out.append("</div>")
        out.append("</div>")
    retries = [(s["name"], r) for s in report["steps"] for r in s["retries"]]
    if retries:
        out.append(
            "<h2>Retries</h2><table id=retries>"
            "<tr><th>child</th><th>attempt</th><th>exit</th><th>reason</th></tr>"
        )
        out.extend(
            f"<tr><td>{e(name)}[{r['index']}]</td><td>{r['attempt']}</td><td>{r['exit_code']}</td>"
            f"<td>{e(str(r['reason'] or ''))}</td></tr>"
            for name, r in retries
        )
        out.append("</table>")
    if cost is not None:
        out.extend(_cost_html(cost))
    if report["failures"]:
        out.append(f"<h2>Failures</h2><pre id=failures>{e(chr(10).join(report['failures']))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def _bar_html(bar: dict[str, Any], wall: float) -> str:
    start = bar["start"] or 0.0
    end = bar["end"] if bar["end"] is not None else wall
    left = 100 * start / wall if wall else 0.0
    width = 100 * max(end - start, 0.0) / wall if wall else 0.0
    title = (
        f"{bar['step']}[{bar['index']}] attempt {bar['attempt']} (generation {bar['generation']}): "
        f"{start:.2f} to {end:.2f} s, exit {bar['exit_code']}"
        + (f", {bar['reason']}" if bar["reason"] else "")
    )
    return (
        f'<div class="bar {bar["outcome"]}" data-attempt="{bar["step"]}:{bar["index"]}:{bar["generation"]}:'
        f'{bar["attempt"]}" style="left:{left:.3f}%;width:{width:.3f}%" title="{html.escape(title)}"></div>'
    )


# The axis's tick spacings, in seconds: 1, 2 and 5 times a power of ten up to 5 s, then what a
# clock shows (10, 15 and 30 s, minutes, quarter and half hours, hours, a day), so the labels
# read as times.
_STEPS = (
    *(m * 10.0**e for e in range(-3, 1) for m in (1, 2, 5)),
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    10800.0,
    21600.0,
    43200.0,
    86400.0,
)
MAX_TICKS = 8  # intervals on the axis at most


def axis_ticks(wall: float) -> list[tuple[float, str]]:
    """The timeline's ticks for a run of `wall` seconds: (seconds from the run's first start,
    label), 0 first, at most MAX_TICKS intervals, spaced by the smallest of `_STEPS` that keeps
    within that (days beyond them), every label in the unit that spacing is counted in."""
    if wall <= 0:
        return [(0.0, "0 s")]
    step = next((s for s in _STEPS if wall / s <= MAX_TICKS), None)
    if step is None:  # longer than 8 days: whole days
        step = 86400.0 * -(-wall // (86400.0 * MAX_TICKS))
    unit, size = ("s", 1.0) if step < 60 else ("min", 60.0) if step < 3600 else ("h", 3600.0)
    if step >= 86400:
        unit, size = "d", 86400.0
    count = int(wall / step + 1e-9)
    return [(round(k * step, 6), f"{round(k * step / size, 6):g} {unit}") for k in range(count + 1)]


def _axis_html(wall: float) -> list[str]:
    """The labelled time axis over the timeline's bars, placed as they are (a percentage of
    the run's wall time); it stays in view while the bars scroll under it."""
    ticks = "".join(
        f'<span class="tick" data-seconds="{t:g}" style="left:{100 * t / wall if wall else 0.0:.3f}%">'
        f"{html.escape(label)}</span>"
        for t, label in axis_ticks(wall)
    )
    return [
        "<div class=axis-title>time since the run's first attempt started</div>",
        f'<div class="axis" id=axis>{ticks}</div>',
    ]


def _cost_html(cost: dict[str, Any]) -> list[str]:
    """The estimate with its method and every rate's inputs, so each figure can be checked."""
    e = html.escape
    if cost["dollars"] is None:
        return ["<h2>Cost</h2>", f"<p id=cost>Not estimated: {e(cost['unavailable'])}</p>"]
    out = [
        "<h2>Cost</h2>",
        f"<p id=cost>{dollars(cost['dollars'])}: {e(cost['method'])}.</p>",
        "<table id=rates><tr><th>queue</th><th>vCPU</th><th>GPU</th><th>$ per child-hour</th>"
        "<th>basis</th></tr>",
        *(
            f"<tr><td>{e(r['queue'])}</td><td>{r['vcpus']:g}</td><td>{r['gpus']:g}</td>"
            f"<td>{r['dollars_per_hour']:.4f}</td><td>{e(r['basis'])}</td></tr>"
            for r in cost["rates"]
        ),
        "</table><table id=step-costs><tr><th>step</th><th>child hours</th><th>dollars</th></tr>",
        *(
            f"<tr><td>{e(name)}</td><td>{s['child_hours']:.3f}</td><td>{dollars(s['dollars'])}</td></tr>"
            for name, s in cost["steps"].items()
        ),
    ]
    storage = cost.get("storage")
    if storage:
        counted = ", ".join(f"{n:,} {k.upper()}" for k, n in storage["requests"].items() if n)
        out.append(
            f"<tr><td>storage requests</td><td>{e(counted)}</td><td>{dollars(storage['dollars'])}</td></tr>"
        )
    out.append("</table>")
    if storage:
        out.append(f"<p>Storage: {e(storage['basis'])}.</p>")
    return out


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.2f} h"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"
