"""Applying recorded events to a projection state, stored or in memory.

`apply` is the one routine that turns an event into projection changes; it runs over
the SQL tables inside the append's transaction, and over plain dicts for
`replay --verify` and `status --at`. Both therefore give the same result by
construction, and the verify test checks that they do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from eventlog.events import (
    AgentDrained,
    AgentEvicted,
    AgentRestored,
    AgentsConfigured,
    DaemonStarted,
    DaemonStopped,
    Event,
    QueueGateClosed,
    QueueGateOpened,
    SchedulerPaused,
    SchedulerResumed,
    TaskRequeued,
    TaskSubmitted,
    TokenCreated,
    TokenRevoked,
)
from eventlog.store import Recorded
from projections.fold import (
    attempt_outcome,
    capacity_changes,
    drop_succeeded_parents,
    ended_attempt,
    evolve_agent_load,
    evolve_fleet,
    evolve_service,
    evolve_task,
    evolve_token,
    follow_parent,
    gate_state,
    link_after,
    load_changes,
    pause_state,
    unknown_agent,
)
from projections.views import AgentView, CapacityChange, Outcome, TaskView, TokenView


class ProjectionState(Protocol):
    """Where projected values are read and written."""

    def get_task(self, task_id: int) -> TaskView | None: ...
    def put_task(self, task: TaskView) -> None: ...
    def get_agent(self, name: str) -> AgentView | None: ...
    def all_agents(self) -> Iterable[AgentView]: ...
    def put_agent(self, agent: AgentView) -> None: ...
    def bump_count(self, queue: str, status: str, delta: int) -> None: ...
    def bump_record(self, agent: str, task_type: str, outcome: str) -> None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def add_outcome(self, outcome: Outcome) -> None: ...
    def add_capacity(self, change: CapacityChange) -> None: ...
    def live_token(self, name: str) -> TokenView | None: ...
    def put_token(self, token: TokenView) -> None: ...


def apply(state: ProjectionState, rec: Recorded) -> None:
    """Fold one recorded event into `state`."""
    event = rec.event
    task_id = getattr(event, "task_id", None)
    if task_id is None:
        _apply_scheduler(state, rec, event)
    else:
        _apply_task(state, rec, event, task_id)
    state.set_meta("last_seq", str(rec.seq))


def _apply_scheduler(state: ProjectionState, rec: Recorded, event: Event) -> None:
    """An event of the scheduler's stream: the fleet, pause, gates, tokens."""
    if isinstance(event, AgentsConfigured):
        fleet = list(state.all_agents())
        configured = evolve_fleet(fleet, event)
        for agent in configured:
            state.put_agent(agent)
        for change in capacity_changes(fleet, configured, rec.seq, rec.recorded_at):
            state.add_capacity(change)
        state.set_meta("config_hash", event.content_hash)
    elif isinstance(event, AgentDrained | AgentEvicted | AgentRestored):
        before = state.get_agent(event.agent) or unknown_agent(event.agent, "")
        after = evolve_service(before, event)
        state.put_agent(after)
        for change in capacity_changes([before], [after], rec.seq, rec.recorded_at):
            state.add_capacity(change)
    elif isinstance(event, SchedulerPaused | SchedulerResumed):
        state.set_meta("paused", pause_state(event, rec.recorded_at))
    elif isinstance(event, QueueGateClosed | QueueGateOpened):
        state.set_meta(f"gate:{event.queue}", gate_state(event, rec.recorded_at))
    elif isinstance(event, TokenCreated | TokenRevoked):
        live = state.live_token(event.name) if isinstance(event, TokenRevoked) else None
        state.put_token(evolve_token(live, event, rec.seq, rec.recorded_at))
    elif isinstance(event, DaemonStarted | DaemonStopped):
        pass  # a fact for the audit trail and webhooks; liveness is read from the daemons' beats


def _apply_task(state: ProjectionState, rec: Recorded, event: Event, task_id: int) -> None:
    """An event of a task's stream: the task, the loads and counts its status moves,
    its outcome, the tasks it blocks."""
    # a submit creates its task (ids are allocated once): no read needed, which is
    # most of what a rebuild or a batch submit would otherwise spend per task
    before = None if isinstance(event, TaskSubmitted) else state.get_task(task_id)
    after = evolve_task(before, event, rec.seq, rec.recorded_at)
    if isinstance(event, TaskSubmitted) and event.after:
        parents = [p for p in map(state.get_task, event.after) if p is not None]
        after, linked = link_after(after, parents)
        for parent in linked:
            put_task(state, parent, parent)
    elif isinstance(event, TaskRequeued) and event.reason == "operator" and after.waiting_on:
        parents = [p for p in map(state.get_task, after.waiting_on) if p is not None]
        after = drop_succeeded_parents(after, parents, rec.recorded_at)
    put_task(state, before, after)
    outcome = attempt_outcome(before, event)
    if outcome is not None:
        state.bump_record(*outcome)
    ended = ended_attempt(before, event, rec.seq, rec.recorded_at)
    if ended is not None:
        state.add_outcome(ended)
    if before is not None and before.status != after.status:
        for child_id in after.blocks:
            child = state.get_task(child_id)
            if child is not None:
                put_task(state, child, follow_parent(after, child, state.get_task))


def put_task(state: ProjectionState, before: TaskView | None, after: TaskView) -> None:
    """Store a task's new view, moving agent load and queue counts with its status."""
    state.put_task(after)
    for name, counter, delta in load_changes(before, after):
        agent = state.get_agent(name) or unknown_agent(name, after.queue)
        state.put_agent(evolve_agent_load(agent, counter, delta))
    if before is None or before.status != after.status:
        if before is not None:
            state.bump_count(before.queue, before.status, -1)
        state.bump_count(after.queue, after.status, +1)


@dataclass
class MemoryProjection:
    """The projections as plain dicts (for verify, point-in-time views and tests)."""

    tasks: dict[int, TaskView] = field(default_factory=dict)
    agents: dict[str, AgentView] = field(default_factory=dict)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    records: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    outcomes: dict[int, Outcome] = field(default_factory=dict)  # by seq
    capacity: dict[tuple[int, str], CapacityChange] = field(default_factory=dict)  # by (seq, agent)
    tokens: dict[int, TokenView] = field(default_factory=dict)  # by the seq of TokenCreated

    def get_task(self, task_id: int) -> TaskView | None:
        return self.tasks.get(task_id)

    def put_task(self, task: TaskView) -> None:
        self.tasks[task.task_id] = task

    def get_agent(self, name: str) -> AgentView | None:
        return self.agents.get(name)

    def all_agents(self) -> Iterable[AgentView]:
        return list(self.agents.values())

    def put_agent(self, agent: AgentView) -> None:
        self.agents[agent.name] = agent

    def bump_count(self, queue: str, status: str, delta: int) -> None:
        key = (queue, status)
        value = self.counts.get(key, 0) + delta
        if value:
            self.counts[key] = value
        else:
            self.counts.pop(key, None)

    def bump_record(self, agent: str, task_type: str, outcome: str) -> None:
        succeeded, failed = self.records.get((agent, task_type), (0, 0))
        self.records[(agent, task_type)] = ((succeeded + 1, failed) if outcome == "succeeded"
                                            else (succeeded, failed + 1))

    def set_meta(self, key: str, value: str) -> None:
        self.meta[key] = value

    def add_outcome(self, outcome: Outcome) -> None:
        self.outcomes[outcome.seq] = outcome

    def add_capacity(self, change: CapacityChange) -> None:
        self.capacity[(change.seq, change.agent)] = change

    def live_token(self, name: str) -> TokenView | None:
        return next((t for t in self.tokens.values() if t.name == name and t.revoked_at is None), None)

    def put_token(self, token: TokenView) -> None:
        self.tokens[token.seq] = token


def fold(records: Iterable[Recorded], state: MemoryProjection | None = None) -> MemoryProjection:
    """The projections of a sequence of recorded events, in memory."""
    state = state if state is not None else MemoryProjection()
    for rec in records:
        apply(state, rec)
    return state
