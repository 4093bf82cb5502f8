"""plan() with plain values: no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings, target
from hypothesis import strategies as st

from eventlog.timeutil import to_text
from projections.views import AgentView, TaskView
from scheduler.decisions.plan import PlanPolicy, plan

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


def test_excluded_agent_used_when_no_other_could_take_work():
    """A task that failed on `a` waited for ever while the only other agent was drained,
    had no capacity, or was outside its hours (only a busy one is worth waiting for);
    the estimate and explain say what the tick does."""
    from dataclasses import replace

    from scheduler.decisions.estimates import estimate_starts
    from scheduler.reads.explain import waiting_now

    failed = task(1, excluded=("a",))
    for other in (replace(agent("b"), out_of_service="drained"), agent("b", capacity=0),
                  agent("b", capacity=0, load=1),  # (cut to 0 while it still held a task)
                  replace(agent("b"), hours=("15:00-16:00 UTC",))):  # (NOW is 12:00 UTC)
        assert pairs([agent("a"), other], [failed]) == [(1, "a")], other
        rows = waiting_now(failed, [agent("a"), other], NOW)["agents"]  # type: ignore[index]
        assert rows[0] == {**rows[0], "agent": "a", "why_not": None}, rows
        assert estimate_starts([failed], [agent("a"), other], {"dev": 1 / 60}, NOW) == {1: to_text(NOW)}


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
    from scheduler.decisions.plan import effective_priority

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

    from scheduler.decisions.plan import effective_priority, waited_seconds

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


# -- capabilities, weight and working hours -------------------------------------------

def fitted(name: str, capabilities: tuple[str, ...] = (), weight: float = 1.0,
           hours: tuple[str, ...] = (), capacity: int = 1, load: int = 0,
           enabled: bool = True) -> AgentView:
    return AgentView(name=name, type="dev", capacity=capacity, enabled=enabled, configured=True,
                     command=None, assigned=load, capabilities=capabilities, weight=weight,
                     hours=hours)


def needing(task_id: int, *requires: str, **kwargs) -> TaskView:
    from dataclasses import replace

    return replace(task(task_id, **kwargs), requires=tuple(sorted(requires)))


def test_a_task_goes_only_to_an_agent_with_every_capability_it_requires():
    agents = [fitted("a", ("browser",), capacity=5), fitted("b", ("browser", "gpu"))]
    assert pairs(agents, [needing(1, "browser", "gpu")]) == [(1, "b")]
    # b is full: the gpu task waits, a task needing only the browser still runs on a
    assert pairs([agents[0], fitted("b", ("browser", "gpu"), load=1)],
                 [needing(1, "gpu"), needing(2, "browser")]) == [(2, "a")]
    (decision,) = plan(agents, [needing(1, "gpu", "tpu")], NOW) or [None]
    assert decision is None  # nobody has tpu


def test_the_decision_names_what_a_passed_over_agent_lacks():
    (decision,) = plan([fitted("a", ("browser",)), fitted("b", ("gpu",))],
                       [needing(1, "gpu", "browser"), needing(2, "gpu")], NOW)
    assert decision.agent == "b" and decision.task_id == 2
    assert [(p.agent, p.why) for p in decision.decision.passed_over] == [("a", "lacks capability gpu")]


def test_failover_needs_another_capable_agent():
    # b failed the task; a exists but lacks gpu, so b may take it again
    agents = [fitted("a"), fitted("b", ("gpu",))]
    assert pairs(agents, [needing(1, "gpu", excluded=("b",))]) == [(1, "b")]
    # with another gpu agent, b is skipped
    agents.append(fitted("c", ("gpu",)))
    assert pairs(agents, [needing(1, "gpu", excluded=("b",))]) == [(1, "c")]


def test_a_directed_task_waits_while_its_assignee_lacks_a_capability():
    agents = [fitted("a", ("gpu",)), fitted("b")]
    assert pairs(agents, [needing(1, "gpu", assignee="b")]) == []
    assert pairs(agents, [needing(1, "gpu", assignee="a")]) == [(1, "a")]


def test_an_agent_outside_its_hours_takes_nothing_and_is_named_in_the_decision():
    # NOW is Sunday 2026-03-01 12:00 UTC
    office = fitted("office", hours=("Mon-Fri 08:00-18:00 Europe/Berlin",), capacity=3)
    weekend = fitted("weekend", hours=("Sat-Sun 10:00-14:00",))
    (decision,) = plan([office, weekend], [task(1), task(2)], NOW)
    assert decision.agent == "weekend"
    assert [(p.agent, p.why) for p in decision.decision.passed_over] == [
        ("office", "outside its working hours (Mon-Fri 08:00-18:00 Europe/Berlin)")]
    monday = NOW + timedelta(days=1)
    assert [d.agent for d in plan([office, weekend], [task(1), task(2)], monday)] == ["office", "office"]


def test_weight_breaks_a_tie_of_free_slots_before_the_record_and_the_load():
    records = {("a", "lint"): (9, 0)}
    agents = [fitted("a", capacity=3, load=2), fitted("b", weight=2), fitted("c", weight=0.5)]
    decisions = plan(agents, [task(1, task_type="lint")], NOW, records=records)
    assert [d.agent for d in decisions] == ["b"]
    assert [(c.agent, c.weight) for c in decisions[0].decision.candidates] == [
        ("b", 2), ("a", 1), ("c", 0.5)]
    # more free slots win over any weight
    assert pairs([fitted("a", capacity=2), fitted("b", weight=100)], [task(1)]) == [(1, "a")]
    # a full agent gets nothing, whatever its weight
    assert pairs([fitted("a", weight=100, load=1), fitted("b")], [task(1)]) == [(1, "b")]


CAPS = ("browser", "gpu", "py3.12")
WINDOWS = ((), ("Mon-Fri 08:00-18:00 Europe/Berlin",), ("Sat-Sun 00:00-24:00",), ("22:00-06:00",),
           ("Mon,Wed 09:00-10:00 America/New_York", "Fri 12:00-13:00"))
capability_sets = st.lists(st.sampled_from(CAPS), max_size=3, unique=True).map(lambda c: tuple(sorted(c)))


# a load within the capacity (an agent is never over it), often below it
capacities_and_loads = st.integers(0, 3).flatmap(lambda capacity: st.tuples(
    st.just(capacity), st.one_of(st.just(0), st.integers(0, capacity))))


def fleets(windows=WINDOWS, enabled=st.sampled_from((True, True, True, False)), min_size=1):
    """Up to five agents of type dev with capabilities, weights, hours, capacity, load:
    most enabled, half of them with no working hours, so that most fleets have an agent
    free to take work (drawn all alike, 7 in 100 plans assigned anything: a review)."""
    return st.lists(
        st.tuples(capability_sets, st.sampled_from((0.0, 0.5, 1.0, 2.0, 3.0)),
                  st.one_of(st.just(()), st.sampled_from(windows)), capacities_and_loads, enabled),
        min_size=min_size, max_size=5).map(lambda specs: [
            fitted(f"ag{i}", caps, weight, hours, capacity, load, on)
            for i, (caps, weight, hours, (capacity, load), on) in enumerate(specs)])


workloads = st.lists(st.tuples(st.one_of(st.just(()), capability_sets),  # (half need no capability)
                               st.one_of(st.none(), st.sampled_from(("ag0", "ag1"))),
                               st.lists(st.sampled_from(("ag0", "ag1", "ag2")), max_size=2, unique=True),
                               st.integers(0, 3)),
                     min_size=1, max_size=12).map(lambda specs: [
                         needing(i + 1, *caps, assignee=assignee, excluded=tuple(excluded), priority=prio)
                         for i, (caps, assignee, excluded, prio) in enumerate(specs)])
moments = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(agents=fleets(), tasks=workloads, now=moments)
def test_never_assigned_to_an_agent_lacking_a_capability_or_outside_its_hours(agents, tasks, now):
    from scheduler.decisions.hours import is_available

    by_name = {a.name: a for a in agents}
    by_task = {t.task_id: t for t in tasks}
    taken: dict[str, int] = {}
    decisions = plan(agents, tasks, now)
    target(float(len(decisions)))  # (toward plans that assign much)
    assert len({d.task_id for d in decisions}) == len(decisions)  # no task given out twice
    for d in decisions:
        agent, wanted = by_name[d.agent], by_task[d.task_id]
        assert set(wanted.requires) <= set(agent.capabilities)
        assert is_available(agent.hours, now)
        assert agent.enabled
        assert wanted.assignee in (None, agent.name)
        taken[agent.name] = taken.get(agent.name, 0) + 1
    assert all(taken[name] <= by_name[name].free for name in taken)  # capacity holds


@settings(derandomize=True, max_examples=200, deadline=None)
@given(agents=fleets(windows=((), ("00:00-24:00",), ("Mon-Fri 08:00-18:00",)), enabled=st.just(True),
                    min_size=2),
       tasks=workloads, plain=st.lists(st.integers(0, 3), min_size=1, max_size=8), now=moments)
def test_weight_only_orders_agents_with_equally_many_free_slots(agents, tasks, plain, now):
    tasks += [task(100 + i, priority=p) for i, p in enumerate(plain)]  # open to every agent
    for d in plan(agents, tasks, now):
        chosen, others = d.decision.candidates[0], d.decision.candidates[1:]
        assert d.decision.candidates_total == len(d.decision.candidates)  # at most 5 agents
        assert chosen.agent == d.agent and chosen.free > 0
        for other in others:
            assert other.free <= chosen.free  # weight never outranks a free slot
            if other.free == chosen.free:
                assert other.weight <= chosen.weight


@settings(derandomize=True, max_examples=200, deadline=None)
@given(agents=fleets(), priorities=st.lists(st.integers(0, 3), max_size=12), now=moments)
def test_weights_change_who_takes_a_task_never_which_tasks_are_taken(agents, priorities, now):
    from dataclasses import replace

    tasks = [task(i + 1, priority=p) for i, p in enumerate(priorities)]
    unweighted = [replace(a, weight=1.0) for a in agents]
    assert [d.task_id for d in plan(agents, tasks, now)] == [d.task_id for d in plan(unweighted, tasks, now)]


def test_a_drained_agent_is_passed_over_as_drained_not_as_full():
    from dataclasses import replace

    (decision,) = plan([replace(agent("a", capacity=2), out_of_service="drained"), agent("b")],
                       [task(1)], NOW)
    assert decision.agent == "b"
    assert [(p.agent, p.why) for p in decision.decision.passed_over] == [("a", "drained by an operator")]


def test_explain_and_the_estimates_skip_the_agent_a_task_failed_on_as_the_tick_does():
    """One rule (`fit.why_not`, `fit.skips_failed`) under the three: a task that failed on
    `a` waits for busy `b`, though `a` is free; explain says why, and the estimate is not
    "at the next tick"."""
    from scheduler.decisions.estimates import estimate_starts
    from scheduler.reads.explain import waiting_now

    fleet, failed = [agent("a"), agent("b", load=1)], task(1, excluded=("a",))
    assert plan(fleet, [failed], NOW) == []
    rows = waiting_now(failed, fleet, NOW)["agents"]  # type: ignore[index]
    assert [(r["agent"], r["why_not"]) for r in rows] == [
        ("a", "it failed or did not start an earlier attempt of the task"), ("b", "no free slot (load 1)")]
    assert estimate_starts([failed], fleet, {"dev": 1 / 60}, NOW) == {1: to_text(NOW + timedelta(seconds=60))}
