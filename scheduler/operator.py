"""Operator actions on the scheduler as a whole, each recorded as an event."""

from __future__ import annotations

from collections.abc import Sequence

from eventlog.errors import NotFound, Refused
from eventlog.events import (
    Event,
    SchedulerPaused,
    SchedulerResumed,
    TaskApproved,
    TaskCancelled,
    TaskCancelRequested,
    TaskRejected,
    TaskRequeued,
)
from projections.sql import SqlProjection
from projections.views import FINAL_STATUSES, TaskView
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




def requeue(ws: Workspace, task_ids: Sequence[int] = (), queue: str | None = None) -> list[int]:
    """Put dead tasks back in their queues with fresh attempts: the given ones, or with
    `queue` every dead task of that queue. Returns the requeued ids."""
    now = ws.clock.now()
    with ws.write() as recorder:
        views = recorder.views
        if queue is not None:
            chosen = [t.task_id for t in views.tasks(queue=queue, status="dead")]
        else:
            chosen = []
            for task_id in dict.fromkeys(task_ids):  # each once, in the order given
                task = _existing(views, task_id)
                if task.status != "dead":
                    raise Refused(f"task {task_id} is {task.status}; only dead tasks are requeued")
                chosen.append(task_id)
        if queue is not None:  # all of a queue: leave out the tasks that cannot come back
            while hopeless := [t for t in chosen if _lost_parent(views, t, set(chosen))]:
                chosen = [t for t in chosen if t not in hopeless]
        for task_id in chosen:  # a task may come back only if what it runs after can succeed
            parent_id = _lost_parent(views, task_id, set(chosen))
            if parent_id is not None:
                parent = _existing(views, parent_id)
                raise Refused(f"task {task_id} runs after task {parent_id}, which is "
                              f"{parent.status}: requeue {parent_id} first (or both)")
        recorder.record([TaskRequeued(task_id=t, reason="operator") for t in chosen], now)
        return chosen


def _lost_parent(views: SqlProjection, task_id: int, coming_back: set[int]) -> int | None:
    """A task that `task_id` runs after which ended dead or cancelled and is not coming
    back with it (None if there is none)."""
    for parent_id in _existing(views, task_id).waiting_on:
        parent = views.get_task(parent_id)
        if parent is not None and parent.status in ("dead", "cancelled") and parent_id not in coming_back:
            return parent_id
    return None


def cancel(ws: Workspace, task_id: int, by: str, reason: str | None = None) -> str:
    """Cancel a task: at once unless it runs; a running one is marked cancelling and
    ends when its runner learns it (heartbeat) or its lease expires. Returns the
    task's status afterwards ("cancelled", or "running" while cancelling)."""
    now = ws.clock.now()
    with ws.write() as recorder:
        task = _existing(recorder.views, task_id)
        if task.status in FINAL_STATUSES:
            raise Refused(f"task {task_id} is already {task.status}")
        if task.status == "running":
            if not task.cancelling:
                recorder.record([TaskCancelRequested(task_id=task_id, by=by, reason=reason)], now)
            return "running"
        recorder.record([TaskCancelled(task_id=task_id, by=by, reason=reason)], now)
        return "cancelled"


def decide_approval(ws: Workspace, task_ids: Sequence[int], by: str, approve: bool,
                    reason: str | None = None) -> list[int]:
    """Approve (to the queue) or reject (cancelled) tasks waiting for approval."""
    now = ws.clock.now()
    with ws.write() as recorder:
        events: list[Event] = []
        task_ids = list(dict.fromkeys(task_ids))  # each once, in the order given
        for task_id in task_ids:
            task = _existing(recorder.views, task_id)
            if task.status != "awaiting_approval":
                raise Refused(f"task {task_id} is {task.status}, not awaiting approval")
            events.append(TaskApproved(task_id=task_id, by=by) if approve
                          else TaskRejected(task_id=task_id, by=by, reason=reason))
        recorder.record(events, now)
        return list(task_ids)


def _existing(views: SqlProjection, task_id: int) -> TaskView:
    task = views.get_task(task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    return task
