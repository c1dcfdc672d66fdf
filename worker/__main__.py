"""The worker's process entry point (`opsctl-worker`, `python -m worker`).

structlog imports rich, when it is installed, for tracebacks that the worker's JSON log never
renders: 40 of a child's 110 ms of start-up (bench/startup.py), paid by every array child and,
locally, by children that start together on few cores. Marking rich as absent before anything
imports structlog keeps it out of this process only; importing `worker.cli` elsewhere (tests,
the CLI) leaves rich alone.
"""

from __future__ import annotations

import sys


def main() -> None:
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # None: "import rich" fails
    from worker.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
