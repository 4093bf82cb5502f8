"""The SQLite adapter of the storage port (the embedded default): the one place that
sets pragmas, begins transactions, recognises sched's own files and names driver
errors.

Python's sqlite3 driver would open transactions on its own with a deferred `BEGIN`;
a deferred transaction that later writes fails at once with "database is locked",
ignoring the busy timeout. So the driver's own handling is turned off and the adapter
begins every transaction itself: `BEGIN IMMEDIATE` for writers (they take turns on a
lock file first, `writer_lock`, and then decide alone), a plain `BEGIN` for readers (a consistent
snapshot under WAL). Transactions run on the driver's connections; SQLAlchemy is
loaded only when a statement written with it needs a session (see `SqliteStorage`).

Before the adapter touches a file (its first connection switches the journal mode to
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
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar
from urllib.parse import quote

from eventlog.errors import (
    MEND_DAMAGE,
    BadInput,
    DamagedProjection,
    DatabaseBusy,
    DatabaseError,
    DatabaseFault,
    ForeignDatabase,
    missing_table,
)
from eventlog.faults import fault_point
from eventlog.layout import EVENT_COLUMNS
from eventlog.storage.base import PollingWakeups, SqlTransaction, create_tables, quiet_pool_faults
from eventlog.storage.collector import collector_paused
from eventlog.storage.port import Read, Row
from eventlog.storage.writer_lock import TurnNotGiven, turn_holder, writer_turn

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Engine, Table
    from sqlalchemy.engine import Connection
    from sqlmodel import Session

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
APPLICATION_ID = 0x53434844  # "SCHD": PRAGMA application_id of a database sched made


def make_directory(path: Path, what: str) -> None:
    """Make the directory `path` and those above it, as needed; a file where one of them
    should be is bad input, said so (Python says only `File exists`), naming `what`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise BadInput(f"cannot make {what}: a file stands where a directory of its path should be") from e


def create_private_file(path: Path) -> None:
    """Create an empty file readable by its owner only (SQLite gives -wal/-shm the
    same mode as the database file)."""
    make_directory(path.parent, str(path))
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
        if getattr(e, "sqlite_errorname", "") not in ("SQLITE_NOTADB", "SQLITE_CORRUPT") \
                or marked_as_sched(path):  # (a damaged sched database: a fault, not another's file)
            raise classify(path, e) from e  # a fault of the machine (I/O, a full disk, ...)
        raise ForeignDatabase(f"{path}: not a sched database ({describe_driver_error(e)}); "
                              "nothing was changed") from e
    except UnicodeDecodeError as e:  # a table's name that is not UTF-8: its schema is damaged
        why, advice = _FAULTS["SQLITE_CORRUPT"]
        raise DatabaseFault(f"{path}: {why} (its schema holds text that is not UTF-8): {advice}") from e
    if app_id == APPLICATION_ID:
        return Probe("sched")
    if app_id == 0 and columns == set(EVENT_COLUMNS):
        return Probe("legacy")
    if app_id == 0 and version == 0 and not tables:
        return Probe("empty")
    holds = f"application_id {app_id:#x}" if app_id else (
        "tables " + ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "") if tables
        else f"user_version {version}")
    return Probe("foreign", f"{path} is another program's SQLite database ({holds}), not sched's; "
                            "nothing was changed")


def marked_as_sched(path: Path) -> bool:
    """Whether the file's SQLite header carries sched's application id (bytes 68 to 71,
    big-endian), read without SQLite: a sched database damaged past what SQLite can
    open (cut short, a page overwritten) is still told from another program's file."""
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except OSError:
        return False
    return (len(header) == 100 and header.startswith(b"SQLite format 3\x00")
            and int.from_bytes(header[68:72], "big") == APPLICATION_ID)


def not_a_file(path: Path) -> str | None:
    """Why `path`, which exists, cannot be a database file (bad input, not a disk fault):
    a directory, or anything else that is not a regular file (a pipe, a device); None
    for a regular file."""
    if path.is_dir():
        return f"{path} is a directory, not a database file (give a file, such as {path / 'sched.db'})"
    if not path.is_file():
        return f"{path} is not a regular file (a pipe or a device, say), not a database file"
    return None


def read_only_params(path: Path) -> dict[str, str]:
    """URI parameters of a connection that writes nothing: `mode=ro`, and `immutable`
    where not even the -shm of a WAL database can be made (read-only media)."""
    if Path(f"{path}-shm").exists() or os.access(path.parent, os.W_OK):
        return {"mode": "ro"}
    return {"mode": "ro", "immutable": "1"}


def connect(path: Path, *, synchronous: Synchronous = "NORMAL", busy_timeout_ms: int = 30_000,
            read_only: bool = False) -> sqlite3.Connection:
    """A driver connection with the pragmas and transaction handling of sched (read-only:
    opened `mode=ro`, and `immutable` when not even the -shm can be made). The driver's
    own transaction handling is off: the adapter begins every transaction itself."""
    if read_only:
        conn = sqlite3.connect(_uri(path, **read_only_params(path)), uri=True, check_same_thread=False,
                               isolation_level=None)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not read_only:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


class Lent:
    """A driver connection lent to SQLAlchemy for the length of one transaction: it may
    run statements on it, but the adapter alone ends the transaction and closes it."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "_conn":
            object.__setattr__(self, name, value)
        else:
            setattr(self._conn, name, value)


def _is_driver_error(error: BaseException) -> bool:
    """A sqlite3 error, or SQLAlchemy's wrapping of one (SQLAlchemy is looked up only
    if something loaded it: the quick commands never do)."""
    if isinstance(error, sqlite3.Error):
        return True
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(error, exc.DBAPIError)


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
    "SQLITE_CORRUPT": ("the database file is damaged", "a retry will not help: see docs/operations.md, "
                       "A damaged database file"),
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


_NO_TABLE = "no such table: "  # (SQLite's message; the name may carry its schema: main.tasks)


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
    if what.startswith(_NO_TABLE):
        return missing_table(str(path), what.removeprefix(_NO_TABLE).split(".")[-1])
    if primary == "SQLITE_IOERR" and disk_nearly_full(path):
        primary = "SQLITE_FULL"  # a failed write to a full disk can surface as an I/O error
    if primary in _FAULTS:
        why, advice = _FAULTS[primary]
        return DatabaseFault(f"{path}: {why} ({what}): {advice}")
    return DatabaseFault(f"{path}: {what}")


T = TypeVar("T")
_UNDECODABLE = "Could not decode to UTF-8"  # the driver's error for text that is not UTF-8


def lenient_text(data: bytes) -> str:
    """A text column's bytes as text, those that are not UTF-8 (a damaged file) with
    surrogate escapes: the row is read, its hash fails to match and verify names its
    seq, instead of the read failing."""
    return data.decode("utf-8", "surrogateescape")


def _undecodable(error: sqlite3.OperationalError | UnicodeEncodeError) -> None:
    """Return when a read met text that is not UTF-8 (a damaged file: it is read again
    with `lenient_text`); raise anything else (`damaged_text` for text that cannot be
    written back). Called in the read's `except`."""
    if isinstance(error, UnicodeEncodeError):
        raise damaged_text(error) from error
    if not str(error).startswith(_UNDECODABLE):
        raise error


def damaged_text(error: UnicodeEncodeError) -> DamagedProjection:
    """A statement given text that is not Unicode: only text read from a damaged row
    holds that (`lenient_text`; what users give is refused at the door), so the write
    (or read) that would carry it on is refused in one line."""
    bad = error.object[error.start:error.end]
    return DamagedProjection(f"a text in the database is damaged (not UTF-8: {bad!r}): {MEND_DAMAGE}")


class SqliteTransaction(SqlTransaction):
    """Text is read by the driver, as UTF-8 (quick: a Python function per text column
    costs about a microsecond a column); a read that meets a value that is not UTF-8
    is made again with `lenient_text` (rare: a damaged file)."""

    mark = "?"
    hint = "+"  # `+column`: SQLite's way of keeping a term out of the index choice

    def _all(self, sql: str, params: Sequence[object]) -> list[Row]:
        return self._decoded(super()._all, sql, params)

    def _many(self, sql: str, rows: Sequence[Row]) -> None:
        try:
            super()._many(sql, rows)
        except UnicodeEncodeError as e:
            raise damaged_text(e) from e

    def fetch_one(self, table: str, columns: Sequence[str], key: str, value: object) -> Row | None:
        return self._decoded(super().fetch_one, table, columns, key, value)

    def fetch_all(self, table: str, columns: Sequence[str], order: Sequence[str] = ()) -> Iterator[Row]:
        given = 0
        try:
            for row in super().fetch_all(table, columns, order):
                yield row
                given += 1
            return
        except (sqlite3.OperationalError, UnicodeEncodeError) as e:
            _undecodable(e)
        # read again leniently, on from the row that met it (`order` names a key for
        # that; the snapshot does not move)
        with self._lenient():
            yield from islice(super().fetch_all(table, columns, order), given, None)

    def _decoded(self, read: Callable[..., T], *args: object) -> T:
        try:
            return read(*args)
        except (sqlite3.OperationalError, UnicodeEncodeError) as e:
            _undecodable(e)
        with self._lenient():
            return read(*args)

    @contextmanager
    def _lenient(self) -> Iterator[None]:
        conn = self._driver()
        before, conn.text_factory = conn.text_factory, lenient_text
        try:
            yield
        finally:
            conn.text_factory = before

    def unindexed(self, column: ColumnElement) -> ColumnElement:  # type: ignore[type-arg]
        from sqlalchemy import literal_column

        # `+column`: SQLite's way of keeping a term out of the index choice
        return literal_column(f"+{column.table.name}.{column.name}")  # type: ignore[attr-defined]

    def has_table(self, name: str) -> bool:
        return bool(self._all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))


class SqliteStorage:
    """A sched database file: its driver connections (a small pool) and their read and
    write transactions.

    Every transaction runs on a driver connection the adapter began itself, so a
    command whose statements all go through the port's driver-level methods (the
    quick ones: `status`, `tasks`, the worker protocol) never loads SQLAlchemy. A
    statement written with SQLAlchemy gets `Transaction.session`: a session over the
    same connection, in the same transaction, through an engine made on first use
    (`engine`), to which the connection is lent (`Lent`) and never handed over."""

    engine_name = "sqlite"

    def __init__(self, path: Path, *, synchronous: Synchronous = "NORMAL",
                 busy_timeout_ms: int = 30_000, read_only: bool = False) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.read_only = read_only
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._lending: sqlite3.Connection | None = None  # to the engine, while it connects

    @classmethod
    def create(cls, path: Path, **options) -> SqliteStorage:  # type: ignore[no-untyped-def]
        """Open `path` for `init` (then `create_schema`): create the file (mode 0600)
        if missing. An existing file must be sched's, or empty."""
        path = Path(path)
        if path.exists() and (why := not_a_file(path)) is not None:
            raise DatabaseError(why)
        if not path.exists():
            create_private_file(path)
        elif probe(path).kind == "foreign":
            raise ForeignDatabase(probe(path).detail)
        return cls(path, **options)

    # -- driver connections -------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection of the pool for one transaction; back to the pool after it
        unless it is left inside a transaction (then it is closed)."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = connect(self.path, synchronous=self.synchronous, busy_timeout_ms=self.busy_timeout_ms,
                           read_only=self.read_only)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of this database (made on first use): it connects
        through the connection of the transaction asking for a session (`Lent`), so
        its statements run in that transaction."""
        if self._engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            def lent() -> Lent:
                assert self._lending is not None, "the SQLite engine connects only through a transaction"
                return Lent(self._lending)

            self._engine = create_engine(f"sqlite:///{self.path}", creator=lent, poolclass=NullPool,
                                         pool_reset_on_return=None)
            quiet_pool_faults()
        return self._engine

    def _bind(self, conn: sqlite3.Connection) -> Connection:
        """A SQLAlchemy connection over `conn` (already in its transaction)."""
        engine = self.engine
        with self._lock:
            self._lending = conn
            try:
                return engine.connect()
            finally:
                self._lending = None

    @contextmanager
    def _transaction(self, begin: str, commit: bool,
                     turn: AbstractContextManager[None] | None = None) -> Iterator[SqliteTransaction]:
        """`turn`: entered once the connection is in hand (opening one is not done
        while the writers' turn is held), left after the commit; while it is held the
        cyclic collector waits (`collector.py`)."""
        with self.guard(), self._connection() as conn, turn or nullcontext(), \
                collector_paused() if turn else nullcontext():
            bound: list[Connection] = []
            sessions: list[Session] = []

            def open_session() -> Session:
                from sqlmodel import Session

                conn.text_factory = lenient_text  # (SQLAlchemy's reads cannot be made again)
                bound.append(self._bind(conn))
                sessions.append(Session(bind=bound[0]))
                return sessions[0]

            try:
                conn.execute(begin)
                yield SqliteTransaction(driver=conn, open_session=open_session)
                if commit:
                    if sessions:
                        sessions[0].flush()  # what the session holds reaches the connection
                    fault_point("before_commit")
                    conn.commit()
            finally:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.rollback()
                for session in sessions:
                    session.close()
                for connection in bound:
                    connection.close()
                conn.text_factory = str

    # -- the port -----------------------------------------------------------------------
    def schema_version(self) -> int:
        with self.guard(), self._connection() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0] or 0)

    def create_schema(self, tables: Sequence[Table], version: int) -> None:
        with self.write() as txn:
            create_tables(txn.session.connection(), tables)
            txn.session.flush()
            conn = txn._driver()
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {int(version)}")

    def wakeups(self) -> PollingWakeups:
        return PollingWakeups()

    def integrity_check(self) -> str:
        with self.guard(), self._connection() as conn:
            return "; ".join(" ".join(row[0].split()) for row in conn.execute("PRAGMA quick_check"))

    @classmethod
    def open(cls, path: Path, **options) -> SqliteStorage:  # type: ignore[no-untyped-def]
        """Open an existing sched database (read-only if the file cannot be written); a
        missing, empty or foreign file is an error and is left as it was."""
        path = Path(path)
        if not path.exists():
            raise DatabaseError(f"no database at {path}: run `sched init` first")
        if (why := not_a_file(path)) is not None:
            raise DatabaseError(why)
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
        except Exception as e:
            if _is_driver_error(e):
                raise classify(self.path, e) from e
            raise

    @contextmanager
    def write(self, *, commit: bool = True, prefetch: Sequence[Read] = ()) -> Iterator[SqliteTransaction]:
        """One `BEGIN IMMEDIATE` transaction, in the writers' turn (`writer_turn`: sched's
        writers queue on a lock file and wait at most the busy timeout, then decide
        alone), committed when the block returns (rolled back instead with
        `commit=False`, or if the block raises). `prefetch` is not needed: a read
        here costs no round trip, so each is made when asked for."""
        if self.read_only:
            raise DatabaseFault(f"{self.path}: the database is read-only (read-only media, or no "
                                "write permission on the file or on its directory, where its -wal and "
                                "lock files go): this command writes; a retry will not help until it "
                                "can be written")
        try:
            turn = writer_turn(self.path, self.busy_timeout_ms / 1000)
            with self._transaction("BEGIN IMMEDIATE", commit, turn) as txn:
                yield txn
        except TurnNotGiven as e:
            holder = turn_holder(self.path)
            raise DatabaseBusy(f"{self.path}: the database is locked (another writer held it longer "
                               f"than busy_timeout_ms{': ' + holder if holder else ''}; try again)") from e

    @contextmanager
    def read(self, *, prefetch: Sequence[Read] = ()) -> Iterator[SqliteTransaction]:
        """A transaction that sees one consistent snapshot (under WAL) and writes nothing
        (`prefetch` is for engines with round trips: see `Storage.read`)."""
        with self._transaction("BEGIN", commit=False) as txn:
            yield txn

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self._engine is not None:
            self._engine.dispose()
