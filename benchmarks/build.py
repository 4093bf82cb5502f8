"""Building big databases for the figures that read them (a tick with nothing to
assign, `status`, the memory of a rebuild).

`submit()` of a million tasks takes many minutes on two cores, so `load_queued` writes
the same rows faster from the same parts of sched: the events are sealed into the hash
chain by `eventlog.store.seal` and folded by `projections.apply.apply` (the product's
own fold), the task rows and queue counts are written by `SqlProjection.flush`; only
the per-task work of `submit` around them (validating a `TaskSpec`, looking up the
queue's policy, the ORM's bulk insert of the event rows) is skipped. The smoke test
checks that the result is identical, row for row, to `submit()` of the same tasks at
the same moment.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import Context, fleet, new_workspace, read_rows
from eventlog.events import TaskSubmitted
from eventlog.schema import EVENT_COLUMNS
from eventlog.store import seal_after
from projections.apply import MemoryProjection, apply
from scheduler.tick import tick
from scheduler.workspace import Workspace

CHUNK = 50_000
# assignments of the "full fleet" databases never pass their start deadline during a run
NEVER = 10 * 365 * 86400.0


def load_queued(ws: Workspace, count: int, now: datetime, *, start: int = 0,
                queue: str = "dev") -> None:
    """Append `count` TaskSubmitted events (the tasks of `benchmarks.common.task_specs`)
    and their projection rows, in transactions of `CHUNK` tasks."""
    max_attempts = ws.settings.queue_policy(queue).max_attempts
    done = 0
    while done < count:
        size = min(CHUNK, count - done)
        with ws.write() as recorder:
            views = recorder.views
            next_id = views.next_task_id()
            events = [TaskSubmitted(task_id=next_id + k, queue=queue, title=f"benchmark task {i}",
                                    priority=i % 10, payload={"n": i}, max_attempts=max_attempts)
                      for k, i in enumerate(range(start + done, start + done + size))]
            sealed = seal_after(recorder.log.last(), events, now)
            folded = MemoryProjection()  # the changes of this chunk, by the product's fold
            for rec in sealed:
                apply(folded, rec)
            for task in folded.tasks.values():
                views.put_task(task)
            for (queue_, status), delta in folded.counts.items():
                views.bump_count(queue_, status, delta)
            for key, value in folded.meta.items():
                views.set_meta(key, value)
            views.txn.insert("events", EVENT_COLUMNS, [
                (r.seq, r.stream_id, r.type, r.schema_version, r.recorded_at, r.data, r.prev_hash,
                 r.hash) for r in sealed])
            views.flush()
        done += size


def full_fleet_db(ctx: Context, queued: int) -> Path:
    """A workspace with `queued` tasks waiting and every slot of its fleet taken (10
    agents of 10 slots, all assigned): a tick finds nothing to assign. Built once per
    run for each size."""
    key = f"full_fleet_{queued}"
    if key in ctx.cache:
        return ctx.cache[key]
    home = ctx.dir(key)
    ws = new_workspace(home, fleet(10, 10), start_deadline_seconds=NEVER)
    load_queued(ws, queued + 100, ws.clock.now())
    report = tick(ws)  # takes the 100 best: the fleet is full
    assert len(report.assigned) == 100, report
    ws.close()
    ctx.cache[key] = home
    return home


def describe(home: Path) -> dict[str, Any]:
    """The size of a built database, for the details of a figure."""
    db = home / "sched.db"
    (events,), = read_rows(db, "SELECT count(*) FROM events")
    (queued,), = read_rows(db, "SELECT count(*) FROM tasks WHERE status = 'queued'")
    return {"events": events, "queued": queued, "db_bytes": db.stat().st_size}
