"""The daemon's health job: the overall level of each `sched health` report it runs is
remembered (an operational record), and a change of level queues a `health.changed`
webhook. `sched health` itself only reads."""

from __future__ import annotations

from typing import Any

from eventlog.timeutil import from_text
from scheduler.daemon import webhooks
from scheduler.operational_tables import HealthStateRow
from scheduler.workspace import Workspace


def record_health(ws: Workspace, report: dict[str, Any]) -> str | None:
    """Remember the report's overall level; when it differs from the one recorded
    before, queue a `health.changed` webhook and return the previous level. (The
    daemon records; `sched health` only reads, and loads neither the webhooks nor the
    operational tables.)"""
    with ws.db.write() as txn:
        session = txn.session
        row = session.get(HealthStateRow, 1)
        previous = row.status if row is not None else None
        if row is None:
            session.add(HealthStateRow(id=1, status=report["status"], at=report["at"]))
        else:
            row.status, row.at = report["status"], report["at"]
        changed = previous is not None and previous != report["status"]
        if changed:
            failing = [c for c in report["checks"] if c["status"] != "healthy"]
            webhooks.notify(txn, ws.settings, "health.changed",
                            {"from": previous, "to": report["status"], "checks": failing},
                            from_text(report["at"]))
    return previous if changed else None
