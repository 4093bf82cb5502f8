"""Due times on a real database with a manual clock: the tick finds a task due soon
among a backlog of more urgent-looking work, records a missed due time once, and
`tasks`, `health` and the webhooks say so."""

from __future__ import annotations

import json
from datetime import timedelta

from cli.dashboard import footer
from eventlog.timeutil import from_text, to_text
from scheduler.daemon import webhooks
from scheduler.reads import queries
from scheduler.reads.dashboard import snapshot
from scheduler.reads.health import health
from scheduler.reads.outbox import outbox
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick

ONE_DEV = [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 1}]
HOUR = 3600


def test_a_task_due_soon_is_picked_before_a_backlog_of_higher_priority(make_workspace):
    ws = make_workspace(ONE_DEV, age_boost_seconds=0, due_boost_seconds=HOUR, due_boost_max=10)
    now = ws.clock.now()
    submit(ws, [TaskSpec(queue="dev", title=f"p{i}", priority=5) for i in range(60)])
    (due,) = submit(ws, [TaskSpec(queue="dev", title="due", priority=0,
                                  due=now + timedelta(seconds=0.3 * HOUR))])
    # 0.3 h to go: 7 points, 0 + 7 > 5, though it is not among the 60 best by base priority
    assert tick(ws).assigned == [{"task_id": due.task_id, "agent": "ann"}]
    (assigned,) = [r for r in queries.replay(ws, due.task_id) if r.type == "TaskAssigned"]
    assert json.loads(assigned.data)["decision"]["effective_priority"] == 7


def test_a_missed_due_time_is_recorded_once_flagged_and_posted_once(make_workspace):
    ws = make_workspace(ONE_DEV, webhooks=[{"url": "http://127.0.0.1:9/hook",
                                            "events": ["task.due_missed"]}])
    webhooks.collect(ws)  # places the cursor: what follows is sent
    now = ws.clock.now()
    (busy,) = submit(ws, [TaskSpec(queue="dev", title="busy", priority=9)])
    (late,) = submit(ws, [TaskSpec(queue="dev", title="late", due=now + timedelta(minutes=5))])
    (fine,) = submit(ws, [TaskSpec(queue="dev", title="fine", due=now + timedelta(hours=5))])
    tick(ws)  # ann takes "busy"; the others wait
    assert [c["status"] for c in health(ws)["checks"] if c["name"] == "due"] == ["healthy"]
    ws.clock.advance(600)
    first, second = tick(ws), tick(ws)
    assert first.due_missed == [late.task_id] and second.due_missed == []
    missed = [r for r in queries.replay(ws) if r.type == "TaskDueMissed"]
    assert [json.loads(r.data)["task_id"] for r in missed] == [late.task_id]
    assert json.loads(missed[0].data)["status"] == "queued"
    listed = queries.list_tasks(ws)
    flags = queries.pick_figures(ws, listed)
    assert {t.task_id: flags[t.task_id]["overdue"] for t in listed} == {
        busy.task_id: False, late.task_id: True, fine.task_id: False}
    late_view = next(t for t in listed if t.task_id == late.task_id)
    assert late_view.due_missed_at == to_text(ws.clock.now())
    (check,) = [c for c in health(ws)["checks"] if c["name"] == "due"]
    by = (ws.clock.now() - from_text(late_view.due)).total_seconds()
    assert (check["status"], check["saw"]) == ("degraded", f"1 open task(s) past their due time, the most "
                                                           f"overdue by {by:.0f} s (due {late_view.due})")
    shown = snapshot(ws)  # the dashboard flags it too
    assert shown["overdue"] == {"count": 1, "earliest_due": late_view.due}
    assert "OVERDUE: 1 open task(s)" in footer(shown).plain
    assert webhooks.collect(ws) == 1
    (row,) = outbox(ws)
    assert row["event"] == "task.due_missed"
    assert row["body"]["data"]["task_id"] == late.task_id
    assert row["body"]["task"] == {"queue": "dev", "title": "late"}
    assert webhooks.collect(ws) == 0  # once
    assert queries.verify_log(ws).ok


def test_a_task_done_before_its_due_time_is_never_flagged(make_workspace):
    from scheduler import worker

    ws = make_workspace(ONE_DEV)
    (task,) = submit(ws, [TaskSpec(queue="dev", title="t", due=ws.clock.now() + timedelta(minutes=5))])
    claimed = worker.claim(ws, "ann")
    assert claimed is not None
    worker.complete(ws, task.task_id, claimed.token)
    ws.clock.advance(3600)
    assert tick(ws).due_missed == []
    (check,) = [c for c in health(ws)["checks"] if c["name"] == "due"]
    assert check["status"] == "healthy"
    assert queries.pick_figures(ws, queries.list_tasks(ws))[task.task_id]["overdue"] is False
