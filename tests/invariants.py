"""Invariants checked from the raw event log, with code that shares nothing with
the projections (so a bug in a fold cannot hide itself)."""

from __future__ import annotations

import json

# what a task may be in, as far as these checks care
WAITING, ASSIGNED, RUNNING, FAILED = "waiting", "assigned", "running", "failed"
SUCCEEDED, CANCELLED, DEAD = "succeeded", "cancelled", "dead"
ENDED = {SUCCEEDED, CANCELLED, DEAD}

# the statuses each task event may follow (an event from any other is a fault)
FOLLOWS: dict[str, set[str]] = {
    "TaskApproved": {WAITING},
    "TaskRejected": {WAITING},
    "TaskAssigned": {WAITING},
    "TaskStarted": {ASSIGNED},
    "LeaseRenewed": {RUNNING},
    "TaskProgressed": {RUNNING},
    "TaskSucceeded": {RUNNING},
    "TaskFailed": {RUNNING},
    "LeaseExpired": {RUNNING},
    "TaskRequeued": {FAILED, ASSIGNED},  # an operator's: {DEAD, FAILED}, below
    "TaskDeadLettered": {FAILED, WAITING},  # (waiting: one that runs after a task that died)
    "TaskCancelRequested": {WAITING, ASSIGNED, RUNNING},
    "TaskCancelled": {WAITING, ASSIGNED, RUNNING, FAILED},
    "TaskDueMissed": {WAITING, ASSIGNED, RUNNING, FAILED},
}
# failures after which the agent is not passed over for the task (nothing it ran failed)
NOT_THE_AGENTS = {"undelivered", "interrupted"}


def check_log(records) -> dict[str, dict[str, int]]:
    """Invariants from the raw events, over the whole history:

    - each task moves only along its lifecycle: assigned only while waiting (so never
      while held, and never again once it succeeded or was cancelled; a dead one only
      after an operator's requeue), started once per assignment by its holder, each
      attempt numbered above the last and within the maximum, ended once;
    - no agent over capacity when given work, none given work out of service (drained
      or evicted), none given a task of another queue or one directed at another agent;
    - no retry given to an agent that failed the task while another enabled agent of
      its type exists (failover).

    Returns what each agent holds at the end, from the log alone: {agent: {"assigned":
    N, "running": M}}, for a check of the projection's load."""
    capacity: dict[str, int] = {}
    type_of: dict[str, str] = {}
    enabled_of_type: dict[str, set[str]] = {}
    out_of_service: set[str] = set()
    status: dict[int, str] = {}
    queue_of: dict[int, str] = {}
    assignee: dict[int, str | None] = {}
    excluded: dict[int, set[str]] = {}
    holder: dict[int, str] = {}
    max_attempts: dict[int, int] = {}
    floor: dict[int, int] = {}  # attempts before an operator's requeue
    last_attempt: dict[int, int] = {}
    for rec in records:
        data = json.loads(rec.data)
        kind = rec.type
        where = f"seq {rec.seq} ({kind})"
        if kind == "AgentsConfigured":
            capacity = {a["name"]: a["capacity"] if a["enabled"] else 0 for a in data["agents"]}
            type_of = {a["name"]: a["type"] for a in data["agents"]}
            enabled_of_type = {}
            for a in data["agents"]:
                if a["enabled"]:
                    enabled_of_type.setdefault(a["type"], set()).add(a["name"])
            continue
        if kind in ("AgentDrained", "AgentEvicted"):
            out_of_service.add(data["agent"])
            continue
        if kind == "AgentRestored":
            out_of_service.discard(data["agent"])
            continue
        task = data.get("task_id")
        if task is None:
            continue
        if kind == "TaskSubmitted":
            assert task not in status, f"{where}: task {task} submitted twice"
            status[task] = WAITING
            max_attempts[task] = data["max_attempts"]
            queue_of[task] = data["queue"]
            assignee[task] = data["assignee"]
            continue
        now = status.get(task)
        assert now is not None, f"{where}: task {task} was never submitted"
        allowed = {DEAD, FAILED} if kind == "TaskRequeued" and data["reason"] == "operator" \
            else FOLLOWS.get(kind, {WAITING, ASSIGNED, RUNNING, FAILED})
        assert now in allowed, f"{where}: task {task} is {now}"
        if kind == "TaskAssigned":
            agent = data["agent"]
            load = sum(1 for a in holder.values() if a == agent)
            assert load < capacity.get(agent, 0), f"{where}: {agent} over capacity"
            assert agent not in out_of_service, f"{where}: {agent} is out of service"
            assert type_of.get(agent) == queue_of[task], \
                f"{where}: {agent} ({type_of.get(agent)}) given a task of queue {queue_of[task]}"
            assert assignee[task] in (None, agent), f"{where}: task {task} is directed at {assignee[task]}"
            failed_here = excluded.get(task, set())
            others = {a for a in enabled_of_type.get(queue_of[task], set()) - failed_here - out_of_service
                      if capacity.get(a, 0) > 0}
            assert assignee[task] is not None or agent not in failed_here or not others, \
                f"{where}: task {task} retried on {agent}, which failed it, while {others} exist"
            holder[task] = agent
            status[task] = ASSIGNED
        elif kind == "TaskStarted":
            assert holder.get(task) == data["agent"], f"{where}: started by a non-holder"
            assert data["attempt"] > last_attempt.get(task, 0), f"{where}: attempt {data['attempt']} again"
            assert data["attempt"] - floor.get(task, 0) <= max_attempts[task], f"{where}: too many attempts"
            last_attempt[task] = data["attempt"]
            status[task] = RUNNING
        elif kind in ("TaskSucceeded", "TaskFailed", "LeaseExpired", "LeaseRenewed"):
            assert data["attempt"] == last_attempt[task], f"{where}: not the current attempt"
            if kind == "TaskSucceeded":
                status[task] = SUCCEEDED
            elif kind != "LeaseRenewed":
                status[task] = FAILED
                if data.get("reason") not in NOT_THE_AGENTS:
                    excluded.setdefault(task, set()).add(data["agent"])
        elif kind == "TaskRequeued":
            if data["reason"] == "not_started" and now == ASSIGNED:  # passed over, as one that failed
                excluded.setdefault(task, set()).add(holder[task])
            if data["reason"] == "operator":
                floor[task] = last_attempt.get(task, 0)
                excluded.pop(task, None)
            status[task] = WAITING
        elif kind in ("TaskDeadLettered", "TaskCancelled", "TaskRejected"):
            status[task] = DEAD if kind == "TaskDeadLettered" else CANCELLED
        if status[task] not in (ASSIGNED, RUNNING):
            holder.pop(task, None)
    held: dict[str, dict[str, int]] = {}
    for task, agent in holder.items():
        counts = held.setdefault(agent, {"assigned": 0, "running": 0})
        counts["assigned" if status[task] == ASSIGNED else "running"] += 1
    return held
