"""The operational tables: what sched remembers that is not a fact of the log (a tick
that changes nothing appends no event), read by health, the dashboard and webhooks.
They are made with the schema (`Storage.create_schema`), never on first use."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

from eventlog.storage.types import Int64


class TickRunRow(SQLModel, table=True):
    """The last tick a host ran on this database."""

    __tablename__ = "tick_runs"

    host: str = Field(primary_key=True)
    at: str
    pid: int = Field(sa_type=Int64)
    duration_ms: float


class DaemonRow(SQLModel, table=True):
    """A running `sched run`: written when it starts, touched by each of its ticks,
    removed when it stops cleanly (a row whose beats stopped is a daemon that died)."""

    __tablename__ = "daemons"

    host: str = Field(primary_key=True)
    pid: int = Field(primary_key=True, sa_type=Int64, sa_column_kwargs={"autoincrement": False})
    started_at: str
    beat_at: str
    interval_seconds: float
    # its machine, boot and pid namespace (`scheduler.machine`), so that its pid is
    # looked at only there; None: a daemon of an older sched (judged by pid on its host)
    machine: str | None = None


class GateCheckRow(SQLModel, table=True):
    """When a queue's gate last ran and what it said (a cache, not a projection)."""

    __tablename__ = "gate_checks"

    queue: str = Field(primary_key=True)
    checked_at: str
    passed: bool
    detail: str


class HealthStateRow(SQLModel, table=True):
    """The overall level the last evaluation found (one row, id 1), so that a change
    can be announced (`health.changed` webhooks)."""

    __tablename__ = "health_state"

    id: int = Field(primary_key=True)
    status: str
    at: str


class WebhookCursorRow(SQLModel, table=True):
    """The last log `seq` that webhook collection examined (one row, id 1)."""

    __tablename__ = "webhook_cursor"

    id: int = Field(primary_key=True)
    seq: int = Field(sa_type=Int64)


class WebhookOutboxRow(SQLModel, table=True):
    """One delivery: a body for one URL, and how its POSTs went."""

    __tablename__ = "webhook_outbox"

    id: int | None = Field(default=None, primary_key=True, sa_type=Int64)
    delivery_id: str = Field(unique=True)  # the body's id and the X-Sched-Delivery header
    url: str
    event: str
    body: str
    created_at: str
    attempts: int = Field(default=0, sa_type=Int64)
    next_attempt_at: str = Field(index=True)
    delivered_at: str | None = None
    gave_up_at: str | None = None
    last_error: str | None = None


OPERATIONAL_TABLES = [TickRunRow.__table__, DaemonRow.__table__, GateCheckRow.__table__,  # type: ignore[attr-defined]
                      HealthStateRow.__table__, WebhookCursorRow.__table__,  # type: ignore[attr-defined]
                      WebhookOutboxRow.__table__]  # type: ignore[attr-defined]
