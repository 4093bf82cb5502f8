"""`python -m cli` runs the `sched` command."""

from cli.entry import run

run()
