"""The SQLite adapter of the storage port (the embedded default): the one place that
sets pragmas, begins transactions, recognises sched's own files and names driver
errors.

Python's sqlite3 driver would open transactions on its own with a deferred `BEGIN`;
a deferred transaction that later writes fails at once with "database is locked",
ignoring the busy timeout. So the driver's own handling is turned off and every
transaction begins from the `begin` listener: `BEGIN IMMEDIATE` for writers (they
queue on the busy timeout and then decide alone), a plain `BEGIN` for readers (a
consistent snapshot under WAL).

Before the engine touches a file (its first connection switches the journal mode to
WAL, which is a write), the file is looked at through a read-only connection: sched
opens only its own databases, marked with `PRAGMA application_id` (and those made
before the mark, recognised by their `events` table), an empty file, or no file (for
`init`). Another program's database is refused and left exactly as it was.

A file that cannot be written (read-only media, permissions) is opened read-only:
reads work, a write fails with one line saying so.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from sqlalchemy import ColumnElement, Engine, Table, create_engine, event, literal_column
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, SQLModel

from eventlog.errors import DatabaseBusy, DatabaseError, DatabaseFault, ForeignDatabase
from eventlog.faults import fault_point
from eventlog.storage.base import PollingWakeups, SqlTransaction

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
APPLICATION_ID = 0x53434844  # "SCHD": PRAGMA application_id of a database sched made
EVENT_COLUMNS = {"seq", "stream_id", "type", "schema_version", "recorded_at", "data", "prev_hash", "hash"}


def create_private_file(path: Path) -> None:
    """Create an empty file readable by its owner only (SQLite gives -wal/-shm the
    same mode as the database file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(path.resolve()))}?{query}"


def writable(path: Path) -> bool:
    """Whether sched may write the database file (and create its -wal/-shm beside it):
    false on read-only media or without permission."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


@dataclass(frozen=True)
class Probe:
    """What a file holds, seen without changing it."""

    kind: Literal["sched", "legacy", "empty", "foreign"]
    detail: str = ""


def probe(path: Path) -> Probe:
    """Look at an existing file through a read-only connection (no journal mode switch,
    no table created): sched's (marked), sched's from before the mark (an `events` table
    of sched's shape), empty (no tables, no marks: `init` may use it), or another
    program's."""
    wal = Path(f"{path}-wal")
    if path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size > 0):
        return Probe("empty")
    try:
        with closing(sqlite3.connect(_uri(path, **read_only_params(path)), uri=True)) as conn:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            columns = ({r[1] for r in conn.execute("PRAGMA table_info(events)")}
                       if "events" in tables else set())
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorname", "") not in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            raise classify(path, e) from e  # a fault of the machine (I/O, a full disk, ...)
        raise ForeignDatabase(f"{path}: not a sched database ({describe_driver_error(e)}); "
                              "nothing was changed") from e
    if app_id == APPLICATION_ID:
        return Probe("sched")
    if app_id == 0 and columns == EVENT_COLUMNS:
        return Probe("legacy")
    if app_id == 0 and version == 0 and not tables:
        return Probe("empty")
    holds = f"application_id {app_id:#x}" if app_id else (
        "tables " + ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "") if tables
        else f"user_version {version}")
    return Probe("foreign", f"{path} is another program's SQLite database ({holds}), not sched's; "
                            "nothing was changed")


def read_only_params(path: Path) -> dict[str, str]:
    """URI parameters of a connection that writes nothing: `mode=ro`, and `immutable`
    where not even the -shm of a WAL database can be made (read-only media)."""
    if Path(f"{path}-shm").exists() or os.access(path.parent, os.W_OK):
        return {"mode": "ro"}
    return {"mode": "ro", "immutable": "1"}


def make_engine(path: Path, *, synchronous: Synchronous = "NORMAL",
                busy_timeout_ms: int = 30_000, read_only: bool = False) -> Engine:
    """An engine whose every connection has the pragmas and transaction handling of sched
    (read-only: opened `mode=ro`, and `immutable` when not even the -shm can be made)."""
    if read_only:
        params = read_only_params(path)
        engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(
            _uri(path, **params), uri=True, check_same_thread=False))
    else:
        engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        # a damaged row that is not UTF-8 reads as text with surrogate escapes (its
        # hash then fails to match, and verify names its seq) instead of failing the read
        dbapi_connection.text_factory = lambda data: data.decode("utf-8", "surrogateescape")
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not read_only:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.execute("PRAGMA foreign_keys = ON")
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


# SQLite result codes (primary, the low byte) -> (why, whether waiting and retrying helps)
_FAULTS = {
    "SQLITE_FULL": ("the disk is full", "free some space, then try again"),
    "SQLITE_IOERR": ("an I/O error", "a retry may help if the fault was passing; check the disk"),
    "SQLITE_READONLY": ("the database is read-only", "a retry will not help until it can be written"),
    "SQLITE_CANTOPEN": ("the file cannot be opened", "check that it and its directory exist and "
                        "can be written"),
    "SQLITE_CORRUPT": ("the database file is damaged", "a retry will not help: see `sched replay "
                       "--verify` and docs/operations.md on recovery"),
    "SQLITE_NOTADB": ("the file is not a database", "a retry will not help"),
    "SQLITE_PERM": ("permission denied", "a retry will not help until the permissions change"),
    "SQLITE_NOMEM": ("out of memory", "a retry may help"),
}


def disk_nearly_full(path: Path, margin: int = 1024 * 1024) -> bool:
    """Whether the file system holding `path` has less than `margin` bytes left."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < margin


def classify(path: Path, error: BaseException) -> DatabaseError:
    """The sched error for a driver error: busy and every fault of the machine (disk
    full, I/O, read-only, damaged) exit 1 with whether a retry can help; exit 2 stays
    for bad input."""
    original = getattr(error, "orig", None) or error
    what = describe_driver_error(error)
    name = getattr(original, "sqlite_errorname", "") or ""
    primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    if primary in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in what or "busy" in what:
        return DatabaseBusy(f"{path}: {what} (another writer held it longer than busy_timeout_ms; "
                            "try again)")
    if primary == "SQLITE_IOERR" and disk_nearly_full(path):
        primary = "SQLITE_FULL"  # a failed write to a full disk can surface as an I/O error
    if primary in _FAULTS:
        why, advice = _FAULTS[primary]
        return DatabaseFault(f"{path}: {why} ({what}): {advice}")
    return DatabaseFault(f"{path}: {what}")


class SqliteTransaction(SqlTransaction):
    mark = "?"

    def unindexed(self, column: ColumnElement) -> ColumnElement:  # type: ignore[type-arg]
        # `+column`: SQLite's way of keeping a term out of the index choice
        return literal_column(f"+{column.table.name}.{column.name}")  # type: ignore[attr-defined]


class SqliteStorage:
    """A sched database file: its engine and its read and write transactions."""

    engine_name = "sqlite"

    def __init__(self, path: Path, *, synchronous: Synchronous = "NORMAL",
                 busy_timeout_ms: int = 30_000, read_only: bool = False) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.read_only = read_only
        self.engine = make_engine(self.path, synchronous=synchronous,
                                  busy_timeout_ms=busy_timeout_ms, read_only=read_only)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")

    @classmethod
    def create(cls, path: Path, **options) -> SqliteStorage:  # type: ignore[no-untyped-def]
        """Open `path` for `init` (then `create_schema`): create the file (mode 0600)
        if missing. An existing file must be sched's, or empty."""
        path = Path(path)
        if not path.exists():
            create_private_file(path)
        elif probe(path).kind == "foreign":
            raise ForeignDatabase(probe(path).detail)
        return cls(path, **options)

    def schema_version(self) -> int:
        with self.guard(), self.engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)

    def create_schema(self, tables: Sequence[Table], version: int) -> None:
        with self.guard():
            SQLModel.metadata.create_all(self.engine, tables=list(tables))
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.exec_driver_sql(f"PRAGMA user_version = {int(version)}")

    def wakeups(self) -> PollingWakeups:
        return PollingWakeups()

    def integrity_check(self) -> str:
        with self.guard(), self.engine.connect() as conn:
            return "; ".join(row[0] for row in conn.exec_driver_sql("PRAGMA quick_check"))

    @classmethod
    def open(cls, path: Path, **options) -> SqliteStorage:  # type: ignore[no-untyped-def]
        """Open an existing sched database (read-only if the file cannot be written); a
        missing, empty or foreign file is an error and is left as it was."""
        path = Path(path)
        if not path.is_file():
            raise DatabaseError(f"no database at {path}: run `sched init` first")
        found = probe(path)
        if found.kind == "foreign":
            raise ForeignDatabase(found.detail)
        if found.kind == "empty":
            raise DatabaseError(f"{path} is empty, not a sched database yet: run `sched init`")
        return cls(path, **options, read_only=not writable(path))

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn driver errors into one-line errors naming the file (see `classify`)."""
        try:
            yield
        except (OperationalError, DBAPIError, sqlite3.Error) as e:
            raise classify(self.path, e) from e

    @contextmanager
    def write(self, *, commit: bool = True) -> Iterator[SqliteTransaction]:
        """A session in one `BEGIN IMMEDIATE` transaction, committed when the block
        returns (rolled back instead with `commit=False`, or if the block raises)."""
        if self.read_only:
            raise DatabaseFault(f"{self.path}: the database is read-only (read-only media or no "
                                "write permission): this command writes; a retry will not help "
                                "until it can be written")
        with self.guard(), Session(self._writer) as session:
            try:
                yield SqliteTransaction(session)
            except BaseException:
                session.rollback()
                raise
            if commit:
                fault_point("before_commit")
                session.commit()
            else:
                session.rollback()

    @contextmanager
    def read(self) -> Iterator[SqliteTransaction]:
        """A transaction that sees one consistent snapshot and writes nothing."""
        with self.guard(), Session(self.engine) as session:
            try:
                yield SqliteTransaction(session)
            finally:
                session.rollback()

    def close(self) -> None:
        self.engine.dispose()
