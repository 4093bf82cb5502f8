"""When listed tasks may start and finish, and their place in their queue: pure
functions of the listed tasks (in pick order), the fleet, the recorded figures and
`now`. `scheduler.reads.queries` gathers the inputs; `sched tasks` and its `--watch` view
show the results."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from eventlog.timeutil import from_text, to_text
from projections.views import AgentView, Outcome, TaskView
from scheduler.decisions.fit import missing, skips_failed, takes_work
from scheduler.decisions.hours import is_available


def queue_positions(tasks: Sequence[TaskView], now: str) -> dict[int, int | None]:
    """Each queued task's place in its queue among the listed queued tasks (1 is picked
    next), counted in the order given (pick order); None for a task not queued, or one
    whose `not_before` (or retry backoff) is still ahead at `now`: no tick picks it yet."""
    seen: dict[str, int] = {}
    positions: dict[int, int | None] = {}
    for task in tasks:
        if task.status != "queued" or (task.not_before is not None and task.not_before > now):
            positions[task.task_id] = None
            continue
        seen[task.queue] = seen.get(task.queue, 0) + 1
        positions[task.task_id] = seen[task.queue]
    return positions


def run_seconds_by_queue(outcomes: Iterable[Outcome]) -> dict[str, float]:
    """The median run time (started to ended) of each queue's attempts that succeeded,
    among `outcomes` (the caller picks the window)."""
    runs: dict[str, list[float]] = {}
    for o in outcomes:
        if o.outcome == "succeeded" and o.started_ts is not None:
            runs.setdefault(o.queue, []).append(max(0.0, o.ended_ts - o.started_ts))
    return {queue: _median(times) for queue, times in runs.items()}


def _median(values: list[float]) -> float:
    """(statistics.median would load the decimal and fractions modules: `tasks` starts cold)"""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def estimate_starts(tasks: Sequence[TaskView], agents: Iterable[AgentView], rates: Mapping[str, float],
                    now: datetime, stopped: bool = False,
                    closed: Iterable[str] = ()) -> dict[int, str | None]:
    """When each queued task may start. Walks the listed tasks in pick order, as a tick
    would place them: a ready task takes a free slot of an agent that may run it (of its
    queue's type, or its assignee; in service, within its hours, with the capabilities
    the task requires) if one is left, the one the tick would choose, and starts at the next
    tick (now); otherwise it waits behind the tasks already waiting for those agents,
    the n-th of them n / rate after now, where rate (`rates`: per queue, per second) is
    how often the queue's attempts ended lately (each frees a slot). A task whose
    `not_before` is still ahead takes no place and starts no earlier than it. None when
    it cannot be told: not queued, no agent in service can ever run it, no slot freed
    lately (rate 0), or assignment `stopped` (paused) or the queue's gate `closed`."""
    now_text = to_text(now)
    closed = set(closed)
    serving = {a.name: a for a in agents if a.in_service and a.capacity > 0}
    # an agent outside its working hours has no free slot now
    free = {name: a.free if is_available(a.hours, now) else 0 for name, a in serving.items()}
    load = {name: a.load for name, a in serving.items()}
    waiting: dict[str, int] = {}  # queue or agent -> ready tasks already waiting for a slot
    estimates: dict[int, str | None] = {}
    for task in tasks:
        estimates[task.task_id] = None
        if task.status != "queued" or stopped or task.queue in closed:
            continue
        able = [name for name, a in serving.items() if a.type == task.queue
                and (task.assignee is None or name == task.assignee)
                and not missing(a.capabilities, task.requires)]
        others = [name for name in able  # (serving: in service, with capacity)
                  if takes_work(None, serving[name].capacity, is_available(serving[name].hours, now))]
        if skips_failed(task, ((name, serving[name].capabilities) for name in others)):
            able = [name for name in able if name not in task.excluded]  # as the tick passes them over
        if not able:
            continue  # no agent in service can ever run it
        ready = task.not_before is None or task.not_before <= now_text
        pool = task.assignee or task.queue + ("[" + ",".join(task.requires) + "]" if task.requires else "")
        # the agent the tick would pick (`ranking.order_of`, less the success records,
        # which weigh only tasks of a type): most free slots, weight, least load, name
        best = min(able, key=lambda name: (-free[name], -serving[name].weight, load[name], name))
        if free[best] > 0:  # a slot is free: it starts at the next tick (or at its not_before)
            if ready:
                free[best] -= 1
                load[best] += 1
            start = now
        else:
            ahead = waiting.get(pool, 0)
            if ready:
                waiting[pool] = ahead + 1
            if rates.get(task.queue, 0.0) <= 0:
                continue
            start = now + timedelta(seconds=(ahead + 1) / rates[task.queue])
        text = to_text(start)
        estimates[task.task_id] = max(text, task.not_before) if task.not_before else text
    return estimates


def estimate_completions(tasks: Sequence[TaskView], starts: Mapping[int, str | None],
                         run_seconds: Mapping[str, float], now: datetime) -> dict[int, str | None]:
    """When each task may finish: its start plus its queue's recorded run time
    (`run_seconds`, the median of its recent successful runs), never before `now`. The
    start is `starts` for a queued task, now for an assigned one (it starts at once),
    its `started_at` for a running one. None when either is unknown (no recorded run in
    the queue, no estimated start) and for a task that is not queued, assigned or
    running."""
    done: dict[int, str | None] = {}
    for task in tasks:
        done[task.task_id] = None
        run = run_seconds.get(task.queue)
        if run is None:
            continue
        if task.status == "queued":
            start_text = starts.get(task.task_id)
            start = from_text(start_text) if start_text else None
        elif task.status == "assigned":
            start = now
        elif task.status == "running" and task.started_at is not None:
            start = from_text(task.started_at)
        else:
            start = None
        if start is not None:
            done[task.task_id] = to_text(max(now, start + timedelta(seconds=run)))
    return done
