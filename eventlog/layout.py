"""The shape of the log as plain values (no SQLAlchemy): the version of sched's tables
and the columns of `events`, for code that reads and writes them through the storage
port's driver-level methods. The table itself is `eventlog.schema.EventRow`."""

from __future__ import annotations

# The version of sched's tables a database holds (`Storage.schema_version`): 1, the
# log made first, other tables on first use; 2, every table made with the schema; 3,
# `daemons.machine` (columns added later are nullable: `create_tables` adds them).
# Projection tables have their own version (they are rebuilt, not migrated).
SCHEMA_VERSION = 3
EVENT_COLUMNS = ("seq", "stream_id", "type", "schema_version", "recorded_at", "data", "prev_hash", "hash")
