"""A simulation summed up as one JSON-ready document, two of them compared, and the
queue depth drawn as a text chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scheduler.whatif.engine import Run
from scheduler.whatif.sketch import Sketch

CHART_COLUMNS = 60
_BARS = " ▁▂▃▄▅▆▇█"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summary(run: Run) -> dict[str, object]:
    """Per queue: tasks by how they ended, waits (ready to assigned) and run times
    (start to end) in seconds; per agent: utilization (its slots busy from an
    attempt's start to its end, over the run's span) and attempts; the time to drain
    (first fact to last end; None when a queued task was never taken: the queue never
    drained. Tasks still awaiting approval or a parent do not count: they wait on
    people and other work, not on the fleet)."""
    span = (run.ended_at - run.started_at) if run.started_at is not None and run.ended_at is not None else 0.0
    queues = {}
    for name in sorted(run.queues):
        q = run.queues[name]
        queues[name] = {
            "arrived": q.arrived, "succeeded": q.succeeded, "dead_lettered": q.dead,
            "cancelled": q.cancelled, "doomed": q.doomed,
            "wait_p50": _round(q.waits.quantile(0.5)), "wait_p95": _round(q.waits.quantile(0.95)),
            "wait_max": _round(q.waits.largest),
            "run_p50": _round(q.runs.quantile(0.5)), "run_p95": _round(q.runs.quantile(0.95)),
        }
    agents = {name: {"type": a.type, "capacity": a.capacity, "attempts": a.attempts,
                     "utilization": round(a.busy_seconds / (a.capacity * span), 4)
                     if a.capacity and span > 0 else 0.0}
              for name, a in sorted(run.agents.items())}
    return {"time_to_drain_seconds": None if run.stranded else round(span, 3), "unfinished": run.unfinished,
            "queues": queues, "agents": agents}


def difference(base: Mapping[str, object], other: Mapping[str, object]) -> dict[str, object]:
    """`other - base` for every number both have, keyed as they are (None where either
    side has none)."""
    found: dict[str, object] = {}
    for key, value in base.items():
        theirs = other.get(key)
        if isinstance(value, Mapping) and isinstance(theirs, Mapping):
            found[key] = difference(value, theirs)
        elif isinstance(value, int | float) and isinstance(theirs, int | float) \
                and not isinstance(value, bool):
            found[key] = round(theirs - value, 4)
        elif not isinstance(value, str):
            found[key] = None
    for key in sorted(other.keys() - base.keys()):  # (sorted: the same JSON whatever the hash seed)
        if not isinstance(other[key], str):
            found[key] = None
    return found


def depth_series(run: Run, queue: str) -> list[int]:
    q = run.queues.get(queue)
    return list(q.depth) if q is not None else []


def sparkline(values: Sequence[int], top: int) -> str:
    """One character per value, scaled so `top` is a full bar."""
    if top <= 0:
        return _BARS[0] * len(values)
    return "".join(_BARS[0 if v <= 0 else max(1, round(v / top * (len(_BARS) - 1)))] for v in values)


def fidelity(recorded: Mapping[str, Sketch], simulated: Run) -> dict[str, object] | None:
    """How close the baseline simulation's waits come to the recorded ones, per queue
    and over all: the mean wait each side and the difference in percent of the
    recorded mean (None where nothing was recorded)."""
    if not any(recorded.values()):
        return None
    result: dict[str, object] = {}
    every_recorded: list[Sketch] = []
    every_simulated: list[Sketch] = []
    for queue in sorted(recorded):
        mine = recorded[queue]
        theirs = simulated.queues[queue].waits if queue in simulated.queues else Sketch()
        every_recorded.append(mine)
        every_simulated.append(theirs)
        result[queue] = _closeness([mine], [theirs])
    result["all"] = _closeness(every_recorded, every_simulated)
    return result


def _closeness(recorded: Sequence[Sketch], simulated: Sequence[Sketch]) -> dict[str, object]:
    rec, sim = _mean(recorded), _mean(simulated)
    off = None
    if rec is not None and sim is not None:
        off = round(100.0 * (sim - rec) / rec, 1) if rec > 0 else (0.0 if sim == 0 else None)
    return {"wait_mean_recorded": _round(rec), "wait_mean_simulated": _round(sim), "difference_percent": off}


def _mean(parts: Sequence[Sketch]) -> float | None:
    """The mean of the values of all `parts` together (None: no values)."""
    count = sum(part.count for part in parts)
    return sum(part.total for part in parts) / count if count else None
