"""Metrics, health and explain on a scripted event history with an injected clock: each
figure is checked against a value computed by hand in the comments."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.main import main
from eventlog.events import (
    Event,
    LeaseExpired,
    TaskAssigned,
    TaskDeadLettered,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
)
from eventlog.storage.base import SqlTransaction
from eventlog.timeutil import to_text
from scheduler import operator, worker
from scheduler.reads import queries
from scheduler.reads.dashboard import snapshot
from scheduler.reads.explain import explain
from scheduler.reads.health import health
from scheduler.reads.metrics import metrics, prometheus_text
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace

HOUR = timedelta(hours=1)


def at(ws: Workspace, second: float, *events: Event) -> None:
    """Record `events` at `second` seconds after the clock's start."""
    with ws.write() as recorder:
        recorder.record(list(events), ws.clock.start + timedelta(seconds=second))  # type: ignore[attr-defined]


def started(task_id: int, agent: str, attempt: int, second: float, ws: Workspace) -> TaskStarted:
    return TaskStarted(task_id=task_id, agent=agent, attempt=attempt, token_hash="x",
                       lease_expires_at=ws.clock.start + timedelta(seconds=second + 300))  # type: ignore[attr-defined]


@pytest.fixture
def history(make_workspace) -> Workspace:
    """Fleet: ann (dev, 2 slots), bob (dev, 1), qin (qa, 1), configured at second 0.

    task 1: ready 0, assigned ann 10, started 20, succeeded 80 (wait 20, run 60)
    task 2: ready 0, assigned ann 10, started 30, failed 50, backoff to 100;
            assigned bob 100, started 110, succeeded 210 (waits 30 and 10, runs 20 and 100)
    task 3: ready 0, assigned bob 10, started 15, lease expired 400, dead-lettered (wait 15, run 385)
    task 4: ready 0, assigned ann 3000, still held
    """
    ws = make_workspace()
    ws.clock.start = ws.clock.now()  # type: ignore[attr-defined]
    start = ws.clock.start  # type: ignore[attr-defined]
    at(ws, 0, ws.registry().control.configured_event(),
       *(TaskSubmitted(task_id=i, queue="dev", title=f"t{i}", max_attempts=1 if i == 3 else 3)
         for i in range(1, 5)))
    deadline = start + timedelta(hours=2)
    at(ws, 10, TaskAssigned(task_id=1, agent="ann", attempt=1, start_by=deadline),
       TaskAssigned(task_id=2, agent="ann", attempt=1, start_by=deadline),
       TaskAssigned(task_id=3, agent="bob", attempt=1, start_by=deadline))
    at(ws, 15, started(3, "bob", 1, 15, ws))
    at(ws, 20, started(1, "ann", 1, 20, ws))
    at(ws, 30, started(2, "ann", 1, 30, ws))
    at(ws, 50, TaskFailed(task_id=2, agent="ann", attempt=1, reason="exit_code", error="exited 1",
                          cpu_seconds=0.5, peak_rss_bytes=3000),
       TaskRequeued(task_id=2, reason="failed", not_before=start + timedelta(seconds=100)))
    at(ws, 80, TaskSucceeded(task_id=1, agent="ann", attempt=1, cpu_seconds=1.5, peak_rss_bytes=1000))
    at(ws, 100, TaskAssigned(task_id=2, agent="bob", attempt=2, start_by=deadline))
    at(ws, 110, started(2, "bob", 2, 110, ws))
    at(ws, 210, TaskSucceeded(task_id=2, agent="bob", attempt=2))
    at(ws, 400, LeaseExpired(task_id=3, agent="bob", attempt=1),
       TaskDeadLettered(task_id=3, reason="attempts used up"))
    at(ws, 3000, TaskAssigned(task_id=4, agent="ann", attempt=1, start_by=deadline))
    return ws


def test_metrics_of_the_first_hour_match_the_hand_computed_figures(history):
    history.clock.advance(3600)  # now = second 3600: the window is [0, 3600]
    report = metrics(history, HOUR)
    dev = report["queues"]["dev"]
    assert (dev["completed"], dev["failed"], dev["lease_expired"], dev["dead_lettered"]) == (2, 2, 1, 1)
    assert dev["throughput_per_hour"] == 2.0
    assert dev["error_rate"] == 0.5  # 2 failed of 4 ended attempts
    # waits 20, 30, 10, 15 -> sorted 10 15 20 30: p50 is the 2nd, p95 the 4th (nearest rank)
    assert dev["queue_wait_seconds"] == {"count": 4, "mean": 18.75, "p50": 15.0, "p95": 30.0}
    # runs 60, 20, 100, 385 -> sorted 20 60 100 385
    assert dev["run_seconds"] == {"count": 4, "mean": 141.25, "p50": 60.0, "p95": 385.0}
    # assigned to started: 10, 20, 5, 10 -> sorted 5 10 10 20
    assert dev["start_latency_seconds"] == {"count": 4, "mean": 11.25, "p50": 10.0, "p95": 20.0}
    # busy, from start to end: ann 20-80 + 30-50 (task 4, assigned at 3000, never started:
    # not busy) = 80; bob 110-210 + 15-400 = 485
    assert report["agents"]["ann"]["busy_slot_seconds"] == 80
    assert report["agents"]["bob"]["busy_slot_seconds"] == 485
    # offered: ann 2 x 3600, bob 1 x 3600; qin (qa) 3600 and idle
    assert dev["offered_slot_seconds"] == 3 * 3600
    assert dev["utilization"] == round(565 / 10800, 6)
    assert report["queues"]["qa"]["utilization"] == 0.0
    assert report["agents"]["ann"]["utilization"] == round(80 / 7200, 6)
    assert (report["overall"]["cpu_seconds"], report["overall"]["peak_rss_bytes"]) == (2.0, 3000)
    assert report["overall"]["measured_runs"] == 2
    assert list(report["hourly"].values()) == [{"completed": 2, "failed": 2, "dead_lettered": 1}]


def test_a_later_window_counts_only_what_ended_in_it_and_clips_busy_time(history):
    history.clock.advance(3700)  # window [100, 3700]: task 1 (ended at 80) is out
    report = metrics(history, HOUR)
    dev = report["queues"]["dev"]
    assert (dev["completed"], dev["failed"]) == (1, 1)
    # waits of the attempts that ended in it: task 2's second (10), task 3 (15)
    assert dev["queue_wait_seconds"]["p95"] == 15.0
    # busy inside [100, 3700]: bob 110-210 and 100-400 = 400; ann nothing (task 4 not started)
    assert dev["busy_slot_seconds"] == 400
    assert report["window"]["seconds"] == 3600


def test_a_window_ends_at_its_end_too(history):
    """Only the start bounded which outcomes counted: an attempt that ended after the
    window's end (another host's clock ahead, a window read as of a past moment) was
    counted in it, while its busy time was clipped at the end."""
    history.clock.advance(90)  # window [-10, 90]: task 1 succeeded at 80, task 2 failed at 50
    report = metrics(history, timedelta(seconds=100))
    dev = report["queues"]["dev"]
    assert (dev["completed"], dev["failed"], dev["lease_expired"], dev["dead_lettered"]) == (1, 1, 0, 0)
    assert dev["run_seconds"]["count"] == 2
    # task 3 (bob, 15 to 400) was running at the end: busy for its 75 s in the window
    assert (report["agents"]["ann"]["busy_slot_seconds"], report["agents"]["bob"]["busy_slot_seconds"]) == (
        80, 75)


def test_a_running_attempt_is_busy_from_its_start_to_now(history):
    at(history, 3300, started(4, "ann", 1, 3300, history))  # assigned at 3000, started at 3300
    history.clock.advance(3600)
    report = metrics(history, HOUR)
    # ann: 20-80 + 30-50 as before, and task 4 from 3300 to now (3600): 80 + 300
    assert report["agents"]["ann"]["busy_slot_seconds"] == 380
    assert report["agents"]["ann"]["start_latency_seconds"]["count"] == 2  # only ended attempts


def test_a_measured_start_delay_moves_the_start_to_when_the_command_ran(history):
    # task 4: assigned at 3000, its start recorded at 3300, its command ran 50 s later
    # (the runner measured it), ended at 3400; a delay longer than the run ends at the end
    at(history, 3300, started(4, "ann", 1, 3300, history))
    at(history, 3400, TaskSucceeded(task_id=4, agent="ann", attempt=1, start_delay_seconds=50.0))
    history.clock.advance(3600)
    report = metrics(history, HOUR)
    ann = report["agents"]["ann"]
    assert ann["start_latency_seconds"]["p95"] == 350.0  # 3000 to 3350
    assert ann["run_seconds"]["p95"] == 60.0  # task 1's; task 4 ran 3350 to 3400: 50
    (shown,) = [o for o in snapshot(history)["recent"] if o["task_id"] == 4]  # the dashboard's
    assert (shown["start_seconds"], shown["run_seconds"]) == (350.0, 50.0)
    assert ann["busy_slot_seconds"] == 80 + 50  # not from 3300: nothing ran before 3350


def test_utilization_follows_capacity_changes_from_the_control_file(history, tmp_path):
    from tests.conftest import write_fleet

    history.clock.advance(3000)  # the end of the recorded history
    write_fleet(history.settings.home, [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 4}])
    tick(history)  # records the new control file at second 3000: bob and qin leave
    history.clock.advance(600)
    report = metrics(history, HOUR)
    # ann 2 slots x 3000 s + 4 slots x 600 s; bob 1 x 3000 s
    assert report["agents"]["ann"]["offered_slot_seconds"] == 2 * 3000 + 4 * 600
    assert report["agents"]["bob"]["offered_slot_seconds"] == 3000


def test_prometheus_output_parses_back_with_the_same_figures(history):
    history.clock.advance(3600)
    text = prometheus_text(history, metrics(history, HOUR))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    dev = (("name", "dev"), ("scope", "queue"), ("window", "3600s"))
    assert samples[("sched_window_completed", dev)] == 2
    assert samples[("sched_window_throughput_per_second", dev)] == pytest.approx(2 / 3600)
    assert samples[("sched_events_total", ())] == queries.status(history)["last_seq"]
    assert samples[("sched_window_run_seconds_p95", dev)] == 385
    assert samples[("sched_window_utilization", dev)] == pytest.approx(565 / 10800, abs=1e-6)
    assert samples[("sched_queue_tasks", (("queue", "dev"), ("status", "assigned")))] == 1
    assert samples[("sched_agent_load", (("agent", "ann"), ("type", "dev")))] == 1


def test_metrics_cli_json_and_bad_window(history, capsys):
    home = str(history.settings.home)
    assert main(["metrics", "--since", "24h", "--json", "--home", home]) == 0
    assert main(["metrics", "--since", "soon", "--home", home]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sched: not a duration: 'soon' (try 90s, 10m, 2h, 1d)"]


def test_metrics_text_shows_a_short_cpu_time_in_milliseconds(make_workspace, capsys):
    from scheduler.runner.usage import Usage

    ws = make_workspace([{"agentName": "w", "agentType": "dev"}])
    submit(ws, [TaskSpec(queue="dev", title="quick")])
    claim = worker.claim(ws, "w")
    worker.complete(ws, claim.task.task_id, claim.token, usage=Usage(0.027, None))
    capsys.readouterr()
    assert main(["metrics", "--home", str(ws.settings.home)], clock=ws.clock) == 0
    out = capsys.readouterr().out.splitlines()
    runs = out[out.index("runs and resources"):]
    row = next(line.split() for line in runs if line.startswith("all "))  # (that table's first row)
    assert row[3] == "27ms"  # the cpu column (it said 0.0s: as if nothing was measured)


def test_show_of_an_ended_task_leaves_out_the_not_before_of_its_last_retry(make_workspace, capsys):
    ws = make_workspace([{"agentName": "w", "agentType": "dev"}], backoff_base_seconds=5)
    (task,) = submit(ws, [TaskSpec(queue="dev", title="flaky", max_attempts=2)])
    for _ in range(2):
        claim = worker.claim(ws, "w")
        worker.fail(ws, task.task_id, claim.token, "boom")
        ws.clock.advance(60)  # past its backoff
    assert queries.show(ws, task.task_id)[0].status == "dead"
    capsys.readouterr()
    assert main(["show", str(task.task_id), "--home", str(ws.settings.home)]) == 0
    out = capsys.readouterr().out
    assert "dead reason" in out and "not before" not in out


# -- the live dashboard ------------------------------------------------------------

def dashboard_text(doc, width=140, height=None) -> str:
    from rich.console import Console

    from cli.dashboard import render

    console = Console(record=True, width=width, height=height or 200, color_system=None)
    console.print(render(doc, height))
    return console.export_text()


def cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"\s{2,}", line.strip())]


def test_the_dashboard_shows_load_current_tasks_outcomes_and_throughput(history):
    from scheduler.reads.dashboard import snapshot

    history.clock.advance(3600)
    text = dashboard_text(snapshot(history))
    ann = next(line for line in text.splitlines() if line.startswith("ann "))
    assert "█████░░░░░ 1/2" in ann and "#4 t4 (assigned 10m)" in ann  # held since second 3000
    rows = [line for line in text.splitlines() if line.startswith("#")]
    assert [cells(r)[3] for r in rows] == ["dead_lettered", "expired", "succeeded",
                                           "succeeded", "failed"]  # newest first
    assert "last hour: 2 completed, 2 failed" in text
    assert "assigning" in text
    dev = next(line for line in text.splitlines() if line.startswith("dev "))
    assert cells(dev) == ["dev", "0", "1", "0", "0", "0", "1", "2"]
    assert "last tick: never   daemon: none running" in text


def test_the_dashboard_keeps_its_footer_on_80_by_24(make_workspace):
    from scheduler.reads.dashboard import snapshot

    fleet = [{"agentName": f"agent-{i:02d}", "agentType": f"type-{i % 6}", "maxConcurrency": 2}
             for i in range(30)]
    ws = make_workspace(fleet)
    submit(ws, [TaskSpec(queue=f"type-{i % 6}", title=f"a rather long title of task {i} " * 3)
                for i in range(40)])
    tick(ws)
    text = dashboard_text(snapshot(ws), width=80, height=24)
    lines = text.splitlines()
    assert len(lines) <= 24
    assert lines[-2].startswith("last hour:") and lines[-1].startswith("last tick: ")
    assert all(len(line) <= 80 for line in lines)
    assert "... and " in text and " more" in text  # what was left out is said


def test_the_dashboard_shows_the_last_tick_and_whether_a_daemon_is_alive(make_workspace):
    from scheduler.reads.dashboard import snapshot

    ws = make_workspace()
    tick(ws, daemon_interval=10)
    doc = snapshot(ws, alive=lambda pid: True)
    assert doc["last_tick"]["seconds_ago"] == 0 and doc["daemon"]["alive"]
    assert "daemon: alive on " in dashboard_text(doc)
    ws.clock.advance(31)  # three intervals without a tick: the daemon is gone
    doc = snapshot(ws, alive=lambda pid: True)
    assert not doc["daemon"]["alive"] and doc["daemon"]["last_seen"] is not None
    assert "last tick: 31s ago" in dashboard_text(doc)
    tick(ws, daemon_interval=10)
    assert not snapshot(ws, alive=lambda pid: False)["daemon"]["alive"]  # its process is gone


def test_status_watch_streams_snapshots_and_ends_cleanly_on_ctrl_c(make_workspace):
    import json
    import os
    import select
    import signal
    import subprocess
    import sys

    ws = make_workspace()
    submit(ws, [TaskSpec(queue="dev", title="shown")])
    env = {**os.environ, "SCHED_HOME": str(ws.settings.home)}
    proc = subprocess.Popen([sys.executable, "-m", "cli", "status", "--watch", "--json",
                             "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    assert proc.stdout is not None

    def snapshot() -> dict:  # the next one, or a failure after 30 s (never a hang)
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no snapshot within 30 s"
        return json.loads(proc.stdout.readline())

    try:
        first = snapshot()
        submit(ws, [TaskSpec(queue="dev", title="meanwhile")])
        later = next(s for s in (snapshot() for _ in range(150)) if s["queues"]["dev"]["queued"] == 2)
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == ""
    assert first["queues"]["dev"]["queued"] == 1  # each snapshot reads the database anew
    assert first["last_hour"] == later["last_hour"] == {"completed": 0, "failed": 0}


# -- health --------------------------------------------------------------------------

def checks(ws: Workspace) -> dict[str, str]:
    return {c["name"]: c["status"] for c in health(ws)["checks"]}


def test_a_fresh_scheduler_that_ticked_is_healthy(make_workspace):
    ws = make_workspace()
    tick(ws)
    report = health(ws)
    assert report["status"] == "healthy" and report["exit_code"] == 0
    assert all(c["threshold"] for c in report["checks"])


def test_a_clock_behind_the_log_is_said_with_what_waits_for_it(make_workspace):
    """A clock set an hour ahead and then right again left every event recorded at the
    future time (event time never runs backwards) and leases, start deadlines and
    backoffs waiting an hour, while health said `last tick 0 s ago`, healthy (a QA
    drill with libfaketime)."""
    ws = make_workspace()
    ahead = to_text(ws.clock.now())
    tick(ws)  # (its events at the time the clock was set ahead to)
    ws.clock.advance(-10)  # then set right: 10 s behind is within what NTP ever leaves
    assert checks(ws)["clock"] == "healthy"
    ws.clock.advance(-1)
    (clock,) = [c for c in health(ws)["checks"] if c["name"] == "clock"]
    assert (clock["status"], clock["saw"]) == (
        "degraded", f"this machine's clock is 11 s behind the log's last event ({ahead}): events are "
        "recorded at that time, and leases, start deadlines and backoffs wait, until the clock catches up "
        "(docs/operations.md, The clock)")


def test_the_last_tick_check_grades_by_tick_intervals(make_workspace):
    ws = make_workspace(tick_interval_seconds=10)
    assert checks(ws)["last_tick"] == "degraded"  # never ticked
    tick(ws)
    ws.clock.advance(30)
    assert checks(ws)["last_tick"] == "healthy"  # 3 intervals: the limit itself
    ws.clock.advance(1)
    assert checks(ws)["last_tick"] == "degraded"
    assert (health(ws)["status"], health(ws)["exit_code"]) == ("degraded", 1)
    ws.clock.advance(70)
    assert checks(ws)["last_tick"] == "unhealthy"  # beyond 10 intervals
    assert health(ws)["exit_code"] == 2


def test_the_last_tick_check_grades_by_the_running_daemons_interval(make_workspace):
    """A daemon run with `--interval 60` against the setting's 10 s read as late from 30 s
    on, while it ticked on time (a soak run)."""
    ws = make_workspace(tick_interval_seconds=10)
    tick(ws, daemon_interval=60)  # (by this process, alive)
    ws.clock.advance(50)
    (last,) = [c for c in health(ws)["checks"] if c["name"] == "last_tick"]
    assert last["status"] == "healthy"
    assert last["threshold"] == ("degraded > 180 s, unhealthy > 600 s (tick interval 60 s, the running "
                                 "daemon's)")
    ws.clock.advance(150)  # no beat for more than 3 of its intervals: no daemon alive, cron's terms
    assert checks(ws)["last_tick"] == "unhealthy"


def test_a_last_tick_a_little_ahead_of_this_clock_was_0_s_ago():
    """The tick's time is the database server's (PostgreSQL), which may run a little
    ahead of the host asking: `-0 s ago` was shown."""
    from scheduler.config.settings import Settings
    from scheduler.reads.health import check_last_tick

    now = datetime(2026, 1, 1, tzinfo=UTC)
    ahead = queries.to_text(now + timedelta(seconds=0.4))
    assert check_last_tick(Settings(), ahead, now).saw == f"last tick 0 s ago ({ahead})"


def test_backlog_grades_the_fullest_queue(make_workspace):
    ws = make_workspace(health_backlog_degraded=2, health_backlog_unhealthy=3)
    tick(ws)
    submit(ws, [TaskSpec(queue="qa", title="q")])
    assert checks(ws)["backlog"] == "healthy"
    operator.pause(ws, by="op")
    submit(ws, [TaskSpec(queue="qa", title="q")])
    assert checks(ws)["backlog"] == "degraded"
    submit(ws, [TaskSpec(queue="qa", title="q")])
    assert checks(ws)["backlog"] == "unhealthy"


def test_error_rate_counts_only_once_enough_attempts_ended(make_workspace):
    ws = make_workspace([{"agentName": "w", "agentType": "dev", "maxConcurrency": 4}],
                        health_error_rate_min_attempts=4)
    submit(ws, [TaskSpec(queue="dev", title=str(i), max_attempts=1) for i in range(4)])
    for _ in range(3):
        claim = worker.claim(ws, "w")
        worker.fail(ws, claim.task.task_id, claim.token, "boom")
        assert checks(ws)["error_rate"] == "healthy"  # 1..3 attempts: too few to judge
    claim = worker.claim(ws, "w")
    worker.complete(ws, claim.task.task_id, claim.token)
    assert checks(ws)["error_rate"] == "unhealthy"  # 3 of 4 failed: 75% >= 50%
    ws.clock.advance(3601)
    assert checks(ws)["error_rate"] == "healthy"  # they left the window


def test_lease_expiries_in_the_window_are_graded(make_workspace):
    ws = make_workspace([{"agentName": "w", "agentType": "dev", "maxConcurrency": 1}],
                        lease_seconds=10, backoff_base_seconds=0, max_attempts=10,
                        health_expiries_degraded=2, health_expiries_unhealthy=3)
    submit(ws, [TaskSpec(queue="dev", title="stuck")])
    for expected in ("healthy", "degraded", "unhealthy"):
        worker.claim(ws, "w")
        ws.clock.advance(11)
        tick(ws)  # the lease expired: the task is back in its queue
        assert checks(ws)["lease_expiries"] == expected
    ws.clock.advance(3600)
    assert checks(ws)["lease_expiries"] == "healthy"  # they left the window


def test_an_agent_that_starts_none_of_the_work_it_is_handed_degrades_starts(make_workspace):
    """A push agent whose working directories cannot be made (here a file stands where
    they go): each assignment goes back not started, using no attempt, and comes round
    again for ever. Nothing failed or expired, so only `starts` says so."""
    from scheduler.runner.exec import forget_cgroups, start

    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "command": ["true"]}],
                        backoff_base_seconds=0, health_unstarted_degraded=2)
    ws.launcher = lambda settings, task_id: None
    (task,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    (ws.settings.home / "work").write_text("in the way")
    for expected in ("healthy", "degraded"):
        tick(ws)
        assert start(ws, task.task_id, {}).status == "queued"  # (not started: back in its queue)
        assert checks(ws)["starts"] == expected
    report = {c["name"]: c for c in health(ws)["checks"]}
    assert report["starts"]["saw"].startswith(
        "ann: 2 assignments not started, none started (latest: cannot prepare the working directory ")
    assert (report["error_rate"]["status"], report["lease_expiries"]["status"]) == ("healthy", "healthy")
    (ws.settings.home / "work").unlink()
    tick(ws)
    forget_cgroups([start(ws, task.task_id, {})])  # (its command never runs: its group goes now)
    assert checks(ws)["starts"] == "healthy"  # it runs one now
    ws.clock.advance(3601)
    assert checks(ws)["starts"] == "healthy"


def test_an_agent_whose_program_cannot_start_degrades_starts(make_workspace, tmp_path):
    """A push agent whose program is not executable dead-letters each task at once (a
    spawn error): four dead tasks, and health said `starts: no agent failed to start
    the work it was handed` and `overall: healthy` (too few attempts for the error
    rate)."""
    from scheduler.runner.exec import run, start

    program = tmp_path / "agent.sh"
    program.write_text("#!/bin/sh\nexit 0\n")  # (not executable)
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "command": [str(program)],
                          "maxConcurrency": 4}])
    ws.launcher = lambda settings, task_id: None
    tasks = [s.task_id for s in submit(ws, [TaskSpec(queue="dev", title=f"t{n}") for n in range(4)])]
    tick(ws)
    for task_id in tasks:
        run(ws, start(ws, task_id, {}))  # type: ignore[arg-type]
        assert queries.show(ws, task_id)[0].status == "dead"  # (not retryable: dead-lettered at once)
    report = {c["name"]: c for c in health(ws)["checks"]}
    assert report["starts"]["status"] == "degraded"
    assert report["starts"]["saw"] == (
        f"ann: 4 commands could not start, none started (latest: cannot start {str(program)!r}: "
        "Permission denied)")
    assert health(ws)["status"] == "degraded"


def test_assignments_an_operator_took_away_are_not_an_agent_failing_to_start(make_workspace):
    """A drain sends an agent's assignments back (`released`): it did not fail to start
    them, so `starts` stays healthy after it is restored (it said `a: 3 assignments not
    started ... (latest: a was drained by an operator)` for an hour)."""
    ws = make_workspace([{"agentName": "a", "agentType": "dev", "maxConcurrency": 3}])
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(3)])
    assert len(tick(ws).assigned) == 3
    operator.drain(ws, "a", "op")
    operator.restore(ws, "a", "op")
    assert checks(ws)["starts"] == "healthy"
    assert metrics(ws, HOUR)["overall"]["not_started"] == 0  # (as operations.md says: reason not_started)


def test_progress_grades_the_time_without_a_success_while_work_is_queued(make_workspace):
    ws = make_workspace([{"agentName": "w", "agentType": "dev", "maxConcurrency": 1}],
                        health_stall_degraded_seconds=100, health_stall_unhealthy_seconds=200)
    (done,) = submit(ws, [TaskSpec(queue="dev", title="done")])
    claim = worker.claim(ws, "w")
    ws.clock.advance(250)
    worker.complete(ws, done.task_id, claim.token)
    assert checks(ws)["progress"] == "healthy"  # nothing queued
    submit(ws, [TaskSpec(queue="dev", title="tomorrow", not_before=ws.clock.now() + timedelta(days=1))])
    ws.clock.advance(3 * 3600)
    assert checks(ws)["progress"] == "healthy"  # queued, but not ready to start: no stall
    operator.pause(ws, by="op")
    ws.clock.advance(50)
    submit(ws, [TaskSpec(queue="dev", title="waits")])
    ws.clock.advance(99)
    assert checks(ws)["progress"] == "healthy"  # the stall counts from when it was ready, 99 s
    ws.clock.advance(1)
    assert checks(ws)["progress"] == "degraded"
    ws.clock.advance(100)
    assert checks(ws)["progress"] == "unhealthy"


def test_a_broken_control_file_makes_health_unhealthy_and_exit_2(make_workspace, capsys):
    ws = make_workspace()
    tick(ws)
    (ws.settings.home / "agent-control.json").write_text("{not json")
    assert checks(ws)["control_file"] == "unhealthy"
    before = len(list(queries.replay(ws)))
    code = main(["health", "--json", "--home", str(ws.settings.home)])
    (line,) = capsys.readouterr().out.splitlines()  # one document, the exit code its status's
    report = json.loads(line)
    assert (code, report["status"], report["exit_code"]) == (2, "unhealthy", 2)
    assert {c["name"]: c["status"] for c in report["checks"]}["control_file"] == "unhealthy"
    assert len(list(queries.replay(ws))) == before  # a health check records nothing


def test_a_misspelt_field_in_the_control_file_degrades_health_and_names_it(make_workspace):
    """The agent silently got the default capacity; only `agents validate` said why."""
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "maxConcurency": 3}])
    found = {c["name"]: c for c in health(ws)["checks"]}["control_file"]
    assert (found["status"], found["saw"]) == (
        "degraded", f"{ws.settings.home / 'agent-control.json'}: 1 agents; agent #1 (ann): unknown field "
                    "'maxConcurency' ignored")


# -- explain -------------------------------------------------------------------------

def test_explain_names_the_candidates_and_what_held_the_task_back(make_workspace):
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "maxConcurrency": 2},
                         {"agentName": "bob", "agentType": "dev", "maxConcurrency": 1},
                         {"agentName": "cy", "agentType": "dev", "maxConcurrency": 1,
                          "enabled": False}])
    operator.pause(ws, by="op", reason="deploy")
    ws.clock.advance(1)
    (first,) = submit(ws, [TaskSpec(queue="dev", title="first", priority=5)])
    ws.clock.advance(60)
    operator.resume(ws, by="op")
    ws.clock.advance(5)
    tick(ws)
    doc = explain(ws, first.task_id)
    (assignment,) = doc["assignments"]
    assert assignment["agent"] == "ann"
    assert assignment["why_this_agent"] == "ann had the most free slots (2; next bob with 1)"
    decision = assignment["decision"]
    assert [(c["agent"], c["free"]) for c in decision["candidates"]] == [("ann", 2), ("bob", 1)]
    assert decision["passed_over"] == [{"agent": "cy", "why": "disabled or not in the control file"}]
    assert decision["effective_priority"] == 5 and decision["waited_seconds"] == 65
    reasons = assignment["why_not_earlier"]
    assert reasons[0].startswith("the scheduler was already paused when it became ready (since")
    assert reasons[1].startswith("the scheduler was resumed at")
    assert "waited 65 s" in reasons[-1]
    assert [t["event"] for t in doc["timeline"]] == ["TaskSubmitted", "TaskAssigned"]


def test_explain_after_a_failure_names_the_failover_and_the_backoff(make_workspace):
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "maxConcurrency": 1},
                         {"agentName": "bob", "agentType": "dev", "maxConcurrency": 1}])
    (task,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    claim = worker.claim(ws, "ann")
    worker.fail(ws, task.task_id, claim.token, "boom")
    ws.clock.advance(3600)
    tick(ws)
    second = explain(ws, task.task_id)["assignments"][-1]
    assert second["agent"] == "bob"
    assert {"agent": "ann", "why": "it failed or did not start an earlier attempt of the task"} in \
        second["decision"]["passed_over"]
    assert any(r.startswith("retry backoff after failed until") for r in second["why_not_earlier"])


def test_explain_says_when_failover_went_back_to_the_agent_that_failed(make_workspace):
    """With the only other agent drained, the task went back to the agent that failed it,
    and explain said only `ann was the only agent able to take it`, as if nothing had
    been passed over (a soak run)."""
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "maxConcurrency": 1},
                         {"agentName": "bob", "agentType": "dev", "maxConcurrency": 1}])
    (task,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    claim = worker.claim(ws, "ann")
    worker.fail(ws, task.task_id, claim.token, "boom")
    operator.drain(ws, "bob", by="op")
    ws.clock.advance(3600)
    tick(ws)
    first, second = explain(ws, task.task_id)["assignments"]
    assert (first["agent"], second["agent"]) == ("ann", "ann")
    assert "failed or did not start an earlier attempt" not in first["why_this_agent"]
    assert second["why_this_agent"] == (
        "ann was the only agent able to take it (1 free slot(s)); ann failed or did not start an earlier "
        "attempt of the task, and was taken again because no other agent of the type that takes work "
        "could take it")


def test_explain_now_says_what_holds_a_task_back_besides_the_agents(make_workspace, capsys):
    """While paused, or behind a task it runs after, `now:` said `ann: could take it`
    and nothing else: the reason nothing would take it was left out."""
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "maxConcurrency": 2}])
    (parent,) = submit(ws, [TaskSpec(queue="dev", title="parent", requires_approval=True)])
    (child,) = submit(ws, [TaskSpec(queue="dev", title="child", after=[parent.task_id])])
    (plain,) = submit(ws, [TaskSpec(queue="dev", title="plain")])
    assert explain(ws, plain.task_id)["now"]["held"] == []
    operator.pause(ws, by="op", reason="deploying")
    assert explain(ws, plain.task_id)["now"]["held"] == ["assignment is paused by op: deploying"]
    assert explain(ws, parent.task_id)["now"]["held"] == [
        "it waits for approval (sched approve)", "assignment is paused by op: deploying"]
    assert explain(ws, child.task_id)["now"]["held"][0] == (
        f"it runs after task(s) {parent.task_id}, not yet succeeded")
    assert main(["explain", str(plain.task_id), "--home", str(ws.settings.home)], clock=ws.clock) == 0
    out = capsys.readouterr().out
    assert "  held: assignment is paused by op: deploying" in out and "could take it" in out


def test_explain_now_says_a_task_may_not_start_yet(make_workspace):
    """A task submitted with a delay, or in a retry's backoff, showed no `held:` line
    and `ann: could take it`, while `tasks` said it starts in an hour."""
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "maxConcurrency": 2}])
    later = ws.clock.now() + timedelta(hours=1)
    (delayed,) = submit(ws, [TaskSpec(queue="dev", title="later", not_before=later)])
    assert explain(ws, delayed.task_id)["now"]["held"] == [
        f"it may not start before {to_text(later)} (as submitted)"]
    (failing,) = submit(ws, [TaskSpec(queue="dev", title="fails")])
    claim = worker.claim(ws, "ann")
    assert claim is not None and claim.task.task_id == failing.task_id
    worker.fail(ws, failing.task_id, claim.token, "boom")
    (held,) = explain(ws, failing.task_id)["now"]["held"]
    assert held.startswith("it may not start before ") and held.endswith(" (a retry's backoff)"), held
    ws.clock.advance(7200)  # (past any first backoff: nothing holds either back)
    assert explain(ws, failing.task_id)["now"]["held"] == explain(ws, delayed.task_id)["now"]["held"] == []


def test_explain_of_a_task_that_ended_unassigned_does_not_say_yet(make_workspace, capsys):
    """A child dead-lettered with its parent ended `never assigned yet`, as if it still
    could be; one still waiting says `yet`."""
    ws = make_workspace()
    (parent,) = submit(ws, [TaskSpec(queue="dev", title="parent")])
    (child,) = submit(ws, [TaskSpec(queue="dev", title="child", after=[parent.task_id])])
    home = str(ws.settings.home)
    assert main(["explain", str(child.task_id), "--home", home], clock=ws.clock) == 0
    assert "never assigned yet" in capsys.readouterr().out.splitlines()
    operator.cancel(ws, parent.task_id, by="op")
    assert explain(ws, child.task_id)["now"]["held"] == [  # (not 'not yet succeeded': it never will)
        f"it runs after task {parent.task_id}, which ended without succeeding: it can never run (the next "
        "tick dead-letters it)"]
    tick(ws)  # the child can never run: dead-lettered
    assert main(["explain", str(child.task_id), "--home", home], clock=ws.clock) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "never assigned" in lines and "never assigned yet" not in lines


def test_explain_of_an_unknown_task_exits_2(make_workspace, capsys):
    ws = make_workspace()
    assert main(["explain", "42", "--home", str(ws.settings.home)]) == 2
    assert capsys.readouterr().err.strip() == "sched: no task 42"


def test_status_at_a_past_point_and_replay_bounds_by_time(history):
    start = history.clock.start  # type: ignore[attr-defined]
    then = queries.status(history, at=queries.parse_position(
        (start + timedelta(seconds=60)).isoformat(), "--at"))
    assert then["queues"]["dev"]["running"] == 2  # tasks 1 and 3
    assert then["queues"]["dev"]["queued"] == 2  # task 2 in its backoff, task 4
    assert then["agents"]["ann"]["running"] == 1
    window = list(queries.replay(history, since=queries.parse_position(
        (start + timedelta(seconds=50)).isoformat(), "--since"),
        until=queries.parse_position((start + timedelta(seconds=100)).isoformat(), "--until")))
    assert [r.type for r in window] == ["TaskFailed", "TaskRequeued", "TaskSucceeded", "TaskAssigned"]


# -- the queue view ------------------------------------------------------------------

def test_estimated_starts_follow_free_slots_and_the_last_hours_rate(make_workspace):
    ws = make_workspace([{"agentName": "w", "agentType": "dev", "maxConcurrency": 2}])
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(6)])
    for _ in range(2):  # two attempts end in the hour: a rate of 2 per hour
        claim = worker.claim(ws, "w")
        worker.complete(ws, claim.task.task_id, claim.token)
    ws.clock.advance(60)
    tasks = queries.list_tasks(ws, "dev", "queued")
    starts = queries.estimated_starts(ws, tasks)
    now = ws.clock.now()
    # 4 queued, 2 free slots: the first two start now, the third when one attempt has
    # ended (30 min at 2 per hour), the fourth after two (60 min)
    assert [starts[t.task_id] for t in tasks] == [
        queries.to_text(now), queries.to_text(now), queries.to_text(now + timedelta(minutes=30)),
        queries.to_text(now + timedelta(minutes=60))]
    operator.pause(ws, by="op")
    assert set(queries.estimated_starts(ws, tasks).values()) == {None}


def test_assignments_taken_back_unstarted_do_not_speed_up_the_estimates(make_workspace):
    """Two assignments to an agent that never starts them go back to the queue: each
    freed a slot, but for the same tasks again, so the line did not move."""
    ws = make_workspace([{"agentName": "w", "agentType": "dev", "maxConcurrency": 1}],
                        start_deadline_seconds=10)
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(3)])
    ws.launcher = lambda settings, task_id: None
    for _ in range(2):
        assert tick(ws).assigned  # (w is a pull worker: nobody starts what a tick assigns it)
        ws.clock.advance(11)
    tick(ws)  # the second assignment taken back too, and its task assigned again: w is full
    tasks = queries.list_tasks(ws, "dev", "queued")
    starts = queries.estimated_starts(ws, tasks)
    assert len(tasks) == 2 and [starts[t.task_id] for t in tasks] == [None, None]  # no slot freed for them


def test_no_estimate_when_no_agent_in_service_can_run_the_task(make_workspace):
    ws = make_workspace([{"agentName": "w", "agentType": "dev", "maxConcurrency": 1},
                         {"agentName": "v", "agentType": "dev", "maxConcurrency": 1}])
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(3)])
    for _ in range(2):  # slots freed in the last hour: a rate that alone would give estimates
        claim = worker.claim(ws, "w")
        worker.complete(ws, claim.task.task_id, claim.token)
    (for_v,) = submit(ws, [TaskSpec(queue="dev", title="for v", assignee="v")])
    operator.drain(ws, "v", "op")
    tasks = queries.list_tasks(ws, "dev", "queued")
    starts = queries.estimated_starts(ws, tasks)
    assert starts[for_v.task_id] is None  # directed at an agent out of service
    assert [starts[t.task_id] for t in tasks if t.assignee is None] == [queries.to_text(ws.clock.now())]
    operator.drain(ws, "w", "op")  # nobody of the type is left in service
    assert set(queries.estimated_starts(ws, tasks).values()) == {None}


def test_directed_and_open_tasks_share_the_free_slots(make_workspace):
    ws = make_workspace([{"agentName": "w", "agentType": "dev", "maxConcurrency": 1}])
    submit(ws, [TaskSpec(queue="dev", title="open", priority=1),
                TaskSpec(queue="dev", title="for w", assignee="w")])
    tasks = queries.list_tasks(ws, "dev", "queued")
    starts = queries.estimated_starts(ws, tasks)
    # one free slot: the first in pick order takes it; the other waits, and with no slot
    # freed in the last hour there is no telling when
    assert [starts[t.task_id] for t in tasks] == [queries.to_text(ws.clock.now()), None]


def test_tasks_verbose_shows_attempts_excluded_agents_and_payload(make_workspace, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # room for every column
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "maxConcurrency": 1},
                         {"agentName": "bob", "agentType": "dev", "maxConcurrency": 1}])
    (task,) = submit(ws, [TaskSpec(queue="dev", title="t", payload={"repo": "x"})])
    claim = worker.claim(ws, "ann")
    worker.fail(ws, task.task_id, claim.token, "boom")
    assert main(["tasks", "--queue", "dev", "--verbose", "--home", str(ws.settings.home)],
                clock=ws.clock) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("1 "))
    assert row.split()[-3:] == ["1/3", "ann", '{"repo":"x"}']  # (none of these cells holds a space)
    assert main(["tasks", "--json", "--home", str(ws.settings.home)], clock=ws.clock) == 0
    backoff_ends = queries.show(ws, task.task_id)[0].not_before
    assert backoff_ends is not None  # a free slot, but it may not start before its backoff ends
    assert f'"estimated_start": "{backoff_ends}"' in capsys.readouterr().out


def test_a_claim_records_that_the_worker_asked_not_that_the_others_were_busy(make_workspace):
    ws = make_workspace()  # ann (2 slots) and bob (1), both idle
    (task,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    worker.claim(ws, "bob")
    (assignment,) = explain(ws, task.task_id)["assignments"]
    decision = assignment["decision"]
    assert decision["via"] == "claim"
    assert [c["agent"] for c in decision["candidates"]] == ["bob"]
    assert decision["passed_over"] == [{"agent": "ann", "why": "not asking: bob claimed work for itself"}]
    assert assignment["why_this_agent"].startswith("bob claimed it")


def test_estimates_of_directed_and_delayed_tasks(make_workspace):
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "maxConcurrency": 1},
                         {"agentName": "bob", "agentType": "dev", "maxConcurrency": 1}])
    submit(ws, [TaskSpec(queue="dev", title="keeps bob busy", assignee="bob")])
    worker.claim(ws, "bob")
    later = submit(ws, [TaskSpec(queue="dev", title="for bob", assignee="bob"),
                        TaskSpec(queue="dev", title="tomorrow",
                                 not_before=ws.clock.now() + timedelta(days=1)),
                        TaskSpec(queue="dev", title="open")])
    tasks = queries.list_tasks(ws, "dev", "queued")
    starts = queries.estimated_starts(ws, tasks)
    now = queries.to_text(ws.clock.now())
    by_title = {t.title: starts[t.task_id] for t in tasks}
    assert by_title["for bob"] is None  # bob is full and no slot freed in the last hour
    assert by_title["open"] == now  # ann's one free slot: the delayed task does not take it
    assert by_title["tomorrow"] == queries.show(ws, later[1].task_id)[0].not_before


@pytest.mark.parametrize("args, message", [
    (["status", "--watch", "--interval", "nan"], "sched: --interval must be a number greater than 0"),
    (["status", "--watch", "--interval", "0"], "sched: --interval must be a number greater than 0"),
    (["status", "--interval", "1"], "sched: --interval goes with --watch"),
    (["run", "--interval", "inf"], "sched: --interval must be at most 86400 seconds (a day), not inf"),
    (["replay", "--verify", "--head"], "sched: give --head or --verify, not both (record the head "
                                       "once verify passed)"),
    (["replay", "--verify", "--since", "5"], "sched: --verify is about the whole log: it takes no --since"),
    (["replay", "--head", "--task", "1", "--until", "3"],
     "sched: --head is about the whole log: it takes no --task, --until"),
    (["status", "--at", "99999"], "sched: --at 99999: the log ends at seq 0"),
])
def test_flags_that_do_not_fit_exit_2_with_one_line(make_workspace, capsys, args, message):
    ws = make_workspace()
    assert main([*args, "--home", str(ws.settings.home)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_status_shows_the_control_files_agents_before_the_first_tick(make_workspace):
    from tests.conftest import DEFAULT_FLEET, write_fleet

    ws = make_workspace()  # nothing recorded yet: no tick, no claim
    doc = queries.status(ws)
    assert {name: a["free"] for name, a in doc["agents"].items()} == {"ann": 2, "bob": 1, "qin": 1}
    assert set(doc["queues"]) == {"dev", "qa"}
    tick(ws)
    write_fleet(ws.settings.home, [*DEFAULT_FLEET, {"agentName": "dee", "agentType": "ops"}])
    assert queries.status(ws)["agents"]["dee"]["free"] == 1  # an edit shows before the next tick
    assert queries.status(ws, at=1)["agents"].keys() == {"ann", "bob", "qin"}  # the past is the log's


def test_listings_never_read_payloads(make_workspace, capsys, monkeypatch):
    from sqlalchemy import event

    monkeypatch.setenv("COLUMNS", "200")
    ws = make_workspace(max_payload_bytes=2_000_000)
    submit(ws, [TaskSpec(queue="dev", title="big", payload="x" * 1_000_000),
                TaskSpec(queue="dev", title="small", payload={"k": 1})])
    statements: list[str] = []
    event.listen(ws.db.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_rest: statements.append(sql))
    driver_read = SqlTransaction._all  # the port's driver-level reads (`rows`) as well
    monkeypatch.setattr(SqlTransaction, "_all", lambda txn, sql, params: (
        statements.append(sql), driver_read(txn, sql, params))[1])
    assert main(["tasks", "--json", "--verbose", "--home", str(ws.settings.home)], clock=ws.clock) == 0
    listed = json.loads(capsys.readouterr().out)["tasks"]
    assert [(t["title"], t["payload_bytes"], "payload" in t) for t in listed] == [
        ("big", 1_000_002, False), ("small", 7, False)]
    reads = [s for s in statements if re.search(r"tasks\.payload\b", s)]  # not payload_bytes
    assert all("tasks.payload_bytes <=" in s or "task_id IN" in s for s in reads), reads
    assert main(["tasks", "--verbose", "--home", str(ws.settings.home)], clock=ws.clock) == 0
    assert "(1000002 bytes)" in capsys.readouterr().out
    reads = [s for s in statements if re.search(r"tasks\.payload\b", s)]
    assert reads and all("task_id IN" in s for s in reads), reads  # the small one's, by id


def test_a_slow_replay_holds_no_read_open_between_its_pages(make_workspace, monkeypatch):
    """`replay --json | less` kept one read open while its reader paused: SQLite could not
    checkpoint its WAL (which grew) until the reader went away (a review)."""
    import sqlite3

    monkeypatch.setattr(queries, "REPLAY_PAGE", 7, raising=False)
    ws = make_workspace()
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(20)])
    tick(ws)
    whole = [(r.seq, r.type) for r in queries.replay(ws)]
    assert [seq for seq, _ in whole] == list(range(1, len(whole) + 1)) and len(whole) > 7 * 2
    stream = queries.replay(ws)
    firsts = [next(stream) for _ in range(10)]  # into its second page, then the reader pauses
    submit(ws, [TaskSpec(queue="dev", title="meanwhile")])
    with sqlite3.connect(ws.settings.db_path) as other:
        busy, _frames, _done = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    rest = list(stream)
    assert [(r.seq, r.type) for r in firsts + rest] == [*whole, (len(whole) + 1, "TaskSubmitted")]
    at = firsts[4].recorded_at  # `until` a time: the events up to it, however the pages fall
    assert [r.seq for r in queries.replay(ws, until=at)] == [r.seq for r in firsts + rest
                                                             if r.recorded_at <= at]


def test_replay_until_a_time_reads_past_an_event_recorded_later(make_workspace):
    """Event times have been taken under the writers' lock since 2026-12-02; before, a
    writer could record an earlier time after a later one. `--until TIME` stopped at the
    first event past it and left out the earlier ones after it."""
    import sqlite3

    ws = make_workspace()
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(4)])
    early, late = "2026-01-01T09:00:00.000000Z", "2026-01-01T11:00:00.000000Z"
    with sqlite3.connect(ws.settings.db_path) as conn:  # (as an older log may hold them)
        conn.execute("UPDATE events SET recorded_at = CASE WHEN seq = 3 THEN ? ELSE ? END", (late, early))
    assert [r.seq for r in queries.replay(ws, until="2026-01-01T10:00:00.000000Z")] == [
        r.seq for r in queries.replay(ws) if r.seq != 3]
