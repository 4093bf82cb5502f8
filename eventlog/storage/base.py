"""What the SQL adapters share: a transaction over one driver connection whose hot
paths (bulk upserts and inserts, point reads, the simple reads and deletes of `rows`
and `delete`) go straight to the driver with statements built once per shape, in the
adapter's placeholder style; and a SQLAlchemy session over the same transaction for
the statements written with its expression language (opened on first use: an adapter
whose transaction starts without SQLAlchemy loads it only then)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from eventlog.storage.port import Lookup, Row, Term, Unindexed

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement
    from sqlmodel import Session


def create_tables(connection: Any, tables: Sequence[Any]) -> None:
    """Make the missing `tables` (SQLAlchemy `Table`s) on a SQLAlchemy connection, and
    the missing columns of those that exist: a column added to a table in a later
    version of sched is nullable, so `ALTER TABLE ... ADD COLUMN` gives the rows
    already there NULL, which the code reads as "not known" (an older sched wrote it)."""
    from sqlalchemy import inspect
    from sqlmodel import SQLModel

    SQLModel.metadata.create_all(connection, tables=list(tables))
    found = inspect(connection)
    for table in tables:
        have = {column["name"] for column in found.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                if not column.nullable:  # (a programming error: a new column must be optional)
                    raise ValueError(f"{table.name}.{column.name}: a column added later must be nullable")
                kind = column.type.compile(dialect=connection.dialect)
                connection.exec_driver_sql(
                    f"ALTER TABLE {_name(table.name)} ADD COLUMN {_name(column.name)} {kind}")


@lru_cache(maxsize=256)
def insert_sql(mark: str, table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"


@lru_cache(maxsize=256)
def upsert_sql(mark: str, table: str, columns: tuple[str, ...], keys: tuple[str, ...],
               add: tuple[str, ...]) -> str:
    """INSERT ... ON CONFLICT (keys) DO UPDATE: the same text on SQLite and PostgreSQL
    but for the placeholder."""
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" if c in add else f"{c} = excluded.{c}"
                        for c in columns if c not in keys)
    return (f"{insert_sql(mark, table, columns)} ON CONFLICT ({', '.join(keys)}) "
            f"DO UPDATE SET {updates}")


@lru_cache(maxsize=256)
def select_sql(mark: str, table: str, columns: tuple[str, ...], key: str | None,
               order: tuple[str, ...] = ()) -> str:
    where = f" WHERE {key} = {mark}" if key else ""
    ordered = f" ORDER BY {', '.join(order)}" if order else ""
    return f"SELECT {', '.join(columns)} FROM {table}{where}{ordered}"


FETCH_BATCH = 5_000  # rows `fetch_all` holds at a time: a whole table is never in memory


_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_AGGREGATE = re.compile(r"(count)\(\*\)|(min|max)\(([a-z_][a-z0-9_]*)\)")
_OPS = frozenset({"=", "!=", "<", "<=", ">", ">=", "in", "is", "is not", "<= or null", "contains"})
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def like_pattern(text: str) -> str:
    """The LIKE pattern (escape character `\\`) of the text anywhere in a value, its
    ASCII letters in lower case (`contains`: the adapter folds the column's to match)."""
    escaped = text.translate(_ASCII_LOWER).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _name(name: str) -> str:
    """A table or column name as given (names are sched's own; anything else is refused,
    so no text from elsewhere can reach the statement)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a column or table name: {name!r}")
    return name


def _column(table: str, column: str) -> str:
    found = _AGGREGATE.fullmatch(column)
    if found is None:
        return f"{table}.{_name(column)}"
    if found.group(1):
        return "count(*)"
    return f"{found.group(2)}({table}.{found.group(3)})"


# one term's shape: (column, operator, how many values an `in` binds, or a `Lookup`'s
# table, column and terms' shapes; else None, and whether the column is `Unindexed`)
TermShape = tuple[str, str, "int | tuple[str, str, tuple[Any, ...]] | None", bool]


def term_shapes(where: Sequence[Term]) -> tuple[TermShape, ...]:
    shapes: list[TermShape] = []
    for column, op, value in where:
        if op not in _OPS:
            raise ValueError(f"not an operator of `rows`: {op!r}")
        if op in ("is", "is not") and value is not None:
            raise ValueError(f"{op!r} compares with None only")
        if isinstance(value, Lookup):
            if op != "=":
                raise ValueError(f"a Lookup is compared with '=' only, not {op!r}")
            extra: Any = (_name(value.table), value.column, term_shapes(value.where))
        else:
            extra = len(value) if op == "in" else None  # type: ignore[arg-type]
        shapes.append((str(column), op, extra, isinstance(column, Unindexed)))
    return tuple(shapes)


def term_params(where: Sequence[Term]) -> list[object]:
    params: list[object] = []
    for _column, op, value in where:
        if isinstance(value, Lookup):
            params.extend(term_params(value.where))
        elif op == "in":
            params.extend(value)  # type: ignore[call-overload]
        elif op == "contains":
            params.append(like_pattern(str(value)))
        elif op not in ("is", "is not"):
            params.append(value)
    return params


def _where_sql(mark: str, table: str, where: tuple[TermShape, ...], hint: str, fold: str) -> str:
    terms = []
    for column, op, count, unindexed in where:
        name = (hint if unindexed else "") + _column(table, column)
        if op == "contains":  # `fold`: the column with its ASCII letters in lower case
            terms.append(f"{fold.format(name)} LIKE {mark} ESCAPE '\\'")
        elif isinstance(count, tuple):  # a Lookup: the value of its column in its row
            table_of, column_of, where_of = count
            terms.append(f"{name} = (SELECT {_column(table_of, column_of)} FROM {table_of}"
                         f"{_where_sql(mark, table_of, where_of, hint, fold)})")
        elif op == "in":
            terms.append(f"{name} IN ({', '.join([mark] * count)})" if count else "1 = 0")  # type: ignore[operator]
        elif op in ("is", "is not"):
            terms.append(f"{name} {op.upper()} NULL")
        elif op == "<= or null":
            terms.append(f"({name} IS NULL OR {name} <= {mark})")
        else:
            terms.append(f"{name} {op} {mark}")
    return f" WHERE {' AND '.join(terms)}" if terms else ""


@lru_cache(maxsize=512)
def rows_sql(mark: str, table: str, columns: tuple[str, ...], where: tuple[TermShape, ...],
             order: tuple[str, ...], limit: bool, group: tuple[str, ...] = (), hint: str = "",
             fold: str = "{}") -> str:
    """SELECT ... FROM table WHERE ... GROUP BY ... ORDER BY ... LIMIT: the same text on
    SQLite and PostgreSQL but for the placeholder, the index hint (`hint` before an
    `Unindexed` column: SQLite's `+`) and the folding of a `contains` column (`fold`)."""
    table = _name(table)
    sql = f"SELECT {', '.join(_column(table, c) for c in columns)} FROM {table}"
    sql += _where_sql(mark, table, where, hint, fold)
    if group:
        sql += " GROUP BY " + ", ".join(_column(table, c) for c in group)
    if order:
        sql += " ORDER BY " + ", ".join(f"{table}.{_name(c[1:])} DESC" if c.startswith("-")
                                        else f"{table}.{_name(c)}" for c in order)
    if limit:
        sql += f" LIMIT {mark}"
    return sql


@lru_cache(maxsize=64)
def delete_sql(mark: str, table: str, where: tuple[TermShape, ...], fold: str = "{}") -> str:
    table = _name(table)
    return f"DELETE FROM {table}{_where_sql(mark, table, where, '', fold)}"


class PollingWakeups:
    """`Wakeups` for an engine that has none: every wait runs its whole timeout."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait(self, timeout: float) -> int | None:
        self._closed.wait(timeout)
        return None

    def close(self) -> None:
        self._closed.set()


class SqlTransaction:
    """The port's `Transaction` over a driver (DB-API) connection and a SQLAlchemy
    session on the same transaction: given, or opened by `open_session` on first use."""

    mark = "?"  # the driver's placeholder
    hint = ""  # written before an `Unindexed` column of `rows` (SQLite: "+")
    # a `contains` term's column with its ASCII letters in lower case ("{}": the engine's
    # LIKE already ignores their case, as SQLite's does)
    fold = "{}"

    def __init__(self, session: Session | None = None, *, driver: Any = None,
                 open_session: Callable[[], Session] | None = None) -> None:
        self._session = session
        self._driver_connection = driver
        self._open_session = open_session

    @property
    def session(self) -> Session:
        if self._session is None:
            assert self._open_session is not None
            self._session = self._open_session()
        return self._session

    @property
    def opened_session(self) -> Session | None:
        """The session, if one was made (without making one)."""
        return self._session

    def _driver(self):  # type: ignore[no-untyped-def]
        """The DB-API connection of this transaction (the adapter's own driver)."""
        if self._driver_connection is None:
            self._driver_connection = self.session.connection().connection.driver_connection
        return self._driver_connection

    def server_time(self) -> datetime | None:
        return None

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        if rows:
            self._many(insert_sql(self.mark, table, tuple(columns)), rows)

    def upsert(self, table: str, columns: Sequence[str], keys: Sequence[str], rows: Sequence[Row],
               add: Sequence[str] = ()) -> None:
        if rows:
            self._many(upsert_sql(self.mark, table, tuple(columns), tuple(keys), tuple(add)), rows)

    def _many(self, sql: str, rows: Sequence[Row]) -> None:
        cursor = self._driver().cursor()
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()

    def _all(self, sql: str, params: Sequence[object]) -> list[Row]:
        cursor = self._driver().cursor()
        try:
            cursor.execute(sql, params)
            return cursor.fetchall()
        finally:
            cursor.close()

    def fetch_one(self, table: str, columns: Sequence[str], key: str, value: object) -> Row | None:
        cursor = self._driver().cursor()
        try:
            cursor.execute(select_sql(self.mark, table, tuple(columns), key), (value,))
            return cursor.fetchone()
        finally:
            cursor.close()

    def fetch_all(self, table: str, columns: Sequence[str], order: Sequence[str] = ()) -> Iterator[Row]:
        cursor = self._streaming_cursor(table)
        try:
            cursor.execute(select_sql(self.mark, table, tuple(columns), None, tuple(order)))
            while batch := cursor.fetchmany(FETCH_BATCH):
                yield from batch
        finally:
            cursor.close()

    def _streaming_cursor(self, table: str) -> Any:
        """A cursor for reading a whole table a batch at a time."""
        return self._driver().cursor()

    def rows(self, table: str, columns: Sequence[str], where: Sequence[Term] = (),
             order: Sequence[str] = (), limit: int | None = None, group: Sequence[str] = ()) -> list[Row]:
        return self._all(*self.select(table, columns, where, order, limit, group))

    def select(self, table: str, columns: Sequence[str], where: Sequence[Term] = (),
               order: Sequence[str] = (), limit: int | None = None,
               group: Sequence[str] = ()) -> tuple[str, list[object]]:
        """The statement of a `rows` read in this adapter's dialect, and its parameters."""
        sql = rows_sql(self.mark, table, tuple(columns), term_shapes(where), tuple(order),
                       limit is not None, tuple(group), self.hint, self.fold)
        params = term_params(where)
        if limit is not None:
            params.append(limit)
        return sql, params

    def delete(self, table: str, where: Sequence[Term]) -> None:
        cursor = self._driver().cursor()
        try:
            cursor.execute(delete_sql(self.mark, table, term_shapes(where), self.fold), term_params(where))
        finally:
            cursor.close()

    def unindexed(self, column: ColumnElement) -> ColumnElement:  # type: ignore[type-arg]
        return column

    def has_table(self, name: str) -> bool:
        from sqlalchemy import inspect

        return inspect(self.session.connection()).has_table(name)

    def notify(self, seq: int) -> None:
        return None


def quiet_pool_faults() -> None:
    """SQLAlchemy's pool logs, traceback and all, what goes wrong while it resets a
    connection given back to it: an interrupt (Ctrl-C), which it then re-raises, and a
    connection lost with its server (a PostgreSQL server stopped while a transaction
    rolled back), which it drops. sched reports either itself, in one line (the
    interrupt; the fault that ended the transaction, or nothing when the transaction had
    ended well), so these records would be a second report, or a traceback after a
    success. Drop them (sched sets up no log handler of its own, so they would reach
    stderr through logging's last-resort handler); every other record still shows.
    Called where an engine is made: logging is loaded with SQLAlchemy, never by a
    command that needs neither."""
    import logging

    handler = logging.lastResort
    if handler is not None and _drop_reported_faults not in handler.filters:
        handler.addFilter(_drop_reported_faults)


def _drop_reported_faults(record: Any) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, KeyboardInterrupt):
        return False
    # (the driver's own class, as DB-API names it: psycopg's, sqlite3's)
    return not (record.name.startswith("sqlalchemy.pool") and type(error).__name__ == "OperationalError")
