"""The standing a plan keeps for tasks that ask nothing of an agent answers what the
rule (`rank`) answers, after every slot filled, whoever filled it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scheduler.decisions.ranking import Slot, Standing, asks_nothing, rank
from tests.unit.decisions.test_plan import task

# most slots able to take work (drawn all alike, 31 in 100 runs made any move: a review)
slots = st.lists(st.builds(
    Slot, name=st.sampled_from([f"a{i}" for i in range(12)]), free=st.sampled_from([0, 1, 2, 3, 3]),
    load=st.integers(0, 4), weight=st.sampled_from([0.5, 1.0, 2.0]),
    available=st.sampled_from([True, True, True, False]),
    out_of_service=st.sampled_from([None, None, "drained"]),
), min_size=1, max_size=12, unique_by=lambda s: s.name)


@given(pool=slots, rates=st.lists(st.sampled_from([0.25, 0.5, 0.75]), min_size=12, max_size=12),
       takers=st.lists(st.integers(0, 11), min_size=1, max_size=30), best=st.integers(1, 8))
def test_a_standing_answers_as_the_rule_after_every_move(pool, rates, takers, best):
    plain = task(1)
    assert asks_nothing(plain, None)
    rate = {f"a{i}": r for i, r in enumerate(rates)}
    standing = Standing(pool, plain, rate)
    for taker in takers:
        assert standing.top(best) == rank(pool, plain, rate, None, best)
        ranked, _count, _passed = rank(pool, plain, rate, None, len(pool) or 1)
        if not ranked:
            return
        slot = ranked[taker % len(ranked)]  # the best, or another (the pick of a task that asks more)
        slot.free, slot.load = slot.free - 1, slot.load + 1
        standing.moved(slot)
    assert standing.top(best) == rank(pool, plain, rate, None, best)


def test_a_task_that_asks_something_of_an_agent_is_ranked_by_the_rule():
    assert not asks_nothing(task(1, assignee="a1"), None)
    assert not asks_nothing(task(1, excluded=("a1",)), None)
    assert not asks_nothing(task(1), "a1")  # a claim
