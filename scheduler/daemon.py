"""`sched run`: tick on an interval until told to stop.

An APScheduler 3.x `BlockingScheduler` with one interval job. `max_instances=1` and
`coalesce=True` mean a slow tick is never run twice at once nor replayed in a burst
afterwards. SIGINT and SIGTERM let the current tick finish, then the daemon exits 0;
agents it started keep running and report back on their own. Several daemons and
cron ticks on one database stay correct: each tick is one write transaction.
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


def run_daemon(ws: Workspace, interval: float, log: Callable[[str], None],
               now: Callable[[], datetime] | None = None) -> int:
    """Tick every `interval` seconds until SIGINT or SIGTERM; returns the exit code."""
    # a skipped run (the previous tick still going) is normal here, not a warning
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(1)}, timezone="UTC")

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

    def stop(signum: int, _frame: FrameType | None) -> None:
        log(f"received {signal.Signals(signum).name}: finishing the current tick, then stopping")
        scheduler.shutdown(wait=True)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    log(f"sched daemon: ticking every {interval:g} s on {ws.settings.db_path}")
    try:
        scheduler.start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log("sched daemon: stopped")
    return 0
