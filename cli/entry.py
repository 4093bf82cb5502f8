"""The `sched` console script: imports the CLI inside the guard, so that Ctrl-C while
Python is still loading sched ends it quietly (exit 130), never with a traceback."""

from __future__ import annotations

import logging
import sys
from typing import Any


def run() -> None:
    quiet_interrupts()
    try:
        from cli.main import main

        code = main()
    except KeyboardInterrupt:
        print("sched: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def quiet_interrupts() -> None:
    """Ctrl-C is reported once, as `sched: interrupted`. It may land inside a library's
    cleanup (SQLAlchemy's pool logs "Exception during reset" with the traceback before
    it re-raises) or in a finalizer, which Python reports as "Exception ignored"; neither
    report reaches stderr. Every other log record and unraisable error still does."""
    logging.lastResort.addFilter(lambda record: not is_interrupt(record.exc_info))  # type: ignore[union-attr]
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            default(unraisable)

    sys.unraisablehook = hook


def is_interrupt(exc_info: Any) -> bool:
    return bool(exc_info) and isinstance(exc_info[1], KeyboardInterrupt)
