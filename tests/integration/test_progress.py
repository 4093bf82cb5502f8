"""Agents report progress: recorded (rate-limited), shown with the task, posted as a
webhook, cleared when the next attempt starts; bad reports change nothing."""

from __future__ import annotations

import pytest

from eventlog.errors import BadInput
from scheduler import worker
from scheduler.daemon import webhooks
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.worker import Progress


@pytest.fixture
def running(make_workspace):
    ws = make_workspace(progress_min_interval_seconds=5,
                        webhooks=[{"url": "http://127.0.0.1:9/hook", "events": ["task.progress"]}])
    webhooks.collect(ws)  # places the webhook cursor at the end of the log
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="long job")])
    claimed = worker.claim(ws, "ann")
    assert claimed is not None
    return ws, sub.task_id, claimed.token


def test_progress_is_recorded_shown_and_rate_limited(running):
    ws, task_id, token = running
    assert worker.progress(ws, task_id, token, Progress(10, "cloning"))
    task = queries.show(ws, task_id)[0]
    assert (task.progress_percent, task.progress_message) == (10, "cloning")
    # a chatty agent: the next report within 5 s is answered, not recorded
    ws.clock.advance(4)
    assert not worker.progress(ws, task_id, token, Progress(11, "still cloning"))
    beat = worker.heartbeat(ws, task_id, token, Progress(12))
    assert beat.progress_recorded is False and not beat.cancel
    assert queries.show(ws, task_id)[0].progress_percent == 10
    ws.clock.advance(1)
    assert worker.heartbeat(ws, task_id, token, Progress(50, "building")).progress_recorded
    kinds = [rec.type for rec in queries.show(ws, task_id)[1]]
    assert kinds.count("TaskProgressed") == 2
    assert queries.verify_log(ws).ok
    assert webhooks.collect(ws) == 2  # each recorded report is a task.progress webhook


def test_a_new_attempt_starts_without_the_old_progress(running):
    ws, task_id, token = running
    worker.progress(ws, task_id, token, Progress(90))
    worker.fail(ws, task_id, token, "flaky")
    ws.clock.advance(3600)
    claimed = worker.claim(ws, "bob") or worker.claim(ws, "ann")
    assert claimed is not None and claimed.task.task_id == task_id
    assert claimed.task.progress_percent is None and claimed.task.progress_message is None


@pytest.mark.parametrize("report, problem", [
    (Progress(), "--percent or --message"),
    (Progress(101), "from 0 to 100"),
    (Progress(float("nan")), "from 0 to 100"),
    (Progress(None, "bad \udc80 byte"), "not valid Unicode"),
    (Progress(None, "x" * 5000), "over the limit of 4096"),
])
def test_a_bad_report_is_refused_and_nothing_is_appended(running, report, problem):
    ws, task_id, token = running
    before = len(list(queries.replay(ws)))
    with pytest.raises(BadInput, match=problem):
        worker.progress(ws, task_id, token, report)
    with pytest.raises(BadInput, match=problem):
        worker.heartbeat(ws, task_id, token, report)
    assert len(list(queries.replay(ws))) == before
