"""Task listings in pages: a page is a slice of the whole listing in pick order, so
walking the pages (`--limit`, `--cursor`; `GET /api/v1/tasks?limit=&cursor=`; the
dashboard's task pages) shows every task once, in the order the tick would pick them,
even where ageing and due times rank a task above others of higher base priority."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.usecases.tasks import ListRequest, list_tasks
from scheduler.workspace import Workspace

AGENTS = [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 2},
          {"agentName": "qin", "agentType": "qa", "maxConcurrency": 1}]


def titles(ws: Workspace, **asked: object) -> list[str]:
    return [t.title for t in list_tasks(ws, ListRequest(**asked)).tasks]


def walked(ws: Workspace, size: int, **asked: object) -> list[str]:
    """Every page of `size`, from the first to the one with no next cursor."""
    seen: list[str] = []
    cursor = None
    while True:
        page = list_tasks(ws, ListRequest(limit=size, cursor=cursor, **asked))
        seen.extend(t.title for t in page.tasks)
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


def test_a_task_due_soon_is_on_the_first_page_though_its_base_priority_is_the_lowest(make_workspace):
    ws = make_workspace(AGENTS)
    submit(ws, [TaskSpec(queue="dev", title="A", priority=5), TaskSpec(queue="dev", title="C", priority=4),
                TaskSpec(queue="dev", title="B", priority=0, due=ws.clock.now() + timedelta(minutes=1))])
    assert titles(ws) == ["B", "A", "C"]  # B has gained 9 of its 10 due points
    assert titles(ws, limit=1) == ["B"]
    assert walked(ws, 1) == walked(ws, 2) == ["B", "A", "C"]


def test_a_task_not_read_yet_that_ties_the_last_kept_one_takes_its_place_by_submission(make_workspace):
    """All three reach 7 points: `old` and `tied` (base 5) by 2 age points, `later`
    (base 6) by 1. By base priority `later` is read first; the first two in pick order
    are `old` and `tied`, the earlier submitted of those with the same points."""
    ws = make_workspace(AGENTS, age_boost_seconds=600, age_boost_max=2, due_boost_seconds=0)
    submit(ws, [TaskSpec(queue="dev", title=title, priority=5) for title in ("old", "tied")])
    ws.clock.advance(600)  # type: ignore[attr-defined]
    submit(ws, [TaskSpec(queue="dev", title="later", priority=6)])
    ws.clock.advance(600)  # type: ignore[attr-defined]
    assert titles(ws) == ["old", "tied", "later"]
    # the read of two (a page of one, and one more to know there is a next) has `later`
    # and `old`: `tied` could still reach 7 points and go before `later`
    assert [t.title for t in queries.list_tasks(ws, limit=2)] == ["old", "tied"]
    assert walked(ws, 2) == walked(ws, 1) == ["old", "tied", "later"]


@pytest.mark.parametrize("seed", range(6))
def test_walking_the_pages_shows_the_whole_listing_once_in_pick_order(make_workspace, seed):
    rng = random.Random(seed)
    ws = make_workspace(AGENTS, age_boost_seconds=600, age_boost_max=rng.choice([3, 10]),
                        due_boost_seconds=3600, due_boost_max=10)
    clock = ws.clock
    for i in range(40):  # submitted over about 3 hours: the early ones have aged
        due = clock.now() + timedelta(minutes=rng.randint(-30, 240)) if rng.random() < 0.3 else None
        submit(ws, [TaskSpec(queue=rng.choice(["dev", "qa"]), title=f"t{i}", priority=rng.randint(0, 9),
                             due=due)])
        clock.advance(rng.uniform(0, 600))  # type: ignore[attr-defined]
    tick(ws)  # some are assigned: a listing of all statuses mixes them in
    for asked in ({}, {"status": "queued"}, {"queue": "dev"}, {"title": "t1"}):
        whole = titles(ws, **asked)
        assert whole, asked
        for size in (1, 3, 7):
            assert walked(ws, size, **asked) == whole, (asked, size)
            assert titles(ws, limit=size, **asked) == whole[:size], (asked, size)
