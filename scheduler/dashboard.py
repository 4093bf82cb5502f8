"""What the live dashboard (`sched status --watch`) shows, read from the projections
only: queue depths, agent load with the tasks each holds, the latest outcomes, the
throughput of the last hour and the pause state."""

from __future__ import annotations

from typing import Any

from eventlog.timeutil import from_text
from scheduler.queries import current_fleet, status_of
from scheduler.workspace import Workspace

RECENT = 10


def snapshot(ws: Workspace) -> dict[str, Any]:
    now = ws.clock.now()
    with ws.read() as (_log, views):
        doc = status_of(ws, views.counts(), current_fleet(ws, views), views.meta())
        holding = views.holding()
        recent = views.latest_outcomes(RECENT, ("succeeded", "failed", "expired", "dead_lettered"))
        done_last_hour = views.count_outcomes(now.timestamp() - 3600, ("succeeded",))
        failed_last_hour = views.count_outcomes(now.timestamp() - 3600, ("failed", "expired"))
    held: dict[str, list[dict[str, Any]]] = {}
    for task in holding:
        since = task.started_at if task.status == "running" else task.assigned_at
        held.setdefault(task.agent or "?", []).append({
            "task_id": task.task_id, "title": task.title, "status": task.status,
            "seconds": round((now - from_text(since)).total_seconds(), 3) if since else None})
    for name, agent in doc["agents"].items():
        agent["tasks"] = held.get(name, [])
    doc["recent"] = [{"task_id": o.task_id, "queue": o.queue, "agent": o.agent, "outcome": o.outcome,
                      "detail": o.detail, "seconds_ago": round(now.timestamp() - o.ended_ts, 3),
                      "run_seconds": None if o.started_ts is None
                      else round(o.ended_ts - o.started_ts, 3)} for o in recent]
    doc["last_hour"] = {"completed": done_last_hour, "failed": failed_last_hour}
    return doc
