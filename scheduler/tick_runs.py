"""Who ticks: when each host last ticked, and which daemons (`sched run`) are up.
Operational records (not projections: a tick that changes nothing appends no event),
read by the health check and the dashboard."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from eventlog.storage.port import Transaction
from scheduler.operational import DaemonRow, TickRunRow


def note_tick(txn: Transaction, host: str, pid: int, at: str, duration_ms: float) -> None:
    """Inside the tick's write transaction: remember that it ran."""
    txn.upsert("tick_runs", ("host", "at", "pid", "duration_ms"), ("host",), [(host, at, pid, duration_ms)])


def last_tick_at(txn: Transaction) -> str | None:
    """When any host last ticked (None: never)."""
    return txn.session.execute(select(func.max(TickRunRow.at))).scalar()


def note_daemon(txn: Transaction, host: str, pid: int, at: str, interval: float) -> None:
    """Inside the daemon's tick transaction: it is alive at `at` (started then, if new)."""
    row = txn.session.get(DaemonRow, (host, pid))
    if row is None:
        txn.session.add(DaemonRow(host=host, pid=pid, started_at=at, beat_at=at, interval_seconds=interval))
    else:
        row.beat_at, row.interval_seconds = at, interval


def forget_daemon(txn: Transaction, host: str, pid: int) -> None:
    """The daemon stopped cleanly."""
    txn.session.execute(delete(DaemonRow).where(DaemonRow.host == host, DaemonRow.pid == pid))


def last_tick(txn: Transaction) -> dict[str, object] | None:
    """The latest tick of any host: {at, host, pid, duration_ms} (None: never)."""
    row = txn.session.execute(select(TickRunRow).order_by(TickRunRow.at.desc()).limit(1)).scalars().first()
    return None if row is None else {"at": row.at, "host": row.host, "pid": row.pid,
                                     "duration_ms": row.duration_ms}


def daemons(txn: Transaction) -> list[dict[str, object]]:
    """Every daemon that has not stopped cleanly, latest beat first."""
    rows = txn.session.execute(select(DaemonRow).order_by(DaemonRow.beat_at.desc())).scalars()
    return [{"host": r.host, "pid": r.pid, "started_at": r.started_at, "beat_at": r.beat_at,
             "interval_seconds": r.interval_seconds} for r in rows]
