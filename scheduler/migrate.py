"""`sched migrate --to LOCATION`: copy the log into an empty database of another engine
(SQLite to PostgreSQL when a fleet outgrows one machine, or back, for a laptop copy),
checking the hash chain as it goes, and rebuild the projections there.

The source is read in one snapshot; the copy is written in one transaction of the
target, so a failure leaves the target without a log: its tables are made first and
stay (empty), and a new try copies into them. Operational records (tick
runs, webhook outbox, gate cache, health state) are not copied: they are not facts of
the log, and the target's own processes make them anew.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eventlog.errors import BadInput, CorruptLog, DatabaseFault, LogTampered, Refused
from eventlog.schema import EVENT_COLUMNS, SCHEMA_VERSION
from eventlog.sql_store import SqlStore
from eventlog.storage import Storage, create_storage, is_url
from eventlog.store import BrokenChain, chained
from projections.rebuild import lost_tail, refold
from projections.sql import SqlProjection
from scheduler.workspace import ALL_TABLES, Workspace

BATCH = 5_000


@dataclass(frozen=True)
class Migration:
    source: str
    target: str
    events: int
    head_seq: int
    head_hash: str


def migrate(ws: Workspace, target: str | Path,
            progress: Callable[[int, int], None] | None = None) -> Migration:
    """Copy the log of `ws` into the empty database at `target`; `progress(done, total)`
    after each batch. Ends with the same head (seq and hash) on both sides."""
    if not is_url(target) and Path(target).is_dir():
        raise BadInput(f"--to {target}: a directory; give the database file to make in it")
    source = ws.db
    dest = create_storage(target, **ws.storage_options())  # type: ignore[arg-type]
    try:  # (the source itself is refused here too: it holds a log)
        with dest.read() as txn:
            _refuse_a_log(txn, dest.location)
        dest.create_schema(ALL_TABLES, SCHEMA_VERSION)
        folded = _folded(source)
        with source.read() as read_txn, dest.write() as write_txn:
            # again under the target's writers' lock: another migrate (or any writer) may
            # have filled it since the look above (else a raw duplicate key, at the end)
            _refuse_a_log(write_txn, dest.location)
            expected = SqlStore(read_txn).head()  # the snapshot's head
            lost = lost_tail(folded, expected[0], refused="nothing was copied: ") if folded else None
            if lost is not None:  # (a copy would verify clean, the loss hidden)
                raise LogTampered(lost)
            copied = _copy(SqlStore(read_txn), write_txn, expected[0], progress)
            # the projections, folded from the copied log (a target that `sched init`
            # made already has tables of this shape: they are refolded all the same)
            refold(write_txn)
            head = SqlStore(write_txn).head()
            if head != expected:  # rolled back: the target stays empty
                raise DatabaseFault(f"the copy in {dest.location} ends at seq {head[0]} ({head[1]}), "
                                    f"the source at seq {expected[0]} ({expected[1]}); nothing was kept")
        return Migration(source.location, dest.location, copied, head[0], head[1])
    finally:
        dest.close()


def _folded(source: Storage) -> int | None:
    """The last seq the source's tables have folded (its log must reach it), or None when
    they cannot be read (a damaged page, a table dropped): the log alone is copied then,
    the documented way out of such damage."""
    try:
        with source.read() as txn:
            return SqlProjection(txn).last_seq()
    except DatabaseFault:
        return None


def _refuse_a_log(txn, location: str) -> None:  # type: ignore[no-untyped-def]
    if txn.has_table("events") and SqlStore(txn).last_position() > 0:
        raise Refused(f"{location} already holds a sched log; migrate copies only into an "
                      "empty database (nothing was changed)")


def _copy(log: SqlStore, txn, total: int, progress: Callable[[int, int], None] | None) -> int:  # type: ignore[no-untyped-def]
    """Stream the source's events into the target's `events` table, each checked to
    follow from the one before (seq, link, hash) before it is written."""
    copied, rows = 0, []
    try:
        for rec in chained(log.read()):
            rows.append((rec.seq, rec.stream_id, rec.type, rec.schema_version, rec.recorded_at, rec.data,
                         rec.prev_hash, rec.hash))
            copied = rec.seq
            if len(rows) == BATCH:
                txn.insert("events", EVENT_COLUMNS, rows)
                rows = []
                if progress is not None:
                    progress(copied, total)
    except BrokenChain as e:
        raise CorruptLog(f"the source log is broken at seq {e.seq}: nothing was copied; see "
                         "`sched replay --verify`") from e
    if rows:
        txn.insert("events", EVENT_COLUMNS, rows)
    if progress is not None and (rows or copied == 0):  # (a last full batch was shown)
        progress(copied, total)
    return copied
