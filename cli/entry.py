"""The `sched` console script: imports the CLI inside the guard, so that Ctrl-C while
Python is still loading sched ends it quietly (exit 130), never with a traceback."""

from __future__ import annotations

import sys


def run() -> None:
    try:
        from cli.main import main

        code = main()
    except KeyboardInterrupt:
        print("sched: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
