"""The pure folds: how each event changes a task, the fleet and the counters.

No I/O, no clock: every input is an argument, every output a new value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from eventlog.errors import CorruptLog
from eventlog.events import (
    UNCOUNTED_FAILURES,
    AgentDrained,
    AgentEvicted,
    AgentRestored,
    AgentsConfigured,
    Event,
    LeaseExpired,
    LeaseRenewed,
    QueueGateClosed,
    QueueGateOpened,
    SchedulerPaused,
    SchedulerResumed,
    TaskApproved,
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskDueMissed,
    TaskFailed,
    TaskProgressed,
    TaskRejected,
    TaskRequeued,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
    TokenCreated,
    TokenRevoked,
)
from eventlog.frozen import constructor
from eventlog.timeutil import from_text, to_text
from projections.views import (
    FINAL_STATUSES,
    HOLDING_STATUSES,
    AgentView,
    CapacityChange,
    Outcome,
    TaskView,
    TokenView,
    evolve,
)

_new_task = constructor(TaskView)

# built once: json.dumps with these options builds an encoder per call
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def canonical_json(value: object) -> str:
    return _CANONICAL.encode(value)


def evolve_task(task: TaskView | None, event: Event, seq: int, at: str) -> TaskView:
    """The task after `event`, recorded as `seq` at time `at`."""
    if isinstance(event, TaskSubmitted):
        payload = canonical_json(event.payload)
        return _new_task(
            task_id=event.task_id, queue=event.queue, title=event.title,
            priority=event.priority, assignee=event.assignee,
            payload=payload, payload_bytes=len(payload),  # (ASCII: canonical JSON escapes the rest)
            status="awaiting_approval" if event.requires_approval else "queued",
            attempt=0, attempt_floor=0, max_attempts=event.max_attempts, agent=None,
            not_before=to_text(event.not_before) if event.not_before else None,
            deadline=None, token_hash=None, pid=None, host=None, log_path=None,
            excluded=(), cancelling=False, waiting_on=(), blocks=(), doomed_by=None,
            last_error=None,
            idempotency_key=event.idempotency_key, task_type=event.task_type, submitted_seq=seq,
            submitted_at=at, updated_at=at,
            ready_at=None if event.requires_approval else ready_time(at, event.not_before),
            requires=event.requires,
            due=to_text(event.due) if event.due else None,
        )
    if task is None:
        raise CorruptLog(f"event seq {seq} ({event.type}) names a task never submitted")  # type: ignore[attr-defined]
    match event:
        case TaskAssigned():
            return evolve(task, status="assigned", agent=event.agent,
                          deadline=to_text(event.start_by), assigned_at=at, started_at=None,
                          updated_at=at)
        case TaskStarted():
            return evolve(task, status="running", agent=event.agent, attempt=event.attempt,
                          deadline=to_text(event.lease_expires_at),
                          token_hash=event.token_hash, pid=event.pid, host=event.host, machine=event.machine,
                          log_path=event.log_path or task.log_path, started_at=at, updated_at=at,
                          last_agent=event.agent, progress_percent=None, progress_message=None,
                          progress_at=None)
        case LeaseRenewed():
            return evolve(task, deadline=to_text(event.lease_expires_at), updated_at=at)
        case TaskDueMissed():
            return evolve(task, due_missed_at=at, updated_at=at)
        case TaskProgressed():
            return evolve(task, progress_percent=event.percent, progress_message=event.message,
                          progress_at=at, updated_at=at)
        case LeaseExpired():
            return _attempt_failed(task, event.agent, event.detail or "lease expired", at)
        case TaskFailed(reason="undelivered"):  # its worker never had it: nothing failed
            return evolve(task, status="failed", agent=None, deadline=None, token_hash=None, pid=None,
                          host=None, machine=None, attempt_floor=task.attempt_floor + 1, updated_at=at)
        case TaskFailed(reason="interrupted"):  # its runner was stopped: not the agent's failure either
            failed = _attempt_failed(task, event.agent, event.error, at)
            return evolve(failed, excluded=task.excluded, attempt_floor=task.attempt_floor + 1)
        case TaskFailed(reason=reason) if reason in UNCOUNTED_FAILURES:
            failed = _attempt_failed(task, event.agent, event.error, at)
            return evolve(failed, attempt_floor=task.attempt_floor + 1)
        case TaskFailed():
            return _attempt_failed(task, event.agent, event.error, at)
        case TaskSucceeded():
            return evolve(task, status="succeeded", agent=None, deadline=None,
                          token_hash=None, pid=None, host=None, machine=None, cancelling=False, updated_at=at)
        case TaskRequeued(reason="operator"):  # `requeue` checked that its parents can succeed
            waits = "awaiting_approval" if event.to_approve else "blocked" if task.waiting_on else None
            return evolve(task, status=waits or "queued", agent=None,
                          deadline=None, token_hash=None, pid=None, host=None, machine=None, not_before=None,
                          attempt_floor=task.attempt, excluded=(), doomed_by=None, dead_reason=None,
                          ready_at=None if waits else at, updated_at=at)
        case TaskRequeued():
            kept = (event.reason in KEEPS_ITS_WAIT and event.not_before is None
                    and task.ready_at is not None)
            # an agent that did not start its assignment (its host gone, its worker away)
            # is passed over for the task while another can take it, as one that failed it
            unstarted = task.agent if event.reason == "not_started" and task.status == "assigned" else None
            excluded = task.excluded if unstarted in (None, *task.excluded) else (*task.excluded, unstarted)
            return evolve(task, status="queued", agent=None, deadline=None, token_hash=None,
                          pid=None, host=None, machine=None, excluded=excluded,
                          not_before=to_text(event.not_before) if event.not_before else None,
                          ready_at=task.ready_at if kept else ready_time(at, event.not_before),
                          updated_at=at)
        case TaskApproved():
            return evolve(task, status="blocked" if task.waiting_on else "queued",
                          ready_at=None if task.waiting_on else ready_time(at, task.not_before),
                          updated_at=at)
        case TaskRejected() | TaskCancelled():
            return evolve(task, status="cancelled", agent=None, deadline=None, token_hash=None,
                          pid=None, host=None, machine=None, cancelling=False, updated_at=at)
        case TaskCancelRequested():
            return evolve(task, cancelling=True, updated_at=at)
        case TaskDeadLettered():
            return evolve(task, status="dead", agent=None, deadline=None, token_hash=None,
                          pid=None, host=None, machine=None, dead_reason=event.reason, updated_at=at)
    raise CorruptLog(f"event seq {seq}: no task fold for {type(event).__name__}")


# requeues after which no attempt ran (an assignment not started by its deadline, one
# released as its agent left service, a claim never delivered): with no backoff to wait
# out, the task keeps its place in time, so its wait (and the age boost it earned) goes
# on from when it became ready instead of starting again at each bounce
KEEPS_ITS_WAIT = frozenset({"not_started", "released", "undelivered"})


def ready_time(at: str, not_before: datetime | str | None) -> str:
    """When a task joining its queue at `at` may first be picked."""
    if not_before is None:
        return at
    later = not_before if isinstance(not_before, str) else to_text(not_before)
    return max(at, later)


def _attempt_failed(task: TaskView, agent: str, error: str, at: str) -> TaskView:
    excluded = task.excluded if agent in task.excluded else (*task.excluded, agent)
    return evolve(task, status="failed", agent=None, deadline=None, token_hash=None,
                  pid=None, host=None, machine=None, excluded=excluded, last_error=error, updated_at=at)


def link_after(child: TaskView, parents: Sequence[TaskView]) -> tuple[TaskView, list[TaskView]]:
    """A newly submitted task and the tasks it runs after: it waits on those not yet
    succeeded (blocked, unless it first waits for approval) and each of those records
    that it blocks the new task."""
    waiting = tuple(p.task_id for p in parents if p.status != "succeeded")
    doomed = next((p.task_id for p in parents if p.status in ("dead", "cancelled")), None)
    status = "blocked" if waiting and child.status == "queued" else child.status
    linked = evolve(child, waiting_on=waiting, doomed_by=doomed, status=status,
                    ready_at=None if status == "blocked" else child.ready_at)
    return linked, [evolve(p, blocks=(*p.blocks, child.task_id)) for p in parents
                    if p.task_id in waiting]


def follow_parent(parent: TaskView, child: TaskView,
                  get_task: Callable[[int], TaskView | None]) -> TaskView:
    """A task after a task it runs after changed status: released when that one
    succeeded, doomed while it is dead or cancelled. When the parent that doomed it
    succeeds or is requeued, it stays doomed by another task it still waits on that is
    dead or cancelled, if one is (`get_task` finds them, read only then)."""
    followed = _follow_parent(parent, child)
    if child.doomed_by == parent.task_id and followed.doomed_by is None:
        others = (get_task(t) for t in followed.waiting_on if t != parent.task_id)
        return evolve(followed, doomed_by=next(
            (t.task_id for t in others if t is not None and t.status in ("dead", "cancelled")), None))
    return followed


def _follow_parent(parent: TaskView, child: TaskView) -> TaskView:
    if parent.task_id not in child.waiting_on or child.status in FINAL_STATUSES:
        return child
    if parent.status == "succeeded":
        waiting = tuple(t for t in child.waiting_on if t != parent.task_id)
        released = child.status == "blocked" and not waiting
        doomed = None if child.doomed_by == parent.task_id else child.doomed_by
        return evolve(child, waiting_on=waiting, status="queued" if released else child.status,
                      doomed_by=doomed,
                      ready_at=ready_time(parent.updated_at, child.not_before) if released
                      else child.ready_at)
    if parent.status in ("dead", "cancelled"):
        return evolve(child, doomed_by=child.doomed_by or parent.task_id)
    if child.doomed_by == parent.task_id:  # requeued by an operator: there is hope again
        return evolve(child, doomed_by=None)
    return child


def drop_succeeded_parents(task: TaskView, parents: Sequence[TaskView], at: str) -> TaskView:
    """A task an operator requeued, no longer waiting on the parents that succeeded
    while it was dead (a final task does not follow its parents, so it may still list
    them): released at `at` if none is left."""
    succeeded = {p.task_id for p in parents if p.status == "succeeded"}
    waiting = tuple(t for t in task.waiting_on if t not in succeeded)
    if waiting == task.waiting_on:
        return task
    released = task.status == "blocked" and not waiting
    return evolve(task, waiting_on=waiting, status="queued" if released else task.status,
                  ready_at=ready_time(at, task.not_before) if released else task.ready_at)


def attempt_outcome(task: TaskView | None, event: Event) -> tuple[str, str, str] | None:
    """(agent, task type, "succeeded" | "failed") when `event` ends an attempt of a typed
    task; None otherwise. Feeds the success records that affinity uses."""
    if task is None or task.task_type is None:
        return None
    match event:
        case TaskSucceeded():
            return event.agent, task.task_type, "succeeded"
        case TaskFailed(reason=reason) if reason != "cancelled" and reason not in UNCOUNTED_FAILURES:
            return event.agent, task.task_type, "failed"  # (an eviction was not the agent's failure)
        case LeaseExpired():
            return event.agent, task.task_type, "failed"
    return None


def _ts(text: str | None) -> float | None:
    return from_text(text).timestamp() if text is not None else None


def ended_attempt(task: TaskView | None, event: Event, seq: int, at: str) -> Outcome | None:
    """The `Outcome` row when `event` ends an attempt of `task` (or dead-letters it)."""
    if task is None:
        return None
    holder, attempt, cpu, rss, delay, reason = task.agent, task.attempt, None, None, None, None
    match event:
        case TaskSucceeded():
            kind, detail, cpu, rss = "succeeded", None, event.cpu_seconds, event.peak_rss_bytes
            delay = event.start_delay_seconds
        case TaskFailed():
            # (an undelivered claim: its command never ran, as an assignment not started)
            kind = {"cancelled": "cancelled", "evicted": "evicted", "interrupted": "interrupted",
                    "undelivered": "not_started"}.get(event.reason, "failed")
            detail, cpu, rss, reason = event.error, event.cpu_seconds, event.peak_rss_bytes, event.reason
            delay = event.start_delay_seconds
        case LeaseExpired():
            kind, detail = "expired", event.detail or "lease expired"
        # taken back before it started (not one sent back because its agent left service:
        # the agent did not fail to start it, an operator or the control file took it away)
        case TaskRequeued() if task.status == "assigned" and event.reason != "released":
            kind, attempt = "not_started", task.attempt + 1
            detail = event.detail or "not started by its start deadline"
        case TaskCancelled() if task.status in HOLDING_STATUSES:
            kind, detail = "cancelled", event.reason
            attempt = task.attempt if task.status == "running" else task.attempt + 1
        case TaskDeadLettered():
            return Outcome(seq=seq, task_id=task.task_id, queue=task.queue, agent=None,
                           attempt=task.attempt, outcome="dead_lettered", detail=event.reason,
                           ready_ts=None, assigned_ts=None, started_ts=None, ended_ts=_ts(at) or 0.0)
        case _:
            return None
    ended_ts = _ts(at) or 0.0
    started_ts = _ts(task.started_at) if task.status == "running" and kind != "not_started" else None
    if started_ts is not None:
        started_ts = command_ran(started_ts, delay, ended_ts)
    return Outcome(seq=seq, task_id=task.task_id, queue=task.queue,
                   agent=getattr(event, "agent", None) or holder, attempt=attempt, outcome=kind,
                   detail=detail, ready_ts=_ts(task.ready_at), assigned_ts=_ts(task.assigned_at),
                   started_ts=started_ts, ended_ts=ended_ts,
                   cpu_seconds=cpu, peak_rss_bytes=rss, reason=reason)


def command_ran(started: float, delay: float | None, ended: float) -> float:
    """When an attempt's command ran (epoch seconds): `delay` (its `start_delay_seconds`,
    None: not measured) after its start was recorded, never past its end."""
    return started if delay is None else min(started + delay, max(started, ended))


def slots_of(agent: AgentView) -> int:
    return agent.capacity if agent.in_service else 0


def capacity_changes(before: Iterable[AgentView], after: Iterable[AgentView], seq: int,
                     at: str) -> list[CapacityChange]:
    """The agents whose offered slots (or type) a new control file changed."""
    old = {a.name: (a.type, slots_of(a)) for a in before}
    at_ts = _ts(at) or 0.0
    return [CapacityChange(seq=seq, agent=a.name, type=a.type, slots=slots_of(a), at_ts=at_ts)
            for a in after if old.get(a.name, (a.type, 0)) != (a.type, slots_of(a))]


def load_changes(before: TaskView | None, after: TaskView) -> list[tuple[str, str, int]]:
    """How a task change moves agent load: (agent, "assigned"|"running", +1/-1) items.
    None while the task holds the same agent's slot in the same way (a heartbeat, a
    progress report): the agent is not read or written for it."""
    held = (before.agent, before.status) if (before is not None and before.status in HOLDING_STATUSES
                                              and before.agent) else None
    holds = (after.agent, after.status) if after.status in HOLDING_STATUSES and after.agent else None
    if held == holds:
        return []
    changes = []
    if held is not None:
        changes.append((held[0], held[1], -1))
    if holds is not None:
        changes.append((holds[0], holds[1], +1))
    return changes


def evolve_agent_load(agent: AgentView, counter: str, delta: int) -> AgentView:
    """The agent with one assigned or running slot more (+1) or fewer (-1)."""
    return evolve(agent, **{counter: getattr(agent, counter) + delta})


def unknown_agent(name: str, queue: str) -> AgentView:
    """An agent that holds work but is not in the fleet: it gets no new work."""
    return AgentView(name=name, type=queue, capacity=0, enabled=False, configured=False,
                     command=None)


def pause_state(event: SchedulerPaused | SchedulerResumed, at: str) -> str:
    """The `paused` meta value after a pause or resume: JSON of who, why and when,
    or empty when running."""
    if isinstance(event, SchedulerResumed):
        return ""
    return canonical_json({"by": event.by, "reason": event.reason, "at": at})


def gate_state(event: QueueGateClosed | QueueGateOpened, at: str) -> str:
    """The `gate:QUEUE` meta value: JSON of why and since when it is closed, or empty
    while open."""
    if isinstance(event, QueueGateOpened):
        return ""
    return canonical_json({"detail": event.detail, "since": at})


def evolve_service(agent: AgentView, event: AgentDrained | AgentEvicted | AgentRestored) -> AgentView:
    """The agent after an operator took it out of service or put it back."""
    match event:
        case AgentDrained():
            return evolve(agent, out_of_service="drained")
        case AgentEvicted():
            return evolve(agent, out_of_service="evicted")
    return evolve(agent, out_of_service=None)


def evolve_fleet(current: Iterable[AgentView], event: AgentsConfigured) -> list[AgentView]:
    """Every agent after a new control file: declared ones take its shape, the others
    stay (with their load) but leave the fleet."""
    declared = {a.name: a for a in event.agents}
    old = {a.name: a for a in current}
    result = []
    for name, spec in declared.items():
        prior = old.get(name)
        result.append(AgentView(
            name=name, type=spec.type, capacity=spec.capacity, enabled=spec.enabled,
            configured=True,
            command=canonical_json(list(spec.command)) if spec.command is not None else None,
            timeout_seconds=spec.timeout_seconds,
            non_retryable_exit_codes=canonical_json(list(spec.non_retryable_exit_codes)),
            assigned=prior.assigned if prior else 0, running=prior.running if prior else 0,
            out_of_service=prior.out_of_service if prior else None,
            capabilities=spec.capabilities, weight=spec.weight, hours=spec.hours,
        ))
    for name, prior in old.items():
        if name not in declared and prior.configured:
            result.append(evolve(prior, configured=False, enabled=False))
    return result


def evolve_token(live: TokenView | None, event: TokenCreated | TokenRevoked, seq: int,
                 at: str) -> TokenView:
    """The token row after `event` (recorded as `seq` at `at`): a new live token, or
    `live` (the live token of that name) revoked."""
    if isinstance(event, TokenCreated):
        return TokenView(seq=seq, name=event.name, role=event.role, agent=event.agent,
                         token_hash=event.token_hash, created_at=at, created_by=event.by, host=event.host)
    if live is None:
        raise CorruptLog(f"event seq {seq} (TokenRevoked) names no live token {event.name!r}")
    return evolve(live, revoked_at=at, revoked_by=event.by)
