"""`python -m benchmarks.rebuild_child HOME`: rebuild the projections of one workspace
and print one JSON line: the events folded, the seconds, and this process's peak
resident memory before and after the rebuild, in KiB.

The peak is `VmHWM` of /proc/self/status (the high-water mark of this process's own
address space). `getrusage(...).ru_maxrss` is not used: on Linux a child started with
vfork (as subprocess does) inherits the parent's high-water mark at exec, so it would
report the benchmark runner's memory, not the rebuild's."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from benchmarks.common import open_workspace
from scheduler.rebuild import rebuild_projections


def peak_kib() -> int:
    """The peak resident memory of this process so far, in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is


def main(home: str) -> None:
    ws = open_workspace(Path(home))
    ws.db  # noqa: B018 -- open the database: the baseline includes the engine
    before = peak_kib()
    started = time.perf_counter()
    events = rebuild_projections(ws)
    seconds = time.perf_counter() - started
    ws.close()
    peak = peak_kib()
    print(json.dumps({"events": events, "seconds": seconds, "baseline_kib": before, "peak_kib": peak}))


if __name__ == "__main__":
    main(sys.argv[1])
