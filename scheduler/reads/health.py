"""`sched health`: checks with thresholds, each saying what it saw, and an overall
healthy / degraded / unhealthy (exit 0 / 1 / 2).

The grading is pure (`grade`, `check_*`); `health()` gathers the inputs: the tick
record, the projections, the control file and SQLite's quick check.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventlog.errors import ControlFileError, CorruptLog, DatabaseError, missing_table
from eventlog.storage import is_url
from eventlog.timeutil import from_text, to_text
from projections.rebuild import lost_tail
from projections.views import SHAPE_KEY, WAITING_STATUSES, AgentView, TaskView
from scheduler.config.settings import Settings
from scheduler.machine import this_machine
from scheduler.reads.queries import current_fleet
from scheduler.tick_runs import daemon_state, daemons, last_tick_at, pid_alive
from scheduler.workspace import SHAPE_REMEDY, Workspace, shape_refusal

if TYPE_CHECKING:
    from eventlog.sql_store import SqlStore
    from eventlog.storage.port import Transaction

LEVELS = ("healthy", "degraded", "unhealthy")
EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}


@dataclass(frozen=True)
class Check:
    """One health check: its level, what it saw and the thresholds it applied."""

    name: str
    status: str  # one of LEVELS
    saw: str
    threshold: str


def grade(value: float, degraded: float, unhealthy: float) -> str:
    """healthy below `degraded`, degraded from it, unhealthy from `unhealthy`."""
    if value >= unhealthy:
        return "unhealthy"
    if value >= degraded:
        return "degraded"
    return "healthy"


def ago(seconds: float) -> str:
    """`12 s ago`; a time a little ahead of this host's clock (the database server's, a
    host whose clock runs ahead) is `0 s ago`, never `-0 s ago`."""
    return f"{max(seconds, 0.0):.0f} s ago"


def worst(levels: list[str]) -> str:
    return max(levels, key=LEVELS.index, default="healthy")


def check_last_tick(settings: Settings, last: str | None, now: datetime,
                    daemon_interval: float | None = None) -> Check:
    """The age of the last tick of any host, in tick intervals: those of the daemon
    alive (`daemon_interval`, its `--interval`), else `tick_interval_seconds` (ticks
    from cron). A daemon run with a longer interval than the setting read as late."""
    interval = settings.tick_interval_seconds if daemon_interval is None else daemon_interval
    whose = "" if daemon_interval is None else ", the running daemon's"
    degraded = settings.health_tick_degraded_intervals * interval
    unhealthy = settings.health_tick_unhealthy_intervals * interval
    threshold = (f"degraded > {degraded:g} s, unhealthy > {unhealthy:g} s "
                 f"(tick interval {interval:g} s{whose})")
    if last is None:
        return Check("last_tick", "degraded", "no tick recorded yet", threshold)
    age = (now - from_text(last)).total_seconds()
    status = "healthy" if age <= degraded else "degraded" if age <= unhealthy else "unhealthy"
    return Check("last_tick", status, f"last tick {ago(age)} ({last})", threshold)


def check_backlog(settings: Settings, queued: dict[str, int]) -> Check:
    threshold = (f"degraded at {settings.health_backlog_degraded}, unhealthy at "
                 f"{settings.health_backlog_unhealthy} queued tasks in one queue")
    if not queued:
        return Check("backlog", "healthy", "nothing queued", threshold)
    status = worst([grade(n, settings.health_backlog_degraded, settings.health_backlog_unhealthy)
                    for n in queued.values()])
    saw = ", ".join(f"{q}: {n}" for q, n in sorted(queued.items(), key=lambda i: -i[1]))
    return Check("backlog", status, f"queued {saw}", threshold)


def check_error_rate(settings: Settings, succeeded: int, failed: int) -> Check:
    window = f"{settings.health_window_seconds:g} s"
    threshold = (f"degraded at {settings.health_error_rate_degraded:.0%}, unhealthy at "
                 f"{settings.health_error_rate_unhealthy:.0%} of attempts in the last {window}, "
                 f"once there are {settings.health_error_rate_min_attempts}")
    attempts = succeeded + failed
    if attempts < settings.health_error_rate_min_attempts:
        return Check("error_rate", "healthy", f"{attempts} attempts ended in the last {window} "
                     "(too few to judge)", threshold)
    rate = failed / attempts
    status = grade(rate, settings.health_error_rate_degraded, settings.health_error_rate_unhealthy)
    return Check("error_rate", status, f"{failed} of {attempts} attempts failed ({rate:.0%})", threshold)


def check_progress(settings: Settings, ready: int, last_success: float | None,
                   ready_since: str | None, now: datetime) -> Check:
    threshold = (f"degraded after {settings.health_stall_degraded_seconds:g} s, unhealthy after "
                 f"{settings.health_stall_unhealthy_seconds:g} s without a success while work "
                 "is ready to start")
    if ready == 0:
        return Check("progress", "healthy", "nothing ready to start", threshold)
    waiting_since = from_text(ready_since).timestamp() if ready_since else now.timestamp()
    since = max(last_success or 0.0, waiting_since)  # a stall starts once work is ready
    idle = now.timestamp() - since
    status = grade(idle, settings.health_stall_degraded_seconds, settings.health_stall_unhealthy_seconds)
    last = "never" if last_success is None else ago(now.timestamp() - last_success)
    return Check("progress", status, f"{ready} ready to start; last success {last}; stalled for "
                 f"{max(idle, 0.0):.0f} s", threshold)


def check_lease_expiries(settings: Settings, expiries: int) -> Check:
    threshold = (f"degraded at {settings.health_expiries_degraded}, unhealthy at "
                 f"{settings.health_expiries_unhealthy} in the last {settings.health_window_seconds:g} s")
    status = grade(expiries, settings.health_expiries_degraded, settings.health_expiries_unhealthy)
    return Check("lease_expiries", status, f"{expiries} leases expired", threshold)


# outcomes of attempts whose command had started (a cancel may end either kind); `failed`
# here leaves out a command that could not start (`spawn_error`, see `outcomes_by_agent`)
STARTED_OUTCOMES = ("succeeded", "failed", "expired", "evicted", "interrupted")


def never_starting(settings: Settings, agents: list[AgentView],
                   ended: dict[tuple[str | None, str], tuple[int, int]]) -> list[tuple[str, str, int]]:
    """The agents in service that, in the window, had `health_unstarted_degraded` or
    more assignments go back not started, or attempts whose command could not start
    (`spawn_error`: a missing or not executable program, dead-lettered at once), and
    started none (none of their attempts ended after it started, none runs now):
    (agent, how many of which, the seq of the latest). `ended`: the window's outcomes
    per (agent, outcome), with how many and the latest."""
    stuck = []
    for agent in agents:
        (unstarted, first), (unstartable, second) = (ended.get((agent.name, kind), (0, 0))
                                                     for kind in ("not_started", "spawn_error"))
        if (unstarted + unstartable >= settings.health_unstarted_degraded and agent.in_service
                and agent.running == 0 and not any((agent.name, kind) in ended for kind in STARTED_OUTCOMES)):
            what = " and ".join(text for n, text in ((unstarted, f"{unstarted} assignments not started"),
                                                     (unstartable, f"{unstartable} commands could not start"))
                                if n)
            stuck.append((agent.name, what, max(first, second)))
    return stuck


def check_starts(settings: Settings, stuck: list[tuple[str, str, str | None]]) -> Check:
    """Degraded while an agent is handed work it never starts: its directory cannot be
    made, its pinned host is gone, its claims never reach it (such assignments go back
    to the queue without using an attempt, so no failure or dead letter would say so),
    or its program cannot be started (each task dead-lettered at once, too few, maybe,
    for the error rate to judge)."""
    threshold = (f"degraded when an agent had {settings.health_unstarted_degraded} or more assignments go "
                 f"back not started, or commands that could not start, in the last "
                 f"{settings.health_window_seconds:g} s, and started none")
    if not stuck:
        return Check("starts", "healthy", "no agent failed to start the work it was handed", threshold)
    return Check("starts", "degraded", "; ".join(
        f"{name}: {what}, none started (latest: {detail or 'no reason recorded'})"
        for name, what, detail in stuck), threshold)


def check_unplaceable(agents: list[AgentView],
                      waiting: list[tuple[str, str | None, tuple[str, ...], int, int | None]]) -> Check:
    """Degraded while some waiting task has no agent in the control file that could
    ever take it: none of its type (or its assignee is not one), or none with every
    capability it requires. It would otherwise wait silently for ever. `waiting`: the
    groups of waiting tasks (queue, assignee, requires, how many, one of them); a
    whole queue's (`waiting_by_queue`) names no task and stands for all of it."""
    from scheduler.decisions.fit import never_fits

    threshold = ("degraded while a waiting task has no agent in the control file able to take it (none of "
                 "its type, or none with every capability it requires)")
    stuck, whole = [], set()
    for queue, assignee, requires, count, first in sorted(waiting, key=lambda group: group[4] is not None):
        if queue in whole:  # (a queue with no agent at all: said once, for all its tasks)
            continue
        why = never_fits(agents, _probe(queue, assignee, requires, first or 0))
        if why is not None:
            stuck.append((count, f"{count} in {queue}{f' (e.g. task {first})' if first else ''}: {why}"))
            if first is None:
                whole.add(queue)
    if not stuck:
        return Check("unplaceable", "healthy", "every waiting task has an agent able to take it", threshold)
    total = sum(n for n, _ in stuck)
    return Check("unplaceable", "degraded", f"{total} task(s) can never be taken: "
                 + "; ".join(text for _, text in stuck), threshold)


def waiting_by_queue(counts: dict[tuple[str, str], int]) -> list[tuple[str, None, tuple[()], int, None]]:
    """The tasks not yet assigned per queue, from the queue counts (a few rows), as
    `check_unplaceable` takes them: a queue with no agent of its type at all (all of
    them gone from the control file, or never in it) holds all of them."""
    waiting: dict[str, int] = {}
    for (queue, status), count in counts.items():
        if status in WAITING_STATUSES and count > 0:
            waiting[queue] = waiting.get(queue, 0) + count
    return [(queue, None, (), count, None) for queue, count in sorted(waiting.items())]


def _probe(queue: str, assignee: str | None, requires: tuple[str, ...], task_id: int) -> TaskView:
    """A stand-in task with the fields `never_fits` reads."""
    return TaskView(task_id=task_id, queue=queue, title="", priority=0, assignee=assignee, payload=None,
                    status="queued", attempt=0, attempt_floor=0, max_attempts=1, agent=None,
                    not_before=None, deadline=None, token_hash=None, pid=None, host=None,
                    log_path=None, excluded=(), cancelling=False, waiting_on=(), blocks=(),
                    doomed_by=None, last_error=None, idempotency_key=None, task_type=None,
                    submitted_seq=0, submitted_at="", updated_at="", requires=requires)


def check_due(overdue: int, earliest: str | None, now: datetime) -> Check:
    """Open tasks (not succeeded, dead or cancelled) past their due time."""
    threshold = "degraded while any open task is past its due time (submit --due)"
    if overdue == 0:
        return Check("due", "healthy", "no open task is past its due time", threshold)
    late = (now - from_text(earliest)).total_seconds() if earliest else 0.0
    return Check("due", "degraded", f"{overdue} open task(s) past their due time, the most overdue "
                 f"by {late:.0f} s (due {earliest})", threshold)


CLOCK_BEHIND_SECONDS = 10.0  # more than clocks kept by NTP ever differ


def check_clock(last_event: str | None, now: datetime) -> Check:
    """Whether this machine's clock is behind the time of the log's last event. Event
    time never runs backwards: behind it, every event is recorded at that time, and
    leases, start deadlines and backoffs measured from it wait, until the clock catches
    up (a clock set ahead and then right again, another host's running ahead)."""
    threshold = (f"degraded while this machine's clock is more than {CLOCK_BEHIND_SECONDS:g} s behind the "
                 "time of the log's last event")
    behind = 0.0 if last_event is None else (from_text(last_event) - now).total_seconds()
    if behind <= CLOCK_BEHIND_SECONDS:
        return Check("clock", "healthy", "this machine's clock is not behind the log's events", threshold)
    return Check("clock", "degraded", f"this machine's clock is {behind:.0f} s behind the log's last event "
                 f"({last_event}): events are recorded at that time, and leases, start deadlines and "
                 "backoffs wait, until the clock catches up (docs/operations.md, The clock)", threshold)


def check_daemon(state: dict[str, Any], window_seconds: float, now: datetime) -> Check:
    """Whether a daemon (`sched run`) is alive and since when (`state`: `daemon_state`).
    None alive is healthy when none ran or the last stopped cleanly (ticks may come from
    cron: `last_tick` judges those); degraded when one stopped beating without
    recording a stop (killed, crashed, its host gone) within `window_seconds`."""
    threshold = (f"degraded when a daemon stopped beating without recording a stop in the last "
                 f"{window_seconds:g} s, or runs here without beating")
    if state["alive"]:
        return Check("daemon", "healthy", f"alive on {state['host']} (pid {state['pid']}) since "
                     f"{state['since']}", threshold)
    seen = state.get("last_seen")
    if seen is None:
        return Check("daemon", "healthy", "no daemon alive (none running, or the last one stopped "
                     "cleanly)", threshold)
    since = (now - from_text(seen)).total_seconds()
    if state.get("last_running"):  # (a daemon whose writes fail: an I/O error, a full disk)
        return Check("daemon", "degraded", f"the daemon on {state['last_host']} (pid {state['last_pid']}) "
                     f"runs, but last ticked {ago(since)} ({seen}): its ticks fail (see its log)", threshold)
    saw = (f"no daemon alive: the one on {state['last_host']} (pid {state['last_pid']}) last ticked "
           f"{ago(since)} ({seen}) and recorded no stop")
    return Check("daemon", "degraded" if since <= window_seconds else "healthy", saw, threshold)


def check_control_file(ws: Workspace) -> Check:
    """Unhealthy when the control file does not load; degraded while it holds what
    configures nothing (a misspelt field: the agent silently gets the default)."""
    threshold = "the control file must load, with nothing in it ignored (`sched agents validate`)"
    try:
        registry = ws.registry()
    except ControlFileError as e:
        return Check("control_file", "unhealthy", e.message, threshold)
    loaded = f"{registry.path}: {len(registry.control.agents)} agents"
    warnings = registry.control.warnings
    if warnings:
        return Check("control_file", "degraded", f"{loaded}; " + "; ".join(
            w.removeprefix(f"{registry.path}: ") for w in warnings), threshold)
    return Check("control_file", "healthy", loaded, threshold)


def check_integrity(result: str, lost: str | None = None, unreadable: str | None = None) -> Check:
    """The engine's own check of its file, and whether the log lost events from its end
    (`lost`: `projections.rebuild.lost_tail`'s line), which the engine cannot see: every
    write is refused until the database is restored or rebuilt; or ends with an event
    this sched cannot read (`unreadable`: `first_unreadable`), which every write would
    have to fold first."""
    threshold = ("must say ok, the log must hold every event the tables have folded, and this "
                 "sched must read those it has not")
    if lost is not None:
        return Check("integrity", "unhealthy", lost, threshold)
    if unreadable is not None:
        return Check("integrity", "unhealthy", unreadable, threshold)
    status = "healthy" if result == "ok" else "unhealthy"
    return Check("integrity", status, f"the engine's integrity check: {result}", threshold)


def missing_tables(txn: Transaction) -> list[str]:
    """The projection tables the database lacks (dropped by hand, a damaged file): a
    table no other check reads, such as `tokens`, is missed by nothing else. (By their
    names: the table definitions would load SQLAlchemy, which `health` does without.)"""
    from projections.sql import ROW_SHAPES

    return [table for table in ROW_SHAPES if not txn.has_table(table)]


def first_unreadable(log: SqlStore, checkpoint: int, head: int) -> str | None:
    """Why the next write will be refused, when the log holds events past the tables'
    checkpoint `checkpoint` (up to `head`; normally none: every append folds its own)
    and one of them cannot be read by this sched (written by a newer one, or damaged):
    every write folds those first. None when there is none."""
    if head <= checkpoint:
        return None
    for rec in log.read(after=checkpoint):
        try:
            rec.event  # noqa: B018
        except CorruptLog as e:
            return f"{e.message}; every write is refused until this sched can read it"
    return None


def deleted_files_held(db_path: Path) -> dict[int, list[str]]:
    """Processes (pid -> files) that hold open a database file, or its -wal or -shm,
    that was deleted from the disk: they go on writing to a file nobody else sees,
    while new processes make a fresh one; the two diverge, and commits are lost."""
    real = str(db_path.resolve())
    names = {f"{real}{suffix} (deleted)" for suffix in ("", "-wal", "-shm")}
    pids: list[int] = []
    held: dict[int, list[str]] = {}
    with contextlib.suppress(OSError):
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    for pid in pids:
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to look at
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target in names:
                    held.setdefault(pid, []).append(target.removesuffix(" (deleted)"))
    return held


def check_files(held: dict[int, list[str]]) -> Check:
    threshold = "no process may hold the database, its -wal or its -shm after they were deleted"
    if not held:
        return Check("files", "healthy", "no process holds a deleted database file", threshold)
    saw = "; ".join(f"pid {pid} holds the deleted {', '.join(sorted(set(files)))}"
                    for pid, files in sorted(held.items()))
    return Check("files", "unhealthy", f"{saw}: a file was deleted under a running process; stop "
                 "those processes (see docs/operations.md, what never to do to the files)", threshold)


def health(ws: Workspace, alive: Callable[[int], bool] = pid_alive,
           machine: Callable[[], str | None] = this_machine) -> dict[str, Any]:
    """Run every check; the report has the overall level, its exit code and the checks
    (`alive`, `machine`: whether a process of this machine exists, and which machine
    this is, for the daemon check)."""
    settings, now = ws.settings, ws.clock.now()
    files = (check_files(deleted_files_held(settings.db_path)) if not is_url(settings.database) else
             Check("files", "healthy", "a PostgreSQL database: the server keeps its files", "none"))
    try:
        checks = [*database_checks(ws, now, alive, machine()), check_control_file(ws), files]
    except DatabaseError as e:  # a monitor still gets a report: what can be checked, is
        checks = [Check("database", "unhealthy", e.message, "the database must open and read"),
                  check_control_file(ws), files]
    overall = worst([c.status for c in checks])
    return {"status": overall, "exit_code": EXIT_CODES[overall], "at": to_text(now),
            "checks": [asdict(c) for c in checks]}


def database_checks(ws: Workspace, now: datetime, alive: Callable[[int], bool],
                    machine: str | None) -> list[Check]:
    """The checks that read the database: ticks, daemons, backlog, errors, progress,
    leases, starts, due times, integrity."""
    settings = ws.settings
    window_start = (now - timedelta(seconds=settings.health_window_seconds)).timestamp()
    with ws.read() as (log, views):
        head = log.last()
        head_seq, checkpoint = (head.seq if head is not None else 0), views.last_seq()
        lost = lost_tail(checkpoint, head_seq, refused="every write is refused until then: ")
        unreadable = None if lost is not None else first_unreadable(log, checkpoint, head_seq)
        if unreadable is None and (other := shape_refusal(ws.db.location, views.meta().get(SHAPE_KEY))):
            unreadable = f"{other}: every write is refused. {SHAPE_REMEDY}"  # (the daemon's too)
        if unreadable is None and (gone := missing_tables(views.txn)):  # (a table no check below reads)
            unreadable = missing_table(ws.db.location, gone[0]).message
        last = last_tick_at(views.txn)
        daemon = daemon_state(daemons(views.txn), now, settings.host_name, alive, machine)
        counts = views.counts()
        queued = {q: n for (q, s), n in counts.items() if s == "queued"}
        ended = views.outcomes_by_agent(window_start)
        succeeded, failed, expired = (sum(n for (_agent, kind), (n, _seq) in ended.items() if kind in wanted)
                                      for wanted in (("succeeded",), ("failed", "spawn_error"), ("expired",)))
        stuck = never_starting(settings, views.all_agents(), ended)
        unstarted = [(name, what, views.outcome_detail(seq)) for name, what, seq in stuck]
        last_success = views.last_outcome_ts("succeeded")
        ready, ready_since = views.ready_backlog(to_text(now))
        waiting = views.waiting_requirements() + waiting_by_queue(counts)
        fleet = current_fleet(ws, views) if waiting else []
        overdue, earliest_due = views.overdue_open(to_text(now))
    return [
        check_last_tick(settings, last, now, daemon.get("interval")),
        check_daemon(daemon, settings.health_window_seconds, now),
        check_backlog(settings, queued),
        check_error_rate(settings, succeeded, failed + expired),
        check_progress(settings, ready, last_success, ready_since, now),
        check_lease_expiries(settings, expired),
        check_starts(settings, unstarted),
        check_unplaceable(fleet, waiting),
        check_due(overdue, earliest_due, now),
        check_clock(head.recorded_at if head is not None else None, now),
        check_integrity(ws.db.integrity_check(), lost, unreadable),
    ]
