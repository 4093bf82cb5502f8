"""Who ticks: when each host last ticked, and which daemons (`sched run`) are up.
Operational records (not projections: a tick that changes nothing appends no event),
read by the health check and the dashboard."""

from __future__ import annotations

from eventlog.storage.port import Transaction

# the tables: scheduler.operational.TickRunRow ("tick_runs") and DaemonRow ("daemons")
_TICK_RUN = ("at", "host", "pid", "duration_ms")
_DAEMON = ("host", "pid", "started_at", "beat_at", "interval_seconds")


def note_tick(txn: Transaction, host: str, pid: int, at: str, duration_ms: float) -> None:
    """Inside the tick's write transaction: remember that it ran."""
    txn.upsert("tick_runs", ("host", "at", "pid", "duration_ms"), ("host",), [(host, at, pid, duration_ms)])


def last_tick_at(txn: Transaction) -> str | None:
    """When any host last ticked (None: never)."""
    return txn.rows("tick_runs", ("max(at)",))[0][0]  # type: ignore[return-value]


def note_daemon(txn: Transaction, host: str, pid: int, at: str, interval: float) -> None:
    """Inside the daemon's tick transaction: it is alive at `at` (started then, if new)."""
    from scheduler.operational import DaemonRow

    row = txn.session.get(DaemonRow, (host, pid))
    if row is None:
        txn.session.add(DaemonRow(host=host, pid=pid, started_at=at, beat_at=at, interval_seconds=interval))
    else:
        row.beat_at, row.interval_seconds = at, interval


def forget_daemon(txn: Transaction, host: str, pid: int) -> None:
    """The daemon stopped cleanly."""
    txn.delete("daemons", [("host", "=", host), ("pid", "=", pid)])


def last_tick(txn: Transaction) -> dict[str, object] | None:
    """The latest tick of any host: {at, host, pid, duration_ms} (None: never)."""
    rows = txn.rows("tick_runs", _TICK_RUN, order=("-at",), limit=1)
    return dict(zip(_TICK_RUN, rows[0], strict=True)) if rows else None


def daemons(txn: Transaction) -> list[dict[str, object]]:
    """Every daemon that has not stopped cleanly, latest beat first."""
    return [dict(zip(_DAEMON, row, strict=True)) for row in txn.rows("daemons", _DAEMON, order=("-beat_at",))]
