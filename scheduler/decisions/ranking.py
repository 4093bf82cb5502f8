"""Which agents of a pool may take a task, best first: the rule (`rank`), and the same
rule kept up to date as a plan fills slots (`Standing`), for the tasks that ask
nothing of an agent in particular.

Pure. `plan()` places a thousand tasks on a hundred agents in one tick: ranking the
whole pool again for each task costs most of the plan. A task that names no assignee,
requires no capability and has no failed agent to skip (and is not a claim) is judged
the same way for every agent (`fit.why_not` then reads only the agent), so one
standing per queue and task type serves them all: placing a task moves one agent,
whose place is found again by bisection. A test checks the standing against `rank`
after every move.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from projections.views import TaskView
from scheduler.decisions.fit import skips_failed, takes_work, why_not

Order = tuple[int, float, float, int, str]


@dataclass
class Slot:
    """An agent as a plan sees it: its free slots and load change as tasks are placed."""

    name: str
    free: int
    load: int
    capacity: int  # as declared: 0 (or less than its load) while work it held winds down
    weight: float = 1.0
    capabilities: tuple[str, ...] = ()
    hours: tuple[str, ...] = ()
    available: bool = True  # within its working hours now
    out_of_service: str | None = None  # drained or evicted by an operator


def order_of(rate: Mapping[str, float]) -> Callable[[Slot], Order]:
    """The sort key of the rank: most free slots, then the highest weight, then the best
    success rate at the task's type (`rate`), then the lowest load, then the name. Weight
    only orders agents with equally many free slots: it never outranks a free slot. The
    name makes the order total."""
    return lambda s: (-s.free, -s.weight, -rate[s.name], s.load, s.name)


def rank(pool: Sequence[Slot], task: TaskView, rate: Mapping[str, float], claimant: str | None,
         best: int) -> tuple[list[Slot], int, list[tuple[str, str]]]:
    """The `best` agents of `pool` that may take the task now, best first; how many may;
    and those that may not, with why, in pool order (`rate`: each agent's success rate at
    the task's type; `claimant`: the pull worker claiming, if this is a claim)."""
    skip_failed = skips_failed(task, ((s.name, s.capabilities) for s in pool
                                      if takes_work(s.out_of_service, s.capacity, s.available)))
    eligible, passed_over = [], []
    for s in pool:
        why = why_not(s, s.available, task, skip_failed, claimant)
        if why is None:
            eligible.append(s)
        else:
            passed_over.append((s.name, why))
    return heapq.nsmallest(best, eligible, key=order_of(rate)), len(eligible), passed_over


def asks_nothing(task: TaskView, claimant: str | None) -> bool:
    """Whether `why_not` judges every agent for this task by the agent alone: no
    assignee, no required capability, no failed agent to skip, not a claim."""
    return claimant is None and task.assignee is None and not task.requires and not task.excluded


class Standing:
    """`rank` for the tasks of one queue and task type that ask nothing of an agent,
    kept as slots are filled: `moved(slot)` after each placement in its pool."""

    def __init__(self, pool: Sequence[Slot], task: TaskView, rate: Mapping[str, float]) -> None:
        assert asks_nothing(task, None)
        self._task, self._order = task, order_of(rate)
        self._index = {s.name: i for i, s in enumerate(pool)}
        self._eligible: list[tuple[Order, Slot]] = []
        self._passed: list[tuple[int, str, str]] = []  # (place in the pool, name, why)
        for i, s in enumerate(pool):
            why = why_not(s, s.available, task, False)
            if why is None:
                self._eligible.append((self._order(s), s))
            else:
                self._passed.append((i, s.name, why))
        self._eligible.sort(key=lambda pair: pair[0])
        self._keys = {s.name: key for key, s in self._eligible}

    def top(self, best: int) -> tuple[list[Slot], int, list[tuple[str, str]]]:
        """What `rank` answers for a task of this standing."""
        return ([s for _key, s in self._eligible[:best]], len(self._eligible),
                [(name, why) for _i, name, why in self._passed])

    def moved(self, slot: Slot) -> None:
        """`slot` took a task (its free slots and load changed): find its place again,
        or move it among those passed over once it has no free slot left."""
        key = self._keys.pop(slot.name, None)
        if key is None:
            return  # passed over already (out of service or outside its hours): it stays so
        del self._eligible[bisect.bisect_left(self._eligible, key, key=lambda pair: pair[0])]
        why = why_not(slot, slot.available, self._task, False)
        if why is None:
            key = self._keys[slot.name] = self._order(slot)
            bisect.insort(self._eligible, (key, slot), key=lambda pair: pair[0])
        else:
            bisect.insort(self._passed, (self._index[slot.name], slot.name, why))
