"""plan() with plain values: no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from eventlog.timeutil import to_text
from projections.views import AgentView, TaskView
from scheduler.plan import PlanPolicy, plan

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def agent(name: str, type_: str = "dev", capacity: int = 1, load: int = 0,
          enabled: bool = True) -> AgentView:
    return AgentView(name=name, type=type_, capacity=capacity, enabled=enabled,
                     configured=True, command=None, assigned=load)


def task(task_id: int, queue: str = "dev", priority: int = 0, assignee: str | None = None,
         excluded: tuple[str, ...] = (), not_before: datetime | None = None,
         status: str = "queued", task_type: str | None = None) -> TaskView:
    return TaskView(task_id=task_id, queue=queue, title=f"t{task_id}", priority=priority,
                    assignee=assignee, payload="null", status=status, attempt=0, attempt_floor=0,
                    max_attempts=3,
                    agent=None, not_before=to_text(not_before) if not_before else None,
                    deadline=None, token_hash=None, pid=None, host=None, log_path=None,
                    excluded=excluded, cancelling=False, waiting_on=(), blocks=(), doomed_by=None,
                    last_error=None,
                    idempotency_key=None, task_type=task_type, submitted_seq=task_id,
                    submitted_at=to_text(NOW), updated_at=to_text(NOW),
                    ready_at=to_text(NOW) if status == "queued" else None)


def pairs(agents, tasks) -> list[tuple[int, str]]:
    return [(d.task_id, d.agent) for d in plan(agents, tasks, NOW)]


def test_least_loaded_agent_gets_the_task_first():
    assert pairs([agent("a", capacity=3, load=2), agent("b", capacity=3, load=0)],
                 [task(1)]) == [(1, "b")]


def test_ties_break_on_lowest_load_then_name():
    # equal free slots (1 each): b has the lower load
    assert pairs([agent("a", capacity=3, load=2), agent("b", capacity=1)], [task(1)]) == [(1, "b")]
    assert pairs([agent("b"), agent("a")], [task(1)]) == [(1, "a")]


def test_capacity_is_respected_across_the_pool():
    decisions = pairs([agent("a", capacity=2), agent("b", capacity=1)], [task(i) for i in range(1, 6)])
    assert len(decisions) == 3
    assert sorted(a for _, a in decisions) == ["a", "a", "b"]


def test_priority_first_then_submission_order():
    decisions = pairs([agent("a", capacity=3)],
                      [task(1, priority=0), task(2, priority=5), task(3, priority=5), task(4)])
    assert [t for t, _ in decisions] == [2, 3, 1]


def test_directed_task_waits_for_its_agent():
    agents = [agent("a", load=1), agent("b")]  # a is full
    assert pairs(agents, [task(1, assignee="a")]) == []
    assert pairs(agents, [task(1, assignee="a"), task(2)]) == [(2, "b")]
    assert pairs([agent("a"), agent("b")], [task(1, assignee="b")]) == [(1, "b")]


def test_no_agent_of_the_type_assigns_nothing():
    assert pairs([agent("a", type_="qa")], [task(1, queue="dev")]) == []


def test_all_agents_full_assigns_nothing():
    assert pairs([agent("a", load=1), agent("b", capacity=2, load=2)], [task(1)]) == []


def test_capacity_lowered_under_load_gives_no_free_slot():
    assert pairs([agent("a", capacity=1, load=3)], [task(1)]) == []


def test_disabled_agents_are_skipped():
    assert pairs([agent("a", enabled=False), agent("b")], [task(1), task(2)]) == [(1, "b")]


def test_empty_queue_and_empty_fleet():
    assert pairs([agent("a")], []) == []
    assert pairs([], [task(1)]) == []


def test_tasks_not_yet_due_or_not_queued_are_left():
    later = NOW + timedelta(minutes=5)
    assert pairs([agent("a", capacity=5)],
                 [task(1, not_before=later), task(2, status="running"), task(3)]) == [(3, "a")]
    assert pairs([agent("a")], [task(1, not_before=NOW)]) == [(1, "a")]


def test_excluded_agent_skipped_while_another_exists_even_if_busy():
    agents = [agent("a"), agent("b", load=1)]
    assert pairs(agents, [task(1, excluded=("a",))]) == []
    assert pairs([agent("a"), agent("b")], [task(1, excluded=("a",))]) == [(1, "b")]


def test_excluded_agent_used_when_it_is_the_only_one():
    assert pairs([agent("a"), agent("b", enabled=False)], [task(1, excluded=("a",))]) == [(1, "a")]


def test_assignment_carries_attempt_and_start_deadline():
    (decision,) = plan([agent("a")], [task(7)], NOW, PlanPolicy(start_deadline_seconds=30))
    assert decision.attempt == 1
    assert decision.start_by == NOW + timedelta(seconds=30)


def test_queues_are_planned_independently():
    decisions = pairs([agent("a"), agent("q", type_="qa")],
                      [task(1, queue="qa"), task(2, queue="dev")])
    assert sorted(decisions) == [(1, "q"), (2, "a")]


def test_affinity_prefers_the_better_record_among_equal_free_slots():
    records = {("a", "lint"): (1, 5), ("b", "lint"): (4, 0)}
    decisions = plan([agent("a"), agent("b")], [task(1, task_type="lint")], NOW, records=records)
    assert [(d.task_id, d.agent) for d in decisions] == [(1, "b")]
    # more free slots still come first, and an untyped task ignores records
    assert pairs([agent("a", capacity=2), agent("b")], [task(1, task_type="lint")]) == [(1, "a")]
    decisions = plan([agent("a", capacity=2), agent("b")], [task(1, task_type="lint")], NOW,
                     records=records)
    assert [(d.task_id, d.agent) for d in decisions] == [(1, "a")]
    assert [d.agent for d in plan([agent("b"), agent("a")], [task(1)], NOW, records=records)] == ["a"]


def test_waiting_raises_the_effective_priority_up_to_the_cap():
    from scheduler.plan import effective_priority

    policy = PlanPolicy(default_ageing=(600, 3))
    old = replace_ready(task(1, priority=1), NOW - timedelta(seconds=1300))
    assert effective_priority(old, NOW, policy) == 3  # two full 600 s intervals
    ancient = replace_ready(task(2, priority=1), NOW - timedelta(days=2))
    assert effective_priority(ancient, NOW, policy) == 4  # capped at +3
    assert effective_priority(old, NOW, PlanPolicy()) == 1  # no ageing by default in plan
    young_high = replace_ready(task(3, priority=2), NOW)
    decisions = plan([agent("a")], [young_high, old], NOW, policy)
    assert [d.task_id for d in decisions] == [1]


def test_ageing_counts_from_when_the_task_became_ready_not_from_its_submission():
    from dataclasses import replace

    from scheduler.plan import effective_priority, waited_seconds

    policy = PlanPolicy(default_ageing=(600, 3))
    # submitted two days ago, but blocked (or awaiting approval) until a minute ago
    released = replace(task(1, priority=1), submitted_at=to_text(NOW - timedelta(days=2)),
                       ready_at=to_text(NOW - timedelta(seconds=60)))
    assert effective_priority(released, NOW, policy) == 1
    assert waited_seconds(released, NOW) == 60
    # still blocked: not ready, so it has not waited at all
    assert waited_seconds(replace(released, status="blocked", ready_at=None), NOW) == 0
    # a task that ran: its wait ended at its assignment and no longer grows
    ran = replace(released, status="succeeded", assigned_at=to_text(NOW - timedelta(seconds=30)))
    assert waited_seconds(ran, NOW) == 30
    assert waited_seconds(ran, NOW + timedelta(days=1)) == 30


def replace_ready(view, moment):
    from dataclasses import replace

    return replace(view, submitted_at=to_text(moment), ready_at=to_text(moment))
