"""`sched run --log-format`: text or json; anything else is bad input."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import InProcess, event_count, one_error_line


def test_an_unknown_log_format_exits_2_in_one_line_before_the_daemon_starts(seeded: Path, cli: InProcess):
    before = event_count(seeded / "sched.db")
    line = one_error_line(cli("run", "--log-format", "yaml"), 2)
    assert line == "sched: --log-format must be one of text, json, not 'yaml'"
    assert event_count(seeded / "sched.db") == before  # (no DaemonStarted: it never started)
