"""One scheduler pass, read top to bottom: gather what the pass needs (the control
file, the policies, the gates that are due), then in one write transaction take back
what is overdue and plan and record the assignments, then start the push agents'
commands after the commit. In a daemon (`ws.starter`: its supervisor), the push attempts
of this host are started in that same transaction and handed to the supervisor after
the commit; elsewhere (`sched tick` from cron) a
`sched exec` process is started for each, which starts its attempt itself."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from eventlog.events import (
    Event,
    LeaseExpired,
    TaskCancelled,
    TaskDeadLettered,
    TaskDueMissed,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
)
from eventlog.faults import fault_point
from eventlog.timeutil import from_text, to_text
from projections.recorder import Recorder
from projections.sql import SqlProjection
from projections.views import AgentView, TaskView
from scheduler.config.registry import ControlFile
from scheduler.decisions.policy import settle_failure
from scheduler.gates import (
    GateResult,
    check_gates,
    closed_gates,
    due_checks,
    gated_queues,
    record_gates,
)
from scheduler.planning import gather_and_plan, plan_policy, record_config_if_changed
from scheduler.runner import containment
from scheduler.runner.spawn import Handover, LauncherGone, lease_clock, reap_finished
from scheduler.tick_runs import note_daemon, note_tick, pid_alive
from scheduler.workspace import Workspace, describe_pause

OVERDUE_BATCH = 500


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
    released: list[dict[str, object]] = field(default_factory=list)
    # [first, last] seq of the events this tick appended (None: none, or a dry run)
    appended: list[int] | None = None
    due_missed: list[int] = field(default_factory=list)  # tasks whose missed due time it recorded

    @property
    def did_something(self) -> bool:
        return bool(self.assigned or self.spawned or self.expired or self.dead_lettered
                    or self.config_recorded or self.released or self.due_missed)


# assignments to this host's pinned agents that this process already started a wrapper
# for: (task id, assigned_at) -> None (a daemon's later ticks do not start them again)
_STARTED_FOR_OTHERS: dict[tuple[int, str | None], None] = {}


def to_start(views: SqlProjection, control: ControlFile, host: str, report: TickReport) -> list[int]:
    """The push assignments this host starts: those this tick made to agents with a
    command that is pinned to no host or to this one, and those any host made to an
    agent pinned to this one that no wrapper has started yet."""
    commands = {a.name: a.host for a in control.agents if a.command is not None}
    push = [int(item["task_id"]) for item in report.assigned  # type: ignore[call-overload]
            if item["agent"] in commands and commands[item["agent"]] in (None, host)]
    waiting = [t for name, pinned in sorted(commands.items()) if pinned == host
               for t in views.tasks(status="assigned", agent=name)]
    live = {(t.task_id, t.assigned_at) for t in waiting}
    for key in list(_STARTED_FOR_OTHERS):
        if key not in live:
            del _STARTED_FOR_OTHERS[key]
    for task in waiting:
        key = (task.task_id, task.assigned_at)
        if task.task_id not in push and key not in _STARTED_FOR_OTHERS:
            if not report.dry_run:
                _STARTED_FOR_OTHERS[key] = None
            push.append(task.task_id)
    return push


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


def stop_if_local(ws: Workspace, recorder: Recorder, task: TaskView, host: str) -> None:
    """Before a running attempt is taken back: if its exec wrapper runs on this host,
    stop the wrapper and every process of the attempt, so nothing of it outlives it
    (an attempt on another host is fenced by its lease: its wrapper stops its agent when
    a heartbeat is refused)."""
    if task.status != "running" or task.host != host or task.pid is None:
        return
    started = current_start(recorder, task)
    containment.stop_attempt(containment.AttemptRef.of(
        task.task_id, task.attempt, ws.settings.database_label, task.pid,
        started.cgroup if started is not None else None,
        workdir=started.workdir if started is not None else None))
    # the events that end the attempt are recorded after the stop: their time says so
    recorder.now = max(recorder.now, ws.clock.now())


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


def take_back_overdue(ws: Workspace, recorder: Recorder, host: str, report: TickReport,
                      queue: str | None = None) -> None:
    """Requeue assignments not started by `start_by`; expire leases past their expiry
    (of one queue, or of all)."""
    now_text = to_text(recorder.now)
    while batch := recorder.views.overdue(now_text, OVERDUE_BATCH, queue):
        for task in batch:
            take_back(ws, recorder, task, host, report)


def reap_dead_wrappers(ws: Workspace, recorder: Recorder, host: str,
                       alive: Callable[[int], bool], report: TickReport,
                       queue: str | None = None) -> None:
    """Expire running attempts whose exec wrapper, on this host, no longer exists: its
    lease would only run out later, and nobody is left to renew it."""
    seen: dict[int, bool] = {}  # a supervisor runs many attempts: its pid is looked at once
    for task in recorder.views.running_on(host, queue):
        if task.pid is None:
            continue
        if task.pid not in seen:
            seen[task.pid] = alive(task.pid)
        if seen[task.pid]:
            continue
        take_back(ws, recorder, task, host, report,
                  detail=f"the sched exec wrapper (pid {task.pid} on {host}) is gone")


def release_out_of_service(recorder: Recorder, agents: Sequence[AgentView]) -> list[dict[str, object]]:
    """Send back to the queue the assignments, not yet started, of agents that left
    service (disabled, removed from the control file, drained or evicted): they would
    only wait for their start deadline. Returns `{task_id, agent, why}` of each."""
    released: list[dict[str, object]] = []
    for agent in agents:
        if agent.in_service or not agent.assigned:
            continue
        why = why_out_of_service(agent)
        held = recorder.views.tasks(status="assigned", agent=agent.name)
        recorder.record([TaskRequeued(task_id=t.task_id, reason="released",
                                      detail=f"{agent.name} {why}") for t in held])
        released.extend({"task_id": t.task_id, "agent": agent.name, "why": why} for t in held)
    return released


def why_out_of_service(agent: AgentView) -> str:
    if agent.out_of_service is not None:
        return f"was {agent.out_of_service} by an operator"
    return "is disabled in the control file" if agent.configured else "left the control file"


def dead_letter_doomed(recorder: Recorder, report: TickReport) -> None:
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
        recorder.record(events)


def record_missed_dues(recorder: Recorder, report: TickReport) -> None:
    """Record `TaskDueMissed` once for each open task whose due time has passed (the
    webhook `task.due_missed` is sent from that event, so it fires once per task)."""
    now_text = to_text(recorder.now)
    while batch := recorder.views.missed_due(now_text, OVERDUE_BATCH):
        recorder.record([TaskDueMissed(task_id=t.task_id, due=from_text(t.due or now_text), status=t.status)
                         for t in batch])
        report.due_missed.extend(t.task_id for t in batch)


def _count_outcome(report: TickReport, task_id: int, events: Sequence[Event]) -> None:
    match events[-1]:
        case TaskDeadLettered():
            report.dead_lettered.append(task_id)
        case TaskCancelled():
            report.cancelled.append(task_id)
        case _:
            report.retried.append(task_id)


def run_due_gates(ws: Workspace, now: datetime) -> dict[str, GateResult]:
    """Run the gates whose cached result is older than their interval (no write lock
    is held while they run)."""
    if not gated_queues(ws.settings):
        return {}
    with ws.db.read() as txn:
        due = due_checks(txn, ws.settings, now)
    env = {k: os.environ[k] for k in ws.settings.exec_env_allowlist if k in os.environ}
    return check_gates(ws.settings, due, env)


def tick(ws: Workspace, *, dry_run: bool = False, alive: Callable[[int], bool] = pid_alive,
         daemon_interval: float | None = None) -> TickReport:
    """One pass. With `dry_run`, the same work in a transaction that is rolled back.
    After the commit, starts `sched exec` for each assignment to an agent with a command.
    `daemon_interval`: the tick of a `sched run` ticking that often (it notes that the
    daemon is alive)."""
    started = time.perf_counter()
    granted_at = lease_clock()  # before the transaction: leases granted in it hold from then on
    host = ws.settings.host_name
    report = TickReport(dry_run=dry_run)
    # gather, before the write lock: the database (a missing one is the first thing to
    # say), the control file (validated), the policy, the gates
    ws.db  # noqa: B018
    control = ws.registry().control
    policy = plan_policy(ws.settings, control.content_hash)
    reap_finished()  # wrappers this process started and that have exited
    gate_results = run_due_gates(ws, ws.clock.now())  # gates may be slow: no lock held
    starter = ws.starter if ws.starter is not None and ws.starter.alive and not dry_run else None
    handed: Handover = []
    with ws.write(commit=not dry_run) as recorder:
        views = recorder.views
        head = recorder.log.last()
        # take back: what is overdue, what lost its wrapper, what waits on the dead
        report.config_recorded = record_config_if_changed(recorder, control)
        take_back_overdue(ws, recorder, host, report)
        reap_dead_wrappers(ws, recorder, host, alive, report)
        report.released = release_out_of_service(recorder, views.all_agents())
        dead_letter_doomed(recorder, report)
        record_missed_dues(recorder, report)
        now = recorder.now  # after the take-backs (a stop of local processes moves it on)
        # plan and record, queue by queue, unless paused or gated
        report.paused = describe_pause(views.meta().get("paused"), ws.stop_file)
        if gate_results:
            recorder.record(record_gates(views.txn, views, gate_results, now))
        closed = closed_gates(views.meta())
        report.gates_closed = sorted(closed)
        agents = views.all_agents()
        open_queues = {a.type for a in agents if a.free > 0} - set(closed)
        for queue in sorted(open_queues if report.paused is None else ()):
            decisions = gather_and_plan(views, agents, queue, now, policy)
            recorder.record(decisions)
            report.assigned.extend({"task_id": d.task_id, "agent": d.agent} for d in decisions)
        push = to_start(views, control, host, report)
        if push and starter is not None:  # started here, in this transaction
            try:
                handed, push = starter.start_in(ws, recorder, push, granted_at), []
            except LauncherGone as e:  # nothing started: `sched exec` processes start them
                report.errors.append(str(e))
        note_tick(views.txn, host, os.getpid(), to_text(now),
                  round((time.perf_counter() - started) * 1000, 3))
        if daemon_interval is not None:
            note_daemon(views.txn, host, os.getpid(), to_text(now), daemon_interval)
        first, last = (head.seq if head is not None else 0) + 1, recorder.log.last()
        if not dry_run and last is not None and last.seq >= first:
            report.appended = [first, last.seq]
        json.dumps(asdict(report))  # what the tick prints encodes, or nothing is committed
    # start, after the commit: hand the attempts started here to their wrappers; start
    # `sched exec` for the others
    if (handed or push) and not dry_run:
        fault_point("after_commit_before_spawn")
    if handed and starter is not None:
        try:
            starter.go(handed)
            report.spawned.extend(attempt.task_id for _, attempt in handed)
        except LauncherGone as e:  # their wrappers are gone with it: the next tick takes them back
            report.errors.append(str(e))
    if push and not dry_run:
        for task_id in push:
            try:
                ws.launcher(ws.settings, task_id)
                report.spawned.append(task_id)
            except OSError as e:  # the assignment stays; its start deadline takes it back
                report.errors.append(f"task {task_id}: cannot start sched exec: {e}")
    report.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return report
