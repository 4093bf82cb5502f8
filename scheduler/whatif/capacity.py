"""Capacity search: the smallest total capacity of a queue's agents that meets a
target, found by doubling and then bisecting (the figures are taken to improve with
capacity; every point tried is kept, so the curve shows where that fails)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from eventlog.errors import BadInput
from scheduler.durations import parse_duration

_QUEUE_METRICS = ("wait_p50", "wait_p95", "wait_max", "run_p50", "run_p95", "dead_lettered", "succeeded")
_METRICS = (*_QUEUE_METRICS, "time_to_drain_seconds")
COUNTS = ("dead_lettered", "succeeded")  # the metrics that count tasks; the others are seconds
_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_TARGET = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=|<|>)\s*(.+?)\s*$")
MAX_CAPACITY = 100_000


@dataclass(frozen=True)
class Target:
    metric: str
    op: str
    value: float
    text: str

    def met(self, figures: dict[str, object], queue: str) -> tuple[float | None, bool]:
        """The metric's value in a summary, and whether it meets the target (a queue
        that saw no assignment has no waits: that never meets it)."""
        if self.metric == "time_to_drain_seconds":
            found = figures["time_to_drain_seconds"]
        else:
            found = figures["queues"].get(queue, {}).get(self.metric)  # type: ignore[attr-defined]
        if found is None:
            return None, False
        return float(found), _OPS[self.op](float(found), self.value)


def parse_target(text: str) -> Target:
    """`wait_p95<=5m`, `dead_lettered<=0`, `time_to_drain_seconds<2h`."""
    found = _TARGET.match(text)
    if found is None or found.group(1) not in _METRICS:
        raise BadInput(f"--target {text!r}: expected METRIC<=VALUE with METRIC one of {', '.join(_METRICS)}")
    metric, op, value = found.groups()
    if metric in COUNTS:
        try:
            number = float(int(value))
        except ValueError:
            raise BadInput(f"--target {text!r}: {metric} is a count") from None
    else:
        number = parse_duration(value, f"--target {text!r}").total_seconds()
    return Target(metric, op, number, text)


def search(evaluate: Callable[[int], dict[str, object]], queue: str, target: Target,
           start: int, ceiling: int) -> tuple[int | None, list[dict[str, object]]]:
    """The smallest capacity in [1, ceiling] whose run meets `target` (None if even
    `ceiling` does not), and the points tried, in capacity order. `evaluate(c)` is the
    summary of a run with c slots; `start` is where the doubling begins."""
    tried: dict[int, tuple[float | None, bool]] = {}

    def meets(capacity: int) -> bool:
        if capacity not in tried:
            tried[capacity] = target.met(evaluate(capacity), queue)
        return tried[capacity][1]

    low, high = 0, max(1, min(start, ceiling))  # low fails (0 slots never serve), high is tried
    while not meets(high):
        if high >= ceiling:
            return None, _curve(tried)
        low, high = high, min(high * 2, ceiling)
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return high, _curve(tried)


def _curve(tried: dict[int, tuple[float | None, bool]]) -> list[dict[str, object]]:
    return [{"capacity": c, "value": v, "met": m} for c, (v, m) in sorted(tried.items())]
