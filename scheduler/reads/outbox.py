"""The webhook outbox as `sched webhooks list` shows it: every delivery and how it went,
read through the storage port (no SQLAlchemy to import for a look)."""

from __future__ import annotations

import json
from typing import Any, Literal

from eventlog.storage.port import Term
from scheduler.config.settings import Settings
from scheduler.config.webhook_config import shown_url
from scheduler.workspace import Workspace

OutboxFilter = Literal["all", "pending", "failed"]

_COLUMNS = ("delivery_id", "url", "event", "body", "created_at", "attempts", "next_attempt_at",
            "delivered_at", "gave_up_at", "last_error")
_WHICH: dict[str, list[Term]] = {
    "all": [],
    "pending": [("delivered_at", "is", None), ("gave_up_at", "is", None)],  # neither delivered nor given up
    "failed": [("gave_up_at", "is not", None)],
}


def outbox(ws: Workspace, which: OutboxFilter = "all") -> list[dict[str, Any]]:
    """The outbox rows, oldest first: all, `pending` (neither delivered nor given up) or
    `failed` (given up)."""
    with ws.db.read() as txn:
        rows = txn.rows("webhook_outbox", _COLUMNS, _WHICH[which], ("id",))
    return [_describe(dict(zip(_COLUMNS, row, strict=True)), ws.settings) for row in rows]


def _describe(row: dict[str, Any], settings: Settings) -> dict[str, Any]:
    status = "delivered" if row["delivered_at"] else "gave_up" if row["gave_up_at"] else "pending"
    return {"id": row["delivery_id"], "url": shown_url(settings.webhooks, row["url"]), "event": row["event"],
            "status": status, "created_at": row["created_at"], "attempts": row["attempts"],
            "next_attempt_at": None if status != "pending" else row["next_attempt_at"],
            "delivered_at": row["delivered_at"], "gave_up_at": row["gave_up_at"],
            "last_error": row["last_error"], "body": json.loads(row["body"])}
