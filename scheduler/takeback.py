"""Taking back what a holder lost, for a tick, a claim and the operator's actions: an
assignment not started by its start deadline, a lease past its expiry, a running
attempt whose wrapper on this host is gone, the assignments of agents that left
service. A running attempt's processes on this host are stopped first (`stop_if_local`);
the queue's failure policy then settles it (`settle`: retry or dead letter)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from eventlog.events import (
    Event,
    LeaseExpired,
    TaskCancelled,
    TaskDeadLettered,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
)
from eventlog.storage.port import Read
from eventlog.timeutil import to_text
from projections.recorder import Recorder
from projections.sql import first_deadline_read, running_on_read
from projections.views import AgentView, TaskView
from scheduler.decisions.policy import settle_failure
from scheduler.machine import this_machine, where_started
from scheduler.runner import containment
from scheduler.workspace import Workspace

if TYPE_CHECKING:  # (the tick imports this module: its report is only named here)
    from scheduler.tick import TickReport

OVERDUE_BATCH = 500  # tasks read per round of a take-back


def earlier_errors(recorder: Recorder, task_id: int) -> list[str]:
    """The errors of a task's earlier attempts, read from its stream."""
    errors = []
    for rec in recorder.log.read_stream(f"task-{task_id}"):
        event = rec.event
        if isinstance(event, TaskFailed):
            errors.append(event.error)
        elif isinstance(event, LeaseExpired):
            errors.append(event.detail or "lease expired")
    return errors


def settle(ws: Workspace, recorder: Recorder, task: TaskView,
           failure: TaskFailed | LeaseExpired) -> list[Event]:
    """`settle_failure` with the queue's policy, a fresh random draw for the jitter and
    the task's earlier errors (the shell's part: randomness and reads)."""
    return settle_failure(task, failure, recorder.now, ws.settings.queue_policy(task.queue),
                          ws.rng.random(), earlier_errors(recorder, task.task_id))


def current_start(recorder: Recorder, task: TaskView) -> TaskStarted | None:
    """The `TaskStarted` of the task's current attempt (for its cgroup and argv)."""
    for rec in reversed(recorder.log.read_stream(f"task-{task.task_id}")):
        if rec.type == "TaskStarted":
            event = rec.event
            return event if isinstance(event, TaskStarted) and event.attempt == task.attempt else None
    return None


def runs_here(task: TaskView, host: str) -> bool:
    """Whether the running attempt's exec wrapper runs on this host (and machine, boot
    and pid namespace: `scheduler.machine`), where its processes can be stopped. A pull
    worker's attempt, or one elsewhere, is fenced by its lease instead: its next
    heartbeat or renewal is refused, and its wrapper (or worker) stops its agent."""
    return (task.status == "running" and task.host == host and task.pid is not None
            and where_started(task.machine, this_machine()) == "here")


def stop_if_local(ws: Workspace, recorder: Recorder, task: TaskView, host: str) -> bool:
    """Before a running attempt is taken back: if it `runs_here`, stop the wrapper and
    every process of the attempt, so nothing of it outlives it. Whether it did."""
    if not runs_here(task, host):
        return False
    started = current_start(recorder, task)
    containment.stop_attempt(containment.AttemptRef.of(
        task.task_id, task.attempt, ws.settings.database_label, task.pid,
        started.cgroup if started is not None else None,
        workdir=started.workdir if started is not None else None))
    # the events that end the attempt are recorded after the stop: their time says so
    ws.move_on(recorder)
    return True


def take_back(ws: Workspace, recorder: Recorder, task: TaskView, host: str, report: TickReport,
              detail: str | None = None) -> None:
    """Take back one holding task whose deadline passed (or whose wrapper is gone):
    an assignment not started goes back to the queue without using an attempt; a
    running attempt's lease expires (after its processes here are stopped; a dry run
    stops nothing) and the failure policy decides between retry and dead letter."""
    if task.status == "assigned":
        recorder.record([TaskRequeued(task_id=task.task_id, reason="not_started")])
        report.expired.append({"task_id": task.task_id, "agent": task.agent, "reason": "not_started"})
        return
    if not report.dry_run:
        stop_if_local(ws, recorder, task, host)
    expiry = LeaseExpired(task_id=task.task_id, agent=task.agent or "", attempt=task.attempt,
                          detail=detail)
    events = settle(ws, recorder, task, expiry)
    report.expired.append({"task_id": task.task_id, "agent": task.agent,
                           "reason": "wrapper_gone" if detail else "lease_expired"})
    _count_outcome(report, task.task_id, events)
    recorder.record(events)


def take_back_reads(host: str, queue: str | None = None) -> list[Read]:
    """The reads of `take_back_overdue` and `reap_dead_wrappers` when there is nothing
    to take back (the usual case), as values: a command asks for them ahead."""
    return [first_deadline_read(queue), running_on_read(host, queue)]


def take_back_overdue(ws: Workspace, recorder: Recorder, host: str, report: TickReport,
                      queue: str | None = None) -> None:
    """Requeue assignments not started by `start_by`; expire leases past their expiry
    (of one queue, or of all)."""
    now_text = to_text(recorder.now)
    first = recorder.views.first_deadline(queue)
    if first is None or first > now_text:
        return  # nothing is overdue: known from one row, a read that can be asked for ahead
    while batch := recorder.views.overdue(now_text, OVERDUE_BATCH, queue):
        for task in batch:
            take_back(ws, recorder, task, host, report)


def reap_dead_wrappers(ws: Workspace, recorder: Recorder, host: str,
                       alive: Callable[[int], bool], machine: str | None, report: TickReport,
                       queue: str | None = None) -> None:
    """Expire running attempts whose exec wrapper, on this host, no longer exists: its
    lease would only run out later, and nobody is left to renew it. `machine`: this
    process's machine, boot and pid namespace (`scheduler.machine`): an attempt started
    on another machine that bears the same host name is left to its lease, and one of
    an earlier boot of this machine is gone whatever its pid now names."""
    seen: dict[int, bool] = {}  # a supervisor runs many attempts: its pid is looked at once
    for task in recorder.views.running_on(host, queue):
        if task.pid is None:
            continue
        where = where_started(task.machine, machine)
        if where == "elsewhere":
            continue
        if where == "here":
            if task.pid not in seen:
                seen[task.pid] = alive(task.pid)
            if seen[task.pid]:
                continue
        gone = "is gone" if where == "here" else "is gone: the machine restarted since"
        take_back(ws, recorder, task, host, report,
                  detail=f"the sched exec wrapper (pid {task.pid} on {host}) {gone}")


def release_out_of_service(recorder: Recorder, agents: Sequence[AgentView]) -> list[dict[str, object]]:
    """Send back to the queue the assignments, not yet started, of agents that left
    service (disabled, removed from the control file, drained or evicted): they would
    only wait for their start deadline. Returns `{task_id, agent, why}` of each."""
    released: list[dict[str, object]] = []
    for agent in agents:
        if agent.in_service or not agent.assigned:
            continue
        held = recorder.views.tasks(status="assigned", agent=agent.name)
        released.extend(_send_back(recorder, agent, held, why_out_of_service(agent)))
    return released


def release_retyped(recorder: Recorder, agents: Sequence[AgentView]) -> list[dict[str, object]]:
    """Send back to their queue the assignments, not yet started, that agents hold from
    a queue they no longer serve (a control file that changed an agent's `agentType`):
    a claim would start them on an agent of the wrong type, in a slot of the new queue.
    Looked for when a new control file is recorded. Returns `{task_id, agent, why}`."""
    released: list[dict[str, object]] = []
    for agent in agents:
        if not agent.assigned or not agent.in_service:  # (out of service: `release_out_of_service`)
            continue
        held = [t for t in recorder.views.tasks(status="assigned", agent=agent.name) if t.queue != agent.type]
        released.extend(_send_back(recorder, agent, held, f"now serves queue {agent.type}"))
    return released


def _send_back(recorder: Recorder, agent: AgentView, held: Sequence[TaskView],
               why: str) -> list[dict[str, object]]:
    recorder.record([TaskRequeued(task_id=t.task_id, reason="released", detail=f"{agent.name} {why}")
                     for t in held])
    return [{"task_id": t.task_id, "agent": agent.name, "why": why} for t in held]


def why_out_of_service(agent: AgentView) -> str:
    if agent.out_of_service is not None:
        return f"was {agent.out_of_service} by an operator"
    return "is disabled in the control file" if agent.configured else "left the control file"


def _count_outcome(report: TickReport, task_id: int, events: Sequence[Event]) -> None:
    match events[-1]:
        case TaskDeadLettered():
            report.dead_lettered.append(task_id)
        case TaskCancelled():
            report.cancelled.append(task_id)
        case _:
            report.retried.append(task_id)
