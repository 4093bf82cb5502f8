"""The append-only event store: its interface, the hash chain, and an in-memory store.

The integer `seq` is the global order: it starts at 1 and has no gaps. Each stored
event carries the hash of its predecessor, so any edit, deletion, insertion or
reordering breaks the chain at the first changed `seq`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from eventlog.errors import ConcurrencyConflict, CorruptLog, LogTampered
from eventlog.frozen import constructor
from eventlog.timeutil import from_text, to_text

if TYPE_CHECKING:  # the event models are loaded by what parses or seals events, not by reads
    from eventlog.events import Event

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event as stored: its position, time, payload text and chain links."""

    seq: int
    stream_id: str
    type: str
    schema_version: int
    recorded_at: str
    data: str
    prev_hash: str
    hash: str
    # the event object when this record was just sealed from it (saves a parse)
    parsed: Event | None = field(default=None, compare=False, repr=False)

    @property
    def event(self) -> Event:
        if self.parsed is not None:
            return self.parsed
        from eventlog.events import parse_event

        return parse_event(self.type, self.schema_version, self.data, seq=self.seq)

    @property
    def at(self) -> datetime:
        return from_text(self.recorded_at)

    def fields(self) -> dict[str, Any]:
        """The event's stored JSON, parsed, as the log holds it (no upcasting; `event`
        gives the current model): CorruptLog naming the seq if it is not a JSON object."""
        try:
            value = json.loads(self.data)
        except ValueError as e:  # (an edited row: the chain check names it too)
            raise CorruptLog(f"event seq {self.seq} ({self.type}) cannot be read: "
                             f"{str(e).splitlines()[0]}") from e
        if not isinstance(value, dict):
            raise CorruptLog(f"event seq {self.seq} ({self.type}) cannot be read: its data is not a "
                             "JSON object")
        return value

    def hash_matches(self) -> bool:
        """Whether `hash` is the chain hash of this record's own content."""
        return self.hash == chain_hash(self.prev_hash, self.seq, self.stream_id, self.type,
                                       self.schema_version, self.recorded_at, self.data)


new_record = constructor(Recorded)  # `Recorded(...)`, quicker (a replay reads millions)


def chain_hash(prev_hash: str, seq: int, stream_id: str, type_: str, version: int,
               recorded_at: str, data: str) -> str:
    """The hash linking one stored event to its predecessor."""
    text = "\n".join((prev_hash, str(seq), stream_id, type_, str(version), recorded_at, data))
    # surrogateescape: a stored text that is not valid UTF-8 (a damaged row, read with
    # the same error handler) hashes as its bytes, so it is reported, not crashed on
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def seal_after(last: Recorded | None, events: Sequence[Event], recorded_at: datetime) -> list[Recorded]:
    """Seal `events` after the log's last record `last` (None: an empty log): refuse if
    that record was altered, and never record a time earlier than its time (so event
    time never runs backwards, whatever the clocks of the writers say)."""
    if last is None:
        return seal(events, to_text(recorded_at), 0, GENESIS_HASH)
    if not last.hash_matches():
        raise LogTampered(f"refusing to append: the last event of the log (seq {last.seq}) does not "
                          "match its hash, so it was altered; run `sched replay --verify`")
    return seal(events, max(to_text(recorded_at), last.recorded_at), last.seq, last.hash)


def seal(events: Sequence[Event], at: str, last_seq: int, last_hash: str) -> list[Recorded]:
    """Number, timestamp (`at`, fixed-width text) and chain `events` after the event
    (`last_seq`, `last_hash`)."""
    from eventlog.events import current_version, dump_event

    sealed = []
    for offset, event in enumerate(events, start=1):
        seq, data, stream = last_seq + offset, dump_event(event), event.stream_id
        version = current_version(event.type)  # type: ignore[attr-defined]
        digest = chain_hash(last_hash, seq, stream, event.type, version, at, data)  # type: ignore[attr-defined]
        sealed.append(new_record(seq, stream, event.type,  # type: ignore[attr-defined]
                                  version, at, data, last_hash, digest, event))
        last_hash = digest
    return sealed


class BrokenChain(LogTampered):
    """The log's hash chain breaks at `seq`: `detail` says how."""

    def __init__(self, seq: int, detail: str) -> None:
        super().__init__(f"hash chain broken at seq {seq}: {detail}")
        self.seq, self.detail = seq, detail


def chained(records: Iterable[Recorded]) -> Iterator[Recorded]:
    """`records` (a whole log, from seq 1), each checked to follow from the one before
    (its position, its link, its hash) before it is given; `BrokenChain` at the first
    that does not."""
    expected_seq, prev = 1, GENESIS_HASH
    for rec in records:
        if rec.seq != expected_seq:
            raise BrokenChain(expected_seq, f"expected seq {expected_seq}, found seq {rec.seq}")
        if rec.prev_hash != prev:
            raise BrokenChain(rec.seq, f"seq {rec.seq} does not link to the event before it")
        if not rec.hash_matches():
            raise BrokenChain(rec.seq, f"seq {rec.seq} was altered: its hash does not match its content")
        yield rec
        expected_seq, prev = rec.seq + 1, rec.hash


def first_broken_link(records: Iterable[Recorded]) -> tuple[int, str] | None:
    """The first `seq` whose position or hash does not follow from the one before."""
    try:
        for _ in chained(records):
            pass
    except BrokenChain as e:
        return e.seq, e.detail
    return None


class EventStore(Protocol):
    """What every event store offers; the in-memory and SQLite stores share one test suite."""

    def append(self, events: Sequence[Event], recorded_at: datetime,
               expected_position: int | None = None) -> list[Recorded]:
        """Append `events` atomically, after `expected_position` if given."""
        ...

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Recorded]:
        """Events with seq > `after`, in order, at most `limit` of them."""
        ...

    def read_stream(self, stream_id: str) -> list[Recorded]:
        """Every event of one stream, in order."""
        ...

    def last_position(self) -> int:
        """The seq of the last event, 0 for an empty log."""
        ...

    def last(self) -> Recorded | None:
        """The last event, None for an empty log."""
        ...


class InMemoryStore:
    """An event store in a list: for unit tests and in-memory replays."""

    def __init__(self) -> None:
        self._records: list[Recorded] = []

    def append(self, events: Sequence[Event], recorded_at: datetime,
               expected_position: int | None = None) -> list[Recorded]:
        last = self.last()
        position = last.seq if last else 0
        if expected_position is not None and expected_position != position:
            raise ConcurrencyConflict(
                f"expected the log at seq {expected_position}, it is at seq {position}")
        sealed = seal_after(last, events, recorded_at)
        self._records.extend(sealed)
        return sealed

    def last(self) -> Recorded | None:
        return self._records[-1] if self._records else None

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[Recorded]:
        chosen = self._records[max(after, 0):]
        return iter(chosen if limit is None else chosen[:limit])

    def read_stream(self, stream_id: str) -> list[Recorded]:
        return [r for r in self._records if r.stream_id == stream_id]

    def last_position(self) -> int:
        return len(self._records)
