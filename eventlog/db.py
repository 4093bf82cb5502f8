"""Opening the SQLite database: the one place that sets pragmas and begins transactions.

Python's sqlite3 driver would open transactions on its own with a deferred `BEGIN`;
a deferred transaction that later writes fails at once with "database is locked",
ignoring the busy timeout. So the driver's own handling is turned off and every
transaction begins from the `begin` listener: `BEGIN IMMEDIATE` for writers (they
queue on the busy timeout and then decide alone), a plain `BEGIN` for readers (a
consistent snapshot under WAL).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, SQLModel

from eventlog.errors import DatabaseBusy, DatabaseError
from eventlog.faults import fault_point
from eventlog.schema import LOG_SCHEMA_VERSION, EventRow

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


def create_private_file(path: Path) -> None:
    """Create an empty file readable by its owner only (SQLite gives -wal/-shm the
    same mode as the database file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def make_engine(path: Path, *, synchronous: Synchronous = "NORMAL",
                busy_timeout_ms: int = 30_000) -> Engine:
    """An engine whose every connection has the pragmas and transaction handling of sched."""
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def describe_driver_error(error: BaseException) -> str:
    """One line for a driver error, without SQLAlchemy's statement dump."""
    original = getattr(error, "orig", None) or error
    return str(original).splitlines()[0]


class Database:
    """A sched database file: its engine and its read and write transactions."""

    def __init__(self, path: Path, *, synchronous: Synchronous = "NORMAL",
                 busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(path)
        self.engine = make_engine(self.path, synchronous=synchronous,
                                  busy_timeout_ms=busy_timeout_ms)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")

    @classmethod
    def create(cls, path: Path, **options) -> Database:  # type: ignore[no-untyped-def]
        """Open `path`, creating the file (mode 0600) and the log table if missing."""
        path = Path(path)
        if not path.exists():
            create_private_file(path)
        db = cls(path, **options)
        db._check_is_sqlite()
        with db.guard():
            SQLModel.metadata.create_all(db.engine, tables=[EventRow.__table__])
            with db.engine.begin() as conn:
                conn.exec_driver_sql(f"PRAGMA user_version = {LOG_SCHEMA_VERSION}")
        return db

    @classmethod
    def open(cls, path: Path, **options) -> Database:  # type: ignore[no-untyped-def]
        """Open an existing sched database; a missing or foreign file is an error."""
        path = Path(path)
        if not path.is_file():
            raise DatabaseError(f"no database at {path}: run `sched init` first")
        db = cls(path, **options)
        db._check_is_sqlite()
        with db.guard():
            if not inspect(db.engine).has_table("events"):
                raise DatabaseError(f"{path} is not a sched database (no events table)")
        return db

    def _check_is_sqlite(self) -> None:
        with self.guard(), self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn driver errors into one-line `DatabaseError`s naming the file."""
        try:
            yield
        except (OperationalError, DBAPIError, sqlite3.Error) as e:
            what = describe_driver_error(e)
            if "locked" in what or "busy" in what:
                raise DatabaseBusy(f"{self.path}: {what} (another writer held it longer than "
                                   "busy_timeout_ms; try again)") from e
            raise DatabaseError(f"{self.path}: {what}") from e

    @contextmanager
    def write(self, *, commit: bool = True) -> Iterator[Session]:
        """A session in one `BEGIN IMMEDIATE` transaction, committed when the block
        returns (rolled back instead with `commit=False`, or if the block raises)."""
        with self.guard(), Session(self._writer) as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise
            if commit:
                fault_point("before_commit")
                session.commit()
            else:
                session.rollback()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session that sees one consistent snapshot and writes nothing."""
        with self.guard(), Session(self.engine) as session:
            try:
                yield session
            finally:
                session.rollback()

    def close(self) -> None:
        self.engine.dispose()
