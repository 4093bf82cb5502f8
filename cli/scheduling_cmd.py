"""Commands about the scheduler as a whole: tick, status, replay."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from cli.common import AgentsOpt, DbOpt, HomeOpt, JsonOpt, console, emit_json, message, workspace
from scheduler import queries
from scheduler.tick import tick


def tick_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide, print, append nothing.")] = False,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None,
) -> None:
    """One scheduler pass: expire what is overdue, then assign queued tasks to agents."""
    report = tick(workspace(home, db, agents), dry_run=dry_run)
    if json_out:
        emit_json(asdict(report))
        return
    verb = "would assign" if dry_run else "assigned"
    for item in report.assigned:
        console().print(f"{verb} task {item['task_id']} -> {item['agent']}")
    for item in report.expired:
        console().print(f"took back task {item['task_id']} from {item['agent']} "
                        f"({item['reason']})")
    for task_id in report.dead_lettered:
        console().print(f"dead-lettered task {task_id}")
    message(f"tick: {len(report.assigned)} assigned, {len(report.expired)} expired, "
            f"{len(report.dead_lettered)} dead-lettered in {report.duration_ms:.1f} ms"
            + (" (dry run: nothing appended)" if dry_run else ""))


def status_command(json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None) -> None:
    """Queue depths and agent load, read from the projections."""
    doc = queries.status(workspace(home, db))
    if json_out:
        emit_json(doc)
        return
    out = console()
    queues = Table("queue", "queued", "assigned", "running", "succeeded", "dead",
                   title="queues")
    for name, c in doc["queues"].items():
        queues.add_row(name, str(c["queued"]), str(c["assigned"]), str(c["running"]),
                       str(c["succeeded"]), str(c["dead"]))
    out.print(queues)
    agents = Table("agent", "type", "capacity", "assigned", "running", "free", title="agents")
    for name, a in doc["agents"].items():
        label = name if a["enabled"] and a["configured"] else f"{name} (off)"
        agents.add_row(label, a["type"], str(a["capacity"]), str(a["assigned"]),
                       str(a["running"]), str(a["free"]))
    out.print(agents)
    out.print(f"last seq: {doc['last_seq']}")


def replay_command(
    task: Annotated[int | None, typer.Option("--task", help="Only this task's events.")] = None,
    since: Annotated[str | None, typer.Option(help="From this seq or ISO time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this seq or ISO time (inclusive).")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Check the hash chain and compare the stored projections with a "
        "fresh fold of the log; exit 1 if anything disagrees.")] = False,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """The audit trail (with --json: one event per line), or --verify it."""
    ws = workspace(home, db)
    if verify:
        result = queries.verify_log(ws)
        if json_out:
            emit_json({"ok": result.ok, "events": result.events, "problems": result.problems})
        elif result.ok:
            console().print(f"verified: {result.events} events, hash chain intact, "
                            "projections match the log")
        else:
            for problem in result.problems:
                console().print(f"[red]{problem}[/red]")
        if not result.ok:
            raise typer.Exit(1)
        return
    lower = queries.parse_position(since, "--since") if since else None
    upper = queries.parse_position(until, "--until") if until else None
    records = queries.replay(ws, task, lower, upper)
    out = console()
    for rec in records:
        if json_out:
            emit_json(queries.event_dict(rec))
        else:
            out.print(f"{rec.seq:>6}  {rec.recorded_at}  {rec.type:<16} {rec.data}")


def rebuild_command(json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None) -> None:
    """Drop the projections and rebuild them from the event log (the log is the truth)."""
    count = queries.rebuild_projections(
        workspace(home, db), progress=None if json_out else lambda n: message(f"  {n} events..."))
    if json_out:
        emit_json({"rebuilt": True, "events": count})
    else:
        message(f"rebuilt the projections from {count} events")
