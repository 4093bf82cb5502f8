"""One test suite, every store of the log: what is appended is what is read, in
order, chained (the in-memory store, and the SQL store on each engine)."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog.errors import ConcurrencyConflict
from eventlog.events import TaskAssigned, TaskSubmitted
from eventlog.sql_store import SqlStore
from eventlog.store import GENESIS_HASH, InMemoryStore, first_broken_link
from tests.conftest import ENGINES, databases_for, fresh_storage

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", *ENGINES])
def new_store(request, tmp_path):
    if request.param == "memory":
        yield InMemoryStore
        return
    databases = databases_for(request.param, request, tmp_path)
    with ExitStack() as stack:
        def factory():
            db = fresh_storage(databases.new())
            stack.callback(db.close)
            return SqlStore(stack.enter_context(db.write()))

        yield factory


def submitted(task_id: int) -> TaskSubmitted:
    return TaskSubmitted(task_id=task_id, queue="dev", title=f"t{task_id}")


def test_an_empty_store(new_store):
    store = new_store()
    assert store.last_position() == 0
    assert list(store.read()) == []
    assert store.read_stream("task-1") == []


def test_appended_events_come_back_in_order_with_gapless_seqs(new_store):
    store = new_store()
    first = store.append([submitted(1), submitted(2)], T0)
    second = store.append([TaskAssigned(task_id=1, agent="a", attempt=1, start_by=T0)], T0)
    records = list(store.read())
    assert [r.seq for r in records] == [1, 2, 3]
    assert records == first + second
    assert [r.event for r in records] == [submitted(1), submitted(2), second[0].event]
    assert records[0].prev_hash == GENESIS_HASH and records[1].prev_hash == records[0].hash


def test_read_after_and_limit(new_store):
    store = new_store()
    store.append([submitted(i) for i in range(1, 8)], T0)
    assert [r.seq for r in store.read(after=3)] == [4, 5, 6, 7]
    assert [r.seq for r in store.read(after=2, limit=2)] == [3, 4]
    assert list(store.read(after=7)) == []


def test_read_stream_gives_one_task_history(new_store):
    store = new_store()
    store.append([submitted(1), submitted(2),
                  TaskAssigned(task_id=1, agent="a", attempt=1, start_by=T0)], T0)
    assert [r.seq for r in store.read_stream("task-1")] == [1, 3]


def test_expected_position_guards_against_a_moved_log(new_store):
    store = new_store()
    store.append([submitted(1)], T0, expected_position=0)
    with pytest.raises(ConcurrencyConflict):
        store.append([submitted(2)], T0, expected_position=0)
    assert store.last_position() == 1


def test_an_empty_append_changes_nothing(new_store):
    store = new_store()
    assert store.append([], T0) == []
    assert store.last_position() == 0


def test_ids_beyond_32_bits_are_stored_whole(new_store):
    store = new_store()
    big = 2**62
    store.append([submitted(big)], T0)
    assert [r.event.task_id for r in store.read()] == [big]


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(batches=st.lists(st.lists(st.integers(1, 10**6), min_size=1, max_size=5), max_size=6))
def test_what_is_appended_is_what_is_read(new_store, batches):
    store = new_store()  # a fresh store per example: fixtures are not reset between them
    written = []
    for batch in batches:
        written += store.append([submitted(i) for i in batch], T0)
    assert list(store.read()) == written
    assert first_broken_link(store.read()) is None
    assert store.last_position() == len(written)
