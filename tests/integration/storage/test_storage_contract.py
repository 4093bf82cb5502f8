"""The storage port's contract, one suite over every SQL engine: the single writer,
the snapshot reader, the hot-path writes, schema and marks, and the faults a writer
meets. (The log itself: test_store_contract.py.)"""

from __future__ import annotations

import gc
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select, update

from eventlog.errors import DatabaseBusy, DatabaseError, ForeignDatabase
from eventlog.events import TaskSubmitted
from eventlog.schema import SCHEMA_VERSION
from eventlog.sql_store import SqlStore
from eventlog.storage import base
from eventlog.storage.port import WRITE_TIME, Lookup, Read
from eventlog.store import first_broken_link
from eventlog.timeutil import to_text
from projections.tables import QueueCountRow, TaskRow
from scheduler.workspace import ALL_TABLES
from tests.conftest import fresh_storage, opened_storage

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def submitted(task_id: int) -> TaskSubmitted:
    return TaskSubmitted(task_id=task_id, queue="q", title="t")


def events_in(db) -> list[int]:
    with db.read() as txn:
        return [r.seq for r in SqlStore(txn).read()]


def test_a_new_database_is_marked_at_the_schema_version(new_database):
    db = fresh_storage(new_database())
    assert db.schema_version() == SCHEMA_VERSION
    assert db.integrity_check() == "ok"
    with db.read() as txn:
        assert txn.has_table("events") and txn.has_table("webhook_outbox") and txn.has_table("tasks")


def test_an_empty_database_is_not_opened_but_init_may_use_it(new_database):
    location = new_database()
    if not location.startswith("postgresql"):
        open(location, "wb").close()  # an empty file
    with pytest.raises(DatabaseError, match="sched init"):
        opened_storage(location)
    assert fresh_storage(location).schema_version() == SCHEMA_VERSION


def run_sql(location: str, *statements: str) -> None:
    """Statements through the engine's own driver, outside sched (what another version
    of sched, or a person, did to the database)."""
    if location.startswith("postgresql"):
        with psycopg.connect(location) as conn:
            for sql in statements:
                conn.execute(sql)  # type: ignore[arg-type]
    else:
        with sqlite3.connect(location) as conn:
            for sql in statements:
                conn.execute(sql)
        conn.close()


def test_a_table_of_an_older_schema_gains_its_new_columns_and_keeps_its_rows(new_database):
    """`daemons.machine` came with schema 3: a database made before has the table
    without it. Making the schema again adds the column; the rows already there read
    it as NULL (not known), and new rows write it."""
    from scheduler.tick_runs import daemons, note_daemon

    location = new_database()
    db = fresh_storage(location)
    db.close()
    run_sql(location, "ALTER TABLE daemons DROP COLUMN machine",
            "INSERT INTO daemons (host, pid, started_at, beat_at, interval_seconds) "
            "VALUES ('box-1', 41, '2026-05-01T00:00:00Z', '2026-05-01T00:00:00Z', 5.0)")
    with pytest.raises(DatabaseError, match="machine"), db.read() as txn:  # what an older sched made
        daemons(txn)
    db.create_schema(ALL_TABLES, SCHEMA_VERSION)
    with db.write() as txn:
        note_daemon(txn, "box-2", 42, "m/b/1", "2026-05-01T00:00:01Z", 5.0)
    with db.read() as txn:
        found = {row["pid"]: row["machine"] for row in daemons(txn)}
    assert found == {41: None, 42: "m/b/1"}


def add_foreign_table(location: str) -> None:
    if location.startswith("postgresql"):
        with psycopg.connect(location) as conn:
            conn.execute("CREATE TABLE invoices (id integer primary key)")
    else:
        with sqlite3.connect(location) as conn:
            conn.execute("CREATE TABLE invoices (id integer primary key)")
        conn.close()


def test_another_programs_database_is_refused_and_left_alone(new_database):
    location = new_database()
    add_foreign_table(location)
    for attempt in (opened_storage, fresh_storage):
        with pytest.raises(ForeignDatabase, match="nothing was changed"):
            attempt(location)
    if location.startswith("postgresql"):
        with psycopg.connect(location) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
    else:
        with sqlite3.connect(location) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        conn.close()
    assert tables == ["invoices"]


def test_a_write_holds_off_the_cyclic_collector_until_it_ends(new_database):
    """What a write builds lives until its commit: no collection walks it under the
    writers' lock (eventlog.storage.collector)."""
    db = fresh_storage(new_database())
    assert gc.isenabled()
    with db.write() as txn:
        assert not gc.isenabled()
        SqlStore(txn).append([submitted(1)], T0)
    assert gc.isenabled()
    with pytest.raises(ValueError), db.write():
        raise ValueError("the caller gave up")
    assert gc.isenabled() and events_in(db) == [1]


def _hold_the_turn(database: str, entered, leave) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from eventlog.storage.writer_lock import writer_turn

    with writer_turn(Path(database), 30.0):
        entered.set()
        leave.wait(30)


@contextmanager
def lock_held_elsewhere(location: str) -> Iterator[Callable[[], bool]]:
    """The writers' lock held by another session for the block; yields whether a writer
    of this process is waiting for it (PostgreSQL: a lock request not granted; SQLite:
    a thread of this process at the lock file)."""
    if location.startswith("postgresql"):
        from eventlog.storage.postgres import WRITER_LOCK

        with psycopg.connect(location, autocommit=True) as probe, psycopg.connect(location) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
            yield lambda: probe.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                        "AND NOT granted").fetchone()[0] > 0
        return
    from pathlib import Path

    from eventlog.storage.writer_lock import _local_turn

    ctx = multiprocessing.get_context("spawn")
    entered, leave = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_the_turn, args=(location, entered, leave))
    holder.start()
    try:
        assert entered.wait(30)
        yield _local_turn(Path(location)).locked
    finally:
        leave.set()
        holder.join(30)


def test_a_writer_waiting_for_the_lock_leaves_the_collector_running(new_database):
    """Only a writer that holds the lock pauses the collector: under a stream of writes
    from many threads (`sched serve`), the waiting ones must not keep it off for good."""
    location = new_database()
    db = fresh_storage(location)
    wrote = threading.Event()

    def write() -> None:
        with db.write() as txn:
            SqlStore(txn).append([submitted(1)], T0)
        wrote.set()

    with lock_held_elsewhere(location) as waiting:
        writer = threading.Thread(target=write)
        writer.start()
        deadline = time.monotonic() + 30
        while not waiting() and time.monotonic() < deadline:
            time.sleep(0.01)  # (polls a condition; nothing is timed by it)
        assert waiting() and not wrote.is_set()
        assert gc.isenabled()
    writer.join(30)
    assert wrote.is_set() and gc.isenabled() and events_in(db) == [1]


def test_a_rolled_back_write_leaves_nothing(new_database):
    db = fresh_storage(new_database())
    with pytest.raises(RuntimeError), db.write() as txn:
        SqlStore(txn).append([submitted(1)], T0)
        raise RuntimeError("decided against it")
    with db.write(commit=False) as txn:
        SqlStore(txn).append([submitted(1)], T0)
    assert events_in(db) == []


def test_a_reader_sees_one_snapshot(new_database):
    db = fresh_storage(new_database())
    with db.write() as txn:
        SqlStore(txn).append([submitted(1)], T0)
    with db.read() as txn:
        store = SqlStore(txn)
        assert store.last_position() == 1
        with db.write() as other:
            SqlStore(other).append([submitted(2)], T0)
        assert store.last_position() == 1  # the commit after the snapshot is not seen
    assert events_in(db) == [1, 2]


def test_a_writer_that_outwaits_the_busy_timeout_is_told_to_try_again(new_database):
    location = new_database()
    holder = fresh_storage(location)
    impatient = opened_storage(location, busy_timeout_ms=50)
    with holder.write() as txn:
        SqlStore(txn).append([submitted(1)], T0)
        with pytest.raises(DatabaseBusy, match="try again") as caught, impatient.write() as other:
            SqlStore(other).append([submitted(2)], T0)
    assert caught.value.exit_code == 1
    assert events_in(impatient) == [1]


def _append_many(location: str, worker: int, count: int) -> None:
    from eventlog.storage import open_storage

    db = open_storage(location)
    for i in range(count):
        with db.write() as txn:  # read the head, then append after it: read-modify-write
            SqlStore(txn).append([submitted(worker * 1000 + i + 1)], T0)
    db.close()


def test_concurrent_writers_in_processes_take_turns_and_keep_the_chain(new_database):
    location = new_database()
    fresh_storage(location).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(location, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    db = opened_storage(location)
    with db.read() as txn:
        store = SqlStore(txn)
        assert [r.seq for r in store.read()] == list(range(1, 101))
        assert first_broken_link(store.read()) is None
        assert sorted(r.event.task_id for r in store.read()) == sorted(
            w * 1000 + i + 1 for w in range(4) for i in range(25))


def test_upsert_replaces_or_adds_and_the_point_read_finds_it(new_database):
    db = fresh_storage(new_database())
    columns, keys = ("queue", "status", "count"), ("queue", "status")
    with db.write() as txn:
        txn.upsert("queue_counts", columns, keys, [("dev", "queued", 2), ("qa", "queued", 1)], add=("count",))
        txn.upsert("queue_counts", columns, keys, [("dev", "queued", 3)], add=("count",))
        txn.upsert("projection_meta", ("key", "value"), ("key",), [("k", "one")])
        txn.upsert("projection_meta", ("key", "value"), ("key",), [("k", "two")])
        txn.insert("projection_meta", ("key", "value"), [("j", "new")])
    with db.read() as txn:
        assert sorted(txn.fetch_all("queue_counts", columns)) == [("dev", "queued", 5), ("qa", "queued", 1)]
        assert tuple(txn.fetch_one("projection_meta", ("value",), "key", "k")) == ("two",)
        assert txn.fetch_one("projection_meta", ("value",), "key", "absent") is None
        assert sorted(txn.fetch_all("projection_meta", ("key", "value"))) == [("j", "new"), ("k", "two")]
        big = txn.session.execute(select(QueueCountRow.count).where(QueueCountRow.queue == "dev")).scalar()
        assert big == 5


def test_fetch_all_streams_every_row_in_key_order_a_batch_at_a_time(new_database, monkeypatch):
    """What verify reads a whole table through: every row once, in the order asked
    for, however many batches it takes (the engine's cursor is read a batch at a time;
    on PostgreSQL a cursor on the server), beside the transaction's other reads."""
    monkeypatch.setattr(base, "FETCH_BATCH", 3)
    db = fresh_storage(new_database())
    columns = ("queue", "status", "count")
    rows = [(f"q{n % 4}", f"s{n}", n) for n in range(11)]
    with db.write() as txn:
        txn.insert("queue_counts", columns, list(reversed(rows)))
    with db.read() as txn:
        streamed = txn.fetch_all("queue_counts", columns, order=("queue", "status"))
        first = [next(streamed) for _ in range(4)]  # part way through a second batch
        assert txn.fetch_one("queue_counts", ("count",), "status", "s7") == (7,)  # another read meanwhile
        assert [tuple(r) for r in first + list(streamed)] == sorted(rows)
        assert [tuple(r) for r in txn.fetch_all("queue_counts", ("count",), order=("count",))] == [
            (n,) for n in range(11)]


def test_a_read_asked_for_ahead_answers_as_the_database_stands_until_the_writer_writes(new_database):
    """`prefetch` changes no answer: a read asked for ahead gives what the database
    holds, and after the transaction's own writes (through the port or SQLAlchemy)
    what it holds then; a reader's, what its snapshot holds."""
    db = fresh_storage(new_database())
    counts = Read("queue_counts", ("queue", "status", "count"), (("queue", "=", "dev"),))
    point = Read("projection_meta", ("key", "value"), (("key", "=", "k"),))
    with db.write() as txn:
        txn.upsert("queue_counts", ("queue", "status", "count"), ("queue", "status"), [("dev", "queued", 1)])
    with db.write(prefetch=[counts, point]) as txn:
        assert txn.rows(*counts) == [("dev", "queued", 1)] and txn.rows(*counts) == [("dev", "queued", 1)]
        assert txn.fetch_one("projection_meta", ("key", "value"), "key", "k") is None
        txn.upsert("queue_counts", ("queue", "status", "count"), ("queue", "status"), [("dev", "queued", 2)],
                   add=("count",))
        txn.insert("projection_meta", ("key", "value"), [("k", "v")])
        assert [tuple(r) for r in txn.rows(*counts)] == [("dev", "queued", 3)]
        assert tuple(txn.fetch_one("projection_meta", ("key", "value"), "key", "k")) == ("k", "v")
    with db.write(prefetch=[counts]) as txn:  # the reads of a writer that writes with SQLAlchemy
        txn.session.execute(update(QueueCountRow).where(QueueCountRow.queue == "dev").values(count=7))
        assert [tuple(r) for r in txn.rows(*counts)] == [("dev", "queued", 7)]
    with db.write(prefetch=[counts], commit=False) as txn:
        assert [tuple(r) for r in txn.rows(*counts)] == [("dev", "queued", 7)]
    other = Read("projection_meta", ("key", "value"), (("key", "=", "absent"),))  # the same statement
    for _ in range(2):  # (and again, on what the connection kept of the first)
        with db.read(prefetch=[counts, point, other]) as txn:  # a reader's: its snapshot's rows, to its end
            assert [tuple(r) for r in txn.rows(*counts)] == [("dev", "queued", 7)]
            assert [tuple(r) for r in txn.rows(*point)] == [("k", "v")]
            assert txn.rows(*other) == []
            assert [tuple(r) for r in txn.rows(*counts)] == [("dev", "queued", 7)]


def test_a_read_of_the_writers_time_asked_for_ahead_stands_for_that_read(new_database):
    """A read asked for ahead with `WRITE_TIME` in a term stands for the same read of
    the time the writer read under the lock: made with that time's text it gives what
    the database holds, and made with another time it is another read. A reader, which
    has no such time, leaves it out."""
    db = fresh_storage(new_database())
    before = datetime.now(UTC)
    gone, soon = before - timedelta(milliseconds=1), before + timedelta(minutes=1)
    with db.write() as txn:
        txn.insert("projection_meta", ("key", "value"), [("gone", to_text(gone)), ("soon", to_text(soon))])
    timed = Read("projection_meta", ("key",), (("value", "<=", WRITE_TIME),), ("key",))

    def read_at(txn, moment: datetime) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
        return [tuple(r) for r in txn.rows("projection_meta", ("key",), (("value", "<=", to_text(moment)),),
                                           ("key",))]

    with db.write(prefetch=[timed]) as txn:
        held = txn.server_time() or datetime.now(UTC)  # (SQLite has no clock: the caller's)
        assert read_at(txn, held) == [("gone",)]
        assert read_at(txn, held + timedelta(minutes=2)) == [("gone",), ("soon",)]
    with db.read(prefetch=[timed]) as txn:
        assert read_at(txn, datetime.now(UTC)) == [("gone",)]


def test_a_lookup_reads_the_value_another_table_holds_asked_for_ahead_or_not(new_database):
    """A term compared with a `Lookup` compares with the value another table's row
    holds; asked for ahead, the read stands for the same read of the value it found,
    until the transaction writes to its table (a write elsewhere changes nothing)."""
    db = fresh_storage(new_database())
    columns = ("queue", "status", "count")
    with db.write() as txn:
        txn.upsert("queue_counts", columns, ("queue", "status"), [("dev", "queued", 1), ("qa", "queued", 2)])
        txn.insert("projection_meta", ("key", "value"), [("who", "dev")])

    def of_key(key: str) -> Read:  # the counts of the queue that projection_meta's `key` names
        named = Lookup("projection_meta", "value", (("key", "=", key),))
        return Read("queue_counts", columns, (("queue", "=", named),))

    looked, nobody = of_key("who"), of_key("x")

    def counts_of(txn, queue: str) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
        return [tuple(r) for r in txn.rows("queue_counts", columns, (("queue", "=", queue),))]

    with db.write(prefetch=[looked, nobody]) as txn:
        assert [tuple(r) for r in txn.rows(*looked)] == [("dev", "queued", 1)] == counts_of(txn, "dev")
        assert txn.rows(*nobody) == []
        txn.upsert("agent_records", ("agent", "task_type", "succeeded", "failed"), ("agent", "task_type"),
                   [("a", "t", 1, 0)])
        assert counts_of(txn, "dev") == [("dev", "queued", 1)]
        txn.upsert("projection_meta", ("key", "value"), ("key",), [("who", "qa")])  # the lookup's table
        assert [tuple(r) for r in txn.rows(*looked)] == [("qa", "queued", 2)]
        txn.upsert("queue_counts", columns, ("queue", "status"), [("dev", "queued", 5)], add=("count",))
        assert counts_of(txn, "dev") == [("dev", "queued", 6)]
        with pytest.raises(ValueError, match="'=' only"):
            txn.rows("queue_counts", columns, (("queue", "!=", Lookup("projection_meta", "value", ())),))
    with db.read(prefetch=[looked]) as txn:
        assert [tuple(r) for r in txn.rows(*looked)] == [("qa", "queued", 2)] == counts_of(txn, "qa")


def test_counts_ids_and_sizes_hold_64_bit_values(new_database):
    db = fresh_storage(new_database())
    big = 2**62 + 1
    with db.write() as txn:
        txn.upsert("queue_counts", ("queue", "status", "count"), ("queue", "status"), [("q", "s", big)])
    with db.read() as txn:
        assert list(txn.fetch_all("queue_counts", ("count",))) == [(big,)]
        assert TaskRow.__table__.c.payload_bytes.type.compile(txn.session.get_bind().dialect) in (
            "BIGINT", "INTEGER")  # INTEGER is SQLite's 64-bit integer


def test_an_unindexed_term_selects_the_same_rows(new_database):
    db = fresh_storage(new_database())
    with db.write() as txn:
        txn.upsert("queue_counts", ("queue", "status", "count"), ("queue", "status"),
                   [("dev", "queued", 1), ("qa", "running", 2)])
    with db.read() as txn:
        term = txn.unindexed(QueueCountRow.status) == "running"
        assert txn.session.execute(select(QueueCountRow.queue).where(term)).scalars().all() == ["qa"]


def test_contains_holds_the_text_anywhere_ascii_letters_in_any_case_and_no_wildcards(new_database):
    db = fresh_storage(new_database())
    keys = ("Fix the Parser", "parser", "100% done", "a_b", "back\\slash", "Ünicode", "ünicode")
    with db.write() as txn:
        txn.insert("projection_meta", ("key", "value"), [(k, "v") for k in keys])
    with db.read() as txn:
        def found(text: str) -> list[str]:
            rows = txn.rows("projection_meta", ("key",), [("key", "contains", text)], order=("key",))
            return sorted(str(r[0]) for r in rows)

        assert found("PARSER") == found("parser") == ["Fix the Parser", "parser"]
        assert found("%") == ["100% done"] and found("_") == ["a_b"] and found("\\") == ["back\\slash"]
        assert found("Ü") == ["Ünicode"] and found("ü") == ["ünicode"]  # only ASCII letters fold
        assert found("") == sorted(keys) and found("nowhere") == []


def test_a_writer_reads_the_servers_clock_where_it_has_one(new_database, engine):
    db = fresh_storage(new_database())
    with db.write() as txn:
        first = txn.server_time()
    with db.write() as txn:
        second = txn.server_time()
    if engine == "sqlite":
        assert first is None and second is None  # the caller's (injected) clock decides
    else:
        assert first.tzinfo is not None and first <= second
        assert abs((datetime.now(UTC) - second).total_seconds()) < 60
