"""Commands about tasks: submit, list, show."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    AgentsOpt,
    DbOpt,
    HomeOpt,
    JsonOpt,
    console,
    emit_json,
    human_duration,
    message,
    parse_json_option,
    workspace,
)
from cli.text import literal
from eventlog.errors import BadInput
from eventlog.timeutil import from_text
from scheduler import queries
from scheduler.submit import parse_duration, parse_spec, read_batch, submit


def submit_command(
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue (agent type).")] = None,
    title: Annotated[str | None, typer.Option("--title", "-t", help="Short description.")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    assignee: Annotated[str | None, typer.Option(help="Direct the task at this agent.")] = None,
    payload: Annotated[str | None, typer.Option(help="JSON handed to the agent.")] = None,
    max_attempts: Annotated[int | None, typer.Option(
        help="Attempts before dead-lettering (default: setting max_attempts).")] = None,
    not_before: Annotated[str | None, typer.Option(
        help="Do not start before this ISO time, with offset (2026-01-01T09:00:00+00:00).")] = None,
    delay: Annotated[str | None, typer.Option(
        help="Do not start before this long from now: 90s, 10m, 2h, 1d.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="A second submit with the same key returns the first task.")] = None,
    task_type: Annotated[str | None, typer.Option(
        "--type", help="Kind of work: agents with the best success record at it are preferred.")] = None,
    after: Annotated[list[int] | None, typer.Option(
        "--after", help="Run only after this task succeeds (repeatable).")] = None,
    requires_approval: Annotated[bool, typer.Option(
        "--requires-approval", help="Wait for `sched approve` before joining the queue.")] = False,
    file: Annotated[Path | None, typer.Option(
        "--file", help="Submit every task of a JSONL file, all or nothing.")] = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
    agents: AgentsOpt = None,
) -> None:
    """Submit a task (or a JSONL file of tasks) to a queue; prints the task id."""
    ws = workspace(home, db, agents)
    if file is not None:
        given = [flag for flag, value in (
            ("--queue", queue), ("--title", title), ("--priority", priority), ("--assignee", assignee),
            ("--payload", payload), ("--max-attempts", max_attempts), ("--not-before", not_before),
            ("--delay", delay), ("--idempotency-key", idempotency_key), ("--after", after),
            ("--requires-approval", requires_approval), ("--type", task_type)) if value]
        if given:
            raise BadInput(f"--file takes every field from the file; drop {', '.join(given)}")
        batch = read_batch(file)
        results = submit(ws, [spec for _, spec in batch], [where for where, _ in batch])
        ids = [r.task_id for r in results]
        if json_out:
            emit_json({"task_ids": ids, "created": sum(r.created for r in results)})
        else:
            message(f"submitted {sum(r.created for r in results)} task(s) from {file}")
            console().print(" ".join(map(str, ids)))
        return
    if not queue or not title:
        raise BadInput("submit needs --queue and --title (or --file)")
    if delay is not None:
        if not_before is not None:
            raise BadInput("give --delay or --not-before, not both")
        not_before = (ws.clock.now() + parse_duration(delay)).isoformat()
    raw = {"queue": queue, "title": title, "priority": priority, "assignee": assignee,
           "payload": parse_json_option(payload, "--payload"), "max_attempts": max_attempts,
           "not_before": not_before, "idempotency_key": idempotency_key,
           "requires_approval": requires_approval, "after": after or [], "type": task_type}
    (result,) = submit(ws, [parse_spec(raw, "submit")])
    if json_out:
        emit_json({"task_id": result.task_id, "created": result.created})
    else:
        console().print(result.task_id)


def tasks_command(
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")] = None,
    status: Annotated[str | None, typer.Option("--status", "-s", help="Only this status.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Add the payload, the attempts and the excluded agents.")] = False,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """List tasks in the order they will be picked, with when each queued one may start."""
    ws = workspace(home, db)
    found = queries.list_tasks(ws, queue, status, limit)
    figures = queries.pick_figures(ws, found)
    if json_out:
        emit_json({"tasks": [queries.task_dict(t) | figures[t.task_id] for t in found]})
        return
    columns = ["id", "queue", "status", "prio", "eff", "waited", "est. start", "agent", "title"]
    if verbose:
        columns += ["attempts", "excluded", "payload"]
    table = Table(*columns)
    now = ws.clock.now()
    for t in found:
        pick = figures[t.task_id]
        start = pick["estimated_start"]
        eta = "-" if start is None else "next tick" if from_text(start) <= now else \
            "in " + human_duration((from_text(start) - now).total_seconds())
        row = [str(t.task_id), t.queue, t.status, str(t.priority), str(pick["effective_priority"]),
               f"{pick['waited_seconds']:.0f}s", eta, t.agent or "-", t.title]
        if verbose:
            row += [f"{t.attempt - t.attempt_floor}/{t.max_attempts}", ", ".join(t.excluded) or "-",
                    summary(t.payload)]
        table.add_row(*map(literal, row))
    console().print(table)


def summary(payload: str, width: int = 40) -> str:
    """The payload's JSON (or any text), cut to `width` characters."""
    return payload if len(payload) <= width else payload[:width - 1] + "…"


DATA_WIDTH = 200  # characters of an event's data shown by `show`


def show_command(
    task_id: Annotated[int, typer.Argument(help="Task id.")],
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """One task: its state and its whole history."""
    task, events = queries.show(workspace(home, db), task_id)
    if json_out:
        emit_json({"task": queries.task_dict(task),
                   "events": [queries.event_dict(e) for e in events]})
        return
    out = console()
    for key, value in queries.task_dict(task).items():
        out.print(literal((f"{key:>15}", "bold"), f"  {value}"))
    table = Table("seq", "at", "event", "data")
    for rec in events:  # the data cut first: a 1 MiB payload would make a 1 MiB table
        table.add_row(str(rec.seq), rec.recorded_at, rec.type, literal(summary(rec.data, DATA_WIDTH)))
    out.print(table)
