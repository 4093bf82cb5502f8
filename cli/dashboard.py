"""The live dashboard of `sched status --watch`: one snapshot of the projections
(`scheduler.dashboard.snapshot`) rendered with rich. Green is running, yellow waiting,
red failed or dead."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cli.common import human_duration
from cli.text import literal, visible

BAR_WIDTH = 10


def load_bar(load: int, capacity: int) -> Text:
    """`███░░░ 3/5`: the share of the agent's slots held (red when over capacity)."""
    filled = 0 if capacity <= 0 else min(BAR_WIDTH, round(BAR_WIDTH * load / capacity))
    style = "red" if load > capacity else "green" if load else "dim"
    return Text.assemble(("█" * filled, style), ("░" * (BAR_WIDTH - filled), "dim"),
                         f" {load}/{capacity}")


def _count(value: int, style: str) -> Text:
    return Text(str(value), style=style if value else "dim")


def render(doc: dict[str, Any]) -> RenderableType:
    queues = Table("queue", "queued", "assigned", "running", "approval", "blocked", "dead",
                   "succeeded", title="queues", title_justify="left")
    for name, c in doc["queues"].items():
        queues.add_row(literal(name), _count(c["queued"], "yellow"), _count(c["assigned"], "yellow"),
                       _count(c["running"], "green"), _count(c["awaiting_approval"], "yellow"),
                       _count(c["blocked"], "yellow"), _count(c["dead"], "red"),
                       str(c["succeeded"]))
    agents = Table("agent", "type", "load", "free", "current tasks", title="agents",
                   title_justify="left")
    for name, a in doc["agents"].items():
        tasks = ", ".join(f"#{t['task_id']} {t['title']} ({t['status']} {human_duration(t['seconds'])})"
                          for t in a["tasks"]) or "-"
        label = name if a["enabled"] and a["configured"] else f"{name} (off)"
        agents.add_row(literal(label), literal(a["type"]),
                       load_bar(a["assigned"] + a["running"], a["capacity"]), str(a["free"]), literal(tasks))
    recent = Table("task", "queue", "agent", "outcome", "ran", "ago", "detail",
                   title="latest completions and failures", title_justify="left")
    for o in doc["recent"]:
        style = "green" if o["outcome"] == "succeeded" else "red"
        recent.add_row(f"#{o['task_id']}", literal(o["queue"]), literal(o["agent"] or "-"),
                       Text(o["outcome"], style=style), human_duration(o["run_seconds"]),
                       human_duration(o["seconds_ago"]), literal((o["detail"] or "")[:60]))
    hour = doc["last_hour"]
    footer = Text.assemble(
        "last hour: ", (f"{hour['completed']} completed", "green"), ", ",
        (f"{hour['failed']} failed", "red" if hour["failed"] else "dim"),
        f" ({hour['completed']}/h)   last seq {doc['last_seq']}   ")
    if doc["paused"]:
        reason = f" ({doc['paused']['reason']})" if doc["paused"].get("reason") else ""
        footer.append(visible(f"PAUSED by {doc['paused']['by']}{reason}"), style="bold yellow")
    else:
        footer.append("assigning", style="green")
    for queue, gate in doc["gates_closed"].items():
        footer.append(visible(f"   gate of {queue} closed: {gate['detail']}"), style="yellow")
    return Group(queues, agents, recent, footer)
