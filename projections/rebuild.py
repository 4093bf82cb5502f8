"""Rebuilding the projections from the log, and verifying them against it. (Every
command opening the database asks `stored_schema`: the folds and the event models are
imported by the functions that replay, not with this module.)"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from eventlog.errors import CorruptLog
from eventlog.sql_store import SqlStore
from eventlog.storage.port import Transaction
from eventlog.store import GENESIS_HASH, Recorded, chained, first_broken_link
from projections.sql import ROW_SHAPES, Key, SqlProjection, wanted_rows
from projections.views import PROJECTION_SCHEMA, SHAPE_KEY

PROGRESS_EVERY = 10_000  # events: a rebuild flushes its changes and says how far it got


def stored_schema(txn: Transaction) -> int | None:
    """The projection schema version recorded in the database (None if never)."""
    if not txn.has_table("projection_schema"):
        return None
    return txn.rows("projection_schema", ("max(version)",))[0][0]  # type: ignore[return-value]


def lost_tail(folded: int, head: int, *, refused: str = "") -> str | None:
    """Why the tables cannot be trusted when they have folded events the log no longer
    holds (`folded`: their checkpoint, past the log's last seq `head`): events were
    lost from the log's end (None when they are not ahead). Appending then would give
    new events the lost ones' seqs, on tables that still hold what those did.
    `refused`: what was not done, said before the remedy."""
    if folded <= head:
        return None
    return (f"the projections have folded events up to seq {folded}, but the log ends at seq {head}: "
            f"events were lost from the end of the log (a damaged or partly restored file); {refused}"
            "restore the database from a backup (docs/operations.md, Restoring a backup), or go on "
            "without them: `sched rebuild` folds the log as it is")


def ensure_current(txn: Transaction, progress: Callable[[int], None] | None = None) -> bool:
    """Inside a write transaction: if the projection tables have another shape than
    this code's, refold the log into tables of this shape (`refold`). Returns whether
    it did."""
    if stored_schema(txn) == PROJECTION_SCHEMA:
        return False
    refold(txn, progress)
    return True


def refold(txn: Transaction, progress: Callable[[int], None] | None = None, *,
           check_chain: bool = False) -> int:
    """Inside a write transaction: fold the whole log into the projection tables anew
    (`rebuild`), and record their shape; the events folded. Tables of this code's shape
    are emptied (a reader keeps seeing their rows until the commit); tables of another
    shape are dropped and made in this one first."""
    from sqlalchemy import delete

    from projections.tables import ProjectionSchemaRow, create_tables, drop_tables

    session = txn.session
    if stored_schema(txn) != PROJECTION_SCHEMA:
        connection = session.connection()
        drop_tables(connection)
        create_tables(connection)
    count = rebuild(SqlStore(txn), SqlProjection(txn), progress, check_chain=check_chain)
    session.execute(delete(ProjectionSchemaRow))
    session.add(ProjectionSchemaRow(version=PROJECTION_SCHEMA))
    session.flush()
    return count


def rebuild(log: SqlStore, views: SqlProjection,
            progress: Callable[[int], None] | None = None, *, check_chain: bool = False) -> int:
    """Drop every projection row and fold the whole log again; returns the events
    applied. Streams the log, so memory stays flat. `check_chain`: each event is
    checked to follow from the one before first (`BrokenChain` at the first that does
    not: the caller's transaction then leaves the tables as they were)."""
    from projections.apply import apply

    views.clear()
    views.set_meta(SHAPE_KEY, str(PROJECTION_SCHEMA))
    count = 0
    for rec in chained(log.read()) if check_chain else log.read():
        apply(views, rec)
        count += 1
        if count % PROGRESS_EVERY == 0:
            views.flush()  # bounded memory: at most one chunk of changes pending
            if progress is not None:
                progress(count)
    views.flush()
    return count


@dataclass
class Verification:
    """What `replay --verify` found: empty `problems` means the log and tables agree."""

    events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


LABELS = {"tasks": "task", "agents": "agent", "queue_counts": "queue count",
          "agent_records": "agent record", "outcomes": "outcome of seq",
          "capacity_changes": "capacity change", "tokens": "token of seq", "projection_meta": "meta"}


def describe_row(table: str, key: tuple[object, ...], want: tuple[object, ...] | None,
                 have: tuple[object, ...] | None) -> str:
    """What differs between the row the log gives and the stored one, column by column."""
    name = " ".join(map(str, key))
    where = f"{LABELS[table]} {name}"
    if want is None:
        return f"{where}: in the table but not in the log"
    if have is None:
        return f"{where}: in the log but missing from the table"
    columns = ROW_SHAPES[table][1]
    diffs = [f"{column}: log gives {w!r}, table has {h!r}"
             for column, w, h in zip(columns, want, have, strict=True) if w != h]
    return f"{where}: " + "; ".join(diffs)


def chain_break(records: Iterable[Recorded]) -> str | None:
    """Where the hash chain of `records` (the log, in order) is broken, or None."""
    broken = first_broken_link(records)
    return None if broken is None else f"hash chain broken at seq {broken[0]}: {broken[1]}"


def head_problem(log: SqlStore, expect_head: tuple[int, str] | None) -> str | None:
    """Why the event `expect_head` names (SEQ, HASH) is no longer the log's, or None: a
    chain alone cannot tell a log whose tail was cut off."""
    if expect_head is None or expect_head == (0, GENESIS_HASH):  # (an empty log's head: any log has it)
        return None
    seq, digest = expect_head
    found = next(iter(log.read(after=seq - 1, limit=1)), None) if seq > 0 else None
    if found is None or found.seq != seq:
        return (f"the log ends at seq {log.last_position()}, but seq {seq} was expected: events were "
                "removed from its end")
    if found.hash != digest:
        return (f"seq {seq} has hash {found.hash}, not the expected {digest}: the log was rewritten from "
                "there or earlier")
    return None


def chain_problems(log: SqlStore, expect_head: tuple[int, str] | None) -> list[str]:
    """What is wrong with the log itself: a broken hash chain, else, with `expect_head`,
    a head that is no longer there."""
    problem = chain_break(log.read()) or head_problem(log, expect_head)
    return [problem] if problem is not None else []


def verify(log: SqlStore, views: SqlProjection, limit: int = 20,
           expect_head: tuple[int, str] | None = None,
           progress: Callable[[str, int, int], None] | None = None) -> Verification:
    """Check the hash chain (and, with `expect_head`, that the event at that seq has
    that hash: a chain alone cannot tell a truncated tail), then fold the log in
    memory and compare every column of every projection table with it, the stored rows
    streamed (the fold is all it holds). A damaged event or row is a problem reported
    with its seq or key, never a crash; the first `limit` problems are kept (table by
    table, each in key order). `progress(step, done, total)`: every 10,000 events of
    the `chain` and `fold` steps, then once for each table `compared`."""
    from projections.apply import fold

    total = log.last_position()
    result = Verification(events=total)

    def counted(step: str, records: Iterable[Recorded]) -> Iterator[Recorded]:
        for done, rec in enumerate(records, start=1):
            yield rec
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(step, done, total)

    broken = chain_break(counted("chain", log.read()))
    if broken is not None:
        result.problems.append(broken)
        return result
    if (gone := head_problem(log, expect_head)) is not None:
        result.problems.append(gone)
    stored_meta = views.meta().get("last_seq", "0")
    if stored_meta.isdigit() and (lost := lost_tail(int(stored_meta), total)) is not None:
        result.problems.append(lost)  # (with a cut head: what the tables still know, and the way on)
    if result.problems:
        return result
    try:
        expected = wanted_rows(fold(counted("fold", log.read())))
    except CorruptLog as e:  # an event whose hash was forged along with its content
        result.problems.append(e.message)
        return result
    shape = stored_schema(views.txn)
    if shape != PROJECTION_SCHEMA:  # (only in a database read as it is: any other is made current)
        result.problems.append(  # (not all agree: a cron job's check fails, as every write would)
            f"the projection tables were made by another version of sched (projection schema {shape}; "
            f"this one writes {PROJECTION_SCHEMA}): not compared; the log's hash chain is intact ({total} "
            "events), and `sched rebuild` makes the tables this version's (it writes)")
        return result
    for number, (table, want) in enumerate(expected.items(), start=1):
        if len(result.problems) >= limit:
            break
        found = heapq.nsmallest(limit - len(result.problems), differences(views, table, want),
                                key=lambda problem: problem[0])
        result.problems.extend(text for _key, text in found)
        if progress is not None:
            progress("compared", number, len(expected))
    return result


def differences(views: SqlProjection, table: str, want: Mapping[Key, Key]) -> Iterator[tuple[str, str]]:
    """Each row of `table` that differs from what the log gives (`want`), or is only on
    one side: (its key as text, to order by; what differs). The stored rows are read
    as a stream; the keys are read a second time only when some row the log gives was
    not met (only then are the stored keys held)."""
    keys = len(ROW_SHAPES[table][0])
    met = 0
    for row in views.stored_rows(table):
        key, have = tuple(row[:keys]), tuple(row[keys:])
        wanted = want.get(key)
        met += wanted is not None
        if wanted != have:
            yield str(key), describe_row(table, key, wanted, have)
    if met < len(want):
        stored = {tuple(row) for row in views.stored_rows(table, keys_only=True)}
        for key in want:
            if key not in stored:
                yield str(key), describe_row(table, key, want[key], None)
