"""What the overview page shows: the document of `sched status --watch` (the status of
`sched status --json`, with the tasks each agent holds, the latest outcomes, the last
tick and the daemon, read in one snapshot) and the report of `sched health --json`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.workspace import Workspace

TASKS_SHOWN_PER_AGENT = 10  # the rest is a count: a page stays small under a wide agent


@dataclass(frozen=True)
class AgentRow:
    name: str
    doc: dict[str, Any]  # the agent's document in the status (with `tasks`: what it holds)
    load: int  # assigned + running
    bar_max: int  # the meter's maximum: the capacity (at least the load, at least 1)
    tasks: list[dict[str, Any]]  # what it holds now, at most TASKS_SHOWN_PER_AGENT
    more: int  # how many more it holds


@dataclass(frozen=True)
class Overview:
    status: dict[str, Any]  # `scheduler.reads.dashboard.snapshot`: the status and more
    health: dict[str, Any]  # `sched health --json`
    agents: list[AgentRow]
    daemon: dict[str, Any] | None  # the health checks saying whether the daemon lives
    last_tick: dict[str, Any] | None


def overview(ws: Workspace) -> Overview:
    from scheduler.reads.dashboard import snapshot
    from scheduler.reads.health import health

    status = snapshot(ws)
    report = health(ws)
    rows = []
    for name, doc in status["agents"].items():
        load = doc["assigned"] + doc["running"]
        tasks = doc["tasks"]
        rows.append(AgentRow(name, doc, load, max(doc["capacity"], load, 1),
                             tasks[:TASKS_SHOWN_PER_AGENT], max(0, len(tasks) - TASKS_SHOWN_PER_AGENT)))
    checks = {c["name"]: c for c in report["checks"]}
    return Overview(status, report, rows, checks.get("daemon"), checks.get("last_tick"))
