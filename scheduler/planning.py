"""What a tick and a claim plan with, and how they plan one queue: the policy `plan()`
decides with (built once per settings and control file, `plan_policy`; its ordering
part, `ordering_policy`, also orders the task listings), the control file recorded when
it changed, and `gather_and_plan`, which hands `plan()` one queue's top candidates."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from eventlog.storage.port import Read
from eventlog.timeutil import to_text
from projections.sql import SqlProjection, directed_at_read, first_queued_read, records_read
from projections.views import AgentView, TaskView
from scheduler.config.settings import Settings
from scheduler.decisions.hours import is_available
from scheduler.decisions.plan import PlanPolicy, age_bands, due_bands, plan

if TYPE_CHECKING:  # (a listing orders with this module: it loads no event model)
    from eventlog.events import TaskAssigned
    from projections.recorder import Recorder
    from scheduler.config.registry import ControlFile

MAX_CANDIDATES = 20_000


def ordering_policy(settings: Settings) -> PlanPolicy:
    """The part of the plan policy that orders tasks (the start deadline, each queue's
    ageing and due boost), for listings; `plan_policy` adds what labels the decisions a
    tick or a claim records."""
    return PlanPolicy(
        start_deadline_seconds=settings.start_deadline_seconds,
        ageing={q: (p.age_boost_seconds, p.age_boost_max)
                for q in settings.queues if (p := settings.queue_policy(q))},
        default_ageing=(settings.age_boost_seconds, settings.age_boost_max),
        due_boost={q: (p.due_boost_seconds, p.due_boost_max)
                   for q in settings.queues if (p := settings.queue_policy(q))},
        default_due_boost=(settings.due_boost_seconds, settings.due_boost_max))


def policy_fingerprint(settings: Settings, queue: str | None) -> str:
    """A short hash of what decides for a queue: its failure and ageing policy and the
    start deadline (queue None: a queue without a [queues.NAME] table)."""
    from projections.fold import canonical_json  # (the event models: not for a listing)

    policy = settings.queue_policy(queue or "")
    text = canonical_json({"policy": policy.model_dump(mode="json"),
                           "start_deadline_seconds": settings.start_deadline_seconds})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_policy(settings: Settings, config_hash: str = "") -> PlanPolicy:
    """What `plan()` decides with: built once per (settings, control file), since both
    are frozen (a claim or a tick asks for it every time; the queues' fingerprints hash
    their policies)."""
    last = _LAST_PLAN_POLICY[0]
    if last is not None and last[0] is settings and last[1] == config_hash:
        return last[2]
    policy = replace(
        ordering_policy(settings),
        fingerprints={q: policy_fingerprint(settings, q) for q in settings.queues},
        default_fingerprint=policy_fingerprint(settings, None), config_hash=config_hash)
    _LAST_PLAN_POLICY[0] = (settings, config_hash, policy)
    return policy


_LAST_PLAN_POLICY: list[tuple[Settings, str, PlanPolicy] | None] = [None]


def plan_reads(queue: str, free: Sequence[str]) -> list[Read]:
    """The reads `gather_and_plan` makes before it reads candidates (the records of the
    free agents `free`, the front of the queue, the agents its tasks are directed at),
    as values: a claim asks for them ahead."""
    return [records_read(free), first_queued_read(queue, "ready_at"), first_queued_read(queue, "due"),
            directed_at_read(queue)]


def gather_and_plan(views: SqlProjection, agents: Sequence[AgentView], queue: str,
                    now: datetime, policy: PlanPolicy) -> list[TaskAssigned]:
    """Plan one queue from its top candidates only: per age band and due band, the best
    queued tasks by base priority (see `age_bands`, `due_bands`). Fetches more
    (doubling) only while some fetched ones could not be placed, e.g. tasks directed at
    a busy agent or excluded from the free ones, so the cost follows the assignments
    made, not the backlog."""
    pool = [a for a in agents if a.type == queue]
    # an agent outside its working hours takes no new work: its free slots are not wanted
    free_agents = [a for a in pool if a.free > 0 and policy.claimant in (None, a.name)
                   and is_available(a.hours, now)]
    wanted = sum(a.free for a in free_agents)
    if policy.claimant is not None:
        wanted = min(wanted, 1)  # a claim takes one task
    if wanted == 0:
        return []
    now_text = to_text(now)
    records = views.records(a.name for a in free_agents)
    limit = wanted
    bands = age_bands(now, policy, queue, views.oldest_queued(queue))
    dues = due_bands(now, policy, queue, views.earliest_due(queue))
    names = [a.name for a in free_agents]
    while True:
        candidates: dict[int, TaskView] = {}
        exhausted = True
        for cutoff in bands:
            for due_by in dues:
                for assignees in (None, names):  # open to any agent, then directed at a free one
                    found = views.candidates(queue, now_text, limit, assignees, ready_by=cutoff,
                                             due_by=due_by)
                    exhausted = exhausted and len(found) < limit
                    candidates.update((t.task_id, t) for t in found)
        decisions = plan(pool, candidates.values(), now, policy, records)
        if len(decisions) >= wanted or exhausted or limit >= MAX_CANDIDATES:
            return decisions
        limit *= 2


def record_config_if_changed(recorder: Recorder, control: ControlFile) -> list[dict[str, object]] | None:
    """Append `AgentsConfigured` when the control file differs from the recorded one,
    and send back what an agent it gave another type holds from its old queue; what it
    sent back (`takeback.release_retyped`), or None when the file had not changed."""
    from scheduler.takeback import release_retyped

    if recorder.views.meta().get("config_hash") == control.content_hash:
        return None
    recorder.record([control.configured_event()])
    return release_retyped(recorder, recorder.views.all_agents())
