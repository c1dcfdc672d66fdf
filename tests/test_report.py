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

import boto3
import pytest

from tests.batch_player import BatchPlayer
from tests.helpers import cli
from tests.moto_env import free_port

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


def bar_ids(facts: dict[str, Any]) -> list[str]:
    """The `data-attempt` of each attempt's bar, as the page should have them."""
    return sorted(f"{b['step']}:{b['index']}:{b['generation']}:{b['attempt']}" for b in facts["timeline"])


def headless_chromium(tmp_path: Path) -> list[str]:
    """The command line of a headless Chromium with a profile of its own under `tmp_path`; a
    machine without one skips the test with the reason, except in CI, where it fails."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        why = "no chromium on PATH: the page is checked in Debian's chromium (`make system` sees to it)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]


def in_chromium(page: Path, tmp_path: Path) -> Dom:
    """The page as headless Chromium renders it: a screenshot taken, the DOM read back."""
    browser = headless_chromium(tmp_path)
    shot = page.with_suffix(".png")
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
    return dom


def test_the_report_of_a_run_in_a_browser_matches_its_facts(tmp_path: Path) -> None:
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    spec = tmp_path / "p.yaml"
    spec.write_text(SPEC.format(flag=tmp_path / "failed-once"))
    launched = cli("launch", str(spec), "--watch", "--json", env=env)
    status: dict[str, Any] = json.loads(launched.stdout)
    run_id = status["run_id"]
    assert status["state"] == "SUCCEEDED", status

    assert json.loads(cli("report", run_id, "--json", env=env).stdout)["cost"] is None, "no price here"
    # Priced by hand: 1 vCPU a child (the default) at $50 a vCPU-hour, so the figure shows.
    facts = json.loads(cli("report", run_id, "--json", "--price", "vcpu=50", env=env).stdout)
    assert (facts["state"], facts["children"], facts["attempts"]) == ("SUCCEEDED", 5, 6)
    busy = sum(b["end"] - b["start"] for b in facts["timeline"])
    assert facts["cost"]["child_hours"] * 3600 == pytest.approx(busy, abs=0.01)  # bars are in ms
    assert facts["cost"]["compute_dollars"] == pytest.approx(facts["cost"]["child_hours"] * 50, abs=1e-4)
    assert facts["commands"] == {"total": 8, "done": 8, "failed": 0, "reexecuted": 0}
    assert [s["commands"] for s in facts["steps"]] == [s["commands"] for s in status["steps"]]
    [retry] = facts["steps"][1]["retries"]
    assert (retry["attempt"], retry["exit_code"], retry["reason"]) == (1, 1, "worker exited 1")
    assert all(0 <= s["busy_share"] <= 1 for s in facts["steps"])
    assert facts["cpu_seconds"] > 0 and all(b["cpu_seconds"] is not None for b in facts["timeline"])
    starts = [b["start"] for b in facts["timeline"]]
    assert min(starts) == 0 and max(b["end"] for b in facts["timeline"]) == facts["wall_seconds"]

    page = tmp_path / "report.html"
    written = cli("report", run_id, "-o", str(page), "--price", "vcpu=50", env=env)
    assert written.returncode == 0 and written.stdout.strip() == str(page)
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "nothing is fetched when it opens"

    dom = in_chromium(page, tmp_path)
    assert dom.timelines == ["prep", "flaky"]
    assert sorted(dom.bars) == bar_ids(facts), "one bar per child attempt"
    assert dom.figures["state"] == facts["state"]
    assert dom.figures["children"] == str(facts["children"]) and dom.figures["attempts"] == str(
        facts["attempts"]
    )
    assert dom.figures["commands done"] == f"{facts['commands']['done']} / {facts['commands']['total']}"
    assert dom.figures["cost (estimate)"] == f"${facts['cost']['dollars']:.4f}"


def test_report_of_an_unknown_run_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    result = cli("report", "nope-20261128-120000-abcd", env=env)
    assert result.returncode == 2 and result.stderr.startswith(
        "opsctl: run 'nope-20261128-120000-abcd' was not"
    )


def test_the_report_of_an_aws_run_comes_from_batch_in_bounded_calls(
    player: BatchPlayer, bucket: str, tmp_path: Path
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
    assert result.stderr.startswith(f"{sum(facts['aws_calls'].values())} AWS calls: ")

    # The cost: the cpu queue's spot c5 environment, its smallest type that fits a 1-vCPU child
    # (c5.large, 2 vCPUs) at the mean of moto's spot price history ($0.00001 in every zone).
    cost = facts["cost"]
    [rate] = cost["rates"]
    assert (rate["instance_type"], rate["market"], rate["share"], rate["vcpus"]) == (
        "c5.large",
        "spot",
        0.5,
        1,
    )
    hours = sum(b["end"] - b["start"] for b in facts["timeline"]) / 3600
    assert cost["child_hours"] == pytest.approx(hours, abs=1e-4)
    assert cost["compute_dollars"] == pytest.approx(hours * 0.000005, abs=1e-6)
    assert cost["storage"]["requests"]["put"] == status["requests"]["put"] > 0
    assert cost["dollars"] == pytest.approx(cost["compute_dollars"] + cost["storage"]["dollars"], abs=1e-6)
    assert facts["aws_calls"]["DescribeSpotPriceHistory"] == 1
    assert facts["aws_calls"]["DescribeComputeEnvironments"] == 1

    by_hand = json.loads(cli("report", run_id, "--json", "--price", "vcpu=0.05", env=env).stdout)["cost"]
    assert by_hand["compute_dollars"] == pytest.approx(hours * 0.05, abs=1e-5)
    assert by_hand["rates"][0]["basis"] == "by hand: 1 vCPU x $0.05/h"

    # In a browser: a bar per attempt, the headline's cost the estimate's.
    page = tmp_path / "aws.html"
    assert cli("report", run_id, "-o", str(page), env=env).returncode == 0
    dom = in_chromium(page, tmp_path)
    assert sorted(dom.bars) == bar_ids(facts) and dom.timelines == ["prep", "flaky"]
    assert dom.figures["cost (estimate)"] == f"${cost['dollars']:.4f}"

    # watch's header: the same estimate (the run has ended, so the same figure).
    watched = cli("watch", run_id, env={**env, "COLUMNS": "200"})
    assert f"${cost['dollars']:.4f} so far (estimate)" in watched.stdout.splitlines()[0], watched.stdout

    # EC2 unreachable: the report still comes, its cost says why it is missing.
    dead = {**env, "AWS_ENDPOINT_URL_EC2": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    missing = json.loads(cli("report", run_id, "--json", env=dead).stdout)["cost"]
    assert missing["dollars"] is None and missing["unavailable"].startswith(
        "cannot reach EC2 at http://127.0.0.1:"
    ), missing

    # Past Batch's retention: the attempts the first report kept beside the manifest, no Batch
    # call for them (status: one DescribeJobs; the prices are asked again); with none kept, each
    # step says they are unknown.
    for job_id in [j for j, job in player.jobs.items() if job.parent is None]:
        player.forget(job_id)
    later = cli("report", run_id, "--json", env=env)
    kept = json.loads(later.stdout)
    assert kept["timeline"] == facts["timeline"] and kept["cost"] == cost
    assert "ListJobs" not in kept["aws_calls"] and kept["aws_calls"]["DescribeJobs"] == 1, later.stderr
    boto3.client("s3").delete_object(Bucket=bucket, Key=f"runs/{run_id}/attempts.json")
    unknown = json.loads(cli("report", run_id, "--json", env=env).stdout)
    assert unknown["attempts"] == 0 and [s["attempts_unknown"] for s in unknown["steps"]] == [True, True]
    assert unknown["commands"] == facts["commands"], "from the final records in the manifest"
    assert unknown["cost"]["dollars"] is None
    assert unknown["cost"]["unavailable"].startswith(
        "the attempts of prep, flaky are unknown (AWS Batch keeps"
    )


def test_kept_attempts_give_way_to_a_resume(player: BatchPlayer, tmp_path: Path) -> None:
    """A failed run's attempts are kept once it ended; resumed and ended again, its report has
    the new submission's attempts too (generation 2), not the kept ones."""
    env = {**os.environ, "OPSCTL_HOME": str(tmp_path / "home")}
    flag = tmp_path / "fixed"
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "name: once\n"
        "defaults: {retries: 0}\n"
        "steps:\n"
        "  - name: only\n"
        "    queue: cpu\n"
        f'    command: "test -e {flag}"\n'
    )
    run_id = json.loads(
        cli("launch", str(spec), "--backend", "aws", "--infra", str(player.infra), "--json", env=env).stdout
    )["run_id"]
    assert json.loads(cli("watch", run_id, "--json", env=env).stdout)["state"] == "FAILED"
    first = json.loads(cli("report", run_id, "--json", env=env).stdout)
    assert [(b["generation"], b["outcome"]) for b in first["timeline"]] == [(1, "failed")]
    flag.touch()
    assert cli("resume", run_id, env=env).returncode == 0
    assert json.loads(cli("watch", run_id, "--json", env=env).stdout)["state"] == "SUCCEEDED"
    again = json.loads(cli("report", run_id, "--json", env=env).stdout)
    assert [(b["generation"], b["outcome"]) for b in again["timeline"]] == [(1, "failed"), (2, "succeeded")]
