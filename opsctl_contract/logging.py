"""structlog set-up shared by the CLI and the worker.

Humans at a terminal get coloured key=value lines; anything else (a container's CloudWatch
stream, a log file of the local backend) gets one JSON object a line, which tools can parse.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure(stream: TextIO | None = None, *, json: bool | None = None) -> None:
    """Route structlog to `stream` (stderr by default), as JSON unless it is a terminal."""
    out = stream or sys.stderr
    use_json = not out.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(out),
        # The worker logs one event per command: resolve the processor chain once.
        cache_logger_on_first_use=True,
    )
