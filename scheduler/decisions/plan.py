"""Choosing work: the pure decision of which queued task goes to which agent.

`plan` touches no database, clock or process. Its cost grows with the number of
candidates it is given and the agents of their type; the tick hands it only the top
candidates of each queue (see `scheduler.tick`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from eventlog.timeutil import from_text, to_text
from projections.views import AgentView, TaskView
from scheduler.decisions.hours import is_available
from scheduler.decisions.ranking import Slot, Standing, asks_nothing, rank

if TYPE_CHECKING:  # `tasks` orders with this module without loading the event models
    from eventlog.events import TaskAssigned


@dataclass(frozen=True)
class PlanPolicy:
    """The knobs of the decision."""

    start_deadline_seconds: float = 120.0
    # queue -> (age_boost_seconds, age_boost_max); other queues use default_ageing
    ageing: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    default_ageing: tuple[float, int] = (0.0, 0)
    # queue -> (due_boost_seconds, due_boost_max); other queues use default_due_boost
    due_boost: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    default_due_boost: tuple[float, int] = (0.0, 0)
    # queue -> hash of the settings that decide for it, recorded with each assignment;
    # other queues have default_fingerprint
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    default_fingerprint: str = ""
    config_hash: str = ""  # of the agent control file in force
    claimant: str | None = None  # a pull worker claiming: only it takes work in this plan

    def ageing_of(self, queue: str) -> tuple[float, int]:
        return self.ageing.get(queue, self.default_ageing)

    def due_boost_of(self, queue: str) -> tuple[float, int]:
        return self.due_boost.get(queue, self.default_due_boost)

    def fingerprint_of(self, queue: str) -> str:
        return self.fingerprints.get(queue, self.default_fingerprint)


def waited_seconds(task: TaskView, now: datetime) -> float:
    """How long the task has waited to start since it last became ready to run: up to
    `now` while it is queued, up to its latest assignment once it has one (so the wait
    of a task that ran stops growing), up to its last change if it ended unassigned;
    0 while it is not ready (blocked, awaiting approval, not_before still ahead)."""
    if task.ready_at is None:
        return 0.0
    if task.status == "queued":
        end = now
    elif task.assigned_at is not None and task.assigned_at >= task.ready_at:
        end = from_text(task.assigned_at)
    else:
        end = from_text(task.updated_at)
    return max(0.0, (end - from_text(task.ready_at)).total_seconds())


def age_boost(task: TaskView, now: datetime, boost_seconds: float, cap: int) -> int:
    """Priority points a task has gained by waiting since it became ready to run
    (not since it was submitted: time blocked, awaiting approval or delayed does not
    count)."""
    if boost_seconds <= 0 or cap <= 0:
        return 0
    return max(0, min(cap, int(waited_seconds(task, now) // boost_seconds)))


def due_boost(task: TaskView, now: datetime, window_seconds: float, cap: int) -> int:
    """Priority points a task with a due time has gained as that time nears: none until
    `window_seconds` before it, then rising in a straight line, one point per
    `window_seconds / cap`, to `cap` at the due time; `cap` while overdue. In points:
    min(cap, floor(cap * (window - left) / window)) for `left` seconds to go, 0 <= left
    < window. A task that has ended keeps the figure it reached (the curve is about
    ordering what waits)."""
    return due_points(task.due, now, window_seconds, cap)


def due_points(due: str | None, now: datetime, window_seconds: float, cap: int) -> int:
    """`due_boost` of a task due at `due` (the earlier the due time, the more points)."""
    if due is None or window_seconds <= 0 or cap <= 0:
        return 0
    left = (from_text(due) - now).total_seconds()
    if left >= window_seconds:
        return 0
    if left <= 0:
        return cap
    return max(0, min(cap, int(cap * (window_seconds - left) // window_seconds)))


def due_cutoff(now: datetime, window_seconds: float, cap: int, points: int) -> datetime:
    """The latest due time at which a task has gained at least `points` (1..cap) due
    points at `now`: the inverse of `due_boost`, for the tick's candidate bands."""
    return now + timedelta(seconds=window_seconds * (1 - points / cap))


def effective_priority(task: TaskView, now: datetime, policy: PlanPolicy) -> int:
    """Priority plus one point per `age_boost_seconds` waited (at most `age_boost_max`)
    plus the due boost (`due_boost`, at most `due_boost_max`)."""
    return (task.priority + age_boost(task, now, *policy.ageing_of(task.queue))
            + due_boost(task, now, *policy.due_boost_of(task.queue)))


def most_gained(now: datetime, policy: PlanPolicy, queue: str | None, earliest_ready: str | None,
                earliest_due: str | None) -> int:
    """The most priority points any of some tasks (of `queue`, or of any queue) can have
    gained, when the earliest of them became ready at `earliest_ready` and the earliest
    due is `earliest_due`: a task waits no longer than since then, and is due no sooner.
    A listing that read the best tasks by base priority down to base P has them all in
    effective order once P plus this is below the last one it keeps."""
    if queue is None:
        ageing = [*policy.ageing.values(), policy.default_ageing]
        due = [*policy.due_boost.values(), policy.default_due_boost]
    else:
        ageing, due = [policy.ageing_of(queue)], [policy.due_boost_of(queue)]
    waited = 0.0 if earliest_ready is None else max(0.0, (now - from_text(earliest_ready)).total_seconds())
    aged = max((min(cap, int(waited // boost)) for boost, cap in ageing if boost > 0 and cap > 0), default=0)
    return aged + max(due_points(earliest_due, now, window, cap) for window, cap in due)


def pick_order(task: TaskView, now: datetime, policy: PlanPolicy) -> tuple[int, int, int]:
    """Sort key: higher effective priority first, then the task that unblocks more
    others, then earlier submission."""
    return (-effective_priority(task, now, policy), -len(task.blocks), task.submitted_seq)


def age_bands(now: datetime, policy: PlanPolicy, queue: str, oldest: str | None) -> list[str | None]:
    """Ready-since cutoffs, one per age boost a task can have (up to what the oldest
    queued task has gained): a task among the best of its band by base priority is a
    candidate. The best by effective priority are then all among the union: a task
    that gained b points competes only with tasks that gained at least as many, and
    those rank above it if their base priority does."""
    boost, cap = policy.ageing_of(queue)
    if boost <= 0 or oldest is None:
        return [None]
    reached = min(cap, int((now - from_text(oldest)).total_seconds() // boost))
    return [None, *(to_text(now - timedelta(seconds=b * boost)) for b in range(1, reached + 1))]


DUE_SLACK = timedelta(milliseconds=1)  # a band's cutoff errs towards one task too many


def due_bands(now: datetime, policy: PlanPolicy, queue: str, earliest: str | None) -> list[str | None]:
    """Due-by cutoffs, one per due boost a task can have (up to what the queued task due
    first has gained): the same argument as `age_bands`, for the due boost. With both, a
    task's band is a pair (age points, due points), and the tick reads every pair."""
    window, cap = policy.due_boost_of(queue)
    if window <= 0 or cap <= 0 or earliest is None:
        return [None]
    cutoffs: list[str | None] = [None]
    for points in range(1, cap + 1):
        cutoff = due_cutoff(now, window, cap, points)
        if from_text(earliest) > cutoff + DUE_SLACK:
            break
        cutoffs.append(to_text(cutoff + DUE_SLACK))
    return cutoffs


def is_ready(task: TaskView, now_text: str) -> bool:
    return task.status == "queued" and (task.not_before is None or task.not_before <= now_text)


DECISION_LIST_CAP = 8  # candidates and passed-over agents recorded per assignment


Records = Mapping[tuple[str, str], tuple[int, int]]  # (agent, task type) -> (succeeded, failed)


def success_rate(records: Records, agent: str, task_type: str | None) -> float:
    """An agent's smoothed success rate at a type of task: (s + 1) / (s + f + 2), so an
    agent with no record counts as even (0.5)."""
    if task_type is None:
        return 0.5
    succeeded, failed = records.get((agent, task_type), (0, 0))
    return (succeeded + 1) / (succeeded + failed + 2)


def plan(agents: Iterable[AgentView], tasks: Iterable[TaskView], now: datetime,
         policy: PlanPolicy = PlanPolicy(), records: Records | None = None, *,
         explain: bool = True) -> list[TaskAssigned]:
    """Assign ready tasks, best first, each to the eligible agent of its queue's type
    with the most free slots (ties: the highest weight, then the best success record
    at the task's type, then the lowest load, then the name). Eligible: it has every
    capability the task requires and `now` is within its working hours. `explain=False`
    leaves out the recorded decision (`sched simulate` needs only who gets what, a
    hundred thousand times)."""
    from eventlog.events import AssignmentDecision, CandidateAgent, PassedOverAgent, TaskAssigned

    # the parts of the decisions, each built once: from one decision to the next most
    # candidates and passed-over agents are the same (only the agent that took the last
    # task changed), and a part given built is not validated again
    candidates_made: dict[tuple[str, int, int, float, float], CandidateAgent] = {}
    passed_made: dict[tuple[str, str], PassedOverAgent] = {}

    def candidate(slot: Slot, success_rate: float) -> CandidateAgent:
        key = (slot.name, slot.free, slot.load, success_rate, slot.weight)
        if (made := candidates_made.get(key)) is None:
            made = candidates_made[key] = CandidateAgent(agent=slot.name, free=slot.free, load=slot.load,
                                                         success_rate=success_rate, weight=slot.weight)
        return made

    def passed(name: str, why: str) -> PassedOverAgent:
        if (made := passed_made.get((name, why))) is None:
            made = passed_made[name, why] = PassedOverAgent(agent=name, why=why)
        return made

    now_text = to_text(now)
    start_by = now + timedelta(seconds=policy.start_deadline_seconds)
    records = records or {}
    pools: dict[str, list[Slot]] = {}
    off: dict[str, list[str]] = {}  # type -> agents disabled or gone from the control file
    for agent in agents:
        if agent.enabled and agent.configured:
            pools.setdefault(agent.type, []).append(Slot(
                agent.name, agent.free, agent.load, agent.capacity, agent.weight, agent.capabilities,
                agent.hours, is_available(agent.hours, now), agent.out_of_service))
        else:
            off.setdefault(agent.type, []).append(agent.name)
    decisions = []
    rates: dict[str | None, dict[str, float]] = {}  # task type -> agent -> success rate
    standings: dict[str, dict[str | None, Standing]] = {}  # queue -> task type -> its standing
    ready = (t for t in tasks if is_ready(t, now_text))
    for task in sorted(ready, key=lambda t: pick_order(t, now, policy)):
        pool = pools.get(task.queue, [])
        if task.task_type not in rates:
            names = (s.name for slots in pools.values() for s in slots)
            rates[task.task_type] = dict.fromkeys(names, 0.5) if task.task_type is None else {
                name: round(success_rate(records, name, task.task_type), 4) for name in names}
        rate = rates[task.task_type]
        best = DECISION_LIST_CAP if explain else 1
        if asks_nothing(task, policy.claimant):
            kept = standings.setdefault(task.queue, {})
            if task.task_type not in kept:
                kept[task.task_type] = Standing(pool, task, rate)
            ranked, eligible, passed_over = kept[task.task_type].top(best)
        else:
            ranked, eligible, passed_over = rank(pool, task, rate, policy.claimant, best)
        if not ranked:
            continue
        slot = ranked[0]
        if not explain:
            _take(slot, standings.get(task.queue, {}).values())
            decisions.append(TaskAssigned.model_construct(task_id=task.task_id, agent=slot.name,
                                                          attempt=task.attempt + 1, start_by=start_by))
            continue
        passed_over += [(name, "disabled or not in the control file") for name in off.get(task.queue, ())]
        # validated in one call, of parts built once (above); a tick makes a thousand
        decision = AssignmentDecision.model_validate({
            "priority": task.priority, "effective_priority": effective_priority(task, now, policy),
            "waited_seconds": round(waited_seconds(task, now), 6),
            "candidates": [candidate(s, rate[s.name]) for s in ranked],
            "candidates_total": eligible,
            "passed_over": [passed(name, why) for name, why in passed_over[:DECISION_LIST_CAP]],
            "passed_over_total": len(passed_over), "policy_hash": policy.fingerprint_of(task.queue),
            "config_hash": policy.config_hash, "via": "tick" if policy.claimant is None else "claim"})
        _take(slot, standings.get(task.queue, {}).values())
        decisions.append(TaskAssigned(task_id=task.task_id, agent=slot.name,
                                      attempt=task.attempt + 1, start_by=start_by, decision=decision))
    return decisions


def _take(slot: Slot, standings: Iterable[Standing]) -> None:
    """`slot` takes a task: one slot fewer free, one more load, and its place in each
    standing of its queue found again."""
    slot.free -= 1
    slot.load += 1
    for standing in standings:
        standing.moved(slot)
