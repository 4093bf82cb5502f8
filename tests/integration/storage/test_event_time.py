"""Event time never runs backwards: the time recorded in an event is read once the
writer holds the write lock, and is never earlier than the event before it, whatever
the clocks of concurrent writers say."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta

from eventlog.timeutil import to_text
from scheduler import operator, worker
from scheduler.clock import ManualClock
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace


def recorded_times(ws: Workspace) -> list[str]:
    return [rec.recorded_at for rec in queries.replay(ws)]


def test_a_writer_whose_clock_is_behind_records_the_time_of_the_last_event(make_workspace):
    ahead = make_workspace()
    behind = Workspace(ahead.settings, clock=ManualClock(ahead.clock.now() - timedelta(hours=1)))
    submit(ahead, [TaskSpec(queue="dev", title="first")])
    submit(behind, [TaskSpec(queue="dev", title="second")])
    tick(behind)
    (claimed_by_behind,) = [c for c in [worker.claim(behind, "ann")] if c is not None]
    times = recorded_times(ahead)
    assert times == sorted(times)
    assert times[-1] == to_text(ahead.clock.now())  # clamped to the head's time, not an hour back
    # the decisions of the late writer use that time too: its lease runs from it
    assert claimed_by_behind.lease_expires_at == ahead.clock.now() + timedelta(
        seconds=ahead.settings.lease_seconds)
    behind.close()


class LockProbe:
    """A clock that notes, each time it is read, whether another connection could take
    the database's write lock at that moment."""

    def __init__(self, ws: Workspace) -> None:
        self.ws, self.base, self.reads = ws, ws.clock, []

    def now(self):  # type: ignore[no-untyped-def]
        with closing(sqlite3.connect(self.ws.settings.db_path, timeout=0, isolation_level=None)) as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                self.reads.append("free")
            except sqlite3.OperationalError:
                self.reads.append("held")
        return self.base.now()


def test_every_write_reads_the_clock_while_it_holds_the_write_lock(make_workspace):
    ws = make_workspace()
    probe = LockProbe(ws)
    ws.clock = probe  # type: ignore[assignment]
    (task,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    operator.pause(ws, "alice")
    operator.resume(ws, "alice")
    claimed = worker.claim(ws, "ann")
    assert claimed is not None
    worker.heartbeat(ws, task.task_id, claimed.token)
    worker.complete(ws, task.task_id, claimed.token)
    assert probe.reads and set(probe.reads) == {"held"}, probe.reads
