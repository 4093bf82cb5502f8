"""Webhook delivery: JSON POSTs of chosen events to the `[[webhooks]]` URLs, through an
outbox.

`collect` turns the log events after a cursor into outbox rows (one per subscribed
URL) and moves the cursor, in one write transaction, so each event is queued exactly
once whatever crashes. `deliver_due` POSTs the due rows outside any transaction (a
slow endpoint never holds the write lock) and records each outcome at once: delivered
on a 2xx answer, else retried after a full-jitter exponential backoff, or given up
after `webhook_max_attempts`. Redirects are not followed. Delivery is at least once:
the `X-Sched-Delivery` header (the body's `id`) lets receivers drop duplicates.

The cursor and the outbox are operational tables, not projections: rebuilding the
projections never sends anything again.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import version
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select
from sqlmodel import Session

from eventlog.sql_store import SqlStore
from eventlog.storage.port import Transaction
from eventlog.timeutil import to_text
from projections.sql import SqlProjection
from scheduler.config.settings import Settings
from scheduler.config.webhook_config import WebhookEvent, shown_url, signature
from scheduler.operational_tables import WebhookCursorRow, WebhookOutboxRow
from scheduler.workspace import Workspace

# log event type -> the webhook event it is sent as (health.changed is not in the log:
# the health check calls `notify`)
EVENT_KINDS: dict[str, WebhookEvent] = {
    "TaskFailed": "task.failed",
    "TaskDeadLettered": "task.dead_lettered",
    "TaskProgressed": "task.progress",
    "SchedulerPaused": "scheduler.paused",
    "TaskDueMissed": "task.due_missed",
    "DaemonStarted": "daemon.started",
    "DaemonStopped": "daemon.stopped",
}
USER_AGENT = f"sched/{version('sched')}"


# (url, body, headers, timeout) -> None when delivered, else why not (one line)
Post = Callable[[str, bytes, Mapping[str, str], float], str | None]


@dataclass(frozen=True)
class DeliveryReport:
    """What one `deliver_due` did: each a list of `{"id", "url", "event", ...}`."""

    delivered: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # with error, next_attempt_at
    gave_up: list[dict[str, Any]] = field(default_factory=list)  # with error


_PENDING = and_(WebhookOutboxRow.delivered_at.is_(None), WebhookOutboxRow.gave_up_at.is_(None))


def subscribers(settings: Settings, kind: str) -> list[str]:
    """The URLs that receive `kind`, each once."""
    return list(dict.fromkeys(hook.url for hook in settings.webhooks if kind in hook.events))


def collect(ws: Workspace) -> int:
    """Queue the log events after the cursor for the URLs subscribed to them, and move
    the cursor to the end of the log; returns the number of outbox rows added. The
    first call only places the cursor at the end of the log: history is not sent. A
    process whose settings have no `[[webhooks]]` (e.g. run from a directory without the
    deployment's sched.toml) does nothing: it must not move the cursor past events the
    configured processes have yet to queue."""
    if not ws.settings.webhooks:
        return 0
    now = ws.clock.now()
    with ws.db.write() as txn:
        session = txn.session
        forget_settled(session, now - timedelta(days=ws.settings.webhook_retention_days))
        store = SqlStore(txn)
        cursor = session.get(WebhookCursorRow, 1)
        if cursor is None:
            session.add(WebhookCursorRow(id=1, seq=store.last_position()))
            return 0
        views = SqlProjection(txn)
        added = 0
        for rec in store.read(after=cursor.seq):
            cursor.seq = rec.seq
            kind = EVENT_KINDS.get(rec.type)
            urls = subscribers(ws.settings, kind) if kind else []
            if not urls:
                continue
            data = rec.fields()
            if rec.type == "TaskFailed" and data.get("reason") == "undelivered":
                continue  # a claim that never reached its worker: nothing ran, so nothing failed
            fields: dict[str, Any] = {"seq": rec.seq, "recorded_at": rec.recorded_at,
                                      "schema_version": rec.schema_version, "data": data}
            if "task_id" in data:
                task = views.get_task(data["task_id"])
                fields["task"] = {"queue": task.queue, "title": task.title}  # type: ignore[union-attr]
            added += _enqueue(session, urls, kind, fields, now)
        return added


def place_cursor(ws: Workspace) -> None:
    """Place the cursor at the end of the log if it is not placed yet (what the first
    `collect` does), so that the events appended from now on are sent."""
    if not ws.settings.webhooks:
        return
    with ws.db.write() as txn:
        if txn.session.get(WebhookCursorRow, 1) is None:
            txn.session.add(WebhookCursorRow(id=1, seq=SqlStore(txn).last_position()))


def forget_settled(session: Session, before: datetime) -> None:
    """Delete the rows delivered or given up before `before` (`webhook_retention_days`):
    the outbox keeps a record of recent deliveries, not a second log."""
    cutoff = to_text(before)
    session.execute(delete(WebhookOutboxRow).where(or_(
        WebhookOutboxRow.delivered_at < cutoff, WebhookOutboxRow.gave_up_at < cutoff)))


def notify(txn: Transaction, settings: Settings, kind: str, data: dict[str, Any], now: datetime) -> int:
    """Queue an event that is not in the log (`health.changed`) for its subscribers,
    inside the caller's write transaction; returns the number of outbox rows added."""
    fields = {"seq": None, "recorded_at": to_text(now), "data": data}
    return _enqueue(txn.session, subscribers(settings, kind), kind, fields, now)


def _enqueue(session: Session, urls: list[str], kind: str, fields: dict[str, Any], now: datetime) -> int:
    rows = []
    for url in urls:
        delivery_id = str(uuid.uuid4())
        rows.append({"delivery_id": delivery_id, "url": url, "event": kind,
                     "body": json.dumps({"id": delivery_id, "event": kind, **fields}),
                     "created_at": to_text(now), "attempts": 0, "next_attempt_at": to_text(now)})
    if rows:
        session.execute(insert(WebhookOutboxRow), rows)
    return len(rows)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None  # the 3xx then fails the delivery like any other non-2xx answer


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> str | None:
    """POST `body` to `url`: None on a 2xx answer, else why not, in one line."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.build_opener(_RefuseRedirects).open(request, timeout=timeout):
            return None  # the opener raises HTTPError for any answer but a 2xx
    except urllib.error.HTTPError as e:
        e.close()
        if 300 <= e.code < 400:
            return f"HTTP {e.code} {e.reason}: redirect to {e.headers.get('Location')} not followed"
        return f"HTTP {e.code} {e.reason}"
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            return f"no connection within {timeout:g} s"
        return f"cannot connect: {getattr(e.reason, 'strerror', None) or e.reason}"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (OSError, ValueError, http.client.HTTPException) as e:  # dropped, or a malformed answer
        return f"{type(e).__name__}: {e}"


def deliver_due(ws: Workspace, *, post: Post = http_post) -> DeliveryReport:
    """POST every outbox row that is due, one by one, outside any transaction: each is
    claimed just before its POST (another deliverer, cron beside a daemon, skips it)
    and its outcome recorded right after, each in its own short write transaction. A
    row whose URL is no longer configured is given up without a POST. A process whose
    settings have no `[[webhooks]]` at all does nothing (it cannot tell a removed URL
    from a deployment it does not know)."""
    settings = ws.settings
    secrets = {hook.url: hook.secret for hook in reversed(settings.webhooks)}  # (the first table's)
    configured = set(secrets)
    report = DeliveryReport()
    if not configured:
        return report
    now = ws.clock.now()
    with ws.db.read() as txn:
        due = list(txn.session.execute(select(WebhookOutboxRow.id).order_by(WebhookOutboxRow.id).where(
            _PENDING, WebhookOutboxRow.next_attempt_at <= to_text(now))).scalars())
    for row_id in due:
        job = _claim(ws, row_id, configured, report)
        if job is None:
            continue
        delivery_id, url, kind, body = job
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Sched-Delivery": delivery_id, "X-Sched-Event": kind}
        data = body.encode()
        if (secret := secrets[url]) is not None:
            timestamp = str(int(ws.clock.now().timestamp()))
            headers |= {"X-Sched-Timestamp": timestamp,
                        "X-Sched-Signature": signature(secret, timestamp, data)}
        error = post(url, data, headers, settings.webhook_timeout_seconds)
        _record(ws, row_id, error, report)
    return report


def _claim(ws: Workspace, row_id: int, configured: set[str],
           report: DeliveryReport) -> tuple[str, str, str, str] | None:
    """Take one due row for a POST: push its next attempt past the POST's timeout, so
    another deliverer skips it (if this process dies, it falls due again then). None if
    another deliverer took or settled it meanwhile, or its URL is gone (given up)."""
    now = ws.clock.now()
    with ws.db.write() as txn:
        row = txn.session.get(WebhookOutboxRow, row_id)
        if row is None or row.delivered_at or row.gave_up_at or row.next_attempt_at > to_text(now):
            return None
        if row.url not in configured:
            row.gave_up_at, row.last_error = to_text(now), "the URL is no longer configured"
            report.gave_up.append({**_item(row, ws.settings), "error": row.last_error})
            return None
        # twice the timeout: urllib applies it per socket operation (connect, then reads)
        row.next_attempt_at = to_text(now + timedelta(seconds=2 * ws.settings.webhook_timeout_seconds + 1))
        return row.delivery_id, row.url, row.event, row.body


def _item(row: WebhookOutboxRow, settings: Settings) -> dict[str, Any]:
    return {"id": row.delivery_id, "url": shown_url(settings.webhooks, row.url), "event": row.event,
            "attempts": row.attempts}


def _record(ws: Workspace, row_id: int, error: str | None, report: DeliveryReport) -> None:
    settings = ws.settings
    now = ws.clock.now()
    with ws.db.write() as txn:
        row = txn.session.get(WebhookOutboxRow, row_id)
        # settled by another deliverer meanwhile (and perhaps purged already, with
        # webhook_retention_days = 0, when this POST outlived its claim)
        if row is None or row.delivered_at or row.gave_up_at:
            return
        row.attempts += 1
        if error is None:
            row.delivered_at = to_text(now)
            report.delivered.append(_item(row, settings))
            return
        row.last_error = error
        if row.attempts >= settings.webhook_max_attempts:
            row.gave_up_at = to_text(now)
            report.gave_up.append({**_item(row, settings), "error": error})
            return
        cap = min(settings.webhook_backoff_max_seconds,
                  settings.webhook_backoff_base_seconds * 2 ** (row.attempts - 1))
        row.next_attempt_at = to_text(now + timedelta(seconds=ws.rng.random() * cap))
        report.failed.append({**_item(row, settings), "error": error, "next_attempt_at": row.next_attempt_at})
