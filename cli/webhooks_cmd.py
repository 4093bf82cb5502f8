"""`sched webhooks`: deliver the webhook outbox now (for cron), and look at it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from cli.common import HELP_OPTIONS, DbOpt, HomeOpt, JsonOpt, console, emit_json, message, workspace
from cli.text import literal
from eventlog.errors import BadInput
from scheduler.reads.outbox import outbox

webhooks_app = typer.Typer(
    context_settings=HELP_OPTIONS, help="JSON POSTs of chosen events to the [[webhooks]] URLs of sched.toml.",
    no_args_is_help=True, rich_markup_mode=None)


@webhooks_app.command("deliver")
def deliver_command(json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None) -> None:
    """Queue the events recorded since the last run for their webhooks, then POST every
    delivery that is due."""
    from scheduler.daemon import webhooks  # (only deliveries need the HTTP client and the writes)

    ws = workspace(home, db)
    ws.require_db()  # without a database, exit 2 as every command does (even with no webhook)
    if not ws.settings.webhooks:
        message("no webhooks configured ([[webhooks]] in sched.toml): nothing collected or "
                "delivered (the outbox is left as it is)")
    queued = webhooks.collect(ws)
    report = webhooks.deliver_due(ws)
    if json_out:
        emit_json({"queued": queued, **asdict(report)})
        return
    for item in report.delivered:
        console().print(literal(f"delivered {item['event']} {item['id']} to {item['url']}"))
    for item in report.failed:
        message(("failed:", "yellow"), f" {item['event']} {item['id']} to {item['url']}: "
                f"{item['error']} (attempt {item['attempts']}; next at {item['next_attempt_at']})")
    for item in report.gave_up:
        message(("gave up:", "red"), f" {item['event']} {item['id']} to {item['url']} after "
                f"{item['attempts']} attempt(s): {item['error']}")
    message(f"webhooks: {queued} queued, {len(report.delivered)} delivered, {len(report.failed)} "
            f"failed, {len(report.gave_up)} given up")


@webhooks_app.command("list")
def list_command(
    pending: Annotated[bool, typer.Option(
        "--pending", help="Only deliveries still to be made (neither delivered nor given up).")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Only deliveries given up.")] = False,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """The webhook outbox, oldest first: every delivery and how it went."""
    if pending and failed:
        raise BadInput("--pending and --failed exclude each other")
    rows = outbox(workspace(home, db), "pending" if pending else "failed" if failed else "all")
    if json_out:
        emit_json({"deliveries": rows})
        return
    from cli.text import fitted_table  # (only for people: --json needs no rich)

    cells = []
    for row in rows:
        at = row["delivered_at"] or row["gave_up_at"] or f"next {row['next_attempt_at']}"
        cells.append([literal(str(v)) for v in (row["id"], row["event"], row["url"], row["status"],
                                                row["attempts"], at, row["last_error"] or "")])
    out = console()  # a line a delivery: its URL and event whole, only its last error cut
    out.print(fitted_table(["id", "event", "url", "status", "attempts", "at", "last error"], cells,
                           gives_way=("last error",), width=out.width))
