"""Commands about tasks: submit, list, show."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import (
    AgentsOpt,
    DbOpt,
    DryRunOpt,
    HomeOpt,
    JsonOpt,
    console,
    emit_json,
    human_duration,
    message,
    parse_json_option,
    parse_task_id,
    place,
    show_dry_run,
    warn_if_fleet_unread,
    workspace,
)
from cli.text import fitted_table, literal
from eventlog.errors import BadInput
from eventlog.timeutil import from_text
from eventlog.values import INT64_MAX
from projections.views import FINAL_STATUSES
from scheduler.reads import queries
from scheduler.usecases import tasks


def submit_command(
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Queue (agent type).")] = None,
    title: Annotated[str | None, typer.Option("--title", "-t", help="Short description.")] = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs first (default 0).")] = None,
    assignee: Annotated[str | None, typer.Option(help="Direct the task at this agent.")] = None,
    payload: Annotated[str | None, typer.Option(help="JSON handed to the agent.")] = None,
    max_attempts: Annotated[int | None, typer.Option(
        help="Attempts before dead-lettering (default: setting max_attempts).")] = None,
    not_before: Annotated[str | None, typer.Option(
        help="Do not start before this ISO time, with offset (2026-01-01T09:00:00+00:00).")] = None,
    delay: Annotated[str | None, typer.Option(
        help="Do not start before this long from now: 90s, 10m, 2h, 1d.")] = None,
    due: Annotated[str | None, typer.Option(
        help="Should be done by this time: an ISO time with offset, or a duration from now "
        "(2h, 1d). Its priority rises as the time nears; a miss is flagged.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="A second submit with the same key returns the first task.")] = None,
    task_type: Annotated[str | None, typer.Option(
        "--type", help="Kind of work: agents with the best success record at it are preferred.")] = None,
    after: Annotated[list[int] | None, typer.Option(
        "--after", help="Run only after this task succeeds (repeatable).", parser=parse_task_id)] = None,
    requires_approval: Annotated[bool, typer.Option(
        "--requires-approval", help="Wait for `sched approve` before joining the queue.")] = False,
    requires: Annotated[str | None, typer.Option(
        "--requires", help="Capabilities the agent must have, comma-separated: browser,gpu.")] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", help="Submit every task of a JSONL file, all or nothing (- reads stdin).",
        metavar="<path>", parser=place("a file, or - for stdin"))] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who submits (default $USER).")] = None,
    dry_run: DryRunOpt = False, json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
    agents: AgentsOpt = None,
) -> None:
    """Submit a task (or a JSONL file of tasks) to a queue; prints the task id."""
    from cli.operator_cmd import operator_name
    from scheduler.usecases import actions

    ws = workspace(home, db, agents)
    # the task's flags that were given (a flag left out is not passed: with --file, the
    # request refuses every one given, even empty or equal to its default)
    given = {"queue": queue, "title": title, "priority": priority, "assignee": assignee,
             "max_attempts": max_attempts, "not_before": not_before, "delay": delay,
             "idempotency_key": idempotency_key, "after": after, "task_type": task_type,
             "requires_approval": requires_approval or None, "due": due,
             "requires": [c.strip() for c in requires.split(",")] if requires is not None else None}
    fields = {"by": operator_name(by), "dry_run": dry_run,
              **{name: value for name, value in given.items() if value is not None}}
    if file is not None:
        from scheduler.submit import read_batch

        # a task's flags beside --file are refused (by the request) before the file is read
        actions.SubmitRequest(**fields, **({} if payload is None else {"payload": payload}), tasks=[{}])
        batch = read_batch(file)
        done = actions.submit(ws, actions.SubmitRequest(**fields, tasks=[spec for _, spec in batch],
                                                        sources=[where for where, _ in batch]))
        if json_out:
            emit_json(done.to_json())
        elif done.dry_run is not None:
            message(f"would submit {done.created} task(s) from {file}: " + " ".join(map(str, done.task_ids)))
            show_dry_run(done.dry_run)
        else:
            message(f"submitted {done.created} task(s) from {file}")
            console().print(" ".join(map(str, done.task_ids)))
        return
    request = actions.SubmitRequest(**fields, payload=parse_json_option(payload, "--payload"))
    done = actions.submit(ws, request)
    (result,) = done.submitted
    if json_out:
        emit_json(done.to_json())
    elif done.dry_run is not None:
        message(f"would submit task {result.task_id}" if result.created
                else f"task {result.task_id} has this idempotency key already: nothing to submit")
        show_dry_run(done.dry_run)
    else:
        console().print(result.task_id)


def tasks_command(
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="Only this queue.")] = None,
    status: Annotated[str | None, typer.Option("--status", "-s", help="Only this status.")] = None,
    title: Annotated[str | None, typer.Option(
        "--title", help="Only tasks whose title holds this text (ASCII letters in any case).")] = None,
    limit: Annotated[int | None, typer.Option(
        help="At most this many (--json then says the next page's `next_cursor`).",
        min=1, max=INT64_MAX)] = None,
    cursor: Annotated[str | None, typer.Option(
        "--cursor", help="Start at this place in pick order: the `next_cursor` of the page before.")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Add the payload, the attempts and the excluded agents.")] = False,
    agent: Annotated[str | None, typer.Option(
        "--agent", help="Only tasks this agent holds or that are directed at it.")] = None,
    unassigned: Annotated[bool, typer.Option(
        "--unassigned", help="Only tasks directed at no agent (open to any of their queue's).")] = False,
    watch_: Annotated[bool, typer.Option(
        "--watch", help="The queue view (place, effective priority, estimated start and "
        "completion), redrawn every --interval seconds; Ctrl-C ends it.")] = False,
    interval: Annotated[float | None, typer.Option(
        help="Seconds between redraws with --watch (default 2).")] = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None,
) -> None:
    """List tasks in the order they will be picked, with when each queued one may start."""
    ws = workspace(home, db, agents)
    if watch_:
        from cli.queue_view import watch_queue

        if verbose or cursor is not None:
            raise BadInput(f"{'--verbose' if verbose else '--cursor'} does not go with --watch")
        tasks.ListRequest(title=title)  # its checks of the text, before the first frame
        warn_if_fleet_unread(ws)
        watch_queue(ws, queue, status, limit, agent, unassigned, 2.0 if interval is None else interval,
                    json_out, title)
        return
    if interval is not None:
        raise BadInput("--interval goes with --watch")
    # a table for people shows TABLE_ROWS unless asked for more (drawing tens of
    # thousands of rows took 20 s); --json gives every one
    shown_at_most = limit if limit is not None or json_out else TABLE_ROWS + 1
    listed = tasks.list_tasks(ws, tasks.ListRequest(queue=queue, title=title, status=status,
                                                    limit=shown_at_most, agent=agent,
                                                    unassigned=unassigned, cursor=cursor))
    warn_if_fleet_unread(ws)  # (after the checks of the input: bad input stays one line)
    if json_out:
        emit_json(listed.to_json())
        return
    found, figures = listed.tasks, listed.figures
    if limit is None and len(found) > TABLE_ROWS:
        found = found[:TABLE_ROWS]
        message(f"(the first {TABLE_ROWS} tasks in pick order: --limit N for more, --json for all)")
    columns = ["id", "queue", "status", "prio", "eff", "waited", "est. start", "agent", "title"]
    dead = any(t.dead_reason for t in found)
    if dead:
        columns.append("why dead")  # e.g. the task it runs after ended dead
    never = any(figures[t.task_id]["unplaceable"] for t in found)
    if never:
        columns.append("never taken")  # no agent of the control file has what it requires
    dues = any(t.due for t in found)
    if dues:
        columns.append("due")
    if verbose:
        columns += ["attempts", "excluded", "payload"]
        shown = queries.small_payloads(ws, found, PAYLOAD_SHOWN)
    now, rows = ws.clock.now(), []
    for t in found:
        pick = figures[t.task_id]
        start = pick["estimated_start"]
        eta = "-" if start is None else "next tick" if from_text(start) <= now else \
            "in " + human_duration((from_text(start) - now).total_seconds())
        # (dead-lettered by the next tick; once ended, `why dead` says it, and its parent may
        # have been requeued and succeeded since)
        doomed = t.doomed_by is not None and t.status not in FINAL_STATUSES
        status = t.status + (" (doomed)" if doomed else "")
        row = [str(t.task_id), t.queue, status, str(t.priority), str(pick["effective_priority"]),
               f"{pick['waited_seconds']:.0f}s", eta, holder_cell(t.agent, t.assignee), t.title]
        if dead:
            row.append(t.dead_reason or "")
        if never:
            row.append(pick["unplaceable"] or "")
        if dues:
            row.append(due_cell(t.due, pick["overdue"], now))
        if verbose:
            row += [f"{t.attempt - t.attempt_floor}/{t.max_attempts}", ", ".join(t.excluded) or "-",
                    summary(shown[t.task_id]) if t.task_id in shown else f"({t.payload_bytes} bytes)"]
        rows.append([literal(cell) for cell in row])
    out = console()  # one line a task: the title (and a payload shown) cut to fit
    out.print(fitted_table(columns, rows, gives_way=("title", "payload"), width=out.width))


def holder_cell(agent: str | None, assignee: str | None) -> str:
    """Who holds the task, or `for A` while it waits for the agent it is directed at."""
    return agent or (f"for {assignee}" if assignee else "-")


TABLE_ROWS = 1000  # rows of `sched tasks`' table without --limit


def due_cell(due: str | None, overdue: bool, now: datetime) -> str:
    """`in 2h`, `OVERDUE by 5m` (an open task past its due time), `-` (no due time)."""
    if due is None:
        return "-"
    seconds = (from_text(due) - now).total_seconds()
    if overdue:
        return f"OVERDUE by {human_duration(-seconds)}"
    return f"in {human_duration(seconds)}" if seconds > 0 else f"was {due}"


PAYLOAD_SHOWN = 200  # bytes: a bigger payload is not read by a listing, only its size shown


def summary(payload: str, width: int = 40) -> str:
    """The payload's JSON (or any text), cut to `width` characters."""
    return payload if len(payload) <= width else payload[:width - 1] + "…"


DATA_WIDTH = 200  # characters of an event's data shown by `show`


def show_command(
    task_id: Annotated[int, typer.Argument(help="Task id.", parser=parse_task_id)],
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """One task: its state, who ran it, its result, and its whole history."""
    detail = tasks.show(workspace(home, db), task_id)
    if json_out:
        emit_json(detail.to_json())
        return
    doc, events = detail.document, detail.events
    out = console()
    for label, value in show_lines(doc):
        out.print(literal((f"{label:>12}", "bold"), "  ", value))
    # a line an event: only its data gives way, cut at its end (and first to DATA_WIDTH:
    # a 1 MiB payload would make a 1 MiB table)
    rows = [[str(rec.seq), rec.recorded_at, rec.type, literal(summary(rec.data, DATA_WIDTH))]
            for rec in events]
    out.print(fitted_table(["seq", "at", "event", "data"], rows, gives_way=("data",), width=out.width))


def show_lines(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The task as labelled lines of text (no Python reprs: JSON for JSON values, words
    for the rest), leaving out what does not apply."""
    def json_text(value: object) -> str:
        return summary(json.dumps(value, ensure_ascii=False, separators=(",", ":")), DATA_WIDTH)

    used = doc["attempt"] - doc["attempt_floor"]
    lines = [("task", f"{doc['task_id']}: {doc['title']}"),
             ("queue", doc["queue"] + (f", directed at {doc['assignee']}" if doc["assignee"] else "")),
             ("status", f"{doc['status']}" + (" (cancel requested)" if doc["cancelling"] else "")
              + (f" (doomed: task {doc['doomed_by']}, which it runs after, did not succeed)"
                 if doc["doomed_by"] is not None and doc["status"] not in FINAL_STATUSES
                 else "")),  # (the next tick dead-letters it)
             ("attempts", f"{used} of {doc['max_attempts']} used ({doc['attempt']} started in all)"),
             ("priority", str(doc["priority"]))]
    if doc["agent"]:
        wrapper = f" (pid {doc['pid']} on {doc['host']})" if doc["pid"] else ""
        lines.append(("held by", doc["agent"] + wrapper))
    if doc["last_agent"]:
        lines.append(("ran on", doc["last_agent"]))
    if doc["progress_percent"] is not None or doc["progress_message"]:
        percent = f"{doc['progress_percent']:g}% " if doc["progress_percent"] is not None else ""
        lines.append(("progress", f"{percent}{doc['progress_message'] or ''} (at {doc['progress_at']})"))
    if doc["status"] == "succeeded":
        lines.append(("result", json_text(doc["result"])))
    lines.append(("payload", json_text(doc["payload"])))
    for label, key in (("last error", "last_error"), ("dead reason", "dead_reason"),
                       ("type", "task_type"), ("key", "idempotency_key"), ("not before", "not_before"),
                       ("due", "due"), ("due missed", "due_missed_at"),
                       ("deadline", "deadline"), ("log", "log_path")):
        if doc[key] is not None and not (key == "not_before" and doc["status"] in FINAL_STATUSES):
            lines.append((label, str(doc[key])))  # (an ended task's `not before` holds nothing back)
    for label, key in (("waits on", "waiting_on"), ("blocks", "blocks"), ("excluded", "excluded"),
                       ("requires", "requires")):
        if doc[key]:
            lines.append((label, ", ".join(map(str, doc[key]))))
    lines += [(label, doc[key]) for label, key in (
        ("submitted", "submitted_at"), ("ready", "ready_at"), ("assigned", "assigned_at"),
        ("started", "started_at"), ("updated", "updated_at")) if doc[key]]
    return lines
