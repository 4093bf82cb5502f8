"""The storage port: what sched asks of a database engine, and nothing else.

Above this port there is no SQL dialect. Statements over sched's tables are written
once with SQLAlchemy's expression language against `Transaction.session` (the
adapter's dialect compiles them), and the few things each engine does its own way are
methods here: the single-writer transaction and its time, bulk upserts and inserts on
the hot paths, a point read, simple reads and deletes described as values (`rows`,
`delete`: what the quick commands need, so that they load no SQLAlchemy where the
adapter can do without it), an index hint, schema creation and upgrade, the integrity
check and wake-ups. Two adapters implement it: `eventlog.storage.sqlite` (the
embedded default) and `eventlog.storage.postgres` (several hosts). The log alone also
has an in-memory store (`eventlog.store.InMemoryStore`) for unit tests; one contract
suite (tests/integration/storage/test_store_contract.py) runs over all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

if TYPE_CHECKING:  # the port itself loads no SQLAlchemy: the quick commands never need it
    from sqlalchemy import ColumnElement, Table
    from sqlmodel import Session

Row = Sequence[object]
# one condition of `rows`/`delete`: (column, operator, value); "in" takes a sequence,
# "is" and "is not" take None (IS NULL, IS NOT NULL), "<= or null" is true where the
# column is at most the value or NULL, "contains" where the column's text holds the
# value's anywhere, ASCII letters compared without case (every other character as it
# is, on every engine; no index helps, so it filters the rows the other terms choose).
# Terms are joined with AND.
Op = Literal["=", "!=", "<", "<=", ">", ">=", "in", "is", "is not", "<= or null", "contains"]
Term = tuple[str, Op, object]


class Unindexed(str):
    """A column named in a term of `rows` that must not choose the index (as
    `Transaction.unindexed`: a hint where the engine's planner needs one)."""

    __slots__ = ()


class _WriteTime:
    __slots__ = ()

    def __repr__(self) -> str:
        return "WRITE_TIME"


# A term's value in a read asked for ahead by a writer (`Storage.write`'s `prefetch`):
# the time the writer reads under the write lock, as `to_text` writes it (the
# `server_time` of the transaction), not yet known when the read is named. The answer
# stands for the same read with that time in its place. An engine that cannot ask for
# such a read ahead, and a reader's transaction, leave it out.
WRITE_TIME: object = _WriteTime()


class Lookup(NamedTuple):
    """A term's value read from another table, compared with "=" only: `column` of the
    row of `table` that meets every term of `where` (at most one row does: a key; no
    row gives NULL, which equals nothing). So a read can name what only another read's
    answer would tell, and be asked for ahead with it."""

    table: str
    column: str
    where: tuple[Term, ...]


class Read(NamedTuple):
    """A read as a value: the arguments of `Transaction.rows`, so that a command can
    name the reads it is about to make before it makes them (`Storage.write`'s
    `prefetch`); `txn.rows(*read)` makes it."""

    table: str
    columns: tuple[str, ...]
    where: tuple[Term, ...] = ()
    order: tuple[str, ...] = ()
    limit: int | None = None
    group: tuple[str, ...] = ()


class Transaction(Protocol):
    """One transaction: a writer's (the only one deciding, until it commits) or a
    reader's (one consistent snapshot)."""

    session: Session  # for dialect-neutral statements (SQLAlchemy expressions)

    def server_time(self) -> datetime | None:
        """The database server's clock, read now (under the write lock in a writer);
        None where the engine has no clock of its own (SQLite: the caller's clock)."""
        ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Insert `rows` (values in `columns` order), in one round of the driver."""
        ...

    def upsert(self, table: str, columns: Sequence[str], keys: Sequence[str], rows: Sequence[Row],
               add: Sequence[str] = ()) -> None:
        """Insert `rows`, or update the row of the same `keys`: columns in `add` are
        summed with the stored value, the others replaced."""
        ...

    def fetch_one(self, table: str, columns: Sequence[str], key: str, value: object) -> Row | None:
        """The row whose `key` column equals `value` (the hot point read)."""
        ...

    def fetch_all(self, table: str, columns: Sequence[str], order: Sequence[str] = ()) -> Iterator[Row]:
        """Every row of `table`, values as stored (for verify: nothing parsed), in the
        `order` of those columns, streamed: memory stays flat however big the table."""
        ...

    def rows(self, table: str, columns: Sequence[str], where: Sequence[Term] = (),
             order: Sequence[str] = (), limit: int | None = None, group: Sequence[str] = ()) -> list[Row]:
        """The rows of `table` that meet every term of `where`, grouped by the columns
        of `group` if any, in `order` (column names; `-name` for descending), at most
        `limit`. A column may also be an aggregate over the matching rows: `count(*)`,
        `min(name)`, `max(name)`."""
        ...

    def delete(self, table: str, where: Sequence[Term]) -> None:
        """Delete the rows of `table` that meet every term of `where`."""
        ...

    def unindexed(self, column: ColumnElement) -> ColumnElement:  # type: ignore[type-arg]
        """`column` in a WHERE term that must not choose the index (a hint where the
        engine's planner needs one; the column itself elsewhere)."""
        ...

    def has_table(self, name: str) -> bool:
        ...

    def notify(self, seq: int) -> None:
        """Wake the waiting processes once this transaction commits (work may be
        available up to `seq`); nothing where the engine has no wake-ups."""
        ...


class Wakeups(Protocol):
    """Notice of commits that appended events, for a process that waits for work."""

    def wait(self, timeout: float) -> int | None:
        """The seq of a commit that appended events, or None when `timeout` seconds
        passed without one (an engine without wake-ups always waits it out: polling)."""
        ...

    def close(self) -> None:
        ...


class Storage(Protocol):
    """A sched database on one engine."""

    engine_name: str  # "sqlite" | "postgresql"
    location: str  # what messages name: the file, or the URL without its password
    read_only: bool

    def write(self, *, commit: bool = True, prefetch: Sequence[Read] = ()
              ) -> AbstractContextManager[Transaction]:
        """The single-writer transaction, committed when the block returns (rolled back
        with `commit=False` or if it raises). `prefetch`: reads the transaction is
        likely to make, asked for ahead where each read costs a round trip to a server
        (PostgreSQL: sent with the lock, all in one); a `rows` call with the same
        arguments, until the transaction writes to a table the read reads, is answered
        from them. A read with a `WRITE_TIME` stands for the same read of that time; one
        with a `Lookup`, for the same read of the value its answer holds in the term's
        column. An engine whose reads cost no round trip (SQLite) ignores them. A read
        named and never made costs the server its work, nothing else."""
        ...

    def read(self, *, prefetch: Sequence[Read] = ()) -> AbstractContextManager[Transaction]:
        """A consistent snapshot that writes nothing. `prefetch`: as for `write`, asked
        for with the BEGIN; answered from them to the transaction's end."""
        ...

    def schema_version(self) -> int:
        """The version of sched's tables this database holds (0: none yet)."""
        ...

    def create_schema(self, tables: Sequence[Table], version: int) -> None:
        """Create the missing `tables`, mark the database as sched's, at `version`."""
        ...

    def integrity_check(self) -> str:
        """'ok', or what the engine's own check found wrong."""
        ...

    def wakeups(self) -> Wakeups:
        """A listener for the commits of every process (on this engine's terms)."""
        ...

    def close(self) -> None:
        """Close every pooled connection. The storage stays usable: a later transaction
        opens a new connection (a process about to fork closes them, so that no child
        shares one)."""
        ...
