"""Column types that mean the same on every engine."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer

# A 64-bit integer: BIGINT on PostgreSQL (its INTEGER is 32-bit), INTEGER on SQLite
# (already 64-bit, and only `INTEGER PRIMARY KEY` is the rowid, the fast key).
Int64 = BigInteger().with_variant(Integer(), "sqlite")
