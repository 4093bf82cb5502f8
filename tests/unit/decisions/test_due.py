"""Due times in plan(): the due boost curve, with plain values."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from eventlog.timeutil import to_text
from scheduler.decisions.plan import PlanPolicy, due_boost, due_cutoff, effective_priority, plan
from tests.unit.decisions.test_plan import NOW, agent, task

HOUR = 3600.0


def due_in(task_id: int, seconds: float | None, priority: int = 0):
    view = task(task_id, priority=priority)
    return replace(view, due=None if seconds is None else to_text(NOW + timedelta(seconds=seconds)))


def test_the_curve_is_zero_before_the_window_then_linear_to_the_cap_and_stays_there():
    points = [due_boost(due_in(1, left), NOW, HOUR, 10) for left in
              (2 * HOUR, HOUR, 0.95 * HOUR, 0.9 * HOUR, 0.5 * HOUR, 0.05 * HOUR, 1, 0, -HOUR)]
    assert points == [0, 0, 0, 1, 5, 9, 9, 10, 10]


def test_no_due_time_or_the_boost_turned_off_gives_nothing():
    assert due_boost(due_in(1, None), NOW, HOUR, 10) == 0
    assert due_boost(due_in(1, -HOUR), NOW, 0, 10) == 0
    assert due_boost(due_in(1, -HOUR), NOW, HOUR, 0) == 0


def test_effective_priority_adds_the_due_boost_to_priority_and_ageing():
    policy = PlanPolicy(default_due_boost=(HOUR, 10), due_boost={"qa": (0, 0)})
    assert effective_priority(due_in(1, 0.5 * HOUR, priority=3), NOW, policy) == 8
    assert effective_priority(replace(due_in(1, 0, priority=3), queue="qa"), NOW, policy) == 3


def test_a_task_due_soon_goes_before_higher_priority_work():
    policy = PlanPolicy(default_due_boost=(HOUR, 10))
    tasks = [due_in(1, None, priority=5), due_in(2, 0.1 * HOUR, priority=0), due_in(3, 2 * HOUR, priority=4)]
    assert [d.task_id for d in plan([agent("a", capacity=3)], tasks, NOW, policy)] == [2, 1, 3]
    # the decision records the effective priority it used
    assert plan([agent("a")], tasks, NOW, policy)[0].decision.effective_priority == 9


@given(st.floats(min_value=-10 * HOUR, max_value=10 * HOUR, allow_nan=False),
       st.floats(min_value=0, max_value=HOUR), st.floats(min_value=1, max_value=10 * HOUR),
       st.integers(min_value=1, max_value=100))
def test_the_boost_never_falls_as_time_passes_and_never_passes_the_cap(left, later, window, cap):
    view = due_in(1, left)
    now_boost = due_boost(view, NOW, window, cap)
    later_boost = due_boost(view, NOW + timedelta(seconds=later), window, cap)
    assert 0 <= now_boost <= later_boost <= cap


@given(st.integers(min_value=1, max_value=100), st.data(),
       st.floats(min_value=1, max_value=10 * HOUR))
def test_a_due_time_at_a_band_cutoff_has_at_least_that_many_points(cap, data, window):
    points = data.draw(st.integers(min_value=1, max_value=cap))
    cutoff = due_cutoff(NOW, window, cap, points)
    earlier = replace(task(1), due=to_text(cutoff - timedelta(milliseconds=1)))
    later = replace(task(1), due=to_text(cutoff + timedelta(milliseconds=2)))
    assert due_boost(earlier, NOW, window, cap) >= points
    assert due_boost(later, NOW, window, cap) <= points


@given(st.lists(st.tuples(st.integers(-5, 5), st.none() | st.floats(-HOUR, 2 * HOUR)),
                min_size=1, max_size=12), st.integers(min_value=1, max_value=4))
def test_plan_takes_the_tasks_of_highest_effective_priority(specs, capacity):
    policy = PlanPolicy(default_due_boost=(HOUR, 10))
    tasks = [due_in(i, left, priority=p) for i, (p, left) in enumerate(specs, start=1)]
    chosen = {d.task_id for d in plan([agent("a", capacity=capacity)], tasks, NOW, policy)}
    assert len(chosen) == min(capacity, len(tasks))
    ranks = {t.task_id: effective_priority(t, NOW, policy) for t in tasks}
    left_out = [ranks[t.task_id] for t in tasks if t.task_id not in chosen]
    assert all(ranks[c] >= r for c in chosen for r in left_out)


def test_a_version_1_submit_reads_as_one_without_a_due_time_and_a_due_time_round_trips():
    from eventlog.events import TaskDueMissed, TaskSubmitted, dump_event, parse_event

    old = parse_event("TaskSubmitted", 1, '{"task_id": 1, "queue": "dev", "title": "t"}')
    assert isinstance(old, TaskSubmitted) and old.due is None and old.schema_version == 3
    new = TaskSubmitted(task_id=2, queue="dev", title="t", due=NOW)
    assert parse_event("TaskSubmitted", 2, dump_event(new)) == new
    missed = TaskDueMissed(task_id=2, due=NOW, status="queued")
    assert parse_event("TaskDueMissed", 1, dump_event(missed)) == missed
