"""The live dashboard of `sched status --watch`: one snapshot of the projections
(`scheduler.reads.dashboard.snapshot`) rendered with rich. Green is running, yellow waiting,
red failed or dead."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cli.common import human_duration
from cli.text import fitted_table, literal, visible

BAR_WIDTH = 10


def load_bar(load: int, capacity: int) -> Text:
    """`███░░░ 3/5`: the share of the agent's slots held (red when over capacity)."""
    filled = 0 if capacity <= 0 else min(BAR_WIDTH, round(BAR_WIDTH * load / capacity))
    style = "red" if load > capacity else "green" if load else "dim"
    return Text.assemble(("█" * filled, style), ("░" * (BAR_WIDTH - filled), "dim"),
                         f" {load}/{capacity}")


def _count(value: int, style: str) -> Text:
    return Text(str(value), style=style if value else "dim")


Cell = str | Text


def _table(headers: tuple[str, ...], rows: list[list[Cell]], title: str) -> Table:
    """A `fitted_table` whose last column gives way when the terminal is narrow."""
    return fitted_table(headers, rows, gives_way=headers[-1:], title=title)


def _task_line(t: dict[str, Any]) -> str:
    progress = ""
    if t.get("progress_percent") is not None or t.get("progress_message"):
        percent = f"{t['progress_percent']:g}%" if t.get("progress_percent") is not None else ""
        progress = " " + " ".join(p for p in (percent, t.get("progress_message") or "") if p)
    return f"#{t['task_id']} {t['title']} ({t['status']} {human_duration(t['seconds'])}{progress})"


def footer(doc: dict[str, Any]) -> Text:
    """Two lines: the last hour and the pause state; the last tick and the daemon."""
    hour = doc["last_hour"]
    text = Text.assemble(
        "last hour: ", (f"{hour['completed']} completed", "green"), ", ",
        (f"{hour['failed']} failed", "red" if hour["failed"] else "dim"),
        f"   last seq {doc['last_seq']}   ")
    if doc["paused"]:
        reason = f" ({doc['paused']['reason']})" if doc["paused"].get("reason") else ""
        text.append(visible(f"PAUSED by {doc['paused']['by']}{reason}"), style="bold yellow")
    else:
        text.append("assigning", style="green")
    for queue, gate in doc["gates_closed"].items():
        text.append(visible(f"   gate of {queue} closed: {gate['detail']}"), style="yellow")
    overdue = doc.get("overdue") or {}
    if overdue.get("count"):
        text.append(f"   OVERDUE: {overdue['count']} open task(s) past their due time", style="bold red")
    tick, daemon = doc.get("last_tick"), doc.get("daemon") or {}
    text.append("\nlast tick: ")
    if tick is None:
        text.append("never", style="red")
    else:
        text.append(visible(f"{human_duration(tick['seconds_ago'])} ago on {tick['host']} "
                            f"(pid {tick['pid']})"))
    text.append("   daemon: ")
    if daemon.get("alive"):
        text.append(visible(f"alive on {daemon['host']} (pid {daemon['pid']}) since {daemon['since']}"),
                    style="green")
    else:
        seen = (f" ({daemon['last_host']} pid {daemon['last_pid']} last seen {daemon['last_seen']}, "
                "no stop recorded)" if daemon.get("last_seen") else "")
        text.append(visible(f"none running{seen}"), style="yellow")
    return text


FOOTER_LINES = 2
TABLE_LINES = 3  # title, header and rule of a compact table


def _lines(shown: int, total: int) -> int:
    """Lines a table takes with `shown` of its `total` rows: none when it is left out
    (rows to show, none shown), one more for the caption when it is cut short."""
    if shown == 0 and total > 0:
        return 0
    return TABLE_LINES + shown + (shown < total)


def _fit(counts: list[int], room: int) -> list[int]:
    """Rows to show of each table (in order: queues, agents, recent) so that all fit in
    `room` lines: the latest outcomes give way first, then the agents, then the queues."""
    shown = list(counts)
    for index in (2, 1, 0):
        while shown[index] and sum(map(_lines, shown, counts)) > room:
            shown[index] -= 1
    return shown


def _agent_state(agent: dict[str, Any]) -> str:
    """Empty for an agent in service; else drained, evicted or off."""
    return agent.get("out_of_service") or ("" if agent["enabled"] and agent["configured"] else "off")


def render(doc: dict[str, Any], height: int | None = None) -> RenderableType:
    """The dashboard; with `height` (the terminal's lines), the tables are cut so that
    the footer always shows."""
    agents_rows = list(doc["agents"].items())
    counts = [len(doc["queues"]), len(agents_rows), len(doc["recent"])]
    shown = counts if height is None else _fit(counts, max(height - FOOTER_LINES - 1, 0))
    queues = _table(("queue", "queued", "assigned", "running", "approval", "blocked", "dead", "succeeded"), [
        [literal(name), _count(c["queued"], "yellow"), _count(c["assigned"], "yellow"),
         _count(c["running"], "green"), _count(c["awaiting_approval"], "yellow"),
         _count(c["blocked"], "yellow"), _count(c["dead"], "red"), str(c["succeeded"])]
        for name, c in list(doc["queues"].items())[:shown[0]]], title="queues")
    agents = _table(("agent", "type", "load", "free", "current tasks"), [
        [literal(name + (f" ({state})" if (state := _agent_state(a)) else "")), literal(a["type"]),
         load_bar(a["assigned"] + a["running"], a["capacity"]), str(a["free"]),
         literal(", ".join(_task_line(t) for t in a["tasks"]) or "-")]
        for name, a in agents_rows[:shown[1]]], title="agents")
    recent = _table(("task", "queue", "agent", "outcome", "start", "ran", "ago", "detail"), [
        [f"#{o['task_id']}", literal(o["queue"]), literal(o["agent"] or "-"),
         Text(o["outcome"], style="green" if o["outcome"] == "succeeded" else "red"),
         human_duration(o["start_seconds"]), human_duration(o["run_seconds"]),
         human_duration(o["seconds_ago"]),
         literal((o["detail"] or "")[:60])]
        for o in doc["recent"][:shown[2]]], title="latest completions and failures")
    parts: list[RenderableType] = []
    for table, n, total in ((queues, shown[0], counts[0]), (agents, shown[1], counts[1]),
                            (recent, shown[2], counts[2])):
        if n < total:
            table.caption = f"... and {total - n} more"
            table.caption_justify = "left"
        if _lines(n, total):
            parts.append(table)
    return Group(*parts, footer(doc))
