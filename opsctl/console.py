"""The `opsctl` command's entry point.

The operator CLI's dependencies are the `cli` extra, so that the worker images, which install
opsctl without it, carry nothing they do not run. Where they are missing, `opsctl` says so in one
line instead of an ImportError traceback. `find_spec` looks without importing: `opsctl --help`
pays nothing for the check (bench/startup.py).
"""

from __future__ import annotations

import sys
from importlib.util import find_spec

CLI_MODULES = ("typer", "rich", "yaml", "python_terraform")


def main() -> None:
    missing = [name for name in CLI_MODULES if find_spec(name) is None]
    if missing:
        print(
            f"opsctl: the operator CLI needs {', '.join(missing)}, which this installation lacks "
            "(it has the worker only): pip install 'opsctl[cli]'",
            file=sys.stderr,
        )
        sys.exit(2)
    from opsctl.cli import main as cli_main

    cli_main()
