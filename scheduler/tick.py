"""One scheduler pass: record a changed control file, take back what is overdue,
plan, and append the assignments, all inside one write transaction."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from eventlog.events import (
    Event,
    LeaseExpired,
    TaskAssigned,
    TaskDeadLettered,
    TaskFailed,
    TaskRequeued,
)
from eventlog.timeutil import to_text
from projections.recorder import Recorder
from projections.sql import SqlProjection
from projections.views import AgentView, TaskView
from scheduler.plan import PlanPolicy, plan
from scheduler.policy import settle_failure
from scheduler.registry import ControlFile
from scheduler.workspace import Workspace

OVERDUE_BATCH = 500
MAX_CANDIDATES = 20_000


@dataclass
class TickReport:
    """What one tick did (or, with `dry_run`, would do)."""

    assigned: list[dict[str, object]] = field(default_factory=list)
    expired: list[dict[str, object]] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    dead_lettered: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    duration_ms: float = 0.0
    config_recorded: bool = False

    @property
    def did_something(self) -> bool:
        return bool(self.assigned or self.expired or self.config_recorded)


def record_config_if_changed(recorder: Recorder, control: ControlFile, now: datetime) -> bool:
    """Append `AgentsConfigured` when the control file differs from the recorded one."""
    if recorder.views.meta().get("config_hash") == control.content_hash:
        return False
    recorder.record([control.configured_event()], now)
    return True


def earlier_errors(recorder: Recorder, task_id: int) -> list[str]:
    """The errors of a task's earlier attempts, read from its stream."""
    errors = []
    for rec in recorder.log.read_stream(f"task-{task_id}"):
        event = rec.event
        if isinstance(event, TaskFailed):
            errors.append(event.error)
        elif isinstance(event, LeaseExpired):
            errors.append("lease expired")
    return errors


def take_back_overdue(recorder: Recorder, now: datetime, report: TickReport) -> None:
    """Requeue assignments not started by `start_by`; expire leases past their expiry."""
    now_text = to_text(now)
    while batch := recorder.views.overdue(now_text, OVERDUE_BATCH):
        for task in batch:
            events: list[Event]
            if task.status == "assigned":
                events = [TaskRequeued(task_id=task.task_id, reason="not_started")]
                report.expired.append({"task_id": task.task_id, "agent": task.agent,
                                       "reason": "not_started"})
            else:
                expiry = LeaseExpired(task_id=task.task_id, agent=task.agent or "",
                                      attempt=task.attempt)
                events = settle_failure(task, expiry, earlier_errors(recorder, task.task_id))
                report.expired.append({"task_id": task.task_id, "agent": task.agent,
                                       "reason": "lease_expired"})
                outcome = events[-1]
                if isinstance(outcome, TaskDeadLettered):
                    report.dead_lettered.append(task.task_id)
                else:
                    report.retried.append(task.task_id)
            recorder.record(events, now)


def gather_and_plan(views: SqlProjection, agents: Sequence[AgentView], queue: str,
                    now: datetime, policy: PlanPolicy) -> list[TaskAssigned]:
    """Plan one queue from its top candidates only. Fetches more candidates (doubling)
    only while some fetched ones could not be placed, e.g. tasks directed at a busy
    agent or excluded from the free ones, so the cost follows the assignments made."""
    pool = [a for a in agents if a.type == queue]
    free_agents = [a for a in pool if a.free > 0]
    wanted = sum(a.free for a in free_agents)
    if wanted == 0:
        return []
    now_text = to_text(now)
    limit = wanted
    while True:
        candidates: dict[int, TaskView] = {t.task_id: t for t in
                                           views.candidates(queue, now_text, limit)}
        for agent in free_agents:
            for task in views.candidates(queue, now_text, min(limit, agent.free), agent.name):
                candidates[task.task_id] = task
        decisions = plan(pool, candidates.values(), now, policy)
        exhausted = len(candidates) < limit
        if len(decisions) >= wanted or exhausted or limit >= MAX_CANDIDATES:
            return decisions
        limit *= 2


def tick(ws: Workspace, *, dry_run: bool = False) -> TickReport:
    """One pass. With `dry_run`, the same work in a transaction that is rolled back."""
    started = time.perf_counter()
    control = ws.registry().control  # validated before any write
    now = ws.clock.now()
    report = TickReport(dry_run=dry_run)
    policy = PlanPolicy(start_deadline_seconds=ws.settings.start_deadline_seconds)
    with ws.write(commit=not dry_run) as recorder:
        report.config_recorded = record_config_if_changed(recorder, control, now)
        take_back_overdue(recorder, now, report)
        agents = recorder.views.all_agents()
        for queue in sorted({a.type for a in agents if a.free > 0}):
            decisions = gather_and_plan(recorder.views, agents, queue, now, policy)
            recorder.record(decisions, now)
            report.assigned.extend({"task_id": d.task_id, "agent": d.agent} for d in decisions)
    report.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return report

