"""Tick and the runner protocol on a real database with a manual clock."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

from eventlog.errors import BadInput, ControlFileError, NotFound, TokenRejected
from eventlog.timeutil import to_text
from projections.tables import TaskRow
from scheduler import worker
from scheduler.reads import queries
from scheduler.rebuild import rebuild_projections
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from tests.conftest import write_fleet

ONE_DEV = [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 1}]
TWO_DEVS = [{"agentName": "ann", "agentType": "dev"}, {"agentName": "bob", "agentType": "dev"}]


@pytest.fixture
def make_workspace(engine_workspace):
    """Every test here runs on each storage engine."""
    return engine_workspace


def add(ws, n=1, **kw):
    return [s.task_id for s in submit(ws, [TaskSpec(queue=kw.pop("queue", "dev"), title=f"t{i}", **kw)
                                           for i in range(n)])]


def events_of(ws, task_id=None):
    return [r.type for r in queries.replay(ws, task_id)]


def test_tick_assigns_and_records_the_fleet_once(make_workspace):
    ws = make_workspace()
    add(ws, 5)
    first = tick(ws)
    assert len(first.assigned) == 3  # ann 2 + bob 1
    assert tick(ws).assigned == []
    assert events_of(ws).count("AgentsConfigured") == 1
    write_fleet(ws.settings.home, [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 4}])
    assert len(tick(ws).assigned) == 2
    assert events_of(ws).count("AgentsConfigured") == 2


def test_dry_run_reports_but_appends_nothing(make_workspace):
    ws = make_workspace()
    add(ws, 2)
    before = len(events_of(ws))
    dry = tick(ws, dry_run=True)
    assert dry.dry_run and len(dry.assigned) == 2
    assert len(events_of(ws)) == before
    assert tick(ws).assigned == dry.assigned


def test_an_invalid_control_file_stops_the_tick_before_any_write(make_workspace):
    ws = make_workspace()
    add(ws, 1)
    before = len(events_of(ws))
    (ws.settings.home / "agent-control.json").write_text("[{")
    with pytest.raises(ControlFileError):
        tick(ws)
    assert len(events_of(ws)) == before


def test_an_assignment_not_started_in_time_goes_back_without_using_an_attempt(make_workspace):
    ws = make_workspace(ONE_DEV, start_deadline_seconds=60)
    (task_id,) = add(ws)
    tick(ws)
    ws.clock.advance(59)
    assert tick(ws).expired == []
    ws.clock.advance(1)
    report = tick(ws)
    assert report.expired == [{"task_id": task_id, "agent": "ann", "reason": "not_started"}]
    assert report.assigned == [{"task_id": task_id, "agent": "ann"}]  # free again, same tick
    task, _ = queries.show(ws, task_id)
    assert (task.status, task.attempt) == ("assigned", 0)


def test_an_agent_that_did_not_start_its_assignment_is_passed_over_for_the_task(make_workspace):
    """An agent whose host or worker is gone took each task back every start deadline
    while it had the most free slots: the task came straight back to it, for ever. It
    now joins the task's `excluded`, so the task goes to another agent of the type; the
    agent that never starts still gets a new task, once each."""
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "maxConcurrency": 5},
                         {"agentName": "bob", "agentType": "dev", "maxConcurrency": 1}],
                        start_deadline_seconds=60)
    (first,) = add(ws)
    assert tick(ws).assigned == [{"task_id": first, "agent": "ann"}]  # the most free slots
    ws.clock.advance(60)
    report = tick(ws)
    assert report.expired == [{"task_id": first, "agent": "ann", "reason": "not_started"}]
    assert report.assigned == [{"task_id": first, "agent": "bob"}]  # not back to ann
    task, _ = queries.show(ws, first)
    assert (task.status, task.attempt, task.excluded) == ("assigned", 0, ("ann",))
    (second,) = add(ws)
    assert tick(ws).assigned == [{"task_id": second, "agent": "ann"}]
    alone = make_workspace(ONE_DEV, start_deadline_seconds=60)  # the only agent: it again
    (only,) = add(alone)
    tick(alone)
    alone.clock.advance(60)
    assert tick(alone).assigned == [{"task_id": only, "agent": "ann"}]


def test_an_expired_lease_is_retried_elsewhere_then_dead_lettered(make_workspace):
    ws = make_workspace(TWO_DEVS, lease_seconds=30, backoff_base_seconds=10)
    (task_id,) = add(ws, max_attempts=2)
    tick(ws)
    claim = worker.claim(ws, "ann")
    assert claim is not None and claim.task.task_id == task_id
    ws.clock.advance(30)
    report = tick(ws)
    assert report.retried == [task_id] and report.assigned == []  # backing off
    retry_at = queries.show(ws, task_id)[0].not_before
    assert to_text(ws.clock.now()) <= retry_at < to_text(ws.clock.now() + timedelta(seconds=10))
    ws.clock.advance(10)
    assert tick(ws).assigned == [{"task_id": task_id, "agent": "bob"}]  # ann failed it
    second = worker.claim(ws, "bob")
    assert second is not None and second.attempt == 2
    ws.clock.advance(30)
    report = tick(ws)
    assert report.dead_lettered == [task_id]
    task, history = queries.show(ws, task_id)
    assert task.status == "dead" and task.excluded == ("ann", "bob")
    dead = json.loads(history[-1].data)
    assert dead["errors"] == ["lease expired", "lease expired"]


def test_heartbeats_keep_the_lease(make_workspace):
    ws = make_workspace(ONE_DEV, lease_seconds=30)
    add(ws)
    claim = worker.claim(ws, "ann")
    for _ in range(5):
        ws.clock.advance(20)
        worker.heartbeat(ws, claim.task.task_id, claim.token)
        assert tick(ws).expired == []
    worker.complete(ws, claim.task.task_id, claim.token, {"ok": True})
    assert queries.show(ws, claim.task.task_id)[0].status == "succeeded"


def test_wrong_stale_and_expired_tokens_are_refused_and_append_nothing(make_workspace):
    ws = make_workspace(ONE_DEV, lease_seconds=30, backoff_base_seconds=0)
    (task_id,) = add(ws)
    claim = worker.claim(ws, "ann")
    count = len(events_of(ws))
    with pytest.raises(TokenRejected):
        worker.heartbeat(ws, task_id, "not-the-token")
    ws.clock.advance(30)
    for call in (lambda: worker.heartbeat(ws, task_id, claim.token),
                 lambda: worker.complete(ws, task_id, claim.token),
                 lambda: worker.fail(ws, task_id, claim.token, "late")):
        with pytest.raises(TokenRejected, match="expired"):
            call()
    assert len(events_of(ws)) == count
    tick(ws)  # expires the lease and reassigns
    fresh = worker.claim(ws, "ann")
    # the stale attempt's token: the refusal says what became of its attempt
    with pytest.raises(TokenRejected, match=r"^task 1: the token's attempt 1 already ended \(lease expired "
                                            r"on ann, at .*\); nothing recorded \(task is running\)$"):
        worker.complete(ws, task_id, claim.token)
    worker.fail(ws, task_id, fresh.token, "boom")
    with pytest.raises(TokenRejected, match=r"attempt 2 already ended \(failed on ann: reported: boom, "):
        worker.fail(ws, task_id, fresh.token, "boom")  # sent again: recorded once
    third = worker.claim(ws, "ann")
    worker.complete(ws, task_id, third.token)
    with pytest.raises(TokenRejected,
                       match=r"attempt 3 already ended \(succeeded on ann, .*\(task is succeeded\)$"):
        worker.complete(ws, task_id, third.token)  # once done, the token is spent
    with pytest.raises(TokenRejected, match="the token is not that of any of its attempts"):
        worker.heartbeat(ws, task_id, "not-the-token")


def test_claim_prefers_the_task_assigned_to_it(make_workspace):
    ws = make_workspace(ONE_DEV)
    low, high = add(ws, 1, priority=0) + add(ws, 1, priority=9)
    tick(ws)  # assigns `high` to ann
    claim = worker.claim(ws, "ann")
    assert claim.task.task_id == high
    assert worker.claim(ws, "ann") is None  # full: one slot, running
    assert queries.show(ws, low)[0].status == "queued"


def test_claim_assigns_and_starts_in_one_go_and_respects_capacity(make_workspace):
    ws = make_workspace()  # ann 2, bob 1
    add(ws, 4)
    claims = [worker.claim(ws, "bob"), worker.claim(ws, "bob")]
    assert claims[0] is not None and claims[1] is None
    assert events_of(ws, claims[0].task.task_id)[-2:] == ["TaskAssigned", "TaskStarted"]


def test_claim_by_an_unknown_agent_is_not_found(make_workspace):
    ws = make_workspace()
    with pytest.raises(NotFound, match=r"^no agent 'zed' in .*agent-control\.json$"):
        worker.claim(ws, "zed")


def test_fail_retries_then_dead_letters_and_no_retry_is_final(make_workspace):
    ws = make_workspace(TWO_DEVS, backoff_base_seconds=0)
    first, second = add(ws, 2, max_attempts=2)
    c1 = worker.claim(ws, "ann")
    assert c1.task.task_id == first
    assert worker.fail(ws, first, c1.token, "boom") == "queued"
    c2 = worker.claim(ws, "bob")
    assert c2.task.task_id == first and c2.attempt == 2
    assert worker.fail(ws, first, c2.token, "nope", retry=False) == "dead"
    assert queries.show(ws, second)[0].status == "queued"
    status = queries.status(ws)
    assert status["queues"]["dev"]["dead"] == 1 and status["queues"]["dev"]["queued"] == 1


def test_submit_validates_against_the_fleet(make_workspace):
    ws = make_workspace()
    with pytest.raises(BadInput, match=r"no agent serves queue 'ops' \(known queues: dev, qa\)"):
        add(ws, queue="ops")
    with pytest.raises(BadInput, match="assignee 'qin' serves queue 'qa'"):
        add(ws, assignee="qin")
    assert events_of(ws) == []


def test_idempotency_keys_return_the_first_task(make_workspace):
    ws = make_workspace()
    first = submit(ws, [TaskSpec(queue="dev", title="x", idempotency_key="k1")])
    again = submit(ws, [TaskSpec(queue="dev", title="y", idempotency_key="k1"),
                        TaskSpec(queue="dev", title="z", idempotency_key="k2"),
                        TaskSpec(queue="dev", title="w", idempotency_key="k2")])
    assert [s.task_id for s in again] == [first[0].task_id, 2, 2]
    assert [s.created for s in again] == [False, True, False]
    assert events_of(ws).count("TaskSubmitted") == 2


def test_directed_tasks_at_a_busy_agent_do_not_block_the_others(make_workspace):
    ws = make_workspace(TWO_DEVS)
    add(ws, 1, priority=5)
    tick(ws)
    busy = queries.status(ws)["agents"]
    holder = next(name for name, a in busy.items() if a["assigned"])
    directed = add(ws, 3, priority=9, assignee=holder)
    (plain,) = add(ws, 1, priority=0)
    report = tick(ws)
    assert [a["task_id"] for a in report.assigned] == [plain]
    assert all(queries.show(ws, t)[0].status == "queued" for t in directed)


def test_show_of_an_unknown_task(make_workspace):
    with pytest.raises(NotFound):
        queries.show(make_workspace(), 42)


def test_status_counts_and_verify(make_workspace):
    ws = make_workspace()
    add(ws, 3)
    add(ws, 1, queue="qa")
    tick(ws)
    doc = queries.status(ws)
    assert doc["queues"]["dev"]["assigned"] == 3 and doc["queues"]["qa"]["assigned"] == 1
    assert doc["agents"]["ann"] == {"type": "dev", "capacity": 2, "enabled": True, "configured": True,
                                    "assigned": 2, "running": 0, "free": 0, "out_of_service": None,
                                    "capabilities": [], "weight": 1.0, "hours": []}
    assert doc["last_seq"] == len(events_of(ws))
    assert queries.verify_log(ws).ok


def test_a_task_excluded_from_the_free_agent_does_not_starve_the_rest(make_workspace):
    ws = make_workspace(TWO_DEVS)
    add(ws, 1, priority=5)
    worker.claim(ws, "ann")  # ann runs it
    (top,) = add(ws, 1, priority=9)
    failing = worker.claim(ws, "bob")
    assert failing.task.task_id == top
    worker.fail(ws, top, failing.token, "bob cannot do this")
    (plain,) = add(ws, 1, priority=0)
    # bob is free but excluded from `top`, ann is busy: `top` waits for ann, `plain` goes to bob
    assert tick(ws).assigned == [{"task_id": plain, "agent": "bob"}]


def test_verify_names_the_differing_fields_of_a_tampered_projection(make_workspace):
    ws = make_workspace()
    (task_id,) = add(ws, 1, priority=4)
    with ws.db.write() as txn:
        txn.session.execute(update(TaskRow).where(TaskRow.task_id == task_id).values(priority=99))
    result = queries.verify_log(ws)
    assert not result.ok
    assert result.problems == [f"task {task_id}: priority: log gives 4, table has 99"]
    rebuild_projections(ws)
    assert queries.verify_log(ws).ok
    assert queries.show(ws, task_id)[0].priority == 4


def test_pause_stops_assignment_but_not_expiry_and_resume_restarts_it(make_workspace):
    from scheduler import operator

    ws = make_workspace(ONE_DEV, lease_seconds=30, backoff_base_seconds=0)
    first, _ = add(ws, 2)
    claim = worker.claim(ws, "ann")
    assert operator.pause(ws, "oncall", "deploying") is True
    assert operator.pause(ws, "someone else") is False  # already paused: nothing appended
    ws.clock.advance(30)
    report = tick(ws)
    assert report.expired == [{"task_id": claim.task.task_id, "agent": "ann", "reason": "lease_expired"}]
    assert report.assigned == [] and report.paused["by"] == "oncall"
    assert queries.status(ws)["paused"] == {"by": "oncall", "reason": "deploying",
                                            "at": "2026-01-01T00:00:00.000000Z"}
    assert worker.claim(ws, "ann") is None  # a paused scheduler starts nothing new
    assert operator.resume(ws, "oncall") is True
    assert queries.status(ws)["paused"] is None
    assert tick(ws).assigned == [{"task_id": first, "agent": "ann"}]
    assert [r.type for r in queries.replay(ws)].count("SchedulerPaused") == 1
    assert queries.verify_log(ws).ok


def test_a_stop_file_pauses_while_it_exists(make_workspace):
    ws = make_workspace(ONE_DEV)
    (task_id,) = add(ws)
    ws.stop_file.write_text("")
    report = tick(ws)
    assert report.assigned == [] and report.paused["by"] == "stop file"
    assert queries.status(ws)["paused"]["by"] == "stop file"
    ws.stop_file.unlink()
    assert tick(ws).assigned == [{"task_id": task_id, "agent": "ann"}]


def test_projection_tables_of_another_shape_are_rebuilt_from_the_log(make_workspace):
    from scheduler.config.settings import load_settings
    from scheduler.workspace import Workspace

    ws = make_workspace()
    add(ws, 3)
    tick(ws)
    expected = queries.status(ws)
    with ws.db.write() as txn:  # what an older sched left behind
        conn = txn.session.connection()
        conn.exec_driver_sql("ALTER TABLE tasks DROP COLUMN cancelling")
        conn.exec_driver_sql("UPDATE projection_schema SET version = 0")
    ws.close()
    reopened = Workspace(load_settings({}, {"home": ws.settings.home}).settings, clock=ws.clock)
    assert queries.status(reopened) == expected
    assert queries.verify_log(reopened).ok
    reopened.close()


def test_status_at_a_past_seq_or_time_replays_the_log(make_workspace):
    ws = make_workspace()
    add(ws, 2)
    before_any_tick = queries.status(ws, at=2)
    assert before_any_tick["agents"] == {}  # the log had no fleet yet; the present status
    assert set(queries.status(ws)["agents"]) == {"ann", "bob", "qin"}  # shows the control file
    worker.claim(ws, "qin")  # records the control file (and finds no qa work): from here
    # on past and present agree
    then = queries.status(ws)
    ws.clock.advance(60)
    tick(ws)
    now = queries.status(ws)
    assert queries.status(ws, at=then["last_seq"]) == then
    assert queries.status(ws, at=now["last_seq"]) == now
    moment = queries.parse_position("2026-01-01T00:00:30+00:00", "--at")
    assert queries.status(ws, at=moment)["queues"]["dev"]["queued"] == 2


def test_a_nul_in_text_is_refused_and_in_a_payload_kept_on_every_engine(make_workspace):
    ws = make_workspace()
    with pytest.raises(ValueError, match="NUL"):  # BadInput, or the spec's validation
        submit(ws, [TaskSpec(queue="dev", title="a\x00b")])
    assert queries.list_tasks(ws) == []  # nothing appended
    (result,) = submit(ws, [TaskSpec(queue="dev", title="t", payload={"s": "a\x00b"})])
    assert json.loads(queries.show(ws, result.task_id)[0].payload) == {"s": "a\x00b"}


def test_a_take_back_after_a_local_stop_keeps_the_servers_time(make_workspace, monkeypatch):
    """After stopping an attempt's processes here, the time of the events that follow
    moved to this host's clock when it was later: a host whose clock ran an hour ahead
    of the PostgreSQL server's recorded the take-back an hour ahead, and, event time
    never running backwards, every later writer on every host with it. It moves on by
    what this host's lease clock counted during the stop, on the transaction's own time."""
    from scheduler import takeback
    from scheduler.clock import SystemClock

    class AnHourAhead(SystemClock):
        def now(self):
            return super().now() + timedelta(hours=1)

    ws = make_workspace(ONE_DEV)
    (task_id,) = add(ws)
    ws.clock = AnHourAhead()
    monkeypatch.setattr(takeback, "runs_here", lambda task, host: True)
    monkeypatch.setattr(takeback.containment, "stop_attempt", lambda ref: None)
    with ws.write(commit=False) as recorder:
        before = recorder.now
        task = recorder.views.get_task(task_id)
        assert takeback.stop_if_local(ws, recorder, task, ws.settings.host_name)
        assert timedelta(0) <= recorder.now - before < timedelta(minutes=1)
