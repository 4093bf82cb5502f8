"""What the live dashboard (`sched status --watch`) shows, read from the projections
and the operational records only: queue depths, agent load with the tasks each holds
(and their progress), the latest outcomes, the throughput of the last hour, the pause
state, when the last tick ran and whether a daemon is alive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventlog.timeutil import from_text, to_text
from scheduler.gates import gates_now
from scheduler.machine import this_machine
from scheduler.reads.queries import THROUGHPUT_WINDOW_SECONDS, current_fleet, status_of
from scheduler.tick_runs import daemon_state, daemons, last_tick, pid_alive
from scheduler.workspace import Workspace

RECENT = 10


def snapshot(ws: Workspace, alive: Callable[[int], bool] = pid_alive,
             machine: Callable[[], str | None] = this_machine) -> dict[str, Any]:
    now = ws.clock.now()
    with ws.read() as (_log, views):
        ticked = last_tick(views.txn)
        running_daemons = daemons(views.txn)
        doc = status_of(ws, views.counts(), current_fleet(ws, views), views.meta(), gates=gates_now(views))
        holding = views.holding()
        recent = views.latest_outcomes(RECENT, ("succeeded", "failed", "expired", "dead_lettered"))
        hour_ago = now.timestamp() - THROUGHPUT_WINDOW_SECONDS
        done_last_hour = views.count_outcomes(hour_ago, ("succeeded",))
        failed_last_hour = views.count_outcomes(hour_ago, ("failed", "expired"))
        overdue, earliest_due = views.overdue_open(to_text(now))
    held: dict[str, list[dict[str, Any]]] = {}
    for task in holding:
        since = task.started_at if task.status == "running" else task.assigned_at
        held.setdefault(task.agent or "?", []).append({
            "task_id": task.task_id, "title": task.title, "status": task.status,
            "seconds": round((now - from_text(since)).total_seconds(), 3) if since else None,
            "progress_percent": task.progress_percent, "progress_message": task.progress_message})
    for name, agent in doc["agents"].items():
        agent["tasks"] = held.get(name, [])
    doc["recent"] = [{"task_id": o.task_id, "queue": o.queue, "agent": o.agent, "outcome": o.outcome,
                      "detail": o.detail, "seconds_ago": round(now.timestamp() - o.ended_ts, 3),
                      "run_seconds": None if o.started_ts is None
                      else round(o.ended_ts - o.started_ts, 3),
                      "start_seconds": None if o.started_ts is None or o.assigned_ts is None
                      else round(o.started_ts - o.assigned_ts, 3)} for o in recent]
    doc["last_hour"] = {"completed": done_last_hour, "failed": failed_last_hour}
    doc["overdue"] = {"count": overdue, "earliest_due": earliest_due}
    doc["last_tick"] = None if ticked is None else ticked | {
        "seconds_ago": round((now - from_text(str(ticked["at"]))).total_seconds(), 3)}
    doc["daemon"] = daemon_state(running_daemons, now, ws.settings.host_name, alive, machine())
    return doc
