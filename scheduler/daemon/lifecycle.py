"""A daemon's start and stop, in the open: each an event of the log (`DaemonStarted`,
`DaemonStopped`, with host, pid and version; sent as the `daemon.started` and
`daemon.stopped` webhooks) beside its record in the operational table `daemons`,
whose beats say whether it is alive (a daemon killed outright records no stop)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from importlib.metadata import version

from eventlog.errors import SchedError
from eventlog.events import DaemonStarted, DaemonStopped
from eventlog.timeutil import to_text
from scheduler.daemon import webhooks
from scheduler.tick_runs import forget_daemon, forget_dead_daemons, note_daemon, pid_alive
from scheduler.workspace import Workspace


def sched_version() -> str:
    return version("sched")


def record_start(ws: Workspace, interval: float, pid: int | None = None,
                 alive: Callable[[int], bool] = pid_alive) -> DaemonStarted:
    """Record that a daemon starts now: `DaemonStarted`, and its record in `daemons`
    (alive from now, before its first tick); the records of this host's daemons whose
    process is gone are dropped (this one replaces them). The webhook cursor is placed
    first if it is not yet, so that the start itself is sent on a fresh database."""
    pid = os.getpid() if pid is None else pid
    host = ws.settings.host_name
    webhooks.place_cursor(ws)  # on a fresh database: so that the start itself is sent
    event = DaemonStarted(host=host, pid=pid, version=sched_version(), interval_seconds=interval)
    with ws.write() as recorder:
        txn = recorder.views.txn
        forget_dead_daemons(txn, host, alive)
        recorder.record([event])
        note_daemon(txn, host, pid, to_text(recorder.now), interval)
    return event


def record_stop(ws: Workspace, reason: str | None, pid: int | None = None) -> DaemonStopped:
    """Record that a daemon stops cleanly: `DaemonStopped`, its record in `daemons`
    dropped; then queue and try once to deliver the webhooks (its webhook job has
    stopped: nobody else may run soon)."""
    pid = os.getpid() if pid is None else pid
    host = ws.settings.host_name
    event = DaemonStopped(host=host, pid=pid, version=sched_version(), reason=reason)
    with ws.write() as recorder:
        recorder.record([event])
        forget_daemon(recorder.views.txn, host, pid)
    if ws.settings.webhooks:
        with contextlib.suppress(SchedError):
            webhooks.collect(ws)
            webhooks.deliver_due(ws)
    return event
