"""What an agent run cost, measured by the supervisor: CPU seconds, peak resident
memory, and how long its slot was held before the command ran (the start delay: from
the `lease_clock` reading taken with the time the attempt's `TaskStarted` records to
the one when `Popen` returned, both on this host). CPU comes from the kernel's
accounting of the reaped agent (`wait4`: exact, and it includes grandchildren the
agent waited for); memory is sampled with psutil over the agent's process tree while
it runs (the sum of its processes' RSS at each sample, every `exec_sample_seconds`
from its start), so a peak shorter than the sampling interval can be missed, and a
run shorter than it has no measure (None, not 0). (Not `ru_maxrss` of `wait4`: Linux counts in it the
memory of the wrapper, which the agent's process shared until its exec; a one-line
shell agent was recorded with the 40 to 70 MB of the Python wrapper.)"""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    peak_rss_bytes: int | None  # None: no sample was taken (a run shorter than the interval)
    # from the attempt's start being recorded to its command running (None: it never ran)
    start_delay_seconds: float | None = None


class UsageMeter:
    """The peak memory of an agent's process tree: `sample` while it runs."""

    def __init__(self) -> None:
        self.peak: int | None = None  # (no sample yet: not measured, which 0 is not)

    def sample(self, pid: int) -> None:
        """Add up the RSS of the process `pid` and its descendants; keep the peak."""
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return  # it just exited: the last sample stands
        total = 0
        for process in tree:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        self.peak = total if self.peak is None else max(self.peak, total)
