"""`python -m cli` runs the `sched` command."""

from cli.main import run

run()
