"""Operator actions on the scheduler as a whole, each recorded as an event."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from eventlog.errors import BadInput, ControlFileError, NotFound, Refused
from eventlog.events import (
    AgentDrained,
    AgentEvicted,
    AgentRestored,
    Event,
    SchedulerPaused,
    SchedulerResumed,
    TaskApproved,
    TaskCancelled,
    TaskCancelRequested,
    TaskFailed,
    TaskRejected,
    TaskRequeued,
    TaskSubmitted,
)
from eventlog.values import check_actor, check_text
from projections.recorder import Recorder
from projections.sql import SqlProjection
from projections.views import FINAL_STATUSES, AgentView, TaskView
from scheduler.dryrun import DryRun, writing
from scheduler.planning import record_config_if_changed
from scheduler.takeback import release_out_of_service, runs_here, settle, stop_if_local
from scheduler.workspace import Workspace


def pause(ws: Workspace, by: str, reason: str | None = None) -> bool:
    """Pause assignment; False (nothing appended) if it already was paused."""
    _check_words(ws, by, reason)
    with ws.write() as recorder:
        if recorder.views.meta().get("paused"):
            return False
        recorder.record([SchedulerPaused(by=by, reason=reason)])
        return True


def resume(ws: Workspace, by: str) -> bool:
    """Resume assignment; False (nothing appended) if it was not paused by an event.
    A stop file, if present, keeps assignment stopped until it is removed."""
    _check_words(ws, by)
    with ws.write() as recorder:
        if not recorder.views.meta().get("paused"):
            return False
        recorder.record([SchedulerResumed(by=by)])
        return True


def _check_words(ws: Workspace, by: str, reason: str | None = None) -> None:
    """Who and why, as the log can store them (BadInput before any write)."""
    check_actor(by, "--by", ws.settings.max_title_bytes)
    check_text(reason, "--reason", ws.settings.max_title_bytes)


@dataclass
class ServiceChange:
    """What taking an agent out of service (or back) did."""

    agent: str
    changed: bool  # False: it already was in that state, nothing was appended
    out_of_service: str | None  # the agent's state afterwards
    released: list[int] = field(default_factory=list)  # assignments sent back, not started
    taken_back: list[int] = field(default_factory=list)  # running attempts ended and requeued
    stopped: list[int] = field(default_factory=list)  # of those, the ones whose processes were stopped here


def _known_agent(ws: Workspace, recorder: Recorder, name: str) -> AgentView:
    """The agent as projected; one only in the control file so far is recorded first."""
    agent = recorder.views.get_agent(name)
    if agent is None:
        with contextlib.suppress(ControlFileError):
            control = ws.registry().control
            if any(a.name == name for a in control.agents):
                record_config_if_changed(recorder, control)
                agent = recorder.views.get_agent(name)
    if agent is None:
        raise BadInput(f"unknown agent {name!r}")
    return agent


def drain(ws: Workspace, name: str, by: str, reason: str | None = None) -> ServiceChange:
    """Take an agent out of service gently: no new work; its assignments not yet
    started go back to the queue; its running attempts finish."""
    _check_words(ws, by, reason)
    with ws.write() as recorder:
        agent = _known_agent(ws, recorder, name)
        if agent.out_of_service is not None:
            return ServiceChange(name, False, agent.out_of_service)
        recorder.record([AgentDrained(agent=name, by=by, reason=reason)])
        return ServiceChange(name, True, "drained", released=_release(recorder, name))


def evict(ws: Workspace, name: str, by: str, reason: str | None = None,
          dry_run: DryRun | None = None) -> ServiceChange:
    """Take an agent out of service now: no new work; its assignments go back to the
    queue, and its running attempts are stopped (their processes on this host first)
    and requeued at once for other agents, without using up an attempt. With
    `dry_run`, nothing is stopped and nothing appended."""
    _check_words(ws, by, reason)
    host = ws.settings.host_name
    why = f"{name} was evicted by {by}" + (f": {reason}" if reason else "")
    with writing(ws, dry_run) as recorder:
        views = recorder.views
        agent = _known_agent(ws, recorder, name)
        if agent.out_of_service == "evicted" and not agent.load:
            return ServiceChange(name, False, "evicted")
        recorder.record([AgentEvicted(agent=name, by=by, reason=reason)])
        released = _release(recorder, name)
        taken_back, stopped = [], []
        for task in views.tasks(status="running", agent=name):
            if stop_if_local(ws, recorder, task, host) if dry_run is None else runs_here(task, host):
                stopped.append(task.task_id)
            failure = TaskFailed(task_id=task.task_id, agent=name, attempt=task.attempt,
                                 reason="evicted", error=why)
            recorder.record(settle(ws, recorder, task, failure))
            taken_back.append(task.task_id)
        return ServiceChange(name, True, "evicted", released, taken_back, stopped)


def _release(recorder: Recorder, name: str) -> list[int]:
    """The agent's assignments not yet started, back to the queue (it left service)."""
    agent = recorder.views.get_agent(name)
    return [int(item["task_id"]) for item in  # type: ignore[call-overload]
            release_out_of_service(recorder, [agent] if agent is not None else [])]


def restore(ws: Workspace, name: str, by: str) -> ServiceChange:
    """Put a drained or evicted agent back in service."""
    _check_words(ws, by)
    with ws.write() as recorder:
        agent = _known_agent(ws, recorder, name)
        if agent.out_of_service is None:
            return ServiceChange(name, False, None)
        recorder.record([AgentRestored(agent=name, by=by)])
        return ServiceChange(name, True, None)


def requeue(ws: Workspace, task_ids: Sequence[int] = (), queue: str | None = None,
            dry_run: DryRun | None = None, by: str | None = None) -> list[int]:
    """Put dead tasks back in their queues with fresh attempts: the given ones (also one
    left `failed` by events lost from the log's end), or with
    `queue` every dead task of that queue; `by`, the operator, is recorded in each
    `TaskRequeued`. Returns the requeued ids (with `dry_run`, those it would requeue;
    nothing is appended)."""
    check_actor(by, "--by", ws.settings.max_title_bytes)
    with writing(ws, dry_run) as recorder:
        views = recorder.views
        if queue is not None:
            chosen = [t.task_id for t in views.tasks(queue=queue, status="dead")]
        else:
            chosen = []
            # each once, in the order given; every id known first (as for approvals)
            for task in [_existing(views, task_id) for task_id in dict.fromkeys(task_ids)]:
                task_id = task.task_id
                # (`failed` lasts only inside a transaction: a task left so was cut off by
                # events lost from the log's end, and comes back the same way)
                if task.status not in ("dead", "failed"):
                    raise Refused(f"task {task_id} is {task.status}; only dead tasks are requeued")
                chosen.append(task_id)
        if queue is not None:  # all of a queue: leave out the tasks that cannot come back
            while hopeless := [t for t in chosen if _lost_parent(views, t, set(chosen))]:
                chosen = [t for t in chosen if t not in hopeless]
        for task_id in chosen:  # a task may come back only if what it runs after can succeed
            parent_id = _lost_parent(views, task_id, set(chosen))
            if parent_id is not None:
                parent = _existing(views, parent_id)
                what = f"requeue {parent_id} first (or both)" if parent.status == "dead" else \
                    "it can never start (a cancelled task is not requeued)"
                raise Refused(f"task {task_id} runs after task {parent_id}, which is {parent.status}: {what}")
        recorder.record([TaskRequeued(task_id=t, reason="operator", by=by,
                                      to_approve=_never_approved(recorder, _existing(views, t)))
                         for t in chosen])
        return chosen


def _never_approved(recorder: Recorder, task: TaskView) -> bool:
    """Whether the task was submitted to wait for approval and never approved (it
    died waiting: the task it runs after died): requeued, it waits for approval again,
    since nobody allowed it to run. Only a task that never ran can be one: only its
    events are read."""
    if task.attempt > 0:
        return False
    events = [rec.event for rec in recorder.log.read_stream(f"task-{task.task_id}")]
    return (isinstance(events[0], TaskSubmitted) and events[0].requires_approval
            and not any(isinstance(event, TaskApproved) for event in events))


def _lost_parent(views: SqlProjection, task_id: int, coming_back: set[int]) -> int | None:
    """A task that `task_id` runs after which ended dead or cancelled and is not coming
    back with it (None if there is none)."""
    for parent_id in _existing(views, task_id).waiting_on:
        parent = views.get_task(parent_id)
        if parent is not None and parent.status in ("dead", "cancelled") and parent_id not in coming_back:
            return parent_id
    return None


def cancel(ws: Workspace, task_id: int, by: str, reason: str | None = None,
           dry_run: DryRun | None = None) -> str:
    """Cancel a task: at once unless it runs; a running one is marked cancelling and
    ends when its runner learns it (heartbeat) or its lease expires. Returns the
    task's status afterwards ("cancelled", or "running" while cancelling; with
    `dry_run`, what it would be: nothing is appended)."""
    _check_words(ws, by, reason)
    with writing(ws, dry_run) as recorder:
        task = _existing(recorder.views, task_id)
        if task.status in FINAL_STATUSES:
            raise Refused(f"task {task_id} is already {task.status}")
        if task.status == "running":
            if not task.cancelling:
                recorder.record([TaskCancelRequested(task_id=task_id, by=by, reason=reason)])
            return "running"
        recorder.record([TaskCancelled(task_id=task_id, by=by, reason=reason)])
        return "cancelled"


def decide_approval(ws: Workspace, task_ids: Sequence[int], by: str, approve: bool,
                    reason: str | None = None) -> list[int]:
    """Approve (to the queue) or reject (cancelled) tasks waiting for approval."""
    _check_words(ws, by, reason)
    with ws.write() as recorder:
        events: list[Event] = []
        task_ids = list(dict.fromkeys(task_ids))  # each once, in the order given
        # every id known first: an unknown one is bad input (exit 2) wherever it stands
        for task in [_existing(recorder.views, task_id) for task_id in task_ids]:
            task_id = task.task_id
            if task.status != "awaiting_approval":
                raise Refused(f"task {task_id} is {task.status}, not awaiting approval")
            events.append(TaskApproved(task_id=task_id, by=by) if approve
                          else TaskRejected(task_id=task_id, by=by, reason=reason))
        recorder.record(events)
        return list(task_ids)


def _existing(views: SqlProjection, task_id: int) -> TaskView:
    task = views.get_task(task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    return task
