"""`sched tasks --watch`: the queue view, redrawn until Ctrl-C. The figures come from
`queries.task_listing` (places and estimates are pure functions in
`scheduler.decisions.estimates`); this module only repeats, draws and prints."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cli.common import check_interval, console, emit_json, human_duration, refresh
from cli.text import fitted_table, literal
from eventlog.timeutil import from_text, to_text
from projections.views import OPEN_STATUSES
from scheduler.reads import queries
from scheduler.workspace import Workspace

if TYPE_CHECKING:
    from rich.table import Table

sleep = time.sleep  # (tests replace it: a watch is tested without waiting)


def queue_document(ws: Workspace, queue: str | None, status: str | None, limit: int | None,
                   agent: str | None, unassigned: bool, title: str | None = None) -> dict[str, Any]:
    """One frame: the tasks (open ones unless `status` says otherwise; with `title`, those
    whose title holds it) in pick order, each with its figures, and the moment it was taken."""
    statuses = list(OPEN_STATUSES) if status is None else [status]
    found, figures = queries.task_listing(ws, queue, statuses, limit, agent, unassigned, title)
    return {"at": to_text(ws.clock.now()),
            "tasks": [queries.task_dict(t) | figures[t.task_id] for t in found]}


def when(text: str | None, now: datetime, soon: str) -> str:
    """`soon` (at or before now), `in 20m`, or `-` (not known)."""
    if text is None:
        return "-"
    seconds = (from_text(text) - now).total_seconds()
    return soon if seconds <= 0 else f"in {human_duration(seconds)}"


def render(doc: dict[str, Any], width: int | None = None) -> Table:
    """The queue view of one frame, as a table (`width`: the terminal's, see `fitted_table`)."""
    now, rows = from_text(doc["at"]), []
    for t in doc["tasks"]:
        start = "running" if t["status"] == "running" else when(t["estimated_start"], now, "next tick")
        done = when(t["estimated_completion"], now, "any time now")
        late = "(OVERDUE) " if t["overdue"] else ""  # first: a title cut to fit keeps it
        row = ["-" if t["position"] is None else str(t["position"]), str(t["task_id"]), t["queue"],
               t["status"], str(t["priority"]), str(t["effective_priority"]),
               t["agent"] or t["assignee"] or "-", start, done, late + t["title"]]
        rows.append([literal(cell) for cell in row])
    return fitted_table(("pos", "id", "queue", "status", "prio", "eff", "agent", "est. start", "est. done",
                         "title"), rows, gives_way=("title",), width=width,
                        title=f"queue at {doc['at']} ({len(doc['tasks'])} tasks)")


def watch_queue(ws: Workspace, queue: str | None, status: str | None, limit: int | None,
                agent: str | None, unassigned: bool, interval: float, json_out: bool,
                title: str | None = None) -> None:
    """Redraw the queue view every `interval` seconds until Ctrl-C; with --json, print
    one frame per line instead (JSON lines, as `status --watch --json`)."""
    check_interval(interval)

    def frame() -> dict[str, Any]:
        return queue_document(ws, queue, status, limit, agent, unassigned, title)

    first = frame()  # bad input (an unknown agent, status) ends it here, before any output
    frames = iter([first])

    def next_frame() -> dict[str, Any]:
        return next(frames, None) or frame()

    try:
        if json_out:
            def print_line() -> None:
                emit_json(next_frame())
                sys.stdout.flush()

            refresh(print_line, interval, lambda s: sleep(s))
            return
        from rich.live import Live

        out = console()
        with Live(render(first, out.width), console=out, auto_refresh=False,
                  vertical_overflow="crop") as live:
            refresh(lambda: live.update(render(next_frame(), out.width), refresh=True), interval,
                    lambda s: sleep(s))
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends: exit 0
