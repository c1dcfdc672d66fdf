"""The `opsctl` command line as users run it: real subprocesses of the installed entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from tests.conftest import ROOT
from tests.helpers import OPSCTL, cli, one_line

if TYPE_CHECKING:
    from opsctl.records import StatusDocument


def test_validate_json_from_a_shell() -> None:
    result = cli("validate", "examples/hello.yaml", "--json", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pipeline"] == "hello"


def test_help_does_not_import_boto3_or_yaml() -> None:
    code = (
        "import sys\n"
        "from opsctl.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "heavy = sorted(m for m in ('boto3', 'botocore', 'yaml', 'rich.table') if m in sys.modules)\n"
        "print(heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Commands:" in result.stdout
    assert "boto3" not in result.stderr and "botocore" not in result.stderr
    assert "yaml" not in result.stderr  # only commands that read a spec load the parser


@pytest.mark.parametrize(
    ("verb", "options"),
    [
        (
            "launch",
            ["--backend", "--infra", "--watch", "--max-parallel", "--containers", "--image-tag", "--no-gpus"],
        ),
        ("watch", ["--backend", "--infra", "--interval", "--json"]),
        ("status", ["--backend", "--infra", "--json"]),
        ("kill", ["--backend", "--infra"]),
        ("resume", ["--backend", "--infra"]),
        ("logs", ["--index", "--follow", "--raw", "--backend", "--infra"]),
        ("list", ["--backend", "--infra", "--json"]),
        ("prune", ["--older-than", "--yes"]),
        ("report", ["--output", "--json", "--backend", "--infra"]),
    ],
)
def test_every_verb_is_registered_with_its_options(verb: str, options: list[str]) -> None:
    result = cli(verb, "--help")
    assert result.returncode == 0
    for option in options:
        assert option in result.stdout, f"{verb} lacks {option}"


def test_infra_subcommands_are_registered() -> None:
    """`opsctl infra --help` exits 0 and lists exactly its commands, each summed up by the start
    of its own help, which it gives under its own name. A name found anywhere in the text proves
    nothing: `apply` is in `plan`'s summary, which stays when `apply` is gone."""
    result = cli("infra", "--help")
    assert result.returncode == 0, result.stderr
    rows = [line.split(None, 1) for line in result.stdout.split("\nCommands:\n", 1)[1].splitlines()]
    assert [row[0] for row in rows] == ["plan", "apply", "destroy", "output", "push", "definitions"]
    for name, summary in rows:
        own = cli("infra", name, "--help")
        assert own.returncode == 0, own.stderr
        usage, description = own.stdout.split("\n\n")[:2]
        assert usage == f"Usage: opsctl infra {name} [OPTIONS]", own.stdout
        assert " ".join(description.split()).startswith(summary.strip().removesuffix("...")), (name, summary)


def test_aws_backend_without_infra_file_is_bad_input(tmp_path: Path) -> None:
    result = cli(
        "status", "hello-20261128-120000-abcd", "--backend", "aws", "--infra", str(tmp_path / "no.json")
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "no.json: infra outputs file not found" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert cli("validate").returncode == 2
    assert cli("launch", "examples/hello.yaml", "--backend", "gcp", cwd=ROOT).returncode == 2
    assert cli("frobnicate").returncode == 2


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("opsctl ")


def complete(words: str, env: dict[str, str], bash: str) -> list[str]:
    """What Tab offers after `words` in a bash that sourced opsctl's completion script, as
    `opsctl --install-completion` installs it."""
    script = cli("--show-completion", "bash", env=env).stdout
    assert "complete -o default -F _opsctl_completion opsctl" in script
    typed = words.split(" ")
    shell = (
        f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in typed)}); COMP_CWORD={len(typed) - 1}\n"
        '_opsctl_completion opsctl\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        [bash, "--norc", "-c", shell], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_tab_completes_commands_options_and_run_ids(tmp_path: Path) -> None:
    """Run in bash, which the test needs and skips without, with a PATH of exactly what the
    completion script calls: `opsctl` and `env`. Whatever else /usr/bin holds plays no part."""
    bash, env_tool = shutil.which("bash"), shutil.which("env")
    if bash is None or env_tool is None:
        pytest.skip("bash completion needs bash and env (coreutils) on PATH")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "opsctl").symlink_to(OPSCTL)
    (bin_dir / "env").symlink_to(env_tool)
    home = tmp_path / "home"
    local = ["tomo-20261128-101500-a1b2", "tomo-20261128-120000-c3d4", "hello-20261127-090000-0001"]
    for run_id in local:
        (home / "runs" / run_id).mkdir(parents=True)
    (home / "runs" / ".building-tomo-20261128-130000-ffff").mkdir()  # not a run yet
    (home / "aws-runs").mkdir()
    (home / "aws-runs" / "tomo-20261128-140000-e5f6.json").write_text("{}")
    env = {"PATH": str(bin_dir), "OPSCTL_HOME": str(home), "SHELL": bash, "HOME": str(tmp_path)}

    assert {"launch", "status", "resume", "prune"} <= set(complete("opsctl ", env, bash))
    assert "--containers" in complete("opsctl launch --c", env, bash)
    assert complete("opsctl status tomo-", env, bash) == [
        "tomo-20261128-140000-e5f6",
        "tomo-20261128-120000-c3d4",
        "tomo-20261128-101500-a1b2",
    ]
    assert complete("opsctl resume hel", env, bash) == ["hello-20261127-090000-0001"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (
            ["--backend", "aws", "--containers"],
            "--containers is for the local backend: on AWS every child runs",
        ),
        (["--image-tag", "v1"], "--image-tag is an option of --containers"),
        (["--no-gpus"], "--no-gpus is an option of --containers"),
    ],
)
def test_container_options_where_they_mean_nothing_are_one_line(
    options: list[str], says: str, tmp_path: Path
) -> None:
    """Refused before any backend is built (the registry says which backends take
    --containers), so `--backend aws --containers` needs no infra file to be told so."""
    result = cli("launch", "examples/hello.yaml", *options, cwd=ROOT, env={"OPSCTL_HOME": str(tmp_path)})
    assert says in one_line(result, 2)
    assert not (tmp_path / "runs").exists(), "nothing launched"


def test_watch_backs_off_while_the_run_shows_nothing_new() -> None:
    """Pace doubles its wait after a poll that saw nothing new (elapsed alone is not new), up to
    its ceiling, and is back at once after one that saw a command done."""
    from opsctl.cli.runs import Pace

    def doc(done: int, elapsed: float) -> StatusDocument:
        step = {"name": "work", "state": "RUNNING", "commands": {"done": done}, "elapsed": elapsed}
        return cast("StatusDocument", {"state": "RUNNING", "reason": None, "steps": [step]})

    pace = Pace(2.0, 10.0)
    waits = [pace.after(doc(0, t)) for t in range(6)]
    assert waits == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert [pace.after(doc(1, 7.0)), pace.after(doc(1, 8.0))] == [2.0, 4.0]
