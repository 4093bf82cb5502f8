"""The PostgreSQL adapter of the storage port: sched on several hosts over one database.

One writer decides at a time, as on SQLite: a writer runs at READ COMMITTED, sets
`lock_timeout` from the busy timeout, and takes one transaction-level advisory lock
before it reads anything; it then catches up, decides, appends (seq = head + 1 under
the lock: gap-free, the same hash chain) and commits, which releases the lock. Not
SERIALIZABLE (every host's tick would collide on the log head and retry) and not
SKIP LOCKED (a claim appends to the log anyway, and skipping rows does not protect an
agent's capacity). Transaction-level locks only, so PgBouncer in transaction mode
works. Readers see one snapshot: REPEATABLE READ READ ONLY.

The time a writer records is the server's, read under the lock, so hosts whose clocks
disagree cannot record time running backwards.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Column, MetaData, String, Table, create_engine, event, func, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, InvalidatePoolError, SQLAlchemyError
from sqlalchemy.pool import PoolProxiedConnection
from sqlmodel import Session

from eventlog.errors import DatabaseBusy, DatabaseError, DatabaseFault, ForeignDatabase, missing_table
from eventlog.faults import fault_point
from eventlog.schema import EventRow
from eventlog.storage import redact
from eventlog.storage.base import (
    SqlTransaction,
    create_tables,
    delete_sql,
    quiet_pool_faults,
    term_params,
    term_shapes,
)
from eventlog.storage.collector import collector_paused
from eventlog.storage.port import WRITE_TIME, Lookup, Read, Row, Term
from eventlog.storage.types import Int64
from eventlog.timeutil import from_text

# psycopg warns on stderr when it cannot end a pipeline on a lost connection: the error
# the caller sees is sched's one line (a program that sets up logging still gets it)
logging.getLogger("psycopg").addHandler(logging.NullHandler())

# pg_advisory_xact_lock key of sched's writers: "SCHD" (advisory locks are per database)
WRITER_LOCK = 0x53434844
NOTIFY_CHANNEL = "sched"
# While a writer holds the writers' lock, the server probes its connection after 5 s
# without traffic and gives it up about 10 s after the writer's host stopped answering
# (powered off, cut from the network: nothing tells the server it is gone), which ends
# its transaction and frees the lock. With the server's defaults the whole fleet could
# not write for two hours (the kernel's keepalive time). Set for the transaction only;
# a unix socket has no use for them (the server ignores them there).
# (Not idle_in_transaction_session_timeout: psycopg ends a pipeline with a Flush after
# its Sync, and the server arms that timer only at the Sync's answer and disarms it at
# the next message, so it would not fire after most of sched's round trips.)
WRITER_LIVENESS = {"tcp_keepalives_idle": 5, "tcp_keepalives_interval": 2, "tcp_keepalives_count": 3,
                   "tcp_user_timeout": 10_000}
# where a writer keeps the time it read under the lock, as `to_text` writes it, for the
# reads asked for ahead in the same round trip (`WRITE_TIME`): a setting of its
# transaction
WRITE_TIME_SQL = "current_setting('sched.write_time')"
# the lock timeout and the liveness settings set for the transaction, then the writers'
# lock, then the time once it is held, kept as text in `WRITE_TIME_SQL`'s setting and
# returned (as text: read quicker than a time): one statement, built once but for the
# timeout (each OFFSET 0 keeps a subquery from being merged into the one around it, so
# the innermost runs first)
_TIMEOUT_LOCK_TIME = (
    "SELECT set_config('sched.write_time', to_char(locked_time AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), true) FROM "
    f"(SELECT clock_timestamp() AS locked_time FROM (SELECT pg_advisory_xact_lock({WRITER_LOCK}) FROM "
    "(SELECT set_config('lock_timeout', '{timeout_ms}', true)"
    + "".join(f", set_config('{name}', '{value}', true)" for name, value in WRITER_LIVENESS.items())
    + " OFFSET 0) AS timeouts OFFSET 0) AS locked OFFSET 0) AS timed")


_TIME_WIDTH = len("YYYY-MM-DDTHH:MM:SS.ffffffZ")  # of a time as `to_text` writes it


@lru_cache(maxsize=8)
def lock_statement(timeout_ms: int) -> str:
    """`_TIMEOUT_LOCK_TIME` for this lock timeout: the same text object every time, so
    that its cursor reads its answer as it learnt to (`PostgresTransaction.cursor_for`)."""
    return _TIMEOUT_LOCK_TIME.format(timeout_ms=timeout_ms)


# a writer's and a reader's transaction, begun by the first statement of its first
# round trip (its connection is in the driver's autocommit mode: the driver sends no
# BEGIN of its own, and its commit() and rollback() end what this began)
BEGIN_WRITER = "BEGIN ISOLATION LEVEL READ COMMITTED"
BEGIN_READER = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
COMMIT = "COMMIT"
KEPT_CURSORS = 256  # statements a connection keeps a cursor for (past it, it starts again)
KEPT_ANSWER_ROWS = 100  # an answer longer than this is not kept with its statement's cursor
# A sched writer idle inside its transaction this long, holding the writers' lock, is
# stalled: stopped (kill -STOP, a paused VM) while its host still answers the probes
# above. The next writer whose wait for the lock runs out ends it and takes its turn.
STALLED_WRITER_SECONDS = 60.0
# A connection whose server went silent (its host or the network gone: nothing refuses
# it) fails in about 30 s, where the kernel waits two hours on an idle connection and
# about fifteen minutes on an unanswered statement. The URL's own values win; libpq
# ignores them on a unix socket.
CLIENT_LIVENESS: dict[str, object] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                                   "keepalives_count": 3, "tcp_user_timeout": 30_000}
# the session holding the writers' lock (an advisory lock on one bigint: its high 32 bits
# in classid, its low ones in objid, objsubid 1), with how long it has been in its state
_LOCK_HOLDER = ("SELECT a.pid, host(a.client_addr), a.application_name, a.state, "
                "extract(epoch FROM clock_timestamp() - a.state_change)::float8 "
                "FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid::bigint * 4294967296 + l.objid::bigint = %s "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
# a write transaction that wrote at least this many rows to a table, and more than this
# share of the rows the planner's statistics of the table describe, ANALYZEs it after its
# commit (autovacuum's threshold; autovacuum itself would only do it at its next round)
ANALYZE_AFTER_ROWS = 1_000
ANALYZE_SHARE = 0.1
# set while a transaction takes a connection from the pool unpinged (see `_ping`)
_UNPINGED_CHECKOUT: ContextVar[bool] = ContextVar("sched_unpinged_checkout", default=False)
# the mark of a sched database: which version of sched's tables it holds
_MARK = Table("sched_schema", MetaData(), Column("application", String, primary_key=True),
              Column("version", Int64, nullable=False))


def engine_url(url: str) -> str:
    """SQLAlchemy's name for psycopg 3 (a bare postgresql:// would mean psycopg2)."""
    for scheme in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def connect_options(url: str, **more: object) -> dict[str, object]:
    """The libpq options sched connects to `url` with (and `more`): a connect timeout
    and `CLIENT_LIVENESS`, each only where the URL does not give its own."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(url.replace("postgresql+psycopg://", "postgresql://", 1))
    except psycopg.Error:
        given = {}  # (connecting will say what is wrong with it)
    defaults = {"connect_timeout": 10, **CLIENT_LIVENESS}
    return {**{name: value for name, value in defaults.items() if name not in given}, **more}


class PostgresTransaction(SqlTransaction):
    mark = "%s"
    # LIKE compares case (ILIKE would fold every letter the locale knows): fold the ASCII
    # letters only, as SQLite's LIKE does, so both engines select the same rows
    fold = "translate({}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"

    def __init__(self, pooled: PoolProxiedConnection, engine: Engine) -> None:
        """A transaction on `pooled` (a connection taken from the engine's pool, not yet
        used): its driver's statements run on it directly. A SQLAlchemy connection and
        session over it, in the same transaction, are made only if a statement written
        with SQLAlchemy asks for one (most commands never do: they cost about 0.1 ms per
        transaction)."""
        super().__init__(driver=pooled.driver_connection, open_session=self._open_session)
        self.pooled = pooled
        self._engine = engine
        self.bound: Connection | None = None  # the SQLAlchemy connection of the session, if one was made
        # this connection's cursors, one per statement, kept while the pool keeps it
        # (`cursor_for`)
        self._cursors: dict[str, psycopg.Cursor[Any]] = pooled.info.setdefault("sched_cursors", {})
        self._spare: list[psycopg.Cursor[Any]] = []  # cursors for this transaction only
        self.wake_seq: int | None = None
        # a writer's: the server's time once it held the lock, as `to_text` writes it
        self.locked_at: str | None = None
        self._pending: list[tuple[str, Sequence[Row]]] = []
        self.written: dict[str, int] = {}  # rows inserted or upserted, per table
        # the answers of the reads asked for ahead, by statement and parameters (of the
        # read each stood for: one table's), with the table each read: good until the
        # transaction writes to it
        self._ahead: dict[tuple[str, tuple[object, ...]], tuple[str, list[Row]]] = {}

    def _open_session(self) -> Session:
        """A session over this transaction's connection: it joins the transaction (begun
        here for SQLAlchemy, whose end is left to the adapter: the server's was begun by
        the adapter's own BEGIN)."""
        self.bound = Connection(self._engine, connection=self.pooled)
        self.bound.begin()
        return Session(bind=self.bound)

    def lock(self, busy_timeout_ms: int, prefetch: Sequence[Read] = ()) -> None:
        """BEGIN, then the lock timeout and the liveness settings, the writers' lock and
        the time once it is held (one statement: `_TIMEOUT_LOCK_TIME`), then the reads
        asked for ahead: one round trip (each read sees every commit of the writer
        before, and reads `WRITE_TIME` as the time held)."""
        locked = self._begin(BEGIN_WRITER, prefetch, lock_statement(int(busy_timeout_ms)))
        assert locked is not None
        self.locked_at = locked[0]

    def begin_reading(self, prefetch: Sequence[Read] = ()) -> None:
        """BEGIN a reader's transaction (one snapshot of every table, read only), and the
        reads asked for ahead (but those of a `WRITE_TIME`): one round trip. The
        transaction writes nothing, so their answers hold to its end."""
        self._begin(BEGIN_READER, [read for read in prefetch if not _at_write_time(read)])

    def end_reading(self) -> None:
        """End a reader's transaction (it wrote nothing: COMMIT ends it as ROLLBACK would)
        with a statement of the adapter's own. The driver's rollback() would follow its
        ROLLBACK with DEALLOCATE ALL whenever the connection had statements prepared: a
        round trip more, and every statement of the writers that share the pool
        prepared again."""
        self.cursor_for(COMMIT).execute(COMMIT, prepare=False)

    def _begin(self, begin: str, prefetch: Sequence[Read], then: str | None = None) -> Row | None:
        """`begin`, the statement `then` (its first row is returned), and the reads of
        `prefetch` (their answers kept, see `_all`), in one pipeline. `then` is the
        writers' lock (`_TIMEOUT_LOCK_TIME`): a read of a `WRITE_TIME` reads the time it
        held. A read of a `WRITE_TIME` or a `Lookup` is kept as the read it stood for
        (`_resolved`)."""
        driver = self._driver()
        reads = [self.select(*read) for read in prefetch]
        sent = [_write_time_sql(*stated) if _at_write_time(read) else stated
                for read, stated in zip(prefetch, reads, strict=True)]
        cursors, seen = [], set()
        for sql, _params in sent:
            if sql in seen:  # a statement asked for twice: a cursor of its own, for this transaction
                cursors.append(driver.cursor())
                self._spare.append(cursors[-1])
            else:
                seen.add(sql)
                cursors.append(self.cursor_for(sql))
        with driver.pipeline():
            self.cursor_for(begin).execute(begin, prepare=False)
            if then is not None:
                self.cursor_for(then).execute(then)
            for cursor, (sql, params) in zip(cursors, sent, strict=True):
                cursor.execute(sql, params)
        first = self.cursor_for(then).fetchone() if then is not None else None
        # the time held as the server wrote it, if that is as sched writes it (the
        # format's fixed width: a year of four digits)
        held = first[0] if first is not None and len(first[0]) == _TIME_WIDTH else None
        for cursor, read, (sql, params), sent_one in zip(cursors, prefetch, reads, sent, strict=True):
            rows = self._fetched(sent_one[0], cursor)
            if any(value is WRITE_TIME or isinstance(value, Lookup) for _column, _op, value in read.where):
                stood_for = _resolved(read, held, rows)
                if stood_for is None:
                    continue  # (the read is made when asked)
                sql, params = self.select(*stood_for)
            self._ahead[(sql, tuple(params))] = (read.table, rows)
        return first

    def cursor_for(self, sql: str) -> psycopg.Cursor[Any]:
        """The connection's cursor for the statement `sql`, kept from one transaction
        to the next (while the pool keeps the connection): psycopg keeps what a cursor
        learnt of a statement's parameters and answer (how to send and read each type)
        for its next run of the same statement text, where a new cursor learns it all
        again for every statement (about a tenth of a claim's time on the client). A
        cursor keeps its last answer: one of more than `KEPT_ANSWER_ROWS` rows is let go
        with its cursor (`_fetched`)."""
        cursor = self._cursors.get(sql)
        if cursor is None or cursor.closed or cursor.connection is not self._driver():
            if len(self._cursors) >= KEPT_CURSORS:
                for kept in self._cursors.values():
                    kept.close()
                self._cursors.clear()
            cursor = self._cursors[sql] = self._driver().cursor()
        return cursor

    def _fetched(self, sql: str, cursor: psycopg.Cursor[Any]) -> list[Row]:
        """The rows of `cursor`'s answer to `sql`; a long answer is not kept with a kept
        cursor (the next run of `sql` takes a new one)."""
        rows = cursor.fetchall()
        if len(rows) > KEPT_ANSWER_ROWS and self._cursors.get(sql) is cursor:
            del self._cursors[sql]
            cursor.close()
        return rows

    def forget_ahead(self) -> None:
        """The transaction writes, where nobody said to which table (a statement written
        with SQLAlchemy): what was read ahead may no longer be so."""
        self._ahead.clear()

    def _writes_to(self, table: str) -> None:
        """The transaction writes to `table`: what was read ahead from it may no longer
        be so (the other answers stand)."""
        if self._ahead:
            self._ahead = {key: answer for key, answer in self._ahead.items() if answer[0] != table}

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        self.written[table] = self.written.get(table, 0) + len(rows)
        self._writes_to(table)
        super().insert(table, columns, rows)

    def upsert(self, table: str, columns: Sequence[str], keys: Sequence[str], rows: Sequence[Row],
               add: Sequence[str] = ()) -> None:
        self.written[table] = self.written.get(table, 0) + len(rows)
        self._writes_to(table)
        super().upsert(table, columns, keys, rows, add)

    # Writes (inserts, upserts, deletes) return nothing, so they wait: all of them go to
    # the server in one round trip (a pipeline) before the next statement that reads,
    # or with the commit.
    def _many(self, sql: str, rows: Sequence[Row]) -> None:
        self._pending.append((sql, rows))

    def send_writes(self, *then: tuple[str, Sequence[Row]], commit: bool = False) -> None:
        """Send the waiting writes (and the statements `then`, with their rows of
        parameters; with `commit`, then COMMIT) in one round trip."""
        if self._pending or then or commit:
            self._send([*self._pending, *then], commit=commit)

    def _send(self, statements: list[tuple[str, Sequence[Row]]],
              read: tuple[str, Sequence[object]] | None = None, *, commit: bool = False) -> list[Row]:
        """The waiting writes, then `statements`, then the query `read` (its rows are
        returned) or COMMIT, in one pipeline: one round trip."""
        self._pending = []
        with self._driver().pipeline():
            for sql, rows in statements:
                self.cursor_for(sql).executemany(sql, rows)
            if read is not None:
                self.cursor_for(read[0]).execute(*read)
            if commit:
                # a statement, not the driver's commit(), which would wait for its
                # answer and then the pipeline's end for another: one round trip
                self.cursor_for(COMMIT).execute(COMMIT, prepare=False)
        return self._fetched(read[0], self.cursor_for(read[0])) if read is not None else []

    def _all(self, sql: str, params: Sequence[object]) -> list[Row]:
        if self._ahead and (found := self._ahead.get((sql, tuple(params)))) is not None:
            return list(found[1])
        if not self._pending:
            cursor = self.cursor_for(sql)
            cursor.execute(sql, params)
            return self._fetched(sql, cursor)
        return self._send(self._pending, (sql, params))

    def fetch_one(self, table: str, columns: Sequence[str], key: str, value: object) -> Row | None:
        # the statement of `rows`, so that a point read can be asked for ahead too
        found = self.rows(table, columns, [(key, "=", value)])
        return found[0] if found else None

    def fetch_all(self, table: str, columns: Sequence[str], order: Sequence[str] = ()) -> Iterator[Row]:
        self.send_writes()
        return super().fetch_all(table, columns, order)

    def _streaming_cursor(self, table: str) -> Any:
        # a cursor on the server (the driver's own would take in every row at once); it
        # lives as long as the transaction at most
        return self._driver().cursor(name=f"sched_fetch_{table}")

    def delete(self, table: str, where: Sequence[Term]) -> None:
        self._writes_to(table)
        self._many(delete_sql(self.mark, table, term_shapes(where), self.fold), [term_params(where)])

    def server_time(self) -> datetime | None:
        # clock_timestamp(), not now(): now() is when the transaction began, before
        # the lock was won
        if self.locked_at is not None:
            return from_text(self.locked_at)
        return self._all("SELECT clock_timestamp()", ())[0][0]  # type: ignore[no-any-return]

    def notify(self, seq: int) -> None:
        self.wake_seq = seq if self.wake_seq is None else max(self.wake_seq, seq)


def _at_write_time(read: Read) -> bool:
    return any(value is WRITE_TIME for _column, _op, value in read.where)


def _resolved(read: Read, held: str | None, rows: Sequence[Row]) -> Read | None:
    """The read that `read`, asked for ahead, stood for: its `WRITE_TIME` the time held
    (`held`), each `Lookup` the value its term's column has in the answer `rows` (equal
    in every row). None where that is not known: no time held as sched writes it, an
    empty answer, a term's column not among those read."""
    where = []
    for column, op, value in read.where:
        if value is WRITE_TIME:
            if held is None:
                return None
            value = held
        elif isinstance(value, Lookup):
            if not rows or column not in read.columns:
                return None
            value = rows[0][read.columns.index(column)]
        where.append((column, op, value))
    return read._replace(where=tuple(where))


@lru_cache(maxsize=64)
def _write_time_text(sql: str, at: tuple[int, ...]) -> str:
    """`sql` reading the writer's time in place of its parameters at the places `at`
    (the same text object every time: see `cursor_for`)."""
    parts = sql.split("%s")
    return parts[0] + "".join((WRITE_TIME_SQL if i in at else "%s") + part
                              for i, part in enumerate(parts[1:]))


def _write_time_sql(sql: str, params: Sequence[object]) -> tuple[str, list[object]]:
    """The statement and parameters of a read of a `WRITE_TIME`, as sent ahead."""
    at = tuple(i for i, param in enumerate(params) if param is WRITE_TIME)
    return _write_time_text(sql, at), [param for param in params if param is not WRITE_TIME]


class ListenWakeups:
    """LISTEN on sched's channel over a connection of its own; a lost connection is
    opened again at the next wait (until then, waits run out: polling)."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)  # libpq's spelling
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            # (its keepalives find a server gone silent: a wait on a dead connection
            # would hear nothing, and the wake-ups would be lost until a restart)
            self._conn = psycopg.connect(self.url, autocommit=True,
                                         **connect_options(self.url, application_name="sched listen"))
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._conn

    def wait(self, timeout: float) -> int | None:
        try:
            for note in self._connection().notifies(timeout=timeout, stop_after=1):
                return int(note.payload) if note.payload.isdigit() else 0
        except psycopg.Error:
            self.close()
            time.sleep(min(timeout, 1.0))  # the server is away: the polling safety net goes on
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresStorage:
    """A sched database on a PostgreSQL server."""

    engine_name = "postgresql"
    read_only = False

    def __init__(self, url: str, *, busy_timeout_ms: int = 30_000, prepared_statements: bool = True,
                 listen_url: str | None = None,
                 stalled_writer_seconds: float = STALLED_WRITER_SECONDS) -> None:
        self.url = url
        self.stalled_writer_seconds = stalled_writer_seconds
        self.listen_url = listen_url or url  # LISTEN needs a session: not through a transaction pooler
        self.location = redact(url)
        self.busy_timeout_ms = int(busy_timeout_ms)
        connect_args = connect_options(url, application_name="sched")
        if not prepared_statements:
            # psycopg prepares a statement on the server once it ran five times; such a
            # statement belongs to one server connection, and a pooler in transaction
            # mode (PgBouncer before 1.21) hands each transaction whichever it has free
            connect_args["prepare_threshold"] = None
        # every connection in the driver's autocommit mode: a transaction's BEGIN is its
        # own (`BEGIN_WRITER`, `BEGIN_READER`), sent in its first round trip, where the
        # driver's implicit one would cost a round trip of its own; the rest are single
        # statements. (Set for the engine, not per check-out: SQLAlchemy would set it and
        # reset it at every transaction.)
        self.engine = create_engine(engine_url(url), pool_size=2, max_overflow=8, connect_args=connect_args,
                                    isolation_level="AUTOCOMMIT")
        quiet_pool_faults()
        event.listen(self.engine, "checkout", _ping)
        event.listen(self.engine, "before_cursor_execute", _send_writes_first)

    # -- opening --------------------------------------------------------------------
    def _probe(self) -> str:
        """'sched', 'empty' (no tables: `init` may use it) or 'foreign'."""
        with self.guard(), self.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
        if _MARK.name in tables:
            return "sched"
        return "empty" if not tables else "foreign"

    @classmethod
    def create(cls, url: str, **options) -> PostgresStorage:  # type: ignore[no-untyped-def]
        db = cls(url, **options)
        if db._probe() == "foreign":
            db.close()
            raise ForeignDatabase(f"{db.location} holds another program's tables, not sched's; "
                                  "nothing was changed")
        return db

    @classmethod
    def open(cls, url: str, **options) -> PostgresStorage:  # type: ignore[no-untyped-def]
        db = cls(url, **options)
        kind = db._probe()
        if kind != "sched":
            db.close()
            if kind == "empty":
                raise DatabaseError(f"no sched database at {db.location}: run `sched init` first")
            raise ForeignDatabase(f"{db.location} holds another program's tables, not sched's; "
                                  "nothing was changed")
        return db

    def schema_version(self) -> int:
        with self.read() as txn:
            if not txn.has_table(_MARK.name):
                return 0
            return int(txn.session.execute(select(_MARK.c.version)).scalar() or 0)

    def create_schema(self, tables: Sequence[Table], version: int) -> None:
        with self.write() as txn:  # under the writers' lock: two hosts' `init` take turns
            connection = txn.session.connection()
            create_tables(connection, tables)
            _MARK.create(connection, checkfirst=True)
            txn.upsert(_MARK.name, ("application", "version"), ("application",), [("sched", int(version))])

    def wakeups(self) -> ListenWakeups:
        return ListenWakeups(self.listen_url)

    def integrity_check(self) -> str:
        """The log's own shape: seqs 1..N, none missing (the server checks its pages)."""
        with self.read() as txn:
            count, low, high = txn.session.execute(
                select(func.count(), func.min(EventRow.seq), func.max(EventRow.seq))).one()
        if count and (low != 1 or high != count):
            return f"the events table has {count} rows for seqs {low}..{high}: events are missing"
        return "ok"

    # -- transactions -------------------------------------------------------------------
    @contextmanager
    def guard(self, *, writing: bool = False) -> Iterator[None]:
        """Driver errors as one line (`writing`: a write transaction, whose line says
        that nothing was written)."""
        try:
            yield
        except (DBAPIError, psycopg.Error) as e:
            raise classify(self.location, self.busy_timeout_ms, e, writing=writing) from e
        except SQLAlchemyError as e:
            raise DatabaseFault(f"{self.location}: {str(e).splitlines()[0]}") from e

    def _begun(self, begin: Callable[[PostgresTransaction], None]) -> PostgresTransaction:
        """A transaction begun by `begin`, its first round trip. Its connection is taken
        from the pool unpinged: a dead one (the server restarted since it was used)
        fails in that round trip, before anything is read or written, and is replaced by
        a pinged one for a second try (a ping that fails replaces every connection the
        pool held)."""
        for pinged in (False, True):
            txn = self._transaction(pinged=pinged)
            try:
                begin(txn)
                return txn
            except BaseException as e:
                dead = isinstance(e, psycopg.OperationalError) and txn._driver().broken
                if dead:
                    txn.pooled.invalidate()  # (the pool replaces it)
                _end(txn, commit=False)
                if not dead or pinged:
                    raise  # (a lock timeout, on a live connection, is not tried again)
        raise AssertionError("unreachable")

    def _locked(self, prefetch: Sequence[Read]) -> PostgresTransaction:
        """A transaction holding the writers' lock (and the reads asked for ahead)."""
        return self._begun(lambda txn: txn.lock(self.busy_timeout_ms, prefetch))

    def _take_turn(self, prefetch: Sequence[Read]) -> PostgresTransaction:
        """`_locked`; when its wait runs out, a stalled sched writer holding the lock is
        ended and the lock tried once more, else busy, in a line naming the holder."""
        for last_try in (False, True):
            try:
                return self._locked(prefetch)
            except psycopg.errors.LockNotAvailable as e:
                holder = self._lock_holder()
                if last_try or not self._end_stalled(holder):
                    raise DatabaseBusy(busy_line(self.location, self.busy_timeout_ms, holder)) from e
        raise AssertionError("unreachable")

    def _lock_holder(self) -> LockHolder | None:
        """The session holding the writers' lock (None: nobody now, or the server would
        not say)."""
        try:
            with self.engine.connect() as conn:
                found = conn.exec_driver_sql(_LOCK_HOLDER, (WRITER_LOCK,)).first()
                conn.rollback()
        except (DBAPIError, psycopg.Error):
            return None
        return LockHolder(*found) if found is not None else None

    def _end_stalled(self, holder: LockHolder | None) -> bool:
        """End the holder of the writers' lock if it is a sched writer stalled in its
        transaction (idle in it for `stalled_writer_seconds`: stopped, or its host
        paused); whether it was ended."""
        if holder is None or not holder.stalled(self.stalled_writer_seconds):
            return False
        try:
            with self.engine.connect() as conn:
                ended = bool(conn.exec_driver_sql("SELECT pg_terminate_backend(%s)", (holder.pid,)).scalar())
                conn.rollback()
        except (DBAPIError, psycopg.Error):
            return False  # (not allowed: another role's session)
        if ended:
            print(f"sched: {self.location}: ended {holder.describe()}, which held the writers' lock",
                  file=sys.stderr, flush=True)
        return ended

    def _transaction(self, *, pinged: bool) -> PostgresTransaction:
        unpinged = _UNPINGED_CHECKOUT.set(not pinged)
        try:
            return PostgresTransaction(self.engine.raw_connection(), self.engine)
        finally:
            _UNPINGED_CHECKOUT.reset(unpinged)

    @contextmanager
    def write(self, *, commit: bool = True, prefetch: Sequence[Read] = ()) -> Iterator[PostgresTransaction]:
        with self.guard(writing=True):
            txn = self._take_turn(prefetch)  # (the collector runs while it waits)
            pooled = txn.pooled
            info = pooled.info  # (held: an invalidated connection has none to look up)
            committed = False
            try:
                with collector_paused():  # the lock is held: see collector.py
                    info["sched_txn"] = txn  # its statements send the waiting writes first
                    yield txn
                    info.pop("sched_txn", None)
                    if not commit:
                        return
                    if txn.opened_session is not None:
                        txn.opened_session.flush()  # what the session holds reaches the connection
                    fault_point("before_commit")
                    try:
                        # the waiting writes, the wake-up (delivered at commit, once per
                        # transaction) and COMMIT in one round trip; the seq is a parameter, so
                        # the statement is the same every time (psycopg prepares it once, where a
                        # NOTIFY with the seq written in was prepared, and later deallocated, at
                        # every commit)
                        wake = [("SELECT pg_notify(%s, %s)", [(NOTIFY_CHANNEL, str(txn.wake_seq))])]
                        txn.send_writes(*(wake if txn.wake_seq is not None else []), commit=True)
                    except (DBAPIError, psycopg.Error) as e:
                        if connection_lost(e):  # the COMMIT may have reached the server, or not
                            pooled.invalidate()  # (the driver's, not SQLAlchemy's, saw it fail)
                            raise unknown_outcome(self.location, e) from e
                        raise
                    committed = True
            finally:
                info.pop("sched_txn", None)
                _end(txn, commit=committed)
        if committed and any(rows >= ANALYZE_AFTER_ROWS for rows in txn.written.values()):
            self._refresh_statistics(txn.written)

    def _refresh_statistics(self, written: dict[str, int]) -> None:
        """After a transaction that wrote many rows (`written`: per table), ANALYZE each
        table whose planner statistics they make stale: never analyzed, or describing
        fewer than ten times the rows just written. Until then the planner may believe a
        just-filled queue holds one row and read all of it, sorted, to pick one (a claim's
        or a tick's candidates). Best effort: the write committed, and autovacuum does
        the same at its next round."""
        try:
            with self.engine.connect() as conn:
                for table, rows in written.items():
                    if rows < ANALYZE_AFTER_ROWS:
                        continue
                    described = conn.exec_driver_sql(
                        "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (table,)).scalar()
                    if described is not None and (described < 0 or rows > ANALYZE_SHARE * described):
                        conn.exec_driver_sql(f'ANALYZE "{table}"')
                conn.commit()
        except (DBAPIError, psycopg.Error):
            pass  # the statistics stay as they were, until autovacuum refreshes them

    @contextmanager
    def read(self, *, prefetch: Sequence[Read] = ()) -> Iterator[PostgresTransaction]:
        with self.guard():
            txn = self._begun(lambda txn: txn.begin_reading(prefetch))
            ended = False
            try:
                yield txn
                txn.end_reading()
                ended = True
            finally:
                _end(txn, commit=ended)

    def close(self) -> None:
        self.engine.dispose()


def _end(txn: PostgresTransaction, *, commit: bool) -> None:
    """End `txn` and give its connection back to the pool: committed (the adapter's
    COMMIT was already sent: nothing more goes to the server) or rolled back (a
    connection found dead is not used again)."""
    pooled = txn.pooled
    for cursor in txn._spare:
        cursor.close()
    try:
        if txn.opened_session is not None:
            txn.opened_session.close()  # (it joined the transaction: closing it leaves that alone)
        if not pooled.is_valid:
            return  # (its transaction ended with it)
        driver = txn._driver()
        if driver.broken or driver.closed:
            pooled.invalidate()  # (the pool replaces it)
        elif not commit:
            driver.rollback()  # (a round trip only if a transaction was begun)
    finally:
        (txn.bound or pooled).close()  # back to the pool


def _ping(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """The pool's check-out: a connection is pinged (one round trip) and, if the server
    dropped it (a restart), every connection pooled before is replaced. Not for a
    transaction's first try: its first round trip, its BEGIN's, tells it (`_begun`)."""
    if _UNPINGED_CHECKOUT.get():
        return
    try:
        dbapi_connection.execute("SELECT 1")  # (autocommit: no transaction left open, one round trip)
    except psycopg.Error as e:
        raise InvalidatePoolError(str(e).strip() or type(e).__name__) from e


def _send_writes_first(conn: Any, *_: Any) -> None:
    """Before a statement of SQLAlchemy's runs in a write transaction, the writes
    waiting there go to the server, so that it sees them (and, as it may write, what
    was read ahead is forgotten)."""
    txn = conn.info.get("sched_txn")
    if txn is not None:
        txn.forget_ahead()
        txn.send_writes()


def connection_lost(error: BaseException) -> bool:
    original = getattr(error, "orig", None) or error
    return isinstance(original, psycopg.OperationalError) or getattr(error, "connection_invalidated", False)


def unknown_outcome(location: str, error: BaseException) -> DatabaseFault:
    """The connection failed while the transaction was being committed: the server may
    have committed it before the answer was lost, or not."""
    original = getattr(error, "orig", None) or error
    what = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    return DatabaseFault(f"{location}: the connection to the PostgreSQL server failed while committing "
                         f"({what}): it may or may not have been written; look before you try again "
                         "(a submit with --idempotency-key may simply be sent again)")


@dataclass(frozen=True)
class LockHolder:
    """The session holding the writers' lock, as the server describes it."""

    pid: int
    address: str | None  # None: a unix socket
    application: str | None
    state: str | None
    seconds: float  # in that state

    @property
    def idle_in_transaction(self) -> bool:
        return self.state in ("idle in transaction", "idle in transaction (aborted)")

    def stalled(self, limit: float) -> bool:
        """A sched writer idle in its transaction for `limit` seconds or more: a live
        one pauses a fraction of a second between its statements."""
        return self.idle_in_transaction and self.application == "sched" and self.seconds >= limit

    def describe(self) -> str:
        state = "idle in its transaction" if self.idle_in_transaction else self.state or "busy"
        return (f"server process {self.pid} ({self.application or 'a client'}, from "
                f"{self.address or 'a unix socket'}), {state} for {self.seconds:.0f} s")


def busy_line(location: str, busy_timeout_ms: int, holder: LockHolder | None = None) -> str:
    line = f"{location}: another writer held the lock longer than busy_timeout_ms ({busy_timeout_ms} ms)"
    if holder is None:
        return f"{line}; try again"
    remedy = (f" (if it stays idle, SELECT pg_terminate_backend({holder.pid}) ends it)"
              if holder.idle_in_transaction else "")
    return f"{line}: {holder.describe()}; try again{remedy}"


# what the server says when it answers a connection and refuses it for good (libpq
# passes on its FATAL message): a missing database or role, a password or a rule of
# pg_hba.conf that does not let the user in
CONNECTION_REFUSALS = ("does not exist", "authentication failed", "no pg_hba.conf entry",
                       "password authentication", "permission denied for database",
                       "no password supplied")


# the server's answer to a statement naming a table it does not have
_NO_TABLE = re.compile(r'relation "(.*)" does not exist')

# the server's answer to a connection naming a database it does not have
_NO_DATABASE = re.compile(r'database "(.*)" does not exist')


def classify(location: str, busy_timeout_ms: int, error: BaseException, *,
             writing: bool = False) -> DatabaseError:
    """One line for a driver error: a lock wait past the busy timeout is busy (exit 1,
    try again); a database the server does not have is no database (exit 2, as a
    missing SQLite file); a lost or refused connection and every other server fault
    exit 1 (`writing`: in a write transaction, which the server rolled back whole: the
    line says that nothing was written; a read's line does not speak of writing)."""
    original = getattr(error, "orig", None) or error
    what = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    if isinstance(original, psycopg.errors.LockNotAvailable):
        return DatabaseBusy(busy_line(location, busy_timeout_ms))
    if isinstance(original, psycopg.errors.UndefinedTable) and (gone := _NO_TABLE.search(what)) is not None:
        return missing_table(location, gone[1].split(".")[-1])
    if connection_lost(error) and (missing := _NO_DATABASE.search(what)) is not None:
        return DatabaseError(f"no database at {location}: the server has no database {missing[1]!r}; "
                             "create it first (docs/operations.md, Running on PostgreSQL)")
    if connection_lost(error):
        rolled_back = "nothing was written; " if writing else ""
        if any(refusal in what for refusal in CONNECTION_REFUSALS):  # (asking again will not help)
            return DatabaseFault(f"{location}: the PostgreSQL server refused the connection ({what}): "
                                 f"{rolled_back}check the URL's database and user, and the "
                                 "password's place (docs/operations.md, Running on PostgreSQL)")
        return DatabaseFault(f"{location}: cannot use the PostgreSQL server ({what}): {rolled_back}"
                             "a retry helps once the server is reachable")
    return DatabaseFault(f"{location}: {what}")
