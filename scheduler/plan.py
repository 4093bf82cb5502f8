"""Choosing work: the pure decision of which queued task goes to which agent.

`plan` touches no database, clock or process. Its cost grows with the number of
candidates it is given and the agents of their type; the tick hands it only the top
candidates of each queue (see `scheduler.tick`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from eventlog.events import TaskAssigned
from eventlog.timeutil import from_text, to_text
from projections.views import AgentView, TaskView


@dataclass(frozen=True)
class PlanPolicy:
    """The knobs of the decision."""

    start_deadline_seconds: float = 120.0
    # queue -> (age_boost_seconds, age_boost_max); other queues use default_ageing
    ageing: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    default_ageing: tuple[float, int] = (0.0, 0)

    def ageing_of(self, queue: str) -> tuple[float, int]:
        return self.ageing.get(queue, self.default_ageing)


def age_boost(task: TaskView, now: datetime, boost_seconds: float, cap: int) -> int:
    """Priority points a task has gained by waiting since it was submitted."""
    if boost_seconds <= 0 or cap <= 0:
        return 0
    waited = (now - from_text(task.submitted_at)).total_seconds()
    return max(0, min(cap, int(waited // boost_seconds)))


def effective_priority(task: TaskView, now: datetime, policy: PlanPolicy) -> int:
    """Priority plus one point per `age_boost_seconds` waited, at most `age_boost_max`."""
    return task.priority + age_boost(task, now, *policy.ageing_of(task.queue))


def pick_order(task: TaskView, now: datetime, policy: PlanPolicy) -> tuple[int, int, int]:
    """Sort key: higher effective priority first, then the task that unblocks more
    others, then earlier submission."""
    return (-effective_priority(task, now, policy), -len(task.blocks), task.submitted_seq)


def is_ready(task: TaskView, now_text: str) -> bool:
    return task.status == "queued" and (task.not_before is None or task.not_before <= now_text)


@dataclass
class _Slot:
    name: str
    free: int
    load: int


Records = Mapping[tuple[str, str], tuple[int, int]]  # (agent, task type) -> (succeeded, failed)


def success_rate(records: Records, agent: str, task_type: str | None) -> float:
    """An agent's smoothed success rate at a type of task: (s + 1) / (s + f + 2), so an
    agent with no record counts as even (0.5)."""
    if task_type is None:
        return 0.5
    succeeded, failed = records.get((agent, task_type), (0, 0))
    return (succeeded + 1) / (succeeded + failed + 2)


def plan(agents: Iterable[AgentView], tasks: Iterable[TaskView], now: datetime,
         policy: PlanPolicy = PlanPolicy(), records: Records | None = None) -> list[TaskAssigned]:
    """Assign ready tasks, best first, each to the eligible agent of its queue's type
    with the most free slots (ties: the best success record at the task's type, then
    the lowest load, then the name)."""
    now_text = to_text(now)
    start_by = now + timedelta(seconds=policy.start_deadline_seconds)
    pools: dict[str, list[_Slot]] = {}
    active: dict[str, set[str]] = {}  # type -> enabled agent names, busy or not
    for agent in agents:
        if agent.enabled and agent.configured:
            active.setdefault(agent.type, set()).add(agent.name)
            if agent.free > 0:
                pools.setdefault(agent.type, []).append(_Slot(agent.name, agent.free, agent.load))
    decisions = []
    ready = (t for t in tasks if is_ready(t, now_text))
    for task in sorted(ready, key=lambda t: pick_order(t, now, policy)):
        slot = _choose(pools.get(task.queue, ()), task, active.get(task.queue, set()), records or {})
        if slot is None:
            continue
        slot.free -= 1
        slot.load += 1
        decisions.append(TaskAssigned(task_id=task.task_id, agent=slot.name,
                                      attempt=task.attempt + 1, start_by=start_by))
    return decisions


def _choose(pool: Sequence[_Slot], task: TaskView, active: set[str], records: Records) -> _Slot | None:
    if task.assignee is not None:
        eligible = [s for s in pool if s.name == task.assignee]
    elif active - set(task.excluded):
        # agents that failed this task are skipped while another agent of the type exists
        eligible = [s for s in pool if s.name not in task.excluded]
    else:
        eligible = list(pool)
    eligible = [s for s in eligible if s.free > 0]
    if not eligible:
        return None
    return min(eligible, key=lambda s: (-s.free, -success_rate(records, s.name, task.task_type),
                                        s.load, s.name))
