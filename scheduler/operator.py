"""Operator actions on the scheduler as a whole, each recorded as an event."""

from __future__ import annotations

from eventlog.events import SchedulerPaused, SchedulerResumed
from scheduler.workspace import Workspace


def pause(ws: Workspace, by: str, reason: str | None = None) -> bool:
    """Pause assignment; False (nothing appended) if it already was paused."""
    now = ws.clock.now()
    with ws.write() as recorder:
        if recorder.views.meta().get("paused"):
            return False
        recorder.record([SchedulerPaused(by=by, reason=reason)], now)
        return True


def resume(ws: Workspace, by: str) -> bool:
    """Resume assignment; False (nothing appended) if it was not paused by an event.
    A stop file, if present, keeps assignment stopped until it is removed."""
    now = ws.clock.now()
    with ws.write() as recorder:
        if not recorder.views.meta().get("paused"):
            return False
        recorder.record([SchedulerResumed(by=by)], now)
        return True


