"""Python's cyclic garbage collector held off while a write transaction holds the
writers' lock.

What a write builds (the events, their records, the views folded from them, the rows)
lives until the commit anyway, and almost none of it forms a cycle: reference counting
frees it. Yet the collector, counting allocations, walks every tracked object again and
again while a big write grows them: in a batch submit of 100,000 tasks that was 12 of
the 61 us each task cost, and every pause of it under the lock is a pause of every
writer of the fleet. So a write runs with the collector paused from the moment it holds
the lock to its end, and the collector runs again as before once no write of the process
holds it (the adapters pause it only then: a writer still waiting does not, or the
threads of `sched serve` queued one behind the other under a stream of requests could
keep it off for good). A collector the program had switched off stays off.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_writes = 0  # the writes of this process that hold the lock (one a database)
_resume = False  # whether the collector was running when the first of them began


@contextmanager
def collector_paused() -> Iterator[None]:
    global _writes, _resume
    with _lock:
        if _writes == 0:
            _resume = gc.isenabled()
            gc.disable()
        _writes += 1
    try:
        yield
    finally:
        with _lock:
            _writes -= 1
            if _writes == 0 and _resume:
                gc.enable()
