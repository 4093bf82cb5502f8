"""The runner protocol: claim, heartbeat, complete, fail.

A claim starts an attempt and hands out a lease token; only a hash of it is stored.
Every later call must present the token of the current attempt before its lease
expires, or it is refused (exit 1) and nothing is appended.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from eventlog.errors import BadInput, NotFound, TokenRejected
from eventlog.events import FailureReason, LeaseRenewed, TaskFailed, TaskStarted, TaskSucceeded
from eventlog.timeutil import to_text
from projections.recorder import Recorder
from projections.views import TaskView
from scheduler.gates import closed_gates
from scheduler.tick import gather_and_plan, plan_policy, record_config_if_changed, settle
from scheduler.tokens import hash_token, new_token, token_matches
from scheduler.usage import Usage
from scheduler.workspace import Workspace, describe_pause


@dataclass(frozen=True)
class Claim:
    """A started attempt: the task, and the secret its runner must present."""

    task: TaskView
    token: str
    lease_expires_at: datetime
    attempt: int


def claim(ws: Workspace, agent_name: str) -> Claim | None:
    """Start the best task already assigned to the agent; if none and it has a free
    slot (and assignment is not paused), assign and start one in the same
    transaction. None when there is no work."""
    registry = ws.registry()
    spec = registry.get(agent_name)
    if spec is None:
        raise BadInput(f"unknown agent {agent_name!r} (not in {registry.path})")
    if spec.command is not None:
        raise BadInput(f"agent {agent_name!r} has a command: sched runs its tasks itself "
                       "(`sched exec`); only agents without one claim work")
    now = ws.clock.now()
    with ws.write() as recorder:
        record_config_if_changed(recorder, registry.control, now)
        views = recorder.views
        held = views.tasks(status="assigned", agent=agent_name, limit=1)
        if held:
            task = held[0]
        elif (describe_pause(views.meta().get("paused"), ws.stop_file) is not None
              or spec.type in closed_gates(views.meta())):
            return None  # paused or gated: what is assigned may start, nothing new is assigned
        else:
            policy = replace(plan_policy(ws.settings, registry.control.content_hash),
                             claimant=agent_name)
            decisions = gather_and_plan(views, views.all_agents(), spec.type, now, policy)[:1]
            if not decisions:
                return None
            recorder.record(decisions, now)
            task = views.get_task(decisions[0].task_id)
            assert task is not None
        token = new_token()
        expires = now + timedelta(seconds=ws.settings.lease_seconds)
        attempt = task.attempt + 1
        recorder.record([TaskStarted(task_id=task.task_id, agent=agent_name, attempt=attempt,
                                     token_hash=hash_token(token), lease_expires_at=expires,
                                     runner="worker")], now)
        started = views.get_task(task.task_id)
        assert started is not None
        return Claim(started, token, expires, attempt)


def _current_attempt(recorder: Recorder, task_id: int, token: str, now: datetime) -> TaskView:
    task = recorder.views.get_task(task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if task.status != "running" or not token_matches(token, task.token_hash):
        raise TokenRejected(
            f"task {task_id}: the token is not that of its current attempt (task is {task.status})")
    if task.deadline is not None and task.deadline <= to_text(now):
        raise TokenRejected(f"task {task_id}: the lease expired at {task.deadline}")
    return task


@dataclass(frozen=True)
class Beat:
    """A heartbeat's answer: the new lease expiry, and whether to stop (cancelled)."""

    lease_expires_at: datetime
    cancel: bool


def heartbeat(ws: Workspace, task_id: int, token: str) -> Beat:
    """Extend the lease of the current attempt; the answer says if it was cancelled,
    in which case the runner should stop and report `fail` (it ends as cancelled)."""
    now = ws.clock.now()
    with ws.write() as recorder:
        task = _current_attempt(recorder, task_id, token, now)
        expires = now + timedelta(seconds=ws.settings.lease_seconds)
        recorder.record([LeaseRenewed(task_id=task_id, attempt=task.attempt,
                                      lease_expires_at=expires)], now)
        return Beat(expires, task.cancelling)


def _usage_fields(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {}
    return {"cpu_seconds": usage.cpu_seconds, "peak_rss_bytes": usage.peak_rss_bytes}


def complete(ws: Workspace, task_id: int, token: str, result: Any = None,
             log_path: str | None = None, usage: Usage | None = None) -> None:
    """Record the success of the current attempt (with its resource use, if measured)."""
    now = ws.clock.now()
    with ws.write() as recorder:
        task = _current_attempt(recorder, task_id, token, now)
        recorder.record([TaskSucceeded(task_id=task_id, agent=task.agent or "",
                                       attempt=task.attempt, result=result, log_path=log_path,
                                       **_usage_fields(usage))], now)


def fail(ws: Workspace, task_id: int, token: str, error: str, *, retry: bool = True,
         reason: FailureReason = "reported", exit_code: int | None = None,
         signal: int | None = None, log_path: str | None = None,
         usage: Usage | None = None) -> str:
    """Record the failure of the current attempt; returns the task's new status."""
    now = ws.clock.now()
    with ws.write() as recorder:
        task = _current_attempt(recorder, task_id, token, now)
        if task.cancelling:
            reason, retry = "cancelled", False
        failure = TaskFailed(task_id=task_id, agent=task.agent or "", attempt=task.attempt,
                             reason=reason, error=error, exit_code=exit_code, signal=signal,
                             log_path=log_path, retryable=retry, **_usage_fields(usage))
        recorder.record(settle(ws, recorder, task, failure, now), now)
        after = recorder.views.get_task(task_id)
        assert after is not None
        return after.status
