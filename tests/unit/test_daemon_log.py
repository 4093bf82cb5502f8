"""The daemon logs one line for every tick that changed something, and only those."""

from __future__ import annotations

from scheduler.daemon import summary
from scheduler.tick import TickReport


def test_a_tick_that_only_started_wrappers_is_logged():
    """A tick that started attempts another host assigned to this host's pinned agents
    assigned nothing itself; the log still says what it started."""
    report = TickReport(spawned=[4, 5], duration_ms=3.0)
    assert report.did_something
    assert summary(report) == "tick: assigned 0, started 2 (3 ms)"


def test_a_tick_that_only_dead_lettered_is_logged_and_an_idle_one_is_not():
    assert TickReport(dead_lettered=[9]).did_something
    assert "dead-lettered 1" in summary(TickReport(dead_lettered=[9]))
    assert not TickReport().did_something
