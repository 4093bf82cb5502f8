"""One scheduler pass, read top to bottom: gather what the pass needs (the control
file, the policies, the gates that are due), then in one write transaction take back
what is overdue (`takeback`) and plan and record the assignments (`planning`), then
start the push agents' commands after the commit. In a daemon (`ws.starter`: its
supervisor), the push attempts of this host are started in that same transaction and
handed to the supervisor after the commit; elsewhere (`sched tick` from cron) a
`sched exec` process is started for each, which starts its attempt itself."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from eventlog.events import (
    Event,
    TaskDeadLettered,
    TaskDueMissed,
)
from eventlog.faults import fault_point
from eventlog.timeutil import from_text, to_text
from projections.recorder import Recorder
from projections.sql import ALL_AGENTS, SqlProjection, directed_at_read, doomed_read, first_queued_read
from scheduler.config.registry import ControlFile
from scheduler.gates import (
    GateResult,
    check_gates,
    closed_gates,
    due_checks,
    gated_queues,
    record_gates,
    reopen_removed,
)
from scheduler.machine import this_machine
from scheduler.planning import gather_and_plan, plan_policy, record_config_if_changed
from scheduler.runner.spawn import Handover, LauncherGone, lease_clock, reap_finished, unsure_if_failed
from scheduler.takeback import (
    OVERDUE_BATCH,
    reap_dead_wrappers,
    release_out_of_service,
    take_back_overdue,
    take_back_reads,
)
from scheduler.tick_runs import note_daemon, note_tick, pid_alive
from scheduler.workspace import Workspace, describe_pause


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


# assignments to this host's pinned agents that this process already started (or handed
# to a wrapper): (database, task id, assigned_at) -> None. A daemon's later ticks do not
# start them again while their `sched exec` is still starting.
_STARTED_HERE: dict[tuple[str, int, str | None], None] = {}


def to_start(views: SqlProjection, control: ControlFile, host: str, database: str,
             report: TickReport) -> list[int]:
    """The push assignments this host starts: those this tick made to agents with a
    command that is pinned to no host or to this one, and those any host made to an
    agent pinned to this one that no wrapper has started yet."""
    commands = {a.name: a.host for a in control.agents if a.command is not None}
    push = [int(item["task_id"]) for item in report.assigned  # type: ignore[call-overload]
            if item["agent"] in commands and commands[item["agent"]] in (None, host)]
    waiting = [t for name, pinned in sorted(commands.items()) if pinned == host
               for t in views.tasks(status="assigned", agent=name)]
    live = {(database, t.task_id, t.assigned_at) for t in waiting}
    for key in list(_STARTED_HERE):
        if key[0] == database and key not in live:
            del _STARTED_HERE[key]
    mine = set(push)
    for task in waiting:
        key = (database, task.task_id, task.assigned_at)
        if key in _STARTED_HERE:
            continue
        if not report.dry_run:  # (this tick's own too: a wrapper is slow to record its start)
            _STARTED_HERE[key] = None
        if task.task_id not in mine:
            push.append(task.task_id)
    return push


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
         machine: Callable[[], str | None] = this_machine,
         daemon_interval: float | None = None) -> TickReport:
    """One pass. With `dry_run`, the same work in a transaction that is rolled back.
    After the commit, starts `sched exec` for each assignment to an agent with a command.
    `daemon_interval`: the tick of a `sched run` ticking that often (it notes that the
    daemon is alive). `alive` and `machine`: whether a pid of this machine runs, and
    which machine this is (`scheduler.machine`), for the attempts whose wrapper died."""
    started = time.perf_counter()
    host = ws.settings.host_name
    report = TickReport(dry_run=dry_run)
    # gather, before the write lock: the database (a missing one is the first thing to
    # say), the control file (validated), the policy, the gates
    ws.require_db()
    control = ws.registry().control
    policy = plan_policy(ws.settings, control.content_hash)
    reap_finished()  # wrappers this process started and that have exited
    gate_results = run_due_gates(ws, ws.clock.now())  # gates may be slow: no lock held
    starter = ws.starter if ws.starter is not None and ws.starter.alive and not dry_run else None
    handed: Handover = []
    # what a tick reads when it has nothing to take back, and the front of each queue of
    # the control file, asked for ahead (PostgreSQL: with the lock, in one round trip)
    reads = [*take_back_reads(host), ALL_AGENTS, doomed_read(OVERDUE_BATCH),
             *(read for queue in sorted({a.type for a in control.agents})
               for read in (first_queued_read(queue, "ready_at"), first_queued_read(queue, "due"),
                            directed_at_read(queue)))]
    # just before the transaction, after the gates (which may take many seconds: taken
    # before them, a lease could be over in the supervisor's eyes before its start, a
    # review): the leases granted in it hold from then on, at the latest
    granted_at = lease_clock()
    # (a transaction that fails may have committed: its attempts are then the next tick's)
    with unsure_if_failed(starter, handed), ws.write(commit=not dry_run, prefetch=reads) as recorder:
        views, mine = recorder.views, machine()
        head = recorder.log.last()
        # take back: what is overdue, what lost its wrapper, what waits on the dead
        retyped = record_config_if_changed(recorder, control)
        report.config_recorded = retyped is not None
        take_back_overdue(ws, recorder, host, report)
        reap_dead_wrappers(ws, recorder, host, alive, mine, report)
        if starter is not None:  # started by a tick that failed, and committed after all
            handed.extend(starter.landed(views))
        report.released = [*(retyped or []), *release_out_of_service(recorder, views.all_agents())]
        dead_letter_doomed(recorder, report)
        record_missed_dues(recorder, report)
        now = recorder.now  # after the take-backs (a stop of local processes moves it on)
        # plan and record, queue by queue, unless paused or gated
        report.paused = describe_pause(views.meta().get("paused"), ws.stop_file)
        if gate_results:
            recorder.record(record_gates(views.txn, views, gate_results, now))
        recorder.record(reopen_removed(ws.settings, views.meta()))
        closed = closed_gates(views.meta())
        report.gates_closed = sorted(closed)
        agents = views.all_agents()
        open_queues = {a.type for a in agents if a.free > 0} - set(closed)
        for queue in sorted(open_queues if report.paused is None else ()):
            decisions = gather_and_plan(views, agents, queue, now, policy)
            recorder.record(decisions)
            report.assigned.extend({"task_id": d.task_id, "agent": d.agent} for d in decisions)
        push = to_start(views, control, host, ws.settings.database_label, report)
        if push and starter is not None:  # started here, in this transaction
            try:
                handed.extend(starter.start_in(ws, recorder, push, granted_at))
                push = []
            except LauncherGone as e:  # nothing started: `sched exec` processes start them
                report.errors.append(str(e))
        note_tick(views.txn, host, os.getpid(), to_text(now),
                  round((time.perf_counter() - started) * 1000, 3))
        if daemon_interval is not None:
            note_daemon(views.txn, host, os.getpid(), mine, to_text(now), daemon_interval)
        first, last = (head.seq if head is not None else 0) + 1, recorder.log.last()
        if not dry_run and last is not None and last.seq >= first:
            report.appended = [first, last.seq]
        json.dumps(vars(report))  # what the tick prints encodes, or nothing is committed
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
            except OSError as e:  # the assignment stays: the next tick tries again (its start
                report.errors.append(f"task {task_id}: cannot start sched exec: {e}")  # deadline stands)
                for key in [k for k in _STARTED_HERE if k[:2] == (ws.settings.database_label, task_id)]:
                    del _STARTED_HERE[key]
    report.duration_ms = round((time.perf_counter() - started) * 1000, 3)
    return report
