"""Append events and update the projections in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from eventlog.errors import LogTampered
from eventlog.events import Event, LeaseRenewed, TaskAssigned, TaskProgressed, TaskStarted
from eventlog.faults import fault_point
from eventlog.sql_store import SqlStore
from eventlog.store import Recorded
from projections.apply import apply
from projections.rebuild import lost_tail
from projections.sql import SqlProjection


class Recorder:
    """The write side of one transaction: the log and the projections it keeps.

    `now` is the time of the transaction, read once the write lock is held and never
    earlier than the log's last event (`Workspace.write` sets it): commands decide with
    it, and it is the time recorded in their events. It only moves on when the
    transaction waited for something before recording what followed (a tick that
    stops an attempt's processes before it records the attempt's end). `now_mark` is a
    reading of this host's monotonic lease clock taken when `now` was read (None: not
    taken), so that a runner can measure from the time its events record."""

    def __init__(self, log: SqlStore, views: SqlProjection, now: datetime | None = None) -> None:
        self.log = log
        self.views = views
        self.now = now
        self.now_mark: float | None = None

    def catch_up(self) -> int:
        """Apply events the projections have not seen yet (after their checkpoint);
        returns how many. Normally zero: every append applies its own events, so the
        log's last event (which the next append needs anyway) is the checkpoint's, and
        reading it is all it takes to know."""
        checkpoint = self.views.last_seq()
        last = self.log.last()
        if (lost := lost_tail(checkpoint, last.seq if last is not None else 0,
                              refused="nothing appended: ")) is not None:
            raise LogTampered(lost)
        applied = 0
        if last is not None and last.seq > checkpoint:
            for rec in self.log.read(after=checkpoint):
                apply(self.views, rec)
                applied += 1
        self.views.flush()
        return applied

    def record(self, events: Sequence[Event], at: datetime | None = None) -> list[Recorded]:
        """Append `events` at the transaction's time (or `at`: a test or a benchmark
        laying down a history; the store still never lets time run backwards) and fold
        them into the projections."""
        when = at or self.now
        if when is None:
            raise ValueError("Recorder.record: no time (the recorder was not opened by Workspace.write)")
        sealed = self.log.append(events, when)
        if sealed and wakes(events):  # waiting processes hear of it at commit (one notice per transaction)
            self.log.txn.notify(sealed[-1].seq)
        fault_point("after_append")
        for rec in sealed:
            apply(self.views, rec)
        self.views.flush()
        return sealed


# what an attempt under way records: its start, its lease, its progress. Nothing another
# process could act on (no task to assign or start, no slot freed)
_UNDER_WAY = (TaskStarted, LeaseRenewed, TaskProgressed)


def wakes(events: Sequence[Event]) -> bool:
    """Whether appending `events` may leave work for another process: a task to assign or
    start, a slot freed, the fleet or a gate changed (PostgreSQL then notifies the
    daemons and the waiting claims). Anything does but an attempt under way, and an
    assignment started in the same transaction (a pull worker's claim) is under way.
    Those are the frequent commits (every heartbeat): they wake nobody for nothing."""
    started: set[tuple[int, str]] | None = None
    for event in events:
        if isinstance(event, _UNDER_WAY):
            continue
        if isinstance(event, TaskAssigned):
            if started is None:
                started = {(e.task_id, e.agent) for e in events if isinstance(e, TaskStarted)}
            if (event.task_id, event.agent) in started:
                continue
        return True
    return False
