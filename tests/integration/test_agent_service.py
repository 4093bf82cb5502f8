"""Taking an agent out of service: drain (no new work, running attempts finish), evict
(its attempts are taken back now and retried elsewhere), restore; and an agent
disabled in the control file gives back the assignments it has not started."""

from __future__ import annotations

from datetime import timedelta

import pytest

from eventlog.errors import BadInput, TokenRejected
from scheduler import operator, worker
from scheduler.reads import queries
from scheduler.reads.metrics import metrics
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from tests.conftest import write_fleet

PULL_FLEET = [
    {"agentName": "ann", "agentType": "dev", "maxConcurrency": 2},
    {"agentName": "bob", "agentType": "dev", "maxConcurrency": 2},
]


def task(ws, task_id):
    return queries.show(ws, task_id)[0]


def events_of(ws, task_id):
    return [rec.type for rec in queries.show(ws, task_id)[1]]


@pytest.fixture
def ws(make_workspace):
    return make_workspace(PULL_FLEET)


def test_a_drained_agent_gets_no_new_work_and_its_unstarted_assignments_go_back(ws):
    ids = [s.task_id for s in submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(4)])]
    tick(ws)  # two each
    running = worker.claim(ws, "ann")
    assert running is not None
    change = operator.drain(ws, "ann", "alice", "maintenance")
    assert change.changed and change.out_of_service == "drained"
    assert len(change.released) == 1  # ann's second assignment, not started
    released = task(ws, change.released[0])
    assert released.status == "queued" and released.attempt == 0  # no attempt used
    # ann's running attempt goes on and may complete
    assert task(ws, running.task.task_id).status == "running"
    worker.complete(ws, running.task.task_id, running.token)
    # no new work for ann: neither from a tick nor from its own claim
    ws.clock.advance(1)
    report = tick(ws)
    assert {a["agent"] for a in report.assigned} <= {"bob"}
    assert worker.claim(ws, "ann") is None
    assert queries.status(ws)["agents"]["ann"]["free"] == 0
    # draining again changes nothing; restore puts it back to work
    assert not operator.drain(ws, "ann", "alice").changed
    assert operator.restore(ws, "ann", "alice").changed
    ws.clock.advance(1)
    tick(ws)
    assert any(task(ws, i).agent == "ann" for i in ids if task(ws, i).status == "assigned")


def test_evict_takes_back_running_and_assigned_attempts_without_using_them_up(ws):
    (once,) = submit(ws, [TaskSpec(queue="dev", title="once", max_attempts=1)])
    claimed = worker.claim(ws, "ann")
    assert claimed is not None and claimed.task.task_id == once.task_id
    (directed,) = submit(ws, [TaskSpec(queue="dev", title="for ann", assignee="ann")])
    tick(ws)
    assert task(ws, directed.task_id).status == "assigned"
    change = operator.evict(ws, "ann", "alice", "bad model")
    assert change.changed and change.out_of_service == "evicted"
    assert (change.taken_back, change.released) == ([once.task_id], [directed.task_id])
    assert change.stopped == []  # a pull worker's attempt: nothing of it runs here to stop
    evicted = task(ws, once.task_id)
    assert evicted.status == "queued"  # max_attempts 1, yet not dead: the attempt did not count
    assert evicted.last_error == "ann was evicted by alice: bad model"
    assert "ann" in evicted.excluded
    assert events_of(ws, once.task_id)[-2:] == ["TaskFailed", "TaskRequeued"]
    # the old token is dead: the evicted runner learns it at its next heartbeat
    with pytest.raises(TokenRejected):
        worker.heartbeat(ws, once.task_id, claimed.token)
    ws.clock.advance(1)
    tick(ws)
    assert task(ws, once.task_id).agent == "bob"  # retried on another agent
    assert task(ws, directed.task_id).status == "queued"  # directed at ann: it waits for her
    figures = metrics(ws, timedelta(hours=1))["overall"]  # the evicted attempt: its own figure
    assert (figures["evicted"], figures["interrupted"], figures["failed"]) == (1, 0, 0)


def test_service_changes_are_events_that_replay_and_verify(ws):
    operator.drain(ws, "bob", "alice")
    operator.evict(ws, "bob", "alice")
    operator.restore(ws, "bob", "carol")
    kinds = [rec.type for rec in queries.replay(ws)]
    assert kinds[-3:] == ["AgentDrained", "AgentEvicted", "AgentRestored"]
    assert queries.verify_log(ws).ok
    assert queries.status(ws, at=len(kinds) - 1)["agents"]["bob"]["free"] == 0  # evicted then
    assert queries.status(ws)["agents"]["bob"]["free"] == 2


def test_an_unknown_agent_is_bad_input(ws):
    with pytest.raises(BadInput, match="unknown agent 'zed'"):
        operator.drain(ws, "zed", "alice")


def test_disabling_an_agent_releases_its_unstarted_assignments_at_the_next_tick(ws):
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(2)])
    tick(ws)
    on_ann = [t.task_id for t in queries.list_tasks(ws) if t.agent == "ann"]
    assert on_ann
    write_fleet(ws.settings.home, [{**PULL_FLEET[0], "enabled": False}, PULL_FLEET[1]])
    ws.clock.advance(1)
    report = tick(ws)
    assert sorted(r["task_id"] for r in report.released) == sorted(on_ann)
    assert all(task(ws, i).agent != "ann" for i in on_ann)
    requeued = queries.show(ws, on_ann[0])[1][-2].event
    assert requeued.reason == "released" and "disabled" in (requeued.detail or "")


def test_a_disabled_pull_worker_cannot_claim_what_was_assigned_to_it_before(ws):
    """Its claim started the task the tick had given it while it was enabled: a disabled
    agent ran work. Its claim now sends the assignment back, as a tick would."""
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(2)])
    tick(ws)
    on_ann = [t.task_id for t in queries.list_tasks(ws) if t.agent == "ann"]
    assert on_ann
    write_fleet(ws.settings.home, [{**PULL_FLEET[0], "enabled": False}, PULL_FLEET[1]])
    assert worker.claim(ws, "ann") is None
    assert all(task(ws, i).status == "queued" and task(ws, i).agent is None for i in on_ann)
    assert queries.status(ws)["agents"]["ann"]["running"] == 0
    assert "TaskStarted" not in events_of(ws, on_ann[0])


def test_an_agent_given_another_type_gives_back_what_it_holds_of_its_old_queue(make_workspace):
    """It kept its assignment from `dev` and its claim ran it as a `qa` agent, in the
    slot of a `qa` task."""
    fleet = [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 1},
             {"agentName": "qin", "agentType": "qa", "maxConcurrency": 1}]
    ws = make_workspace(fleet)
    specs = [TaskSpec(queue="dev", title="t"), TaskSpec(queue="qa", title="q")]
    held, _ = [s.task_id for s in submit(ws, specs)]
    tick(ws)
    assert task(ws, held).agent == "ann"
    (waiting,) = [s.task_id for s in submit(ws, [TaskSpec(queue="qa", title="later")])]
    write_fleet(ws.settings.home, [{**fleet[0], "agentType": "qa"}, fleet[1]])
    claimed = worker.claim(ws, "ann")  # (the claim records the new control file)
    assert claimed is not None and claimed.task.task_id == waiting
    assert (task(ws, held).status, task(ws, held).agent) == ("queued", None)
    requeued = queries.show(ws, held)[1][-1].event
    assert requeued.reason == "released" and requeued.detail == "ann now serves queue qa"


def test_a_tick_that_records_an_agents_new_type_reports_what_it_sent_back(make_workspace):
    fleet = [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 1},
             {"agentName": "qin", "agentType": "qa", "maxConcurrency": 1}]
    ws = make_workspace(fleet)
    (held,) = [s.task_id for s in submit(ws, [TaskSpec(queue="dev", title="t")])]
    tick(ws)
    write_fleet(ws.settings.home, [{**fleet[0], "agentType": "qa"}, fleet[1]])
    report = tick(ws)
    assert report.config_recorded
    assert report.released == [{"task_id": held, "agent": "ann", "why": "now serves queue qa"}]


def test_the_agent_list_shows_an_agent_out_of_service_with_no_free_slot(ws):
    from scheduler.usecases import fleet

    operator.drain(ws, "ann", "alice")
    listed = fleet.list_agents(ws).agents
    assert (listed["ann"]["out_of_service"], listed["ann"]["free"]) == ("drained", 0)
    assert (listed["bob"]["out_of_service"], listed["bob"]["free"]) == (None, 2)
    operator.restore(ws, "ann", "alice")
    assert fleet.list_agents(ws).agents["ann"]["free"] == 2
