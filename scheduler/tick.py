"""One scheduler pass: record a changed control file, take back what is overdue,
plan, and append the assignments, all inside one write transaction."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from eventlog.events import (
    Event,
    LeaseExpired,
    TaskAssigned,
    TaskCancelled,
    TaskDeadLettered,
    TaskFailed,
    TaskRequeued,
)
from eventlog.faults import fault_point
from eventlog.timeutil import from_text, to_text
from projections.fold import canonical_json
from projections.recorder import Recorder
from projections.sql import SqlProjection
from projections.views import AgentView, TaskView
from scheduler.gates import (
    GateResult,
    check_gates,
    closed_gates,
    due_checks,
    gated_queues,
    record_gates,
)
from scheduler.plan import PlanPolicy, plan
from scheduler.policy import settle_failure
from scheduler.registry import ControlFile
from scheduler.settings import Settings
from scheduler.spawn import reap_finished
from scheduler.tick_runs import note_tick
from scheduler.workspace import Workspace, describe_pause

OVERDUE_BATCH = 500
MAX_CANDIDATES = 20_000


@dataclass
class TickReport:
    """What one tick did (or, with `dry_run`, would do)."""

    assigned: list[dict[str, object]] = field(default_factory=list)
    expired: list[dict[str, object]] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    dead_lettered: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    duration_ms: float = 0.0
    config_recorded: bool = False
    paused: dict[str, object] | None = None
    spawned: list[int] = field(default_factory=list)
    gates_closed: list[str] = field(default_factory=list)

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


def settle(ws: Workspace, recorder: Recorder, task: TaskView, failure: TaskFailed | LeaseExpired,
           now: datetime) -> list[Event]:
    """`settle_failure` with the queue's policy, a fresh random draw for the jitter and
    the task's earlier errors (the shell's part: randomness and reads)."""
    return settle_failure(task, failure, now, ws.settings.queue_policy(task.queue), ws.rng.random(),
                          earlier_errors(recorder, task.task_id))


def take_back_overdue(ws: Workspace, recorder: Recorder, now: datetime, report: TickReport) -> None:
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
                events = settle(ws, recorder, task, expiry, now)
                report.expired.append({"task_id": task.task_id, "agent": task.agent,
                                       "reason": "lease_expired"})
                _count_outcome(report, task.task_id, events)
            recorder.record(events, now)


def dead_letter_doomed(recorder: Recorder, now: datetime, report: TickReport) -> None:
    """Dead-letter tasks that wait on a task that ended dead or cancelled; their own
    dependants follow in the next round, so a whole chain goes in one tick."""
    while doomed := recorder.views.doomed(OVERDUE_BATCH):
        events: list[Event] = []
        for task in doomed:
            parent = recorder.views.get_task(task.doomed_by or 0)
            ended = parent.status if parent else "gone"
            events.append(TaskDeadLettered(task_id=task.task_id,
                                           reason=f"task {task.doomed_by} it runs after ended {ended}"))
            report.dead_lettered.append(task.task_id)
        recorder.record(events, now)


def _count_outcome(report: TickReport, task_id: int, events: Sequence[Event]) -> None:
    match events[-1]:
        case TaskDeadLettered():
            report.dead_lettered.append(task_id)
        case TaskCancelled():
            report.cancelled.append(task_id)
        case _:
            report.retried.append(task_id)


def policy_fingerprint(settings: Settings, queue: str | None) -> str:
    """A short hash of what decides for a queue: its failure and ageing policy and the
    start deadline (queue None: a queue without a [queues.NAME] table)."""
    policy = settings.queue_policy(queue or "")
    text = canonical_json({"policy": policy.model_dump(mode="json"),
                           "start_deadline_seconds": settings.start_deadline_seconds})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_policy(settings: Settings, config_hash: str = "") -> PlanPolicy:
    return PlanPolicy(
        start_deadline_seconds=settings.start_deadline_seconds,
        ageing={q: (p.age_boost_seconds, p.age_boost_max)
                for q in settings.queues if (p := settings.queue_policy(q))},
        default_ageing=(settings.age_boost_seconds, settings.age_boost_max),
        fingerprints={q: policy_fingerprint(settings, q) for q in settings.queues},
        default_fingerprint=policy_fingerprint(settings, None), config_hash=config_hash)


def age_bands(now: datetime, policy: PlanPolicy, queue: str, oldest: str | None) -> list[str | None]:
    """Submission cutoffs, one per age boost a task can have (up to what the oldest
    queued task has gained): a task among the best of its band by base priority is a
    candidate. The best by effective priority are then all among the union: a task
    that gained b points competes only with tasks that gained at least as many, and
    those rank above it if their base priority does."""
    boost, cap = policy.ageing_of(queue)
    if boost <= 0 or oldest is None:
        return [None]
    reached = min(cap, int((now - from_text(oldest)).total_seconds() // boost))
    return [None, *(to_text(now - timedelta(seconds=b * boost)) for b in range(1, reached + 1))]


def gather_and_plan(views: SqlProjection, agents: Sequence[AgentView], queue: str,
                    now: datetime, policy: PlanPolicy) -> list[TaskAssigned]:
    """Plan one queue from its top candidates only: per age band, the best queued tasks
    by base priority (see `age_bands`). Fetches more (doubling) only while some fetched
    ones could not be placed, e.g. tasks directed at a busy agent or excluded from the
    free ones, so the cost follows the assignments made, not the backlog."""
    pool = [a for a in agents if a.type == queue]
    free_agents = [a for a in pool if a.free > 0 and policy.claimant in (None, a.name)]
    wanted = sum(a.free for a in free_agents)
    if policy.claimant is not None:
        wanted = min(wanted, 1)  # a claim takes one task
    if wanted == 0:
        return []
    now_text = to_text(now)
    records = views.records(a.name for a in free_agents)
    limit = wanted
    bands = age_bands(now, policy, queue, views.oldest_queued(queue))
    names = [a.name for a in free_agents]
    while True:
        candidates: dict[int, TaskView] = {}
        exhausted = True
        for cutoff in bands:
            for assignees in (None, names):  # open to any agent, then directed at a free one
                found = views.candidates(queue, now_text, limit, assignees, submitted_by=cutoff)
                exhausted = exhausted and len(found) < limit
                candidates.update((t.task_id, t) for t in found)
        decisions = plan(pool, candidates.values(), now, policy, records)
        if len(decisions) >= wanted or exhausted or limit >= MAX_CANDIDATES:
            return decisions
        limit *= 2


def reap_dead_wrappers(ws: Workspace, recorder: Recorder, now: datetime, host: str,
                       alive: Callable[[int], bool], report: TickReport) -> None:
    """Expire running attempts whose exec wrapper, on this host, no longer exists: its
    lease would only run out later, and nobody is left to renew it."""
    for task in recorder.views.running_on(host):
        if task.pid is None or alive(task.pid):
            continue
        expiry = LeaseExpired(task_id=task.task_id, agent=task.agent or "", attempt=task.attempt)
        events = settle(ws, recorder, task, expiry, now)
        report.expired.append({"task_id": task.task_id, "agent": task.agent,
                               "reason": "wrapper_gone"})
        _count_outcome(report, task.task_id, events)
        recorder.record(events, now)


def pid_alive(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: trust kill()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def run_due_gates(ws: Workspace, now: datetime) -> dict[str, GateResult]:
    """Run the gates whose cached result is older than their interval (no write lock
    is held while they run)."""
    if not gated_queues(ws.settings):
        return {}
    with ws.db.write() as session:
        due = due_checks(session, ws.settings, now)
    env = {k: os.environ[k] for k in ws.settings.exec_env_allowlist if k in os.environ}
    return check_gates(ws.settings, due, env)


def tick(ws: Workspace, *, dry_run: bool = False, alive: Callable[[int], bool] = pid_alive) -> TickReport:
    """One pass. With `dry_run`, the same work in a transaction that is rolled back.
    After the commit, starts `sched exec` for each assignment to an agent with a command."""
    started = time.perf_counter()
    control = ws.registry().control  # validated before any write
    now = ws.clock.now()
    report = TickReport(dry_run=dry_run)
    policy = plan_policy(ws.settings, control.content_hash)
    push: list[int] = []
    reap_finished()  # wrappers this process started and that have exited
    gate_results = run_due_gates(ws, now)  # before the write lock: gates may be slow
    with ws.write(commit=not dry_run) as recorder:
        report.config_recorded = record_config_if_changed(recorder, control, now)
        take_back_overdue(ws, recorder, now, report)
        reap_dead_wrappers(ws, recorder, now, socket.gethostname(), alive, report)
        dead_letter_doomed(recorder, now, report)
        report.paused = describe_pause(recorder.views.meta().get("paused"), ws.stop_file)
        if gate_results:
            recorder.record(record_gates(recorder.views.session, recorder.views, gate_results, now), now)
        closed = closed_gates(recorder.views.meta())
        report.gates_closed = sorted(closed)
        agents = recorder.views.all_agents()
        open_queues = {a.type for a in agents if a.free > 0} - set(closed)
        for queue in sorted(open_queues if report.paused is None else ()):
            decisions = gather_and_plan(recorder.views, agents, queue, now, policy)
            recorder.record(decisions, now)
            report.assigned.extend({"task_id": d.task_id, "agent": d.agent} for d in decisions)
        has_command = {a.name for a in agents if a.command is not None}
        push = [item["task_id"] for item in report.assigned if item["agent"] in has_command]
        note_tick(recorder.views.session, socket.gethostname(), os.getpid(), to_text(now),
                  round((time.perf_counter() - started) * 1000, 3))
    if not dry_run:
        if push:
            fault_point("after_commit_before_spawn")
        for task_id in push:  # type: ignore[assignment]
            try:
                ws.launcher(ws.settings, task_id)
                report.spawned.append(task_id)
            except OSError as e:  # the assignment stays; its start deadline takes it back
                report.errors.append(f"task {task_id}: cannot start sched exec: {e}")
    report.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return report
