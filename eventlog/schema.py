"""The `events` table: the log itself. Projection tables live in `projections/`."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

LOG_SCHEMA_VERSION = 1  # PRAGMA user_version of a database this sched created


class EventRow(SQLModel, table=True):
    """One stored event. `seq` is the global order (1, 2, 3, ... with no gaps)."""

    __tablename__ = "events"

    seq: int = Field(primary_key=True)
    stream_id: str = Field(index=True)
    type: str
    schema_version: int
    recorded_at: str
    data: str
    prev_hash: str
    hash: str
