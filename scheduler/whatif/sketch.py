"""A distribution of seconds in constant memory: what a simulated day keeps of its waits
and run times, however many tasks it runs.

The count, the total, the smallest and the largest are exact; quantiles come from a
histogram of logarithmic buckets (the DDSketch idea): a value `x` of a nanosecond or
more falls in bucket `ceil(log(x) / log(GAMMA))`, whose every value lies within
`RELATIVE_ACCURACY` of the bucket's representative, so a quantile read from the buckets
is within 0.5% of the exact nearest-rank one (never outside the smallest and the
largest, which it reads exactly). Zero (a task assigned the moment it was ready) and
anything under a nanosecond have a bucket of their own, which reads as zero. The buckets
a day of seconds can fill are bounded by the range of its values, not by its length:
from a millisecond to a year, about 2,400.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

RELATIVE_ACCURACY = 0.005
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
_MIDDLE = 2 * GAMMA / (GAMMA + 1)  # a bucket's representative over its lower bound
TINY = 1e-9  # seconds: a value below a nanosecond counts with the zeros


class Sketch:
    """Finite seconds, added one at a time: a negative value counts as zero, and so
    does one under `TINY` in the quantiles (the smallest and the total keep it)."""

    __slots__ = ("buckets", "count", "largest", "smallest", "total", "zeros")

    def __init__(self, values: Iterable[float] = ()) -> None:
        self.count = 0
        self.total = 0.0
        self.smallest: float | None = None
        self.largest: float | None = None
        self.zeros = 0
        self.buckets: dict[int, int] = {}
        for value in values:
            self.add(value)

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            raise ValueError(f"a duration must be a finite number of seconds, not {value!r}")
        value = max(value, 0.0)
        self.count += 1
        self.total += value
        if self.largest is None or value > self.largest:
            self.largest = value
        if self.smallest is None or value < self.smallest:
            self.smallest = value
        if value < TINY:
            self.zeros += 1
        else:
            key = math.ceil(math.log(value) / _LOG_GAMMA)
            self.buckets[key] = self.buckets.get(key, 0) + 1

    def __len__(self) -> int:
        return self.count

    def quantile(self, share: float) -> float | None:
        """The nearest-rank quantile (`share` 0.95: p95), within `RELATIVE_ACCURACY`;
        None for no values."""
        if not self.count:
            return None
        assert self.smallest is not None and self.largest is not None
        rank = max(1, math.ceil(share * self.count))
        if rank == self.count:  # the first and the last are known exactly
            return self.largest
        if rank == 1:
            return self.smallest
        seen = self.zeros
        if seen >= rank:
            return 0.0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                try:  # within the accuracy of every value of the bucket
                    middle = GAMMA ** (key - 1) * _MIDDLE
                except OverflowError:  # (the top bucket of floats: the largest is in it)
                    middle = math.inf
                return min(max(middle, self.smallest), self.largest)
        return self.largest  # (not reached: the buckets and the zeros hold every value)
