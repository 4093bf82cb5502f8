"""The `events` table: the log itself. Projection tables live in `projections/`,
operational tables in `scheduler/operational_tables.py`."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

from eventlog.layout import EVENT_COLUMNS, SCHEMA_VERSION
from eventlog.storage.types import Int64

__all__ = ["EVENT_COLUMNS", "SCHEMA_VERSION", "EventRow"]


class EventRow(SQLModel, table=True):
    """One stored event. `seq` is the global order (1, 2, 3, ... with no gaps)."""

    __tablename__ = "events"

    seq: int = Field(primary_key=True, sa_type=Int64, sa_column_kwargs={"autoincrement": False})
    stream_id: str = Field(index=True)
    type: str
    schema_version: int
    recorded_at: str
    data: str
    prev_hash: str
    hash: str
