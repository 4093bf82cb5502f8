"""The `sched` console script: imports the CLI inside the guard, so that Ctrl-C while
Python is still loading sched ends it quietly (exit 130), never with a traceback."""

from __future__ import annotations

import sys


def run() -> None:
    quiet_unraisable_interrupts()
    try:
        from cli.main import main

        code = main()
    except KeyboardInterrupt:
        print("sched: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def quiet_unraisable_interrupts() -> None:
    """Ctrl-C is reported once, as `sched: interrupted`. One that lands in a finalizer
    is reported by Python as "Exception ignored in ...", traceback and all: not that
    one. Every other unraisable error still is. (An interrupt logged by SQLAlchemy's
    pool: see `eventlog.storage.base.quiet_pool_faults`.)"""
    default = sys.unraisablehook

    def hook(unraisable: object) -> None:
        if not isinstance(getattr(unraisable, "exc_value", None), KeyboardInterrupt):
            default(unraisable)  # type: ignore[arg-type]

    sys.unraisablehook = hook
