"""What the SQL adapters share: a transaction over one SQLAlchemy session whose hot
paths (bulk upserts and inserts, the point read) go straight to the driver with
statements built once per shape, in the adapter's placeholder style."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from functools import lru_cache

from sqlalchemy import ColumnElement, inspect
from sqlmodel import Session

from eventlog.storage.port import Row


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
def select_sql(mark: str, table: str, columns: tuple[str, ...], key: str | None) -> str:
    where = f" WHERE {key} = {mark}" if key else ""
    return f"SELECT {', '.join(columns)} FROM {table}{where}"


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
    """The port's `Transaction` over a SQLAlchemy session and its DB-API connection."""

    mark = "?"  # the driver's placeholder

    def __init__(self, session: Session) -> None:
        self.session = session

    def _driver(self):  # type: ignore[no-untyped-def]
        """The DB-API connection of this transaction (the adapter's own driver)."""
        return self.session.connection().connection.driver_connection

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

    def fetch_one(self, table: str, columns: Sequence[str], key: str, value: object) -> Row | None:
        cursor = self._driver().cursor()
        try:
            cursor.execute(select_sql(self.mark, table, tuple(columns), key), (value,))
            return cursor.fetchone()
        finally:
            cursor.close()

    def fetch_all(self, table: str, columns: Sequence[str]) -> Iterator[Row]:
        cursor = self._driver().cursor()
        try:
            cursor.execute(select_sql(self.mark, table, tuple(columns), None))
            yield from cursor.fetchall()
        finally:
            cursor.close()

    def unindexed(self, column: ColumnElement) -> ColumnElement:  # type: ignore[type-arg]
        return column

    def has_table(self, name: str) -> bool:
        return inspect(self.session.connection()).has_table(name)

    def notify(self, seq: int) -> None:
        return None
