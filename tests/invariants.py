"""Invariants checked from the raw event log, with code that shares nothing with
the projections (so a bug in a fold cannot hide itself)."""

from __future__ import annotations

import json


def check_log(records) -> None:
    """Invariants from the raw events: one holder per task, no agent over capacity
    when given work, attempts within the maximum, starts only by the holder, and no
    retry given to an agent that failed the task while another enabled agent of its
    type exists (failover)."""
    capacity: dict[str, int] = {}
    enabled_of_type: dict[str, set[str]] = {}
    queue_of: dict[int, str] = {}
    directed: set[int] = set()
    excluded: dict[int, set[str]] = {}
    holder: dict[int, str] = {}
    max_attempts: dict[int, int] = {}
    floor: dict[int, int] = {}  # attempts before an operator's requeue
    last_attempt: dict[int, int] = {}
    for rec in records:
        data = json.loads(rec.data)
        kind = rec.type
        if kind == "AgentsConfigured":
            capacity = {a["name"]: a["capacity"] if a["enabled"] else 0 for a in data["agents"]}
            enabled_of_type = {}
            for a in data["agents"]:
                if a["enabled"]:
                    enabled_of_type.setdefault(a["type"], set()).add(a["name"])
        elif kind == "TaskSubmitted":
            max_attempts[data["task_id"]] = data["max_attempts"]
            queue_of[data["task_id"]] = data["queue"]
            if data["assignee"]:
                directed.add(data["task_id"])
        elif kind == "TaskAssigned":
            task, agent = data["task_id"], data["agent"]
            assert task not in holder, f"seq {rec.seq}: task {task} assigned while held by {holder[task]}"
            load = sum(1 for a in holder.values() if a == agent)
            assert load < capacity.get(agent, 0), f"seq {rec.seq}: {agent} over capacity"
            failed_here = excluded.get(task, set())
            others = enabled_of_type.get(queue_of[task], set()) - failed_here
            assert task in directed or agent not in failed_here or not others, \
                f"seq {rec.seq}: task {task} retried on {agent}, which failed it, while {others} exist"
            holder[task] = agent
        elif kind == "TaskStarted":
            task = data["task_id"]
            assert holder.get(task) == data["agent"], f"seq {rec.seq}: started by a non-holder"
            assert data["attempt"] - floor.get(task, 0) <= max_attempts[task], \
                f"seq {rec.seq}: too many attempts"
            last_attempt[task] = data["attempt"]
        elif kind in {"TaskSucceeded", "TaskFailed", "LeaseExpired", "TaskRequeued", "TaskDeadLettered",
                      "TaskCancelled"}:
            holder.pop(data["task_id"], None)
            if kind in {"TaskFailed", "LeaseExpired"}:
                excluded.setdefault(data["task_id"], set()).add(data["agent"])
            if kind == "TaskRequeued" and data["reason"] == "operator":
                floor[data["task_id"]] = last_attempt.get(data["task_id"], 0)
                excluded.pop(data["task_id"], None)
