"""The SQLite file: pragmas on every connection, private files, and writers that
queue on the lock instead of failing."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from eventlog.errors import DatabaseError
from eventlog.events import TaskSubmitted
from eventlog.sql_store import SqlStore
from eventlog.storage.sqlite import SqliteStorage, classify
from eventlog.store import first_broken_link
from tests.conftest import fresh_storage

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def pragma(db: SqliteStorage, name: str) -> object:
    with db.read() as txn:
        return txn.session.execute(text(f"PRAGMA {name}")).scalar()


def test_every_connection_gets_the_pragmas(tmp_path):
    db = fresh_storage(str(tmp_path / "a.db"), synchronous="FULL", busy_timeout_ms=1234)
    assert pragma(db, "journal_mode") == "wal"
    assert pragma(db, "busy_timeout") == 1234
    assert pragma(db, "foreign_keys") == 1
    assert pragma(db, "synchronous") == 2  # FULL
    db.close()
    assert pragma(SqliteStorage.open(tmp_path / "a.db"), "synchronous") == 1  # NORMAL, the default


def test_new_database_files_are_private(tmp_path):
    db = fresh_storage(str(tmp_path / "p.db"))
    with db.write() as txn:
        SqlStore(txn).append([TaskSubmitted(task_id=1, queue="q", title="t")], T0)
    for name in ("p.db", "p.db-wal", "p.db-shm"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    db.close()


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(DatabaseError, match="run `sched init` first"):
        SqliteStorage.open(tmp_path / "missing.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    before = junk.read_bytes()
    with pytest.raises(DatabaseError, match=r"junk\.db"):
        SqliteStorage.open(junk)
    assert junk.read_bytes() == before


def _append_many(path: str, worker: int, count: int) -> None:
    db = SqliteStorage.open(Path(path))
    for i in range(count):
        with db.write() as txn:  # read the head, then append after it: read-modify-write
            SqlStore(txn).append(
                [TaskSubmitted(task_id=worker * 1000 + i + 1, queue="q", title="t")], T0)
    db.close()


def test_concurrent_writers_in_processes_queue_and_keep_the_chain(tmp_path):
    """Each append reads the head and writes after it. With a deferred BEGIN two
    processes would both read, then one would fail with "database is locked"; with
    BEGIN IMMEDIATE they take turns and every append lands."""
    path = tmp_path / "c.db"
    fresh_storage(str(path)).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 30)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    db = SqliteStorage.open(path)
    with db.read() as txn:
        store = SqlStore(txn)
        assert store.last_position() == 120
        assert first_broken_link(store.read()) is None
        assert sorted(r.event.task_id for r in store.read()) == sorted(
            w * 1000 + i + 1 for w in range(4) for i in range(30))


@pytest.mark.parametrize(("name", "says"), [
    ("SQLITE_FULL", "the disk is full"), ("SQLITE_IOERR_WRITE", "an I/O error"),
    ("SQLITE_READONLY_DBMOVED", "the database is read-only"), ("SQLITE_CORRUPT", "damaged"),
    ("SQLITE_BUSY", "try again"),
])
def test_faults_of_the_machine_are_exit_1_and_say_whether_a_retry_helps(tmp_path, name, says):
    error = sqlite3.OperationalError("from the driver")
    error.sqlite_errorname = name  # as the driver sets it
    fault = classify(tmp_path / "f.db", error)
    assert fault.exit_code == 1
    assert says in fault.message and str(tmp_path / "f.db") in fault.message
    assert "retry" in fault.message or "try again" in fault.message
