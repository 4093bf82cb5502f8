"""Append events and update the projections in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from eventlog.events import Event
from eventlog.faults import fault_point
from eventlog.sqlite_store import SqliteStore
from eventlog.store import Recorded
from projections.apply import apply
from projections.sql import SqlProjection


class Recorder:
    """The write side of one transaction: the log and the projections it keeps."""

    def __init__(self, log: SqliteStore, views: SqlProjection) -> None:
        self.log = log
        self.views = views

    def catch_up(self) -> int:
        """Apply events the projections have not seen yet (after their checkpoint);
        returns how many. Normally zero: every append applies its own events."""
        applied = 0
        for rec in self.log.read(after=self.views.last_seq()):
            apply(self.views, rec)
            applied += 1
        self.views.flush()
        return applied

    def record(self, events: Sequence[Event], now: datetime) -> list[Recorded]:
        """Append `events` at time `now` and fold them into the projections."""
        sealed = self.log.append(events, now)
        fault_point("after_append")
        for rec in sealed:
            apply(self.views, rec)
        self.views.flush()
        return sealed
