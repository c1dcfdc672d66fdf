"""The layers, read from the code's own imports: the data flows one way.

opsctl_contract/ (what both sides rely on) imports nothing else of the project; worker/ (the
container side) imports the contract and never the operator side; opsctl/ (the operator side)
imports the contract and never the worker: it starts the worker by its entry point. Every
import counts, those inside functions and under TYPE_CHECKING too; the one thing the container
side may import under TYPE_CHECKING alone is the boto3-stubs packages (mypy's client types).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROJECT = {"opsctl", "opsctl_contract", "worker", "tomo"}
FORBIDDEN = {
    "opsctl_contract": {"opsctl", "worker", "tomo"},
    "worker": {"opsctl", "tomo"},
    "opsctl": {"worker", "tomo"},
}
# What the worker side may import beyond the standard library: the base install's dependencies
# (and the GPU extra's, inside the GPU check). The operator CLI's extra is not among them.
WORKER_THIRD_PARTY = {"boto3", "botocore", "structlog", "pyopencl", "numpy"}
# The boto3-stubs packages (a dev dependency) give mypy the clients' types: allowed only under
# TYPE_CHECKING, which is False whenever the code runs, so the images never need them.
TYPES_ONLY = re.compile(r"mypy_boto3_[a-z0-9_]+")


def imports(path: Path, *, at_run_time: bool = False) -> set[str]:
    """Top-level names of every module `path` imports; `at_run_time`: leaving out those under
    `if TYPE_CHECKING:`, which never run."""
    tree = ast.parse(path.read_text())
    if at_run_time:
        for block in [n for n in ast.walk(tree) if isinstance(n, ast.If)]:
            if ast.unparse(block.test) == "TYPE_CHECKING":
                block.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_against_the_layers(package: str) -> None:
    arrows = {
        f"{path.relative_to(ROOT)} -> {name}"
        for path in sources(package)
        for name in imports(path) & FORBIDDEN[package]
    }
    assert not arrows, sorted(arrows)


@pytest.mark.parametrize("package", ["opsctl_contract", "worker"])
def test_the_container_side_needs_none_of_the_cli_extra(package: str) -> None:
    stdlib = set(sys.stdlib_module_names)
    third_party = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources(package)
        for name in imports(path) - stdlib - PROJECT - WORKER_THIRD_PARTY - {"__future__"}
        if not (TYPES_ONLY.fullmatch(name) and name not in imports(path, at_run_time=True))
    }
    assert not third_party, sorted(third_party)


def test_the_base_install_is_the_workers() -> None:
    """`pip install opsctl` (what the images do) pulls boto3 and structlog; the CLI is an extra."""
    declared = requires("opsctl") or []

    def name(requirement: str) -> str:
        found = re.match(r"[A-Za-z0-9_.-]+", requirement)
        assert found is not None
        return found.group(0)

    base = sorted(name(r) for r in declared if "extra ==" not in r)
    assert base == ["boto3", "structlog"]
    cli = {name(r) for r in declared if 'extra == "cli"' in r}
    assert cli == {"typer", "pyyaml", "rich", "python-terraform"}


def test_opsctl_without_the_cli_extra_says_what_to_install() -> None:
    script = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name in ('typer', 'rich') else real(name, *a)\n"
        "import opsctl.console\n"
        "opsctl.console.find_spec = importlib.util.find_spec\n"
        "opsctl.console.main()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (
        "opsctl: the operator CLI needs typer, rich, which this installation lacks (it has the worker "
        "only): pip install 'opsctl[cli]'\n"
    )
