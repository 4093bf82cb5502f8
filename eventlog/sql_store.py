"""The event store over a storage transaction (any SQL engine of the port).

A `SqlStore` is bound to one transaction: the caller opens it (`Storage.write()`),
appends, updates the projections and commits once, so the events and the projections
they change land together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from eventlog.errors import ConcurrencyConflict
from eventlog.layout import EVENT_COLUMNS
from eventlog.storage.port import Read, Transaction
from eventlog.store import GENESIS_HASH, Recorded, new_record, seal_after

if TYPE_CHECKING:
    from eventlog.events import Event

READ_BATCH = 2_000
# the log's last event (every write transaction asks for it ahead: `Workspace.write`)
LAST_EVENT = Read("events", EVENT_COLUMNS, order=("-seq",), limit=1)


def stream_read(stream_id: str) -> Read:
    """`read_stream`'s read, as a value (so that it can be asked for ahead)."""
    return Read("events", EVENT_COLUMNS, (("stream_id", "=", stream_id),), ("seq",))


def _record(row: Sequence[object]) -> Recorded:
    """A stored row as a record; a text column that a damaged file holds as bytes (a
    BLOB) is read as text with surrogate escapes, so its hash fails to match and verify
    names its seq."""
    if bytes in map(type, row):
        row = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in row]
    return new_record(*row)


class SqlStore:
    """The `EventStore` interface over the `events` table of one open transaction."""

    def __init__(self, txn: Transaction) -> None:
        self.txn = txn
        # the last event as this transaction knows it (None: an empty log), once read:
        # a write transaction holds the lock, so only its own appends move it
        self._last: Recorded | Literal["unread"] | None = "unread"

    @property
    def session(self) -> Any:
        """The SQLAlchemy session of the transaction (opened on first use)."""
        return self.txn.session

    def head(self) -> tuple[int, str]:
        """The last seq and its hash (0 and the genesis hash for an empty log)."""
        rows = self.txn.rows("events", ("seq", "hash"), order=("-seq",), limit=1)
        return (rows[0][0], rows[0][1]) if rows else (0, GENESIS_HASH)  # type: ignore[return-value]

    def last(self) -> Recorded | None:
        """The last event, None for an empty log (read once: a write transaction holds
        the lock, so only its own appends move it on)."""
        if self._last == "unread":
            rows = self.txn.rows(*LAST_EVENT)
            self._last = _record(rows[0]) if rows else None
        return self._last

    def append(self, events: Sequence[Event], recorded_at: datetime,
               expected_position: int | None = None) -> list[Recorded]:
        last = self.last()
        last_seq = last.seq if last else 0
        if expected_position is not None and expected_position != last_seq:
            raise ConcurrencyConflict(
                f"expected the log at seq {expected_position}, it is at seq {last_seq}")
        sealed = seal_after(last, events, recorded_at)
        if sealed:
            self._last = sealed[-1]
        # one round of the driver: the ORM's bulk insert costs more than the rows
        self.txn.insert("events", EVENT_COLUMNS, [(r.seq, r.stream_id, r.type, r.schema_version,
                                                   r.recorded_at, r.data, r.prev_hash, r.hash)
                                                  for r in sealed])
        return sealed

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Recorded]:
        """Stream events in batches, so memory stays flat however long the log is."""
        remaining = limit
        while remaining is None or remaining > 0:
            size = READ_BATCH if remaining is None else min(READ_BATCH, remaining)
            rows = self.txn.rows("events", EVENT_COLUMNS, [("seq", ">", after)], ("seq",), size)
            for row in rows:
                yield _record(row)
            if len(rows) < size:
                return
            after = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def read_stream(self, stream_id: str) -> list[Recorded]:
        rows = self.txn.rows(*stream_read(stream_id))
        return [_record(row) for row in rows]

    def last_position(self) -> int:
        return self.head()[0]
