"""The simulation: a workload run with a virtual clock through the scheduler's own
`plan()` and failure policy (`settle_failure`), under a given fleet and settings.

How time passes here, and how it maps on a daemon:

- a tick runs every `tick_seconds` (the daemon's interval, its first tick at the
  workload's `first_tick`: the first recorded assignment of a window of the log, else
  the first fact), and at once when an attempt ends (the daemon's launcher wakes a tick
  when a wrapper exits) and, with `wake_on_arrival`, when a task arrives (PostgreSQL's
  notifications do that); a tick with nothing ready or no free slot costs nothing;
- a tick reads its candidates as the real one does (`planning.gather_and_plan`): per age
  band and due band, the best ready tasks by base priority, open and directed;
- an assignment holds its agent's slot from the tick that made it; the attempt starts
  `start_delay` later and ends `run_seconds` after its start, as recorded (see
  `facts.carried_attempt` for which recorded attempt a simulated one follows);
- a failed or expired attempt is settled by `settle_failure` with the scenario's queue
  policy (backoff jitter drawn from a `random.Random(seed)`), as the tick settles it;
- the agents' success records that rank equally free agents start empty.

Not modelled: gates, pauses, drains and evictions, start deadlines (an assignment always
starts), timeouts (an attempt runs as long as it ran), pull workers' own polling (their
assignments are made by the ticks, as for push agents).

Pure: no database, clock or process; the same workload, scenario and seed give the same
run.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import count
from typing import TYPE_CHECKING

from eventlog.errors import BadInput
from eventlog.timeutil import from_text, to_text
from projections.views import AgentView, TaskView
from scheduler.decisions.hours import is_available
from scheduler.decisions.plan import PlanPolicy, age_bands, due_bands, plan
from scheduler.decisions.policy import QueuePolicy, settle_failure
from scheduler.whatif.facts import Fact, Workload
from scheduler.whatif.sketch import Sketch

if TYPE_CHECKING:
    from eventlog.events import TaskAssigned

MAX_CANDIDATES = 20_000  # as the tick: the most candidates one queue's plan is given
# a run keeps at most this many depth samples per queue (even): past it, the interval
# doubles and pairs of samples merge
MAX_DEPTH_SAMPLES = 4_096
PROGRESS_EVERY = 100_000  # tasks arrived between two reports of progress (about 7 s here)


@dataclass(frozen=True, slots=True)
class FleetAgent:
    """An agent as the simulation sees it (from a control file entry)."""

    name: str
    type: str
    capacity: int
    enabled: bool = True
    capabilities: tuple[str, ...] = ()
    weight: float = 1.0
    hours: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """The fleet and the policy a workload runs under."""

    agents: tuple[FleetAgent, ...]
    plan_policy: PlanPolicy
    queue_policy: Callable[[str], QueuePolicy]
    tick_seconds: float
    wake_on_arrival: bool = False
    seed: int = 0
    sample_seconds: float = 60.0  # how often the queue depth is sampled for the charts


@dataclass
class QueueFigures:
    """What happened to one queue's tasks in a run."""

    arrived: int = 0
    succeeded: int = 0
    dead: int = 0
    cancelled: int = 0  # cancelled or rejected by an operator
    doomed: int = 0  # a task it ran after ended dead or cancelled
    waits: Sketch = field(default_factory=Sketch)  # per assignment: ready -> assigned
    runs: Sketch = field(default_factory=Sketch)  # per attempt: start -> end
    depth: array = field(default_factory=lambda: array("l"))  # ready and waiting tasks, per sample


@dataclass
class AgentFigures:
    type: str
    capacity: int
    busy_seconds: float = 0.0  # start -> end of its attempts
    attempts: int = 0


@dataclass
class Run:
    """The outcome of one simulation."""

    started_at: float | None = None  # the first fact
    ended_at: float | None = None  # the last attempt's end (None: none ended)
    queues: dict[str, QueueFigures] = field(default_factory=dict)
    agents: dict[str, AgentFigures] = field(default_factory=dict)
    order: list[tuple[int, str]] = field(default_factory=list)  # (task, agent) per assignment
    waited: list[float] = field(default_factory=list)  # each one's wait, exact, in that order
    unfinished: int = 0  # tasks still open when the workload ran out (blocked, awaiting approval)
    stranded: int = 0  # of those, queued ones: ready, but no agent of the fleet ever took them
    keep_order: bool = False
    sample_seconds: float = 0.0  # the time between two of `QueueFigures.depth`'s samples

    def queue(self, name: str) -> QueueFigures:
        found = self.queues.get(name)
        if found is None:
            found = self.queues[name] = QueueFigures()
        return found


@dataclass(slots=True)
class _Task:
    arrival_at: float
    queue: str
    priority: int
    assignee: str | None
    task_type: str | None
    max_attempts: int
    seq: int  # submission order
    requires: tuple[str, ...] = ()
    due: str | None = None
    status: str = "queued"  # queued (waiting or ready), awaiting_approval, blocked, assigned, done
    ready: bool = False
    ready_at: float = 0.0
    pick_key: tuple[int, int, int] = (0, 0, 0)  # its place in the base order while ready
    not_before: float = 0.0
    attempt: int = 0
    agent: str | None = None
    started_at: float = 0.0
    excluded: list[str] = field(default_factory=list)
    waiting_on: set[int] = field(default_factory=set)
    blocks: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _first_tick_from(grid: float, at: float, every: float) -> float:
    """The first interval tick at or after `at`, on the grid of the tick at `grid`; at
    least `at`, even where `every` is too small to move a time that large."""
    if grid >= at:
        return grid
    return max(grid + math.ceil((at - grid) / every) * every, at)


def _moment(t: float) -> datetime:
    try:
        return datetime.fromtimestamp(t, UTC)
    except (ValueError, OSError) as e:  # (a time after 9999-12-31)
        raise OverflowError(str(e)) from e  # (`simulate` says it in one line)


class _Simulation:
    def __init__(self, workload: Workload, scenario: Scenario, keep_order: bool,
                 progress: Callable[[int], None] | None = None) -> None:
        self.workload, self.scenario, self.progress = workload, scenario, progress
        self.arrived = 0
        self.run = Run(keep_order=keep_order)
        self.draw = random.Random(scenario.seed).random
        self.tasks: dict[int, _Task] = {}
        # the ready tasks of each queue: in the tick's base order (-priority, -unblocks,
        # task id: a sorted list), in the order they became ready (oldest first), and
        # those with a due time
        self.pick: dict[str, list[tuple[int, int, int]]] = {}
        self.ready_since: dict[str, dict[int, float]] = {}
        self.due_ready: dict[str, dict[int, str]] = {}
        self.directed: dict[str, int] = {}  # queue -> ready tasks directed at an agent
        self.open_count: dict[str, int] = {}  # queued (ready or not), awaiting approval, blocked
        self.failed: set[int] = set()  # tasks that ended dead, cancelled or doomed: they doom late children
        self.load = {a.name: 0 for a in scenario.agents}
        self.fleet = {a.name: a for a in scenario.agents if a.enabled}
        self.types: dict[str, list[FleetAgent]] = {}
        self.free_slots: dict[str, int] = {}  # type -> free slots of its agents
        # each type's agents as plan() sees them, rebuilt one by one as their load changes
        self.views: dict[str, list[AgentView]] = {}
        self.places: dict[str, int] = {}  # agent -> its index in its type's views
        for agent in self.fleet.values():
            self.types.setdefault(agent.type, []).append(agent)
            self.free_slots[agent.type] = self.free_slots.get(agent.type, 0) + agent.capacity
            self.run.agents[agent.name] = AgentFigures(agent.type, agent.capacity)
            views = self.views.setdefault(agent.type, [])
            self.places[agent.name] = len(views)
            views.append(self._agent_view(agent, 0))
        self.records: dict[tuple[str, str], tuple[int, int]] = {}
        self.timeline: list[tuple[float, int, str, int, int]] = []  # (at, order, kind, task, attempt)
        self.order = count()
        self.submitted = count(1)
        self.wake = False
        self.stalled = False
        # an agent's working hours opening is no event of its own: with hours in the fleet,
        # interval ticks go on while work waits
        self.keeps_hours = any(a.hours for a in self.fleet.values())
        self.next_sample: float | None = None
        self.samples = 0  # depth samples taken at the run's present interval

    # -- the clock -------------------------------------------------------------------

    def go(self) -> Run:
        facts = iter(self.workload.facts())
        pending = next(facts, None)
        if pending is None:
            return self.run
        tick_every = self.scenario.tick_seconds
        # no tick before the scheduler's first (a daemon that started late, say)
        first = self.workload.first_tick()
        start = pending.at if first is None else max(first, pending.at)
        grid = start  # the next interval tick
        # while working hours alone hold work back: the start of the next minute, the
        # earliest an agent's hours can open (nothing else changes until something happens)
        opening: float | None = None
        while True:
            while self.timeline and self._stale(self.timeline[0]):
                heapq.heappop(self.timeline)  # (a cancelled task's not_before moves no clock)
            candidates = []
            if pending is not None:
                candidates.append(pending.at)
            if self.timeline:
                candidates.append(self.timeline[0][0])
            if grid is not None and not self.stalled and self._anything_to_assign():
                candidates.append(grid if opening is None else _first_tick_from(grid, opening, tick_every))
            if not candidates:
                break
            now = min(candidates)
            grid = _first_tick_from(grid, now, tick_every)  # (ticks that found nothing to do are skipped)
            self._sample_until(now)
            while pending is not None and pending.at <= now:
                self._fact(pending)
                pending = next(facts, None)
                self.stalled, opening = False, None
            while self.timeline and self.timeline[0][0] <= now:
                _, _, kind, task_id, attempt = heapq.heappop(self.timeline)
                self._timed(kind, task_id, attempt, now)
                self.stalled, opening = False, None
            if (self.wake and now >= start) or now >= grid:
                self.wake = False
                if now >= grid:
                    grid += tick_every
                # a tick that assigns nothing while tasks are ready and slots free (each
                # task directed at a busy or absent agent, or excluded, or requiring what
                # no agent has) is not repeated until something happens; but one held
                # back only by working hours is (an opening is no event of its own)
                assigned = self._tick(now)
                held = not assigned and self.keeps_hours and self._hours_hold_back(now)
                self.stalled = not assigned and not held
                opening = (math.floor(now / 60) + 1) * 60.0 if held else None
        self.run.unfinished = sum(self.open_count.values())
        self.run.stranded = sum(task.status == "queued" for task in self.tasks.values())
        return self.run

    def _at(self, when: float, kind: str, task_id: int, attempt: int = 0) -> None:
        heapq.heappush(self.timeline, (when, next(self.order), kind, task_id, attempt))

    def _sample_until(self, now: float) -> None:
        if self.next_sample is None:
            self.next_sample = now
            self.run.started_at = now
            self.run.sample_seconds = self.scenario.sample_seconds
        while self.next_sample <= now:
            for queue, figures in self.run.queues.items():
                figures.depth.append(self.open_count.get(queue, 0))
            self.samples += 1
            if self.samples == MAX_DEPTH_SAMPLES:
                self._halve_samples()
            self.next_sample += self.run.sample_seconds

    def _halve_samples(self) -> None:
        """Twice as long between samples, each pair of them merged into its larger: the
        memory of a run's depth series stays bounded however long the run (a task may
        run for days after the last arrival; the chart shows 60 columns)."""
        for figures in self.run.queues.values():
            depth = figures.depth  # (as long as every queue's: one seen late was given zeros first)
            first = len(depth) % 2
            figures.depth = array("l", depth[:first]) + array(
                "l", (max(depth[i], depth[i + 1]) for i in range(first, len(depth), 2)))
        self.samples //= 2
        self.run.sample_seconds *= 2

    # -- facts and timed events ------------------------------------------------------

    def _fact(self, fact: Fact) -> None:
        if fact.kind == "arrived":
            assert fact.arrival is not None
            self._arrive(fact)
            return
        task = self.tasks.get(fact.task_id)
        if task is None or task.status == "done":
            return
        if fact.kind == "approved":
            if task.status == "awaiting_approval":  # (as the fold: blocked while a parent is open)
                task.status = "blocked" if task.waiting_on else "queued"
                self._maybe_ready(fact.task_id, task, fact.at)
        else:  # rejected or cancelled
            if task.status == "assigned":
                self._stop_attempt(task, fact.at)
            self._finish(fact.task_id, task, "cancelled", fact.at)

    def _arrive(self, fact: Fact) -> None:
        arrival = fact.arrival
        assert arrival is not None
        policy = self.scenario.queue_policy(arrival.queue)
        task = _Task(arrival.at, arrival.queue, arrival.priority, arrival.assignee, arrival.task_type,
                     arrival.max_attempts or policy.max_attempts, next(self.submitted),
                     requires=arrival.requires,
                     due=None if arrival.due is None else to_text(_moment(arrival.due)))
        self.tasks[arrival.task_id] = task
        if arrival.queue not in self.run.queues:  # its depth on the time axis of the others'
            self.run.queue(arrival.queue).depth.extend(
                [0] * max((len(q.depth) for q in self.run.queues.values()), default=0))
        self.run.queue(arrival.queue).arrived += 1
        self.arrived += 1
        if self.progress is not None and self.arrived % PROGRESS_EVERY == 0:
            self.progress(self.arrived)
        self.open_count[arrival.queue] = self.open_count.get(arrival.queue, 0) + 1
        doomed = any(parent_id in self.failed for parent_id in arrival.after)
        for parent_id in () if doomed else arrival.after:  # a task outside the workload counts as done
            parent = self.tasks.get(parent_id)
            if parent is not None and parent.status != "done":
                task.waiting_on.add(parent_id)
                parent.blocks.append(arrival.task_id)
                if parent.ready:  # it unblocks one more: its place in the base order moves
                    line = self.pick[parent.queue]
                    del line[bisect.bisect_left(line, parent.pick_key)]
                    parent.pick_key = (-parent.priority, -len(parent.blocks), parent_id)
                    bisect.insort(line, parent.pick_key)
        task.not_before = arrival.at + arrival.delay
        if arrival.needs_approval:
            task.status = "awaiting_approval"
        elif task.waiting_on:
            task.status = "blocked"
        if self.scenario.wake_on_arrival:
            self.wake = True
        if doomed:  # a task it runs after already ended dead or cancelled: it can never run
            self._finish(arrival.task_id, task, "doomed", arrival.at)
        elif task.not_before > arrival.at:
            self._at(task.not_before, "due", arrival.task_id)
        else:
            self._maybe_ready(arrival.task_id, task, arrival.at)

    def _maybe_ready(self, task_id: int, task: _Task, now: float) -> None:
        """Into its queue's ready list once queued, unblocked and past its not_before."""
        if task.status == "blocked" and not task.waiting_on:
            task.status = "queued"
        if task.status != "queued" or task.ready or task.not_before > now:
            return
        task.ready, task.ready_at = True, now
        task.pick_key = (-task.priority, -len(task.blocks), task_id)
        bisect.insort(self.pick.setdefault(task.queue, []), task.pick_key)
        self.ready_since.setdefault(task.queue, {})[task_id] = now
        if task.due is not None:
            self.due_ready.setdefault(task.queue, {})[task_id] = task.due
        if task.assignee is not None:
            self.directed[task.queue] = self.directed.get(task.queue, 0) + 1

    def _unready(self, task_id: int, task: _Task) -> None:
        task.ready = False
        line = self.pick[task.queue]
        del line[bisect.bisect_left(line, task.pick_key)]
        del self.ready_since[task.queue][task_id]
        self.due_ready.get(task.queue, {}).pop(task_id, None)
        if task.assignee is not None:
            self.directed[task.queue] -= 1

    def _stale(self, entry: tuple[float, int, str, int, int]) -> bool:
        """Whether a timed event can change nothing: its task ended, or (an attempt's
        end) the attempt is no longer the one under way."""
        _, _, kind, task_id, attempt = entry
        task = self.tasks.get(task_id)
        if task is None or task.status == "done":
            return True
        return kind == "end" and not (task.status == "assigned" and task.attempt == attempt)

    def _timed(self, kind: str, task_id: int, attempt: int, now: float) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return
        if kind == "due":
            self._maybe_ready(task_id, task, now)
        elif kind == "end" and task.status == "assigned" and task.attempt == attempt:
            self._end(task_id, task, now)

    # -- ticks -----------------------------------------------------------------------

    def _anything_to_assign(self) -> bool:
        return any(ready and self.free_slots.get(q) for q, ready in self.ready_since.items())

    def _tick(self, now: float) -> bool:
        """Plan every queue with ready tasks and free slots; whether it assigned any."""
        moment = _moment(now)
        assigned = False
        for queue in sorted(self.ready_since):  # in the tick's order
            for decision in self._decide(queue, moment, hours=self.keeps_hours):
                self._assign(decision.task_id, decision.agent, now)
                assigned = True
        return assigned

    def _hours_hold_back(self, now: float) -> bool:
        """Whether a tick would assign if every agent were within its working hours."""
        moment = _moment(now)
        return any(self._decide(queue, moment, hours=False) for queue in sorted(self.ready_since))

    def _decide(self, queue: str, moment: datetime, hours: bool) -> list[TaskAssigned]:
        """What a tick assigns in `queue` (`hours`: only to agents within their working
        hours, as the tick; else to any free one)."""
        if not self.ready_since[queue] or not self.free_slots.get(queue):
            return []
        free = [v for v in self.views[queue] if v.assigned < v.capacity
                and (not hours or is_available(v.hours, moment))]
        wanted = sum(v.capacity - v.assigned for v in free)
        if not wanted:
            return []
        names = {v.name for v in free}
        limit = wanted
        while True:
            candidates, exhausted = self._candidates(queue, limit, names, moment)
            # busy agents change no choice plan() makes, except through failover (a
            # task skips the agents it failed on while another agent of the type
            # exists, busy or not): they are left out unless a candidate failed before
            everyone = any(t.excluded for t in candidates)
            pool = self.views[queue] if everyone else [
                v for v in self.views[queue] if v.assigned < v.capacity]
            if not hours:
                pool = [replace(v, hours=()) for v in pool]
            decisions = plan(pool, candidates, moment, self.scenario.plan_policy, self.records,
                             explain=False)
            if len(decisions) >= wanted or exhausted or limit >= MAX_CANDIDATES:
                return decisions
            limit *= 2

    def _candidates(self, queue: str, limit: int, names: set[str],
                    moment: datetime) -> tuple[list[TaskView], bool]:
        """What the tick's `gather_and_plan` reads: per age band and due band, the best
        `limit` ready tasks by base priority open to any agent, and the best `limit`
        directed at a free agent (`names`); and whether every read came back short."""
        policy = self.scenario.plan_policy
        since = self.ready_since[queue]
        oldest = to_text(_moment(since[next(iter(since))]))
        dues = self.due_ready.get(queue)
        bands = age_bands(moment, policy, queue, oldest)
        due_cuts = due_bands(moment, policy, queue, min(dues.values()) if dues else None)
        ready_by = [None if cut is None else from_text(cut).timestamp() for cut in bands]
        chosen: dict[int, _Task] = {}
        exhausted = True
        for cutoff in ready_by:
            for due_by in due_cuts:
                for directed in (False, True):
                    found = 0
                    if directed and not self.directed.get(queue):
                        continue  # none to read
                    for _, _, task_id in self.pick[queue]:
                        task = self.tasks[task_id]
                        if (task.assignee in names if directed else task.assignee is None) \
                                and (cutoff is None or task.ready_at <= cutoff) \
                                and (due_by is None or (task.due is not None and task.due <= due_by)):
                            chosen[task_id] = task
                            found += 1
                            if found >= limit:
                                break
                    exhausted = exhausted and found < limit
        return [self._view(task_id, task) for task_id, task in chosen.items()], exhausted

    def _loaded(self, name: str, change: int) -> None:
        agent = self.fleet[name]
        self.load[name] += change
        self.free_slots[agent.type] -= change
        self.views[agent.type][self.places[name]] = self._agent_view(agent, self.load[name])

    @staticmethod
    def _agent_view(agent: FleetAgent, load: int) -> AgentView:
        return AgentView(agent.name, agent.type, agent.capacity, True, True, None, assigned=load,
                         capabilities=agent.capabilities, weight=agent.weight, hours=agent.hours)

    def _view(self, task_id: int, task: _Task) -> TaskView:
        ready_at = to_text(_moment(task.ready_at))
        return TaskView(
            task_id=task_id, queue=task.queue, title="", priority=task.priority, assignee=task.assignee,
            payload=None, status="queued", attempt=task.attempt, attempt_floor=0,
            max_attempts=task.max_attempts, agent=None, not_before=None, deadline=None, token_hash=None,
            pid=None, host=None, log_path=None, excluded=tuple(task.excluded), cancelling=False,
            waiting_on=(), blocks=tuple(task.blocks), doomed_by=None, last_error=None,
            idempotency_key=None, task_type=task.task_type, submitted_seq=task.seq,
            submitted_at=ready_at, updated_at=ready_at, ready_at=ready_at, requires=task.requires,
            due=task.due)

    def _assign(self, task_id: int, agent: str, now: float) -> None:
        task = self.tasks[task_id]
        waited = round(now - task.ready_at, 6)  # as `plan.waited_seconds` counts a queued task
        self._unready(task_id, task)
        self.open_count[task.queue] -= 1
        task.status, task.agent = "assigned", agent
        task.attempt += 1
        self._loaded(agent, +1)
        run = self.workload.attempt(task_id, task.attempt)
        task.started_at = now + run.start_delay
        self.run.queue(task.queue).waits.add(waited)
        if self.run.keep_order:
            self.run.order.append((task_id, agent))
            self.run.waited.append(waited)
        if run.outcome != "cancelled":  # (one an operator's cancel ended runs until that fact)
            self._at(task.started_at + run.run_seconds, "end", task_id, task.attempt)

    # -- ends --------------------------------------------------------------------------

    def _release(self, task: _Task, now: float) -> str:
        agent = task.agent
        assert agent is not None
        self._loaded(agent, -1)
        figures = self.run.agents[agent]
        busy = max(0.0, now - task.started_at)
        figures.busy_seconds += busy
        figures.attempts += 1
        self.run.ended_at = now
        self.run.queue(task.queue).runs.add(busy)
        task.agent = None
        return agent

    def _stop_attempt(self, task: _Task, now: float) -> None:
        self._release(task, now)
        self.wake = True

    def _end(self, task_id: int, task: _Task, now: float) -> None:
        from eventlog.events import LeaseExpired, TaskDeadLettered, TaskFailed, TaskRequeued

        run = self.workload.attempt(task_id, task.attempt)
        agent = self._release(task, now)
        self.wake = True
        key = (agent, task.task_type) if task.task_type is not None else None
        if run.outcome == "succeeded":
            if key is not None:
                s, f = self.records.get(key, (0, 0))
                self.records[key] = (s + 1, f)
            self._finish(task_id, task, "succeeded", now)
            return
        if key is not None:
            s, f = self.records.get(key, (0, 0))
            self.records[key] = (s, f + 1)
        failure: TaskFailed | LeaseExpired
        if run.outcome == "expired":
            failure = LeaseExpired.model_construct(task_id=task_id, agent=agent, attempt=task.attempt)
        else:
            failure = TaskFailed.model_construct(task_id=task_id, agent=agent, attempt=task.attempt,
                                                 reason=run.reason, error=run.reason,
                                                 retryable=run.retryable)
        view = replace(self._view(task_id, task), status="running", agent=agent)
        settled = settle_failure(view, failure, _moment(now), self.scenario.queue_policy(task.queue),
                                 self.draw())[-1]
        if agent not in task.excluded:
            task.excluded.append(agent)
        if isinstance(settled, TaskRequeued):
            task.status = "queued"
            self.open_count[task.queue] += 1
            task.not_before = settled.not_before.timestamp() if settled.not_before else now
            if task.not_before > now:
                self._at(task.not_before, "due", task_id)
            else:
                self._maybe_ready(task_id, task, now)
        elif isinstance(settled, TaskDeadLettered):
            self._finish(task_id, task, "dead", now)
        else:
            self._finish(task_id, task, "cancelled", now)

    def _finish(self, task_id: int, task: _Task, how: str, now: float) -> None:
        if task.ready:
            self._unready(task_id, task)
        if task.status != "assigned":  # (an assigned task left the count when assigned)
            self.open_count[task.queue] -= 1
        task.status = "done"
        figures = self.run.queue(task.queue)
        if how == "succeeded":
            figures.succeeded += 1
        elif how == "dead":
            figures.dead += 1
        elif how == "cancelled":
            figures.cancelled += 1
        else:
            figures.doomed += 1
        if how != "succeeded":
            self.failed.add(task_id)
        for child_id in task.blocks:
            child = self.tasks.get(child_id)
            if child is None or child.status == "done":
                continue
            if how == "succeeded":
                child.waiting_on.discard(task_id)
                self._maybe_ready(child_id, child, now)
            else:
                self._finish(child_id, child, "doomed", now)
        self.workload.forget(task_id)
        del self.tasks[task_id]


def simulate(workload: Workload, scenario: Scenario, *, keep_order: bool = False,
             progress: Callable[[int], None] | None = None) -> Run:
    """Run `workload` under `scenario`; `keep_order` also keeps every (task, agent)
    assignment in order, with its exact wait (for the fidelity tests: the figures keep
    the waits in a `Sketch`). `progress` is told the tasks arrived so far, every
    `PROGRESS_EVERY`."""
    try:
        return _Simulation(workload, scenario, keep_order, progress).go()
    except OverflowError as e:  # a time past the calendar's end (arrivals are at most 9999-12-31)
        raise BadInput("the simulated run goes on past the year 9999: its arrivals or due times "
                       "lie too near the calendar's end") from e


def fleet_of(agents: Sequence[object]) -> tuple[FleetAgent, ...]:
    """The fleet of control file entries (`registry.AgentSpec`)."""
    return tuple(FleetAgent(a.name, a.type, a.capacity, a.enabled,  # type: ignore[attr-defined]
                            tuple(a.capabilities), a.weight, tuple(a.hours))  # type: ignore[attr-defined]
                 for a in agents)


def with_capacity(fleet: Sequence[FleetAgent], agent_type: str, total: int) -> tuple[FleetAgent, ...]:
    """The fleet with `total` slots spread over its agents of `agent_type` (enabled ones,
    in their order, the first ones taking one more where it does not divide)."""
    mine = [a for a in fleet if a.type == agent_type and a.enabled]
    if not mine:
        return tuple(fleet)
    share, extra = divmod(total, len(mine))
    sized = {a.name: share + (1 if i < extra else 0) for i, a in enumerate(mine)}
    return tuple(replace(a, capacity=sized[a.name]) if a.name in sized else a for a in fleet)

