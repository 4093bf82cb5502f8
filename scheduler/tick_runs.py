"""When each host last ticked: an operational record (not a projection: a tick that
changes nothing appends no event), read by the health check."""

from __future__ import annotations

from sqlalchemy import func, inspect, select
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
