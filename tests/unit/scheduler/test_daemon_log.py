"""The daemon logs one line for every tick that changed something, and only those; as
text, or (`--log-format json`) as one JSON object per line."""

from __future__ import annotations

import json
import logging
import warnings
from datetime import UTC, datetime

from eventlog.errors import SchedError
from eventlog.store import Recorded
from scheduler.clock import ManualClock
from scheduler.daemon.log import DaemonLog
from scheduler.daemon.run import Problems, summary
from scheduler.tick import TickReport


def test_a_tick_that_only_started_wrappers_is_logged():
    """A tick that started attempts another host assigned to this host's pinned agents
    assigned nothing itself; the log still says what it started."""
    report = TickReport(spawned=[4, 5], duration_ms=3.0)
    assert report.did_something
    assert summary(report) == "tick: assigned 0, started 2 (3 ms)"


def test_a_tick_that_only_marked_due_times_missed_or_released_says_so():
    assert summary(TickReport(due_missed=[3, 4], duration_ms=2.0)) == "tick: assigned 0, due missed 2 (2 ms)"
    released = TickReport(released=[{"task_id": 5, "agent": "a1"}], duration_ms=2.0)
    assert summary(released) == "tick: assigned 0, released 1 (2 ms)"


def test_a_tick_that_only_dead_lettered_is_logged_and_an_idle_one_is_not():
    assert TickReport(dead_lettered=[9]).did_something
    assert "dead-lettered 1" in summary(TickReport(dead_lettered=[9]))
    assert not TickReport().did_something


# -- --log-format json ---------------------------------------------------------------------

def json_log(lines: list[str]) -> DaemonLog:
    return DaemonLog(lines.append, "json", "host-a", ManualClock(datetime(2026, 5, 1, 9, tzinfo=UTC)).now)


def test_a_text_log_writes_the_text_as_it_always_was():
    lines: list[str] = []
    log = DaemonLog(lines.append)
    log("tick: assigned 1 (3 ms)", event="tick", task_id=4, seq=9, assigned=1)
    log.events([recorded(9, "TaskAssigned", {"task_id": 4, "agent": "ann"})])
    assert lines == ["tick: assigned 1 (3 ms)"]


def test_a_json_line_has_time_level_event_host_and_task_id_and_seq_when_there_are_some():
    lines: list[str] = []
    log = json_log(lines)
    log("sched daemon: stopped", event="daemon.stopped")
    log("boom", event="tick.failed", level="error", task_id=3, seq=12, error="boom")
    first, second = map(json.loads, lines)
    assert first == {"time": "2026-05-01T09:00:00.000000Z", "level": "info", "event": "daemon.stopped",
                     "host": "host-a", "message": "sched daemon: stopped"}
    assert second == {"time": "2026-05-01T09:00:00.000000Z", "level": "error", "event": "tick.failed",
                      "host": "host-a", "task_id": 3, "seq": 12, "message": "boom", "error": "boom"}


def recorded(seq: int, kind: str, data: dict[str, object]) -> Recorded:
    stream = f"task-{data['task_id']}" if "task_id" in data else "config"
    return Recorded(seq, stream, kind, 1, "2026-05-01T09:00:00.000000Z", json.dumps(data), "", "")


def test_each_event_the_daemon_appended_is_a_line_with_its_seq_and_task_id():
    lines: list[str] = []
    json_log(lines).events([recorded(7, "AgentsConfigured", {"agents": []}),
                            recorded(8, "TaskAssigned", {"task_id": 4, "agent": "ann"}),
                            recorded(9, "TaskStarted", {"task_id": 4, "agent": "ann", "attempt": 1})])
    docs = [json.loads(line) for line in lines]
    assert [(d["event"], d["seq"], d.get("task_id")) for d in docs] == [
        ("AgentsConfigured", 7, None), ("TaskAssigned", 8, 4), ("TaskStarted", 9, 4)]
    assert "task_id" not in docs[0] and docs[1]["agent"] == "ann"


def test_a_json_log_takes_in_python_log_records_and_warnings_while_capturing():
    lines: list[str] = []
    log = json_log(lines)
    with log.capturing():
        try:
            raise RuntimeError("job blew up")
        except RuntimeError:
            logging.getLogger("apscheduler.executors.default").exception("Job 'tick' raised an exception")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("something odd", UserWarning, stacklevel=1)
    logging.getLogger("apscheduler.executors.default").error("after: not taken")
    docs = [json.loads(line) for line in lines]
    assert [(d["event"], d["level"]) for d in docs] == [("python.log", "error"), ("python.log", "warning")]
    assert docs[0]["logger"] == "apscheduler.executors.default"
    assert "RuntimeError: job blew up" in docs[0]["exception"]
    assert "something odd" in docs[1]["message"]


def test_a_failing_job_is_an_error_line_once_and_its_recovery_an_info_line():
    lines: list[str] = []
    problems = Problems("tick", json_log(lines), "every tick", "tick")
    problems.failed(SchedError("control file invalid"))
    problems.failed(SchedError("control file invalid"))
    problems.worked()
    # the same problem a second later (a stalled writer, its idle time in the line): once
    problems.failed(SchedError("the lock holder (pid 12) is idle in its transaction for 5 s"))
    problems.failed(SchedError("the lock holder (pid 12) is idle in its transaction for 6 s"))
    problems.failed(SchedError("control file invalid"))  # another problem: said
    problems.worked()
    assert [(d["event"], d["level"]) for d in map(json.loads, lines)] == [
        ("tick.failed", "error"), ("tick.recovered", "info"),
        ("tick.failed", "error"), ("tick.failed", "error"), ("tick.recovered", "info")]
