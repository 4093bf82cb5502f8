"""The pure folds: each event moves a task and the agents' load as the lifecycle says."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.errors import CorruptLog
from eventlog.events import (
    AgentRecord,
    AgentsConfigured,
    LeaseExpired,
    LeaseRenewed,
    TaskAssigned,
    TaskDeadLettered,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
)
from eventlog.store import InMemoryStore
from projections.apply import fold
from projections.fold import evolve_task, load_changes
from projections.views import AgentView, TaskView, evolve

T0 = datetime(2026, 3, 1, tzinfo=UTC)
FLEET = AgentsConfigured(agents=(AgentRecord(name="a", type="dev", capacity=2),
                                 AgentRecord(name="b", type="dev", capacity=1)),
                         content_hash="h1", source="x")


def project(*events):
    store = InMemoryStore()
    store.append(events, T0)
    return fold(store.read())


def submitted(task_id=1, **kw):
    return TaskSubmitted(task_id=task_id, queue="dev", title="t", **kw)


def assigned(task_id=1, agent="a", attempt=1):
    return TaskAssigned(task_id=task_id, agent=agent, attempt=attempt, start_by=T0 + timedelta(minutes=2))


def started(task_id=1, agent="a", attempt=1):
    return TaskStarted(task_id=task_id, agent=agent, attempt=attempt, token_hash="h",
                       lease_expires_at=T0 + timedelta(minutes=5))


def test_submit_queues_the_task():
    state = project(FLEET, submitted(priority=3, payload={"k": [1]}))
    task = state.tasks[1]
    assert (task.status, task.priority, task.attempt, task.payload) == ("queued", 3, 0, '{"k":[1]}')
    assert state.counts == {("dev", "queued"): 1}


def test_assignment_and_start_move_load_between_counters():
    state = project(FLEET, submitted(), assigned())
    assert state.tasks[1].status == "assigned" and state.agents["a"].assigned == 1
    state = project(FLEET, submitted(), assigned(), started())
    assert state.tasks[1].status == "running"
    assert (state.agents["a"].assigned, state.agents["a"].running, state.agents["a"].free) == (0, 1, 1)
    assert state.tasks[1].attempt == 1 and state.tasks[1].token_hash == "h"


def test_renewal_moves_the_deadline_only():
    later = T0 + timedelta(hours=1)
    state = project(FLEET, submitted(), assigned(), started(),
                    LeaseRenewed(task_id=1, attempt=1, lease_expires_at=later))
    assert state.tasks[1].deadline == "2026-03-01T01:00:00.000000Z"
    assert state.tasks[1].status == "running"


def test_only_a_change_of_slot_moves_load():
    """A heartbeat or a progress report keeps the agent's slot as it was: no load moves,
    so the agent is neither read nor written for it."""
    queued = evolve_task(None, submitted(), 1, "t")
    held = evolve_task(queued, assigned(), 2, "t")
    running = evolve_task(held, started(), 3, "t")
    renewed = evolve_task(running, LeaseRenewed(task_id=1, attempt=1, lease_expires_at=T0), 4, "t")
    done = evolve_task(renewed, TaskSucceeded(task_id=1, agent="a", attempt=1), 5, "t")
    assert load_changes(None, queued) == [] and load_changes(queued, held) == [("a", "assigned", 1)]
    assert load_changes(held, running) == [("a", "assigned", -1), ("a", "running", 1)]
    assert load_changes(running, renewed) == []
    assert load_changes(renewed, done) == [("a", "running", -1)]


def test_success_frees_the_slot():
    state = project(FLEET, submitted(), assigned(), started(),
                    TaskSucceeded(task_id=1, agent="a", attempt=1))
    assert state.tasks[1].status == "succeeded" and state.agents["a"].load == 0
    assert state.counts == {("dev", "succeeded"): 1}


def test_failure_then_requeue_excludes_the_agent_and_keeps_the_attempt():
    state = project(FLEET, submitted(), assigned(), started(),
                    TaskFailed(task_id=1, agent="a", attempt=1, reason="reported", error="boom"),
                    TaskRequeued(task_id=1, reason="failed"))
    task = state.tasks[1]
    assert (task.status, task.attempt, task.excluded, task.last_error) == ("queued", 1, ("a",), "boom")
    assert state.agents["a"].load == 0


def test_expiry_then_dead_letter():
    state = project(FLEET, submitted(max_attempts=1), assigned(), started(),
                    LeaseExpired(task_id=1, agent="a", attempt=1),
                    TaskDeadLettered(task_id=1, reason="attempts used up", errors=("lease expired",)))
    assert state.tasks[1].status == "dead" and state.agents["a"].load == 0
    assert state.counts == {("dev", "dead"): 1}


def test_only_the_agents_own_failures_count_in_its_record_of_a_task_type():
    """The success records (affinity) count an attempt's end against its agent, except a
    cancel and an eviction: neither was the agent's doing."""
    state = project(FLEET, submitted(task_type="build"), assigned(), started(),
                    TaskFailed(task_id=1, agent="a", attempt=1, reason="evicted", error="drained at once"),
                    TaskRequeued(task_id=1, reason="evicted"), assigned(agent="b", attempt=2),
                    started(agent="b", attempt=2),
                    TaskFailed(task_id=1, agent="b", attempt=2, reason="exit_code", error="exit 1"))
    assert state.records == {("b", "build"): (0, 1)}


def test_a_task_waiting_on_two_dead_parents_stays_doomed_when_one_is_requeued():
    """Its doom moves to the parent still dead; it was cleared, and the task stayed
    blocked for good on a dead parent, which the tick no longer saw."""
    state = project(FLEET, submitted(1), submitted(2), submitted(3, after=(1, 2)),
                    TaskDeadLettered(task_id=1, reason="r"), TaskDeadLettered(task_id=2, reason="r"),
                    TaskRequeued(task_id=1, reason="operator"))
    child = state.tasks[3]
    assert (child.status, child.waiting_on, child.doomed_by) == ("blocked", (1, 2), 2)


def test_not_started_requeue_uses_no_attempt_and_passes_the_agent_over():
    state = project(FLEET, submitted(), assigned(), TaskRequeued(task_id=1, reason="not_started"))
    assert (state.tasks[1].status, state.tasks[1].attempt, state.tasks[1].excluded) == ("queued", 0, ("a",))
    assert state.agents["a"].assigned == 0
    released = project(FLEET, submitted(), assigned(), TaskRequeued(task_id=1, reason="released"))
    assert released.tasks[1].excluded == ()  # it left service: it did not fail to start it


def test_reconfiguring_keeps_load_and_retires_missing_agents():
    smaller = AgentsConfigured(agents=(AgentRecord(name="a", type="dev", capacity=1),),
                               content_hash="h2", source="x")
    state = project(FLEET, submitted(), assigned(agent="b"), smaller)
    assert state.agents["a"].capacity == 1
    b = state.agents["b"]
    assert (b.configured, b.enabled, b.assigned, b.free) == (False, False, 1, 0)
    assert state.meta["config_hash"] == "h2"


def test_an_event_for_an_unknown_task_is_corruption():
    with pytest.raises(CorruptLog, match="never submitted"):
        evolve_task(None, assigned(), 5, "x")


def test_checkpoint_follows_the_last_event():
    assert project(FLEET, submitted(), submitted(2)).meta["last_seq"] == "3"


@given(st.sampled_from([f.name for f in fields(TaskView)]),
       st.sampled_from([f.name for f in fields(AgentView)]),
       st.one_of(st.none(), st.integers(), st.text(max_size=5), st.tuples(st.integers())))
def test_evolve_gives_what_dataclasses_replace_gives(task_field, agent_field, value):
    task = project(FLEET, submitted(priority=3, payload={"k": [1]}), assigned()).tasks[1]
    agent = project(FLEET).agents["a"]
    for view, name in ((task, task_field), (agent, agent_field)):
        changed = evolve(view, **{name: value})
        assert changed == replace(view, **{name: value}) and type(changed) is type(view)
        assert getattr(changed, name) == value
        assert view == replace(changed, **{name: getattr(view, name)})  # the original is untouched


def test_evolve_refuses_a_field_the_view_does_not_have():
    task = project(FLEET, submitted()).tasks[1]
    with pytest.raises(TypeError, match="no field 'colour'"):
        evolve(task, colour="red")
