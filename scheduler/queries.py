"""Read-side answers for the CLI: status, task lists, one task, the audit trail."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from eventlog.errors import BadInput, NotFound
from eventlog.sqlite_store import SqliteStore
from eventlog.store import Recorded
from eventlog.timeutil import from_text, to_text
from projections.apply import fold
from projections.rebuild import Verification, rebuild, verify
from projections.sql import SqlProjection
from projections.views import VISIBLE_STATUSES, AgentView, TaskView
from scheduler.gates import closed_gates
from scheduler.plan import effective_priority, pick_order
from scheduler.tick import plan_policy
from scheduler.workspace import Workspace, describe_pause


def task_dict(task: TaskView) -> dict[str, Any]:
    values = asdict(task)
    values["payload"] = json.loads(task.payload)
    values["excluded"] = list(task.excluded)
    values.pop("token_hash")
    return values


def agent_dict(agent: AgentView) -> dict[str, Any]:
    return {"type": agent.type, "capacity": agent.capacity, "enabled": agent.enabled,
            "configured": agent.configured, "assigned": agent.assigned,
            "running": agent.running, "free": agent.free}


def event_dict(rec: Recorded) -> dict[str, Any]:
    return {"seq": rec.seq, "type": rec.type, "stream_id": rec.stream_id,
            "schema_version": rec.schema_version, "recorded_at": rec.recorded_at,
            "data": json.loads(rec.data), "hash": rec.hash}


def status(ws: Workspace, at: int | str | None = None) -> dict[str, Any]:
    """Queue depths and agent load, from the projection tables only; or, with `at` (a
    seq, or fixed-width UTC text), as they stood after that event, folded in memory
    from the log (the stop file, a present-day fact, is then not consulted)."""
    if at is None:
        with ws.read() as (_log, views):
            counts, agents, meta = views.counts(), views.all_agents(), views.meta()
    else:
        past = fold(replay(ws, until=at))
        counts, agents, meta = past.counts, sorted(past.agents.values(), key=lambda a: a.name), past.meta
    last_seq = int(meta.get("last_seq", 0))
    queues: dict[str, dict[str, int]] = {}
    for name in sorted({q for q, _ in counts} | {a.type for a in agents if a.configured}):
        queues[name] = {s: counts.get((name, s), 0) for s in VISIBLE_STATUSES}
    shown = [a for a in agents if a.configured or a.load]
    paused = describe_pause(meta.get("paused"), ws.stop_file if at is None else None)
    return {"queues": queues, "agents": {a.name: agent_dict(a) for a in shown},
            "last_seq": last_seq, "paused": paused, "gates_closed": closed_gates(meta)}


def list_tasks(ws: Workspace, queue: str | None = None, status_: str | None = None,
               limit: int | None = None) -> list[TaskView]:
    """Tasks in the order they will be picked: effective priority (with ageing), then
    how many tasks run after them, then submission."""
    if status_ is not None and status_ not in VISIBLE_STATUSES:
        raise BadInput(f"unknown status {status_!r} (one of: {', '.join(VISIBLE_STATUSES)})")
    with ws.read() as (_log, views):
        found = views.tasks(queue=queue, status=status_, limit=limit)
    now, policy = ws.clock.now(), plan_policy(ws.settings)
    return sorted(found, key=lambda t: pick_order(t, now, policy))


def pick_figures(ws: Workspace, task: TaskView) -> dict[str, Any]:
    """What decides a task's place in its queue: effective priority and time waited."""
    now = ws.clock.now()
    return {"effective_priority": effective_priority(task, now, plan_policy(ws.settings)),
            "waited_seconds": round((now - from_text(task.submitted_at)).total_seconds(), 3)}


def show(ws: Workspace, task_id: int) -> tuple[TaskView, list[Recorded]]:
    with ws.read() as (log, views):
        task = views.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        return task, log.read_stream(f"task-{task_id}")


def parse_position(text: str, flag: str) -> int | str:
    """A `--since`/`--until` bound: a seq number, or an ISO time as fixed-width text."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return to_text(from_text(text))
    except ValueError as e:
        raise BadInput(f"{flag}: expected a seq number or an ISO time with offset, "
                       f"got {text!r}") from e


def _within(rec: Recorded, since: int | str | None, until: int | str | None) -> bool:
    for bound, after in ((since, True), (until, False)):
        if bound is None:
            continue
        value: int | str = rec.seq if isinstance(bound, int) else rec.recorded_at
        if (after and value < bound) or (not after and value > bound):  # type: ignore[operator]
            return False
    return True


def replay(ws: Workspace, task_id: int | None = None, since: int | str | None = None,
           until: int | str | None = None) -> Iterator[Recorded]:
    """The audit trail, in order, filtered; streamed from the log."""
    with ws.read() as (log, _views):
        if task_id is not None:
            records: Any = log.read_stream(f"task-{task_id}")
        else:
            records = log.read(after=since - 1 if isinstance(since, int) else 0)
        for rec in records:
            if isinstance(until, int) and rec.seq > until:
                return
            if _within(rec, since, until):
                yield rec


def verify_log(ws: Workspace) -> Verification:
    with ws.read() as (log, views):
        return verify(log, views)


def rebuild_projections(ws: Workspace, progress: Callable[[int], None] | None = None) -> int:
    """Drop the projection tables' rows and fold the whole log again, in one write
    transaction (readers keep seeing the old tables until it commits)."""
    with ws.db.write() as session:
        return rebuild(SqliteStore(session), SqlProjection(session), progress)
