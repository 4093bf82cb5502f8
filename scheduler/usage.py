"""What an agent run cost: CPU seconds and peak resident memory, measured by the exec
wrapper. CPU comes from the kernel's accounting of reaped children (exact, and it
includes grandchildren the agent waited for); memory is sampled with psutil over the
agent's process tree while it runs (the sum of its processes' RSS at each sample), so
a peak shorter than the sampling interval can be missed."""

from __future__ import annotations

import resource
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    peak_rss_bytes: int


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class UsageMeter:
    """Started before the agent is spawned; `sample` while it runs; `finish` once it
    has been reaped."""

    def __init__(self) -> None:
        self._cpu_before = _children_cpu()
        self._peak = 0

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
        self._peak = max(self._peak, total)

    def finish(self) -> Usage:
        return Usage(cpu_seconds=round(max(0.0, _children_cpu() - self._cpu_before), 6),
                     peak_rss_bytes=self._peak)
