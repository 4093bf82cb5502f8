"""The `events` table: the log itself. Projection tables live in `projections/`,
operational tables in `scheduler/operational.py`."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

from eventlog.storage.types import Int64

# The version of sched's tables a database holds (`Storage.schema_version`): 1, the
# log made first, other tables on first use; 2, every table made with the schema.
# Projection tables have their own version (they are rebuilt, not migrated).
SCHEMA_VERSION = 2
EVENT_COLUMNS = ("seq", "stream_id", "type", "schema_version", "recorded_at", "data", "prev_hash", "hash")


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
