"""What the overview page shows, gathered from the functions behind `sched status --json`
and `sched health --json`, plus the tasks each agent holds now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projections.views import TaskView
from scheduler import queries
from scheduler.workspace import Workspace

HELD_STATUSES = ("assigned", "running")
TASKS_SHOWN_PER_AGENT = 10  # the rest is a count: a page stays small under a wide agent


@dataclass(frozen=True)
class AgentRow:
    name: str
    doc: dict[str, Any]  # the agent's document in the status
    load: int  # assigned + running
    bar_max: int  # the meter's maximum: the capacity (at least the load, at least 1)
    tasks: list[TaskView]  # what it holds now, the oldest first, at most TASKS_SHOWN_PER_AGENT
    more: int  # how many more it holds


@dataclass(frozen=True)
class Overview:
    status: dict[str, Any]  # `sched status --json`
    health: dict[str, Any]  # `sched health --json`
    agents: list[AgentRow]
    daemon: dict[str, Any] | None  # the health checks saying whether the daemon lives
    last_tick: dict[str, Any] | None


def held_tasks(ws: Workspace) -> dict[str, list[TaskView]]:
    """The assigned and running tasks of each agent, by task id."""
    with ws.read() as (_log, views):
        held = [t for s in HELD_STATUSES for t in views.tasks(status=s)]
    by_agent: dict[str, list[TaskView]] = {}
    for task in sorted(held, key=lambda t: t.task_id):
        if task.agent is not None:
            by_agent.setdefault(task.agent, []).append(task)
    return by_agent


def overview(ws: Workspace) -> Overview:
    from scheduler.health import health

    status = queries.status(ws)
    report = health(ws)
    held = held_tasks(ws)
    rows = []
    for name, doc in status["agents"].items():
        load = doc["assigned"] + doc["running"]
        tasks = held.get(name, [])
        rows.append(AgentRow(name, doc, load, max(doc["capacity"], load, 1),
                             tasks[:TASKS_SHOWN_PER_AGENT], max(0, len(tasks) - TASKS_SHOWN_PER_AGENT)))
    checks = {c["name"]: c for c in report["checks"]}
    return Overview(status, report, rows, checks.get("daemon"), checks.get("last_tick"))
