"""The queue view's figures with plain values: places in the queue, recorded run times,
estimated starts and completions; and the refresh loop, without waiting."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from cli.common import refresh
from eventlog.timeutil import to_text
from projections.views import Outcome
from scheduler.decisions.estimates import (
    estimate_completions,
    estimate_starts,
    queue_positions,
    run_seconds_by_queue,
)
from tests.unit.decisions.test_plan import NOW, agent, task


def at(seconds: float) -> str:
    return to_text(NOW + timedelta(seconds=seconds))


def ran(queue: str, seconds: float, outcome: str = "succeeded", seq: int = 1) -> Outcome:
    end = NOW.timestamp() - 10
    return Outcome(seq=seq, task_id=seq, queue=queue, agent="a", attempt=1, outcome=outcome,
                   detail=None, ready_ts=None, assigned_ts=None, started_ts=end - seconds, ended_ts=end)


def test_places_count_the_queued_tasks_of_each_queue_in_the_order_given():
    tasks = [task(1), task(2, queue="qa"), replace(task(3), status="running"), task(4), task(5, queue="qa")]
    assert queue_positions(tasks, at(0)) == {1: 1, 2: 1, 3: None, 4: 2, 5: 2}


def test_a_task_whose_not_before_is_ahead_takes_no_place_until_it_comes():
    tasks = [replace(task(1), not_before=at(60)), task(2), replace(task(3), not_before=at(-1))]
    assert queue_positions(tasks, at(0)) == {1: None, 2: 1, 3: 2}
    assert queue_positions(tasks, at(60)) == {1: 1, 2: 2, 3: 3}


def test_the_run_time_of_a_queue_is_the_median_of_its_successful_runs():
    outcomes = [ran("dev", 10, seq=1), ran("dev", 30, seq=2), ran("dev", 1000, seq=3),
                ran("dev", 5000, "failed", seq=4), ran("qa", 4, seq=5), ran("qa", 6, seq=6)]
    assert run_seconds_by_queue(outcomes) == {"dev": 30.0, "qa": 5.0}


def test_free_slots_start_now_and_the_rest_wait_by_the_queues_rate():
    tasks = [task(1), task(2), task(3), task(4, queue="qa")]
    starts = estimate_starts(tasks, [agent("a", capacity=1)], {"dev": 1 / 60}, NOW)
    # one free slot: task 1 now; then one slot per minute; no qa agent: unknown
    assert starts == {1: at(0), 2: at(60), 3: at(120), 4: None}
    assert set(estimate_starts(tasks, [agent("a")], {"dev": 1 / 60}, NOW, stopped=True).values()) == {None}


def test_the_tasks_said_to_start_now_are_those_the_tick_assigns():
    """The estimate gave each task the agent with the most free slots, first found: a
    heavier agent that the tick prefers took the task the estimate had placed on it
    elsewhere, and `tasks` named the wrong tasks for the next tick."""
    from scheduler.decisions.plan import plan

    agents = [agent("a"), replace(agent("z"), capabilities=("gpu",), weight=2.0)]
    tasks = [task(1, priority=5), replace(task(2, priority=4), requires=("gpu",)), task(3, priority=3)]
    assigned = {d.task_id for d in plan(agents, tasks, NOW)}
    starts = estimate_starts(tasks, agents, {"dev": 1 / 60}, NOW)
    assert assigned == {1, 3}
    assert {task_id for task_id, start in starts.items() if start == at(0)} == assigned


def test_completion_is_the_start_plus_the_queues_run_time_never_before_now():
    queued, assigned = task(1), replace(task(2), status="assigned", agent="a")
    running = replace(task(3), status="running", agent="a", started_at=at(-100))
    long_running = replace(task(4), status="running", agent="a", started_at=at(-1000))
    finished, elsewhere = replace(task(5), status="succeeded"), task(6, queue="qa")
    tasks = [queued, assigned, running, long_running, finished, elsewhere]
    done = estimate_completions(tasks, {1: at(60), 6: at(0)}, {"dev": 300.0}, NOW)
    assert done == {1: at(360), 2: at(300), 3: at(200), 4: at(0), 5: None, 6: None}
    assert estimate_completions([queued], {1: None}, {"dev": 300.0}, NOW) == {1: None}


def test_refresh_shows_at_once_then_after_each_interval():
    shown: list[int] = []
    waited: list[float] = []
    count = refresh(lambda: shown.append(len(shown)), 2.5, waited.append, rounds=3)
    assert (count, shown, waited) == (3, [0, 1, 2], [2.5, 2.5])
