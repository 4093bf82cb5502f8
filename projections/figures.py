"""The figures of `sched metrics`, computed from projection values: pure functions of
the outcome rows, the capacity history and the attempts holding a slot now.

Conventions (docs/operations.md, "Metrics", says the same):
- a window is [start, end]; counts and durations cover the attempts that *ended* in it;
- percentiles are nearest-rank: the p-th of n sorted values is the ceil(p/100 * n)-th;
- utilization is busy slot-seconds over offered slot-seconds inside the window, where a
  slot is busy from the attempt's start to its end (or to `end` if still running); the
  time from assignment to start is its own figure, the start latency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from projections.views import CapacityChange, Outcome

FAILED_KINDS = frozenset({"failed", "expired"})


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The nearest-rank p-th percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, mean, p50 and p95 of some durations in seconds."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "mean": None, "p50": None, "p95": None}
    return {"count": len(ordered), "mean": round(sum(ordered) / len(ordered), 6),
            "p50": round(percentile(ordered, 50) or 0.0, 6), "p95": round(percentile(ordered, 95) or 0.0, 6)}


def overlap(start: float, end: float, lo: float, hi: float) -> float:
    """Seconds of [start, end] inside [lo, hi]."""
    return max(0.0, min(end, hi) - max(start, lo))


@dataclass(frozen=True)
class Held:
    """An attempt running now: since when, on which agent, for which queue."""

    agent: str
    queue: str
    since: float


def offered_slot_seconds(history: Sequence[CapacityChange], lo: float,
                         hi: float) -> tuple[dict[str, float], dict[str, float]]:
    """Slot-seconds each agent offered inside [lo, hi], and each type (queue) too."""
    by_agent: dict[str, float] = {}
    by_type: dict[str, float] = {}
    last: dict[str, CapacityChange] = {}
    for change in sorted(history, key=lambda c: (c.seq, c.agent)):
        prior = last.get(change.agent)
        if prior is not None:
            _add_segment(prior, prior.at_ts, change.at_ts, lo, hi, by_agent, by_type)
        last[change.agent] = change
    for change in last.values():
        _add_segment(change, change.at_ts, hi, lo, hi, by_agent, by_type)
    return by_agent, by_type


def _add_segment(change: CapacityChange, start: float, end: float, lo: float, hi: float,
                 by_agent: dict[str, float], by_type: dict[str, float]) -> None:
    seconds = change.slots * overlap(start, end, lo, hi)
    by_agent[change.agent] = by_agent.get(change.agent, 0.0) + seconds
    by_type[change.type] = by_type.get(change.type, 0.0) + seconds


def busy_slot_seconds(outcomes: Iterable[Outcome], held: Iterable[Held], lo: float,
                      hi: float) -> tuple[dict[str, float], dict[str, float]]:
    """Slot-seconds busy inside [lo, hi], per agent and per queue: by attempts that
    ended (from start to end) and by those still running (to `hi`)."""
    by_agent: dict[str, float] = {}
    by_queue: dict[str, float] = {}
    spans = [(o.agent, o.queue, o.started_ts, o.ended_ts) for o in outcomes
             if o.agent is not None and o.started_ts is not None]
    spans += [(h.agent, h.queue, h.since, hi) for h in held]
    for agent, queue, start, end in spans:
        seconds = overlap(start, end, lo, hi)  # type: ignore[arg-type]
        by_agent[agent] = by_agent.get(agent, 0.0) + seconds  # type: ignore[index]
        by_queue[queue] = by_queue.get(queue, 0.0) + seconds
    return by_agent, by_queue


def outcome_figures(outcomes: Sequence[Outcome], hours: float) -> dict[str, object]:
    """Counts, rates and durations of the attempts that ended in a window of `hours`."""
    counts = {kind: 0 for kind in ("succeeded", "failed", "expired", "cancelled", "not_started",
                                   "evicted", "interrupted", "dead_lettered")}
    for o in outcomes:
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
    failed = counts["failed"] + counts["expired"]
    finished = counts["succeeded"] + failed
    measured = [o for o in outcomes if o.cpu_seconds is not None]
    return {
        "completed": counts["succeeded"],
        "failed": failed,
        "lease_expired": counts["expired"],
        "cancelled": counts["cancelled"],
        "not_started": counts["not_started"],
        "evicted": counts["evicted"],
        "interrupted": counts["interrupted"],
        "dead_lettered": counts["dead_lettered"],
        "throughput_per_hour": round(counts["succeeded"] / hours, 6) if hours > 0 else None,
        "error_rate": round(failed / finished, 6) if finished else None,
        "queue_wait_seconds": summarize(o.started_ts - o.ready_ts for o in outcomes
                                        if o.started_ts is not None and o.ready_ts is not None),
        "run_seconds": summarize(o.ended_ts - o.started_ts for o in outcomes
                                 if o.started_ts is not None),
        "start_latency_seconds": summarize(o.started_ts - o.assigned_ts for o in outcomes
                                           if o.started_ts is not None and o.assigned_ts is not None),
        "measured_runs": len(measured),
        "cpu_seconds": round(sum(o.cpu_seconds or 0.0 for o in measured), 6) if measured else None,
        "peak_rss_bytes": max((o.peak_rss_bytes for o in measured if o.peak_rss_bytes is not None),
                              default=None),
    }


def ratio(busy: float, offered: float) -> float | None:
    return round(busy / offered, 6) if offered > 0 else None


def hourly(outcomes: Iterable[Outcome]) -> dict[int, dict[str, int]]:
    """Per hour (epoch seconds of its start): completed, failed and dead-lettered."""
    buckets: dict[int, dict[str, int]] = {}
    for o in outcomes:
        hour = int(o.ended_ts // 3600 * 3600)
        bucket = buckets.setdefault(hour, {"completed": 0, "failed": 0, "dead_lettered": 0})
        if o.outcome == "succeeded":
            bucket["completed"] += 1
        elif o.outcome in FAILED_KINDS:
            bucket["failed"] += 1
        elif o.outcome == "dead_lettered":
            bucket["dead_lettered"] += 1
    return dict(sorted(buckets.items()))


def window_figures(outcomes: Sequence[Outcome], history: Sequence[CapacityChange],
                   held: Sequence[Held], lo: float, hi: float) -> dict[str, object]:
    """Every figure of `sched metrics` for the window [lo, hi]: overall, per queue and
    per agent, and per hour."""
    hours = (hi - lo) / 3600
    offered_agent, offered_type = offered_slot_seconds(history, lo, hi)
    busy_agent, busy_queue = busy_slot_seconds(outcomes, held, lo, hi)
    overall = outcome_figures(outcomes, hours)
    overall |= {"busy_slot_seconds": round(sum(busy_agent.values()), 3),
                "offered_slot_seconds": round(sum(offered_agent.values()), 3),
                "utilization": ratio(sum(busy_agent.values()), sum(offered_agent.values()))}
    by_queue: dict[str, list[Outcome]] = {}
    by_agent: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_queue.setdefault(o.queue, []).append(o)
        if o.agent is not None:
            by_agent.setdefault(o.agent, []).append(o)
    queues = _breakdown(by_queue, busy_queue, offered_type, hours)
    agents = _breakdown(by_agent, busy_agent, offered_agent, hours)
    return {"overall": overall, "queues": queues, "agents": agents, "hourly": hourly(outcomes)}


def _breakdown(groups: dict[str, list[Outcome]], busy: dict[str, float], offered: dict[str, float],
               hours: float) -> dict[str, dict[str, object]]:
    """Figures per queue or per agent: those with attempts, busy or offered slots."""
    names = set(groups) | {n for n, s in busy.items() if s} | {n for n, s in offered.items() if s}
    return {name: outcome_figures(groups.get(name, []), hours)
            | {"busy_slot_seconds": round(busy.get(name, 0.0), 3),
               "offered_slot_seconds": round(offered.get(name, 0.0), 3),
               "utilization": ratio(busy.get(name, 0.0), offered.get(name, 0.0))}
            for name in sorted(names)}
