"""Who ticks: when each host last ticked, and which daemons (`sched run`) are up.
Operational records (not projections: a tick that changes nothing appends no event),
read by the health check and the dashboard."""

from __future__ import annotations

from sqlalchemy import delete, func, inspect, select
from sqlalchemy.dialects.sqlite import insert
from sqlmodel import Field, Session, SQLModel


class TickRunRow(SQLModel, table=True):
    """The last tick a host ran on this database."""

    __tablename__ = "tick_runs"

    host: str = Field(primary_key=True)
    at: str
    pid: int
    duration_ms: float


def ensure_table(session: Session) -> None:
    TickRunRow.__table__.create(session.connection(), checkfirst=True)  # type: ignore[attr-defined]


def note_tick(session: Session, host: str, pid: int, at: str, duration_ms: float) -> None:
    """Inside the tick's write transaction: remember that it ran."""
    ensure_table(session)
    stmt = insert(TickRunRow).values(host=host, at=at, pid=pid, duration_ms=duration_ms)
    session.execute(stmt.on_conflict_do_update(
        index_elements=[TickRunRow.host],
        set_={"at": stmt.excluded.at, "pid": stmt.excluded.pid,
              "duration_ms": stmt.excluded.duration_ms}))


def last_tick_at(session: Session) -> str | None:
    """When any host last ticked (None: never, or before this record existed)."""
    if not inspect(session.connection()).has_table("tick_runs"):
        return None  # a read transaction creates nothing
    return session.execute(select(func.max(TickRunRow.at))).scalar()


class DaemonRow(SQLModel, table=True):
    """A running `sched run`: written when it starts, touched by each of its ticks,
    removed when it stops cleanly (a row whose beats stopped is a daemon that died)."""

    __tablename__ = "daemons"

    host: str = Field(primary_key=True)
    pid: int = Field(primary_key=True)
    started_at: str
    beat_at: str
    interval_seconds: float


def note_daemon(session: Session, host: str, pid: int, at: str, interval: float) -> None:
    """Inside the daemon's tick transaction: it is alive at `at` (started then, if new)."""
    DaemonRow.__table__.create(session.connection(), checkfirst=True)  # type: ignore[attr-defined]
    stmt = insert(DaemonRow).values(host=host, pid=pid, started_at=at, beat_at=at,
                                    interval_seconds=interval)
    session.execute(stmt.on_conflict_do_update(
        index_elements=[DaemonRow.host, DaemonRow.pid],
        set_={"beat_at": stmt.excluded.beat_at, "interval_seconds": stmt.excluded.interval_seconds}))


def forget_daemon(session: Session, host: str, pid: int) -> None:
    """The daemon stopped cleanly."""
    if inspect(session.connection()).has_table("daemons"):
        session.execute(delete(DaemonRow).where(DaemonRow.host == host, DaemonRow.pid == pid))


def last_tick(session: Session) -> dict[str, object] | None:
    """The latest tick of any host: {at, host, pid, duration_ms} (None: never)."""
    if not inspect(session.connection()).has_table("tick_runs"):
        return None
    row = session.execute(select(TickRunRow).order_by(TickRunRow.at.desc()).limit(1)).scalars().first()
    return None if row is None else {"at": row.at, "host": row.host, "pid": row.pid,
                                     "duration_ms": row.duration_ms}


def daemons(session: Session) -> list[dict[str, object]]:
    """Every daemon that has not stopped cleanly, latest beat first."""
    if not inspect(session.connection()).has_table("daemons"):
        return []
    rows = session.execute(select(DaemonRow).order_by(DaemonRow.beat_at.desc())).scalars()
    return [{"host": r.host, "pid": r.pid, "started_at": r.started_at, "beat_at": r.beat_at,
             "interval_seconds": r.interval_seconds} for r in rows]
