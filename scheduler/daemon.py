"""`sched run`: tick on an interval until told to stop.

An APScheduler 3.x `BlockingScheduler` with one interval job, and a second one that
delivers webhooks when any is configured (two threads: a slow endpoint never delays a
tick). `max_instances=1` and `coalesce=True` mean a slow tick is never run twice at
once nor replayed in a burst afterwards. SIGINT and SIGTERM let the current runs
finish, then the daemon exits 0; agents it started keep running and report back on
their own. Several daemons and cron ticks on one database stay correct: each tick is
one write transaction.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from datetime import datetime
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler

from eventlog.errors import SchedError
from scheduler import webhooks
from scheduler.health import health, record_health
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
    if report.config_recorded:
        parts.append("recorded a new control file")
    parts += report.errors
    return "tick: " + ", ".join(parts) + f" ({report.duration_ms:.0f} ms)"


def webhook_job(ws: Workspace, log: Callable[[str], None]) -> Callable[[], None]:
    """Collect and deliver webhooks, logging what happened; a sched error (the write lock
    not obtained in time) is logged once per distinct problem and never stops the daemon."""
    last_error: list[str] = [""]
    every = ws.settings.webhook_interval_seconds

    def deliver() -> None:
        try:
            queued = webhooks.collect(ws)
            report = webhooks.deliver_due(ws)
        except SchedError as e:
            if e.message != last_error[0]:
                log(f"webhooks failed: {e.message} (retrying every {every:g} s)")
            last_error[0] = e.message
            return
        if last_error[0]:
            log("webhooks: working again")
            last_error[0] = ""
        parts = [f"{item['event']} to {item['url']}: delivered" for item in report.delivered]
        parts += [f"{item['event']} to {item['url']}: {item['error']} (retrying)" for item in report.failed]
        parts += [f"{item['event']} to {item['url']}: {item['error']} (gave up)" for item in report.gave_up]
        if queued or parts:
            log(f"webhooks: queued {queued}" + "".join(f"; {part}" for part in parts))

    return deliver


def health_job(ws: Workspace, log: Callable[[str], None]) -> Callable[[], None]:
    """Run the health checks; a change of the overall level is logged and queued as a
    `health.changed` webhook (the webhooks job delivers it)."""

    def check() -> None:
        try:
            report = health(ws)
            previous = record_health(ws, report)
        except SchedError as e:
            log(f"health check failed: {e.message}")
            return
        if previous is not None:
            log(f"health: {previous} -> {report['status']}")

    return check


def run_daemon(ws: Workspace, interval: float, log: Callable[[str], None],
               now: Callable[[], datetime] | None = None) -> int:
    """Tick every `interval` seconds (and deliver webhooks every `webhook_interval_seconds`
    if any is configured) until SIGINT or SIGTERM; returns the exit code."""
    # a skipped run (the previous tick still going) is normal here, not a warning
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # two threads: webhook delivery, however slow, never delays a tick
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(2)}, timezone="UTC")

    last_error: list[str] = [""]

    def one_tick() -> None:
        try:
            report = tick(ws)
        except SchedError as e:  # a bad control file must not kill the daemon: say so, go on
            if e.message != last_error[0]:  # once per distinct problem, not every tick
                log(f"tick failed: {e.message} (retrying every tick)")
            last_error[0] = e.message
            return
        if last_error[0]:
            log("tick: working again")
            last_error[0] = ""
        if report.did_something or report.errors:
            log(summary(report))

    scheduler.add_job(one_tick, "interval", seconds=interval, id="tick", max_instances=1,
                      coalesce=True, misfire_grace_time=max(int(interval), 1),
                      next_run_time=(now or ws.clock.now)())
    if webhooks.subscribers(ws.settings, "health.changed"):
        check_every = ws.settings.health_interval_seconds
        scheduler.add_job(health_job(ws, log), "interval", seconds=check_every, id="health",
                          max_instances=1, coalesce=True,
                          misfire_grace_time=max(int(check_every), 1))
    every = ws.settings.webhook_interval_seconds
    if ws.settings.webhooks:
        scheduler.add_job(webhook_job(ws, log), "interval", seconds=every, id="webhooks",
                          max_instances=1, coalesce=True, misfire_grace_time=max(int(every), 1),
                          next_run_time=(now or ws.clock.now)())

    def stop(signum: int, _frame: FrameType | None) -> None:
        log(f"received {signal.Signals(signum).name}: finishing the current tick, then stopping")
        scheduler.shutdown(wait=True)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    log(f"sched daemon: ticking every {interval:g} s on {ws.settings.db_path}"
        + (f", delivering webhooks every {every:g} s" if ws.settings.webhooks else ""))
    try:
        scheduler.start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log("sched daemon: stopped")
    return 0
