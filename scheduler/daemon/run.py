"""`sched run`: tick on an interval until told to stop.

An APScheduler 3.x `BackgroundScheduler` with an interval job that ticks, one that
delivers webhooks when any is configured, and one that checks health when a webhook
wants `health.changed`; each has its own thread, so a slow endpoint never delays a
tick. `max_instances=1` and `coalesce=True` mean a slow tick is never run twice at
once nor replayed in a burst afterwards. Push agents' attempts run in its supervisor
process (`scheduler.runner.launcher`), and their ends bring the next tick forward.
SIGINT and SIGTERM let the current runs finish, then the daemon exits 0; agents it
started keep running and report back on their own. Several daemons and cron ticks on
one database stay correct: each tick is one write transaction.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler

from eventlog.errors import BadInput, OutOfDate, SchedError, problem_kind
from eventlog.events import build_models
from eventlog.storage import is_url
from scheduler.daemon import webhooks
from scheduler.daemon.health_changes import record_health
from scheduler.daemon.lifecycle import record_start, record_stop
from scheduler.daemon.log import DaemonLog
from scheduler.reads.health import health
from scheduler.runner.launcher import Launcher
from scheduler.tick import TickReport, tick
from scheduler.workspace import Workspace


def summary(report: TickReport) -> str:
    parts = [f"assigned {len(report.assigned)}"]
    if report.spawned:
        parts.append(f"started {len(report.spawned)}")
    if report.expired:
        parts.append(f"expired {len(report.expired)}")
    if report.dead_lettered:
        parts.append(f"dead-lettered {len(report.dead_lettered)}")
    if report.cancelled:
        parts.append(f"cancelled {len(report.cancelled)}")
    if report.released:
        parts.append(f"released {len(report.released)}")
    if report.due_missed:
        parts.append(f"due missed {len(report.due_missed)}")
    if report.config_recorded:
        parts.append("recorded a new control file")
    parts += report.errors
    return "tick: " + ", ".join(parts) + f" ({report.duration_ms:.0f} ms)"


GiveUp = Callable[[OutOfDate], None]  # stops the daemon: what failed cannot be mended by a retry


class Problems:
    """A job's failures, logged once per distinct problem (not at every run) and its
    recovery once: a bad control file or a held write lock must not flood the log. A
    failure that no retry mends (`OutOfDate`: another version of sched changed the
    database) is said and handed to `give_up`, which stops the daemon."""

    def __init__(self, job: str, log: DaemonLog, retry: str, event: str, give_up: GiveUp | None = None
                 ) -> None:
        self.job, self.log, self.retry, self.last, self.event = job, log, retry, "", event
        self.give_up = give_up

    def failed(self, error: SchedError) -> None:
        message = error.message
        if isinstance(error, OutOfDate) and self.give_up is not None:
            self.log(f"{self.job} failed: {message} (stopping: this daemon can record nothing more)",
                     event=f"{self.event}.failed", level="error", error=message)
            self.give_up(error)
            return
        kind = problem_kind(message)
        if kind != self.last:  # (not again for a stalled writer idle 1 s longer)
            self.log(f"{self.job} failed: {message} (retrying {self.retry})",
                     event=f"{self.event}.failed", level="error", error=message)
        self.last = kind

    def worked(self) -> None:
        if self.last:
            self.log(f"{self.job}: working again", event=f"{self.event}.recovered")
        self.last = ""


def log_tick(ws: Workspace, log: DaemonLog, report: TickReport) -> None:
    """A tick that did something: its summary line; in a JSON log also a line for each
    event it appended (each with its seq, and its task id for a task's event) and one
    for each error."""
    log(summary(report), event="tick", level="error" if report.errors else "info",
        assigned=len(report.assigned), started=len(report.spawned), expired=len(report.expired),
        dead_lettered=len(report.dead_lettered), errors=len(report.errors),
        duration_ms=report.duration_ms, appended=report.appended)
    if not log.structured:
        return
    if report.appended is not None:
        first, last = report.appended
        try:
            with ws.read() as (store, _views):
                appended = list(store.read(after=first - 1, limit=last - first + 1))
        except SchedError as e:  # the tick is done and committed: only its lines are lost
            log(f"tick: cannot read back its events {first}-{last}: {e.message}",
                event="tick.error", level="warning")
        else:
            log.events(appended)
    for error in report.errors:
        log(error, event="tick.error", level="error")


SUPERVISOR_GONE = ("the sched supervisor is gone (logs/exec.log may say why): push attempts start "
                   "as `sched exec` processes from now on")


def tick_job(ws: Workspace, log: DaemonLog, interval: float,
             again: threading.Event | None = None, first: Callable[[], None] | None = None,
             give_up: GiveUp | None = None) -> Callable[[], None]:
    """The tick, run once; and once more right after if `again` was set meanwhile (a
    wrapper ended or work came during the tick: the next tick must not wait its turn).
    `first`: what a tick does before it (`late_start`); its failure is the tick's.
    `give_up`: see `Problems`."""
    problems = Problems("tick", log, "every tick", "tick", give_up)
    warned = [""]  # the content hash of the control file whose warnings were logged
    holding: list[Holds] = [(False, frozenset())]  # what held assignment back at the last tick

    def one_tick() -> None:
        while True:
            if again is not None:
                again.clear()
            starter = ws.starter
            supervised = starter is not None and starter.alive
            try:
                if first is not None:
                    first()
                report = tick(ws, daemon_interval=interval)
            except SchedError as e:  # a bad control file must not kill the daemon: say so, go on
                problems.failed(e)
                if supervised and starter is not None and not starter.alive:
                    # found gone by this tick, which failed: its line went with the tick's
                    # report, and later ticks start `sched exec` wrappers without a word
                    log(SUPERVISOR_GONE, event="supervisor.gone", level="error")
                return
            problems.worked()
            warned[0] = log_config_warnings(ws, log, warned[0])
            holding[0] = log_holds(log, report, holding[0])
            if report.did_something or report.errors:
                log_tick(ws, log, report)
            if again is None or not again.is_set():
                return

    return one_tick


Holds = tuple[bool, frozenset[str]]  # what holds assignment back: a pause; the queues gated


def log_holds(log: DaemonLog, report: TickReport, before: Holds) -> Holds:
    """A line when assignment stops or starts again: a pause (or the stop file), a queue's
    gate closed or opened. The daemon fell silent while nothing was assigned, without
    saying why (a soak run). Returns what holds it back now (`before` at the next tick)."""
    paused, gated = report.paused is not None, frozenset(report.gates_closed)
    if report.paused is not None and not before[0]:
        why = f" ({report.paused['reason']})" if report.paused.get("reason") else ""
        log(f"paused by {report.paused['by']}{why}: assigning nothing", event="daemon.paused")
    elif before[0] and not paused:
        log("resumed: assigning again", event="daemon.resumed")
    for queue in sorted(gated - before[1]):
        log(f"gate {queue} closed: assigning nothing from it", event="daemon.gate_closed", queue=queue)
    for queue in sorted(before[1] - gated):
        log(f"gate {queue} open again: assigning from it", event="daemon.gate_opened", queue=queue)
    return paused, gated


def late_start(ws: Workspace, interval: float, log: DaemonLog) -> Callable[[], None]:
    """Record the daemon's start, once, before a tick: it could not be recorded when the
    daemon started (a full disk, the database away), and until it is, health reads no
    daemon alive (`none running`) however long the daemon runs."""
    recorded = [False]

    def record() -> None:
        if not recorded[0]:
            record_start(ws, interval)  # (a SchedError: the tick fails, and says why)
            recorded[0] = True
            log("recorded the daemon's start (it could not be recorded when it started)",
                event="daemon.started", pid=os.getpid(), interval_seconds=interval, late=True)

    return record


def log_config_warnings(ws: Workspace, log: DaemonLog, logged: str) -> str:
    """Once for each new control file (`logged`: the content hash of the last one whose
    warnings were logged; returns the current one): what it holds that configures
    nothing, a field misspelt, a queue table no agent serves. A typo otherwise gives an
    agent its default silently; `sched agents validate` says the same."""
    try:
        control = ws.registry().control
    except SchedError:  # a bad control file is the tick's to report
        return logged
    if control.content_hash != logged:
        for warning in (*control.warnings, *ws.settings.queue_table_warnings(a.type for a in control.agents)):
            log(f"warning: {warning}", event="config.warning", level="warning")
    return control.content_hash


def webhook_job(ws: Workspace, log: DaemonLog, give_up: GiveUp | None = None) -> Callable[[], None]:
    """Collect and deliver webhooks, logging what happened."""
    problems = Problems("webhooks", log, f"every {ws.settings.webhook_interval_seconds:g} s",
                        "webhooks", give_up)

    def deliver() -> None:
        try:
            queued = webhooks.collect(ws)
            report = webhooks.deliver_due(ws)
        except SchedError as e:  # the write lock not obtained in time
            problems.failed(e)
            return
        problems.worked()
        parts = [f"{item['event']} to {item['url']}: delivered" for item in report.delivered]
        parts += [f"{item['event']} to {item['url']}: {item['error']} (retrying)" for item in report.failed]
        parts += [f"{item['event']} to {item['url']}: {item['error']} (gave up)" for item in report.gave_up]
        if queued or parts:
            log(f"webhooks: queued {queued}" + "".join(f"; {part}" for part in parts),
                event="webhooks", level="warning" if report.failed or report.gave_up else "info",
                queued=queued, delivered=len(report.delivered), failed=len(report.failed),
                gave_up=len(report.gave_up))

    return deliver


def health_job(ws: Workspace, log: DaemonLog, give_up: GiveUp | None = None) -> Callable[[], None]:
    """Run the health checks; a change of the overall level is logged and queued as a
    `health.changed` webhook (the webhooks job delivers it)."""
    problems = Problems("health check", log, f"every {ws.settings.health_interval_seconds:g} s",
                        "health", give_up)

    def check() -> None:
        try:
            report = health(ws)
            previous = record_health(ws, report)
        except SchedError as e:
            problems.failed(e)
            return
        problems.worked()
        if previous is not None:
            log(f"health: {previous} -> {report['status']}", event="health.changed",
                level="info" if report["status"] == "healthy" else "warning",
                previous=previous, status=report["status"])

    return check


class ClockWatch:
    """Whether the system clock stepped back since the last look, against the monotonic
    clock. APScheduler waits for each job's next time by the system clock: after a step
    back of an hour (a VM resumed, an NTP correction), the daemon ticked again only an
    hour later, silently, even once the clock was set right (a QA drill)."""

    TOLERANCE = 1.0  # seconds: the two clocks drift apart by less between looks

    def __init__(self, wall: Callable[[], float] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall or (lambda: datetime.now(UTC).timestamp())  # (the clock APScheduler reads)
        self._monotonic = monotonic
        self._last = (self._wall(), monotonic())

    def stepped_back(self) -> float:
        """How many seconds the system clock went back since the last look (0: it did
        not, or by less than `TOLERANCE`)."""
        now = (self._wall(), self._monotonic())
        back = (now[1] - self._last[1]) - (now[0] - self._last[0])
        self._last = now
        return back if back > self.TOLERANCE else 0.0


def run_daemon(ws: Workspace, interval: float, log: DaemonLog,
               now: Callable[[], datetime] | None = None) -> int:
    """Tick every `interval` seconds until SIGINT or SIGTERM, delivering webhooks every
    `webhook_interval_seconds` if any is configured and checking health every
    `health_interval_seconds` if a webhook wants `health.changed`; returns the exit code
    (1: it stopped on its own, because another version of sched changed the database)."""
    # a skipped run (the previous tick still going) is normal here, not a warning
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    try:  # in the open, before anything starts: DaemonStarted (and daemon.started), refused
        record_start(ws, interval)  # (exit 2) under a host name another machine's daemon uses
        before_tick = None
    except (BadInput, OutOfDate):  # (OutOfDate: no tick of this version could do better)
        raise
    except SchedError as e:  # any other failure stops nothing: the ticks say what is wrong
        log(f"could not record the start: {e.message} (recorded before a later tick)",
            event="daemon.error", level="warning")
        before_tick = late_start(ws, interval, log)
    watch = ClockWatch()  # (before the jobs' first run is read from the clock)
    start = (now or ws.clock.now)()
    again = threading.Event()  # something happened that the next tick should not wait for
    stopping = threading.Event()
    stopped_by: list[str] = []  # the signal that asked it to stop (DaemonStopped.reason)
    out_of_date: list[OutOfDate] = []

    def give_up(error: OutOfDate) -> None:
        out_of_date.append(error)
        stopping.set()  # (the main thread stops the scheduler, as after a signal)

    # (name, job, every, first run): health waits one period, so that it never judges
    # the last tick before the daemon's first tick
    jobs = [("tick", tick_job(ws, log, interval, again, before_tick, give_up), interval, start)]
    if webhooks.subscribers(ws.settings, "health.changed"):
        every = ws.settings.health_interval_seconds
        jobs.append(("health", health_job(ws, log, give_up), every, start + timedelta(seconds=every)))
    if ws.settings.webhooks:
        jobs.append(("webhooks", webhook_job(ws, log, give_up), ws.settings.webhook_interval_seconds, start))
    # a thread per job: a slow endpoint or a long integrity check never delays a tick
    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(len(jobs))}, timezone="UTC")
    shared = is_url(ws.settings.database)  # a server several hosts' daemons poll
    for name, job, every, first in jobs:
        # jitter: daemons of several hosts do not poll the server in step
        scheduler.add_job(job, "interval", seconds=every, id=name, max_instances=1, coalesce=True,
                          misfire_grace_time=max(int(every), 1), next_run_time=first,
                          jitter=every / 10 if shared and name == "tick" else None)

    def tick_soon() -> None:
        """Tick now (or, if a tick is running, once more right after it)."""
        again.set()
        if not stopping.is_set():
            with contextlib.suppress(JobLookupError):  # the scheduler is stopping
                scheduler.modify_job("tick", next_run_time=datetime.now(UTC))

    def stop(signum: int, _frame: FrameType | None) -> None:
        log(f"received {signal.Signals(signum).name}: finishing the current tick, then stopping",
            event="daemon.stopping", signal=signal.Signals(signum).name)
        stopped_by.append(signal.Signals(signum).name)
        stopping.set()  # only noted here: the main thread stops the scheduler (a shutdown
        # from a signal handler could wait for a lock the interrupted main thread holds)

    def wake_on_commits() -> None:
        """A commit anywhere that appended events brings the next tick forward (the
        interval stays the safety net)."""
        while not stopping.is_set():
            try:
                wakeups = ws.db.wakeups()
            except SchedError:  # the server is away: the ticks say so; try again soon
                stopping.wait(1.0)
                continue
            try:
                while not stopping.is_set():
                    if wakeups.wait(1.0) is not None:
                        tick_soon()
            finally:
                wakeups.close()

    # from here on the start is recorded: whatever ends the daemon (a signal, a failed
    # fork of its supervisor) records its stop, or health reads it as killed
    previous: dict[signal.Signals, Any] = {}
    launcher: Launcher | None = None
    try:
        log(f"sched daemon: ticking every {interval:g} s on {ws.settings.database_label} as host "
            f"{ws.settings.host_name}"
            + (f", delivering webhooks every {ws.settings.webhook_interval_seconds:g} s"
               if ws.settings.webhooks else ""), event="daemon.started", pid=os.getpid(),
            interval_seconds=interval, database=ws.settings.database_label)
        # (after the first line: the handler logs too, and a signal that interrupted that line's
        # first use of the console, which imports it, hung the daemon)
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        # the event models built once, before the first tick needs them (a tick that builds
        # them while it holds the write lock takes milliseconds per event type), and before
        # the supervisor is forked, which inherits them
        build_models()
        # the supervisor of this host's attempts: a copy of this process made now, before any thread runs
        launcher = Launcher(ws.settings, ws.clock, on_exit=tick_soon)
        # and before it, every connection closed (the next use opens one again): a copy of an
        # open SQLite connection would leave the supervisor's own without its locks (a
        # process's locks are not inherited), so the daemon's last close would delete the
        # write-ahead log it commits to, and its outcomes would be lost
        ws.close()
        launcher.start()
        ws.starter = launcher
        if shared:
            threading.Thread(target=wake_on_commits, name="wakeups", daemon=True).start()
        with log.capturing():  # a JSON log stays JSON: APScheduler's own records go through it
            if not stopping.is_set():
                scheduler.start()
                while not stopping.wait(1.0):  # until SIGINT or SIGTERM
                    if (back := watch.stepped_back()) > 0:
                        log(f"the system clock went back {back:.0f} s: the ticks go on now (each job "
                            "was waiting for its next time by the clock)", event="daemon.clock",
                            level="warning", seconds=round(back, 3))
                        for name, *_ in jobs:
                            with contextlib.suppress(JobLookupError):
                                scheduler.modify_job(name, next_run_time=datetime.now(UTC))
                with contextlib.suppress(SchedulerNotRunningError):
                    scheduler.shutdown(wait=True)  # the current tick finishes
    finally:
        stopping.set()
        if launcher is not None:
            launcher.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:  # (a stop it cannot record reads later as a daemon killed: say so now)
            record_stop(ws, stopped_by[0] if stopped_by else None)
        except SchedError as e:
            log(f"could not record the stop (health will say it recorded no stop): {e.message}",
                event="daemon.error", level="warning")
    if out_of_date:
        log("sched daemon: stopped (exit 1)", event="daemon.stopped", exit_code=1)
        return 1
    log("sched daemon: stopped", event="daemon.stopped")
    return 0
