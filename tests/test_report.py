"""`opsctl report`: the facts of a finished local run, and its page as a real browser renders it
(headless Chromium, Debian's `chromium`, which .ci/run installs when missing)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tests.batch_player import BatchPlayer
from tests.helpers import cli

# A command that fails the first time it runs and succeeds the second: one retry to report.
SPEC = """name: pictured
defaults: {{retries: 1}}
steps:
  - name: prep
    queue: cpu
    array_size: 3
    commands: {{template: "echo prep {{i}}", range: 6}}
  - name: flaky
    queue: cpu
    array_size: 2
    commands:
      - "true"
      - "test -e {flag} || {{ touch {flag}; exit 3; }}"
    depends_on: [prep]
"""


class Dom(HTMLParser):
    """What the rendered DOM holds: the timeline bars, the headline figures, the step rows."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[str] = []
        self.timelines: list[str] = []
        self.figures: dict[str, str] = {}
        self._figure: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "bar" in (a.get("class") or "").split():
            self.bars.append(str(a["data-attempt"]))
        if (a.get("class") or "") == "tl":
            self.timelines.append(str(a["data-step"]))
        if a.get("data-fig"):
            self._figure = a["data-fig"]

    def handle_data(self, data: str) -> None:
        if self._figure and data.strip():
            self.figures[self._figure] = data.strip()
            self._figure = None


def test_the_report_of_a_run_in_a_browser_matches_its_facts(tmp_path: Path) -> None:
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC.format(flag=tmp_path / "failed-once"))
    launched = cli("launch", str(spec), "--watch", "--json", env=env)
    status: dict[str, Any] = json.loads(launched.stdout)
    run_id = status["run_id"]
    assert status["state"] == "SUCCEEDED", status

    facts = json.loads(cli("report", run_id, "--json", env=env).stdout)
    assert (facts["state"], facts["children"], facts["attempts"]) == ("SUCCEEDED", 5, 6)
    assert facts["commands"] == {"total": 8, "done": 8, "failed": 0, "reexecuted": 0}
    assert [s["commands"] for s in facts["steps"]] == [s["commands"] for s in status["steps"]]
    [retry] = facts["steps"][1]["retries"]
    assert (retry["attempt"], retry["exit_code"], retry["reason"]) == (1, 1, "worker exited 1")
    assert all(0 <= s["busy_share"] <= 1 for s in facts["steps"])
    assert facts["cpu_seconds"] > 0 and all(b["cpu_seconds"] is not None for b in facts["timeline"])
    starts = [b["start"] for b in facts["timeline"]]
    assert min(starts) == 0 and max(b["end"] for b in facts["timeline"]) == facts["wall_seconds"]

    page = tmp_path / "report.html"
    written = cli("report", run_id, "-o", str(page), env=env)
    assert written.returncode == 0 and written.stdout.strip() == str(page)
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "nothing is fetched when it opens"

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (.ci/run installs it)"
    browser = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "report.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    dumped = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    )
    dom = Dom()
    dom.feed(dumped.stdout)
    assert dom.timelines == ["prep", "flaky"]
    expected = sorted(f"{b['step']}:{b['index']}:{b['generation']}:{b['attempt']}" for b in facts["timeline"])
    assert sorted(dom.bars) == expected, "one bar per child attempt"
    assert dom.figures["state"] == facts["state"]
    assert dom.figures["children"] == str(facts["children"]) and dom.figures["attempts"] == str(
        facts["attempts"]
    )
    assert dom.figures["commands done"] == f"{facts['commands']['done']} / {facts['commands']['total']}"


def test_report_of_an_unknown_run_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    result = cli("report", "nope-20261128-120000-abcd", env=env)
    assert result.returncode == 2 and result.stderr.startswith(
        "opsctl: run 'nope-20261128-120000-abcd' was not"
    )


def test_the_report_of_an_aws_run_comes_from_batch_in_bounded_calls(
    player: BatchPlayer, tmp_path: Path
) -> None:
    """AWS Batch played with real workers (tests/batch_player.py): one child fails once and is
    retried by the retryStrategy opsctl submitted; the report's attempts are Batch's."""
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC.format(flag=tmp_path / "failed-once"))
    launched = cli("launch", str(spec), "--backend", "aws", "--infra", str(player.infra), "--json", env=env)
    run_id = json.loads(launched.stdout)["run_id"]
    status = json.loads(cli("watch", run_id, "--json", env=env).stdout)
    assert status["state"] == "SUCCEEDED", status
    result = cli("report", run_id, "--json", env=env)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert (facts["children"], facts["attempts"]) == (5, 6)
    assert facts["commands"] == {"total": 8, "done": 8, "failed": 0, "reexecuted": 0}
    [retry] = facts["steps"][1]["retries"]
    assert (retry["attempt"], retry["exit_code"]) == (1, 1)
    assert facts["cpu_seconds"] is None, "Batch does not say"
    assert all(b["end"] is not None for b in facts["timeline"])
    # status: DescribeJobs of the step jobs; attempts: ListJobs per status of each array (2 arrays
    # x 7 statuses) and DescribeJobs of the children (100 a call).
    assert facts["aws_calls"]["ListJobs"] == 14
    assert facts["aws_calls"]["DescribeJobs"] <= 1 + 2
    assert result.stderr.startswith(f"{sum(facts['aws_calls'].values())} AWS Batch calls: ")
