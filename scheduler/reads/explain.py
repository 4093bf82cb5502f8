"""`sched explain ID`: why a task went to the agent it went to, and why not earlier,
from the log alone: the task's own stream, the decision recorded in each
`TaskAssigned`, and the scheduler stream (pauses, gates, control files).

`explain_history` is pure; `explain` reads the two streams.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from eventlog.errors import NotFound
from eventlog.events import (
    AgentsConfigured,
    AssignmentDecision,
    Event,
    LeaseExpired,
    QueueGateClosed,
    QueueGateOpened,
    SchedulerPaused,
    SchedulerResumed,
    TaskApproved,
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskFailed,
    TaskRejected,
    TaskRequeued,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
)
from eventlog.store import Recorded
from eventlog.timeutil import from_text, to_text
from projections.fold import evolve_task
from projections.views import WAITING_STATUSES, AgentView, TaskView
from scheduler.decisions.fit import never_fits, skips_failed, takes_work, why_not
from scheduler.decisions.hours import is_available
from scheduler.workspace import Workspace


def describe(event: Event) -> str:
    """One line saying what a task event means."""
    match event:
        case TaskSubmitted():
            extra = [f"priority {event.priority}"]
            if event.assignee:
                extra.append(f"directed at {event.assignee}")
            if event.after:
                extra.append(f"runs after {', '.join(map(str, event.after))}")
            if event.requires_approval:
                extra.append("waits for approval")
            if event.not_before:
                extra.append(f"not before {to_text(event.not_before)}")
            who = f" by {event.by}" if event.by else ""
            return f"submitted to {event.queue}{who} ({'; '.join(extra)})"
        case TaskAssigned():
            return f"assigned to {event.agent} (attempt {event.attempt})"
        case TaskStarted():
            return f"started on {event.agent} by {event.runner} (attempt {event.attempt})"
        case TaskSucceeded():
            return f"succeeded on {event.agent}"
        case TaskFailed(reason="undelivered"):
            return f"claim never reached {event.agent} ({event.error}): given back, no attempt used"
        case TaskFailed():
            return f"failed on {event.agent}: {event.reason}: {event.error}"
        case LeaseExpired():
            return f"lease expired on {event.agent}"
        case TaskRequeued(reason="operator"):  # (the reason is who: not said twice)
            return f"requeued by {event.by or 'an operator'}"
        case TaskRequeued():
            until = f", not before {to_text(event.not_before)}" if event.not_before else ""
            who = f" by {event.by}" if event.by else ""
            return f"requeued{who} ({event.reason}{until})"
        case TaskApproved():
            return f"approved by {event.by}"
        case TaskRejected():
            return f"rejected by {event.by}"
        case TaskCancelRequested():
            return f"cancel requested by {event.by}"
        case TaskCancelled():
            return f"cancelled by {event.by}"
        case TaskDeadLettered():
            return f"dead-lettered: {event.reason}"
    return type(event).__name__


def why_this_agent(event: TaskAssigned) -> str:
    """What made the chosen agent win, from the recorded candidates."""
    decision = event.decision
    if decision is None or not decision.candidates:
        return "no decision recorded (assigned by an older sched)"
    best = decision.candidates[0]
    if decision.via is None:  # recorded before decisions said how they were made
        return (f"{best.agent} ranked first of {decision.candidates_total} candidate(s) (this older "
                "record does not say whether a tick or the agent's own claim assigned it)")
    if decision.via == "claim":
        return f"{best.agent} claimed it: a pull worker asking for work takes the best task it may run"
    if decision.candidates_total == 1:
        directed = any(p.why.startswith("the task is directed") for p in decision.passed_over)
        return (f"the task is directed at {best.agent}" if directed
                else f"{best.agent} was the only agent able to take it ({best.free} free slot(s))")
    runner = decision.candidates[1]
    if best.free != runner.free:
        return (f"{best.agent} had the most free slots ({best.free}; next {runner.agent} with "
                f"{runner.free})")
    if best.weight != runner.weight:
        return (f"tied on free slots ({best.free}) with {runner.agent}; {best.agent} has the higher "
                f"weight ({best.weight:g} vs {runner.weight:g})")
    if best.success_rate != runner.success_rate:
        return (f"tied on free slots ({best.free}) and weight with {runner.agent}; {best.agent} has the "
                f"better success record at this type of task ({best.success_rate:.2f} vs "
                f"{runner.success_rate:.2f})")
    if best.load != runner.load:
        return (f"tied on free slots, weight and record with {runner.agent}; {best.agent} had the lower "
                f"load ({best.load} vs {runner.load})")
    return (f"tied with {runner.agent} on free slots, weight, record and load; {best.agent} comes "
            "first by name")


def why_not_earlier(assigned: Recorded, decision: AssignmentDecision | None,
                    task_history: Sequence[Recorded], scheduler_history: Sequence[Recorded],
                    queue: str) -> list[str]:
    """What held the task back before this assignment."""
    at = from_text(assigned.recorded_at)
    reasons = []
    before = [r for r in task_history if r.seq < assigned.seq]
    submitted = before[0].event if before else None
    if isinstance(submitted, TaskSubmitted) and submitted.requires_approval:
        approval = next((r for r in before if isinstance(r.event, TaskApproved)), None)
        if approval is not None:
            reasons.append(f"waited for approval until {approval.recorded_at} "
                           f"(by {approval.event.by})")  # type: ignore[attr-defined]
    if decision is None:
        return [*reasons, "no decision recorded, so no wait figures (assigned by an older sched)"]
    ready = at.timestamp() - decision.waited_seconds
    ready_text = to_text(at.fromtimestamp(ready, at.tzinfo))
    if isinstance(submitted, TaskSubmitted) and submitted.after:
        reasons.append(f"ran after task(s) {', '.join(map(str, submitted.after))}; ready from {ready_text}")
    last_requeue = next((r for r in reversed(before) if isinstance(r.event, TaskRequeued)), None)
    if last_requeue is not None and last_requeue.event.not_before:  # type: ignore[attr-defined]
        reasons.append(f"retry backoff after {last_requeue.event.reason} "  # type: ignore[attr-defined]
                       f"until {to_text(last_requeue.event.not_before)}")  # type: ignore[attr-defined]
    elif isinstance(submitted, TaskSubmitted) and submitted.not_before and last_requeue is None:
        reasons.append(f"submitted to start not before {to_text(submitted.not_before)}")
    paused_then, gate_then = _in_force(scheduler_history, ready, queue)
    if paused_then is not None:
        reasons.append(f"the scheduler was already paused when it became ready (since "
                       f"{paused_then.recorded_at}, by {paused_then.event.by})")  # type: ignore[attr-defined]
    if gate_then is not None:
        reasons.append(f"the gate of {queue} was already closed when it became ready (since "
                       f"{gate_then.recorded_at}: {gate_then.event.detail})")  # type: ignore[attr-defined]
    for rec in scheduler_history:
        when = from_text(rec.recorded_at).timestamp()
        if not ready <= when <= at.timestamp():
            continue
        match rec.event:
            case SchedulerPaused():
                reasons.append(f"the scheduler was paused at {rec.recorded_at} by {rec.event.by}")
            case SchedulerResumed():
                reasons.append(f"the scheduler was resumed at {rec.recorded_at}")
            case QueueGateClosed(queue=q) if q == queue:
                reasons.append(f"the gate of {queue} closed at {rec.recorded_at}: {rec.event.detail}")
            case QueueGateOpened(queue=q) if q == queue:
                reasons.append(f"the gate of {queue} opened again at {rec.recorded_at}")
            case AgentsConfigured() if rec.recorded_at != assigned.recorded_at:  # not its own tick's
                reasons.append(f"a new control file was recorded at {rec.recorded_at}")
    busy = [p.agent for p in decision.passed_over if p.why.startswith("no free slot")]
    reasons.append(
        f"waited {decision.waited_seconds:g} s in the queue after it was ready (ready from "
        f"{ready_text}); effective priority {decision.effective_priority} (base "
        f"{decision.priority})" + (f"; agents without a free slot then: {', '.join(busy)}"
                                   if busy else ""))
    return reasons


def _in_force(scheduler_history: Sequence[Recorded], moment: float,
              queue: str) -> tuple[Recorded | None, Recorded | None]:
    """The pause and the closing of `queue`'s gate still in force at `moment` (the
    events that began them), if any."""
    paused = gate = None
    for rec in scheduler_history:
        if from_text(rec.recorded_at).timestamp() >= moment:
            break
        match rec.event:
            case SchedulerPaused():
                paused = rec
            case SchedulerResumed():
                paused = None
            case QueueGateClosed(queue=q) if q == queue:
                gate = rec
            case QueueGateOpened(queue=q) if q == queue:
                gate = None
    return paused, gate


def explain_history(task_history: Sequence[Recorded],
                    scheduler_history: Sequence[Recorded]) -> dict[str, Any]:
    """The timeline of a task and, per assignment, its decision explained."""
    submitted = task_history[0].event
    queue = submitted.queue if isinstance(submitted, TaskSubmitted) else ""
    timeline = [{"seq": r.seq, "at": r.recorded_at, "event": r.type, "what": describe(r.event)}
                for r in task_history]
    assignments = []
    task: TaskView | None = None  # the task as each event found it (the projection's fold)
    for rec in task_history:
        event = rec.event
        if isinstance(event, TaskAssigned):
            why = why_this_agent(event)
            if task is not None and event.agent in task.excluded:
                why += (f"; {event.agent} failed or did not start an earlier attempt of the task, and was "
                        "taken again because no other agent of the type that takes work could take it")
            assignments.append({
                "seq": rec.seq, "at": rec.recorded_at, "agent": event.agent, "attempt": event.attempt,
                "decision": event.decision.model_dump(mode="json") if event.decision else None,
                "why_this_agent": why,
                "why_not_earlier": why_not_earlier(rec, event.decision, task_history, scheduler_history,
                                                   queue),
            })
        task = evolve_task(task, event, rec.seq, rec.recorded_at)
    return {"task_id": getattr(submitted, "task_id", None), "queue": queue, "timeline": timeline,
            "assignments": assignments}


def waiting_now(task: TaskView, agents: Sequence[AgentView], now: datetime) -> dict[str, Any] | None:
    """For a task not yet assigned: whether any agent of the control file can ever take
    it (`unplaceable`: why not, else None) and, per agent of its type, its weight,
    capabilities and working hours, and why it cannot take the task now (`why_not`,
    None if it could, once the task is ready)."""
    if task.status not in WAITING_STATUSES:
        return None
    rows = []
    of_type = sorted((a for a in agents if a.configured and a.type == task.queue), key=lambda a: a.name)
    skip_failed = skips_failed(task, (
        (a.name, a.capabilities) for a in of_type
        if a.enabled and takes_work(a.out_of_service, a.capacity, is_available(a.hours, now))))
    for agent in of_type:
        if not agent.enabled and (task.assignee is None or agent.name == task.assignee):
            why: str | None = "disabled in the control file"
        else:
            why = why_not(agent, is_available(agent.hours, now), task, skip_failed)
        rows.append({"agent": agent.name, "weight": agent.weight,
                     "capabilities": list(agent.capabilities), "hours": list(agent.hours),
                     "available": is_available(agent.hours, now), "why_not": why})
    return {"status": task.status, "requires": list(task.requires),
            "unplaceable": never_fits(agents, task), "agents": rows}


def held_now(task: TaskView, paused: dict[str, object] | None,
             closed: Mapping[str, dict[str, str]], now: datetime) -> list[str]:
    """What holds a waiting task back besides the agents: a pause, its queue's closed
    gate, the tasks it runs after, an approval, its time to start not yet come."""
    held = []
    if task.status == "queued" and task.not_before is not None and task.not_before > to_text(now):
        why = "a retry's backoff" if task.attempt > task.attempt_floor else "as submitted"
        held.append(f"it may not start before {task.not_before} ({why})")
    if task.status == "awaiting_approval":
        held.append("it waits for approval (sched approve)")
    if task.doomed_by is not None:  # (dead-lettered by the next tick, which sees it)
        held.append(f"it runs after task {task.doomed_by}, which ended without succeeding: it can never "
                    "run (the next tick dead-letters it)")
    elif task.waiting_on:
        held.append(f"it runs after task(s) {', '.join(map(str, task.waiting_on))}, not yet succeeded")
    if paused is not None:
        why = f": {paused['reason']}" if paused.get("reason") else ""
        held.append(f"assignment is paused by {paused['by']}{why}")
    if task.queue in closed:
        detail = closed[task.queue].get("detail")
        held.append(f"the gate of queue {task.queue} is closed" + (f": {detail}" if detail else ""))
    return held


def explain(ws: Workspace, task_id: int) -> dict[str, Any]:
    from scheduler.gates import gates_now
    from scheduler.reads.queries import current_fleet
    from scheduler.workspace import describe_pause

    with ws.read() as (log, views):
        history = log.read_stream(f"task-{task_id}")
        if not history:
            raise NotFound(f"no task {task_id}")
        scheduler_history = log.read_stream("scheduler")
        task = views.get_task(task_id)
        fleet = current_fleet(ws, views) if task is not None and task.status in WAITING_STATUSES else []
        meta, gates = views.meta(), gates_now(views)
    doc = explain_history(history, scheduler_history)
    now = ws.clock.now()
    doc["now"] = waiting_now(task, fleet, now) if task is not None else None
    if doc["now"] is not None:
        assert task is not None
        paused = describe_pause(meta.get("paused"), ws.stop_file)
        doc["now"]["held"] = held_now(task, paused, gates, now)
    return doc
