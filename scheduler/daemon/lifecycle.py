"""A daemon's start and stop, in the open: each an event of the log (`DaemonStarted`,
`DaemonStopped`, with host, pid and version; sent as the `daemon.started` and
`daemon.stopped` webhooks) beside its record in the operational table `daemons`,
whose beats say whether it is alive (a daemon killed outright records no stop)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from importlib.metadata import version

from eventlog.errors import BadInput, SchedError
from eventlog.events import DaemonStarted, DaemonStopped
from eventlog.timeutil import from_text, to_text
from projections.recorder import Recorder
from scheduler.daemon import webhooks
from scheduler.machine import this_machine, where_started
from scheduler.tick_runs import beating, daemons, forget_daemon, forget_dead_daemons, note_daemon, pid_alive
from scheduler.workspace import Workspace


def sched_version() -> str:
    return version("sched")


def refuse_a_host_name_in_use(recorder: Recorder, host: str, machine: str | None) -> None:
    """Inside the start's write transaction: BadInput if a daemon of another machine
    beats under this host name (two machines given one name; each would start the
    other's pinned agents and forget its record). Its pid is not looked at here: on
    another machine it may name any process of this one (a container's daemon is pid
    1). A record of this host that names this machine (or no machine: an older sched)
    is a daemon of this machine, alive or dead, as before."""
    now = recorder.now
    for row in daemons(recorder.views.txn):
        if (row["host"] == host and beating(row, now)
                and where_started(row["machine"], machine) == "elsewhere"):  # type: ignore[arg-type]
            beat = (now - from_text(row["beat_at"])).total_seconds()  # type: ignore[arg-type]
            raise BadInput(
                f"host name {host!r} is in use by a daemon of another machine (pid {row['pid']} there, "
                f"last tick {max(beat, 0):.0f} s ago): give this machine a host name of its own "
                "(--host, SCHED_HOST or `host` in sched.toml)")


def record_start(ws: Workspace, interval: float, pid: int | None = None,
                 alive: Callable[[int], bool] = pid_alive,
                 machine: Callable[[], str | None] = this_machine) -> DaemonStarted:
    """Record that a daemon starts now: `DaemonStarted`, and its record in `daemons`
    (alive from now, before its first tick); the records of this host's daemons whose
    process is gone are dropped (this one replaces them). Refused (BadInput, nothing
    written) under a host name that a daemon of another machine uses, in the same
    transaction: two starting at once cannot both pass. The webhook cursor is placed
    first if it is not yet, so that the start itself is sent on a fresh database."""
    pid = os.getpid() if pid is None else pid
    host, here = ws.settings.host_name, machine()
    webhooks.place_cursor(ws)  # on a fresh database: so that the start itself is sent
    event = DaemonStarted(host=host, pid=pid, version=sched_version(), interval_seconds=interval,
                          machine=here)
    with ws.write() as recorder:
        refuse_a_host_name_in_use(recorder, host, here)
        txn = recorder.views.txn
        forget_dead_daemons(txn, host, alive, here, recorder.now)
        recorder.record([event])
        note_daemon(txn, host, pid, here, to_text(recorder.now), interval)
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
