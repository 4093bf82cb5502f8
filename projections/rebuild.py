"""Rebuilding the projections from the log, and verifying them against it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from eventlog.sqlite_store import SqliteStore
from eventlog.store import first_broken_link
from projections.apply import MemoryProjection, apply, fold
from projections.sql import SqlProjection


def rebuild(log: SqliteStore, views: SqlProjection,
            progress: Callable[[int], None] | None = None) -> int:
    """Drop every projection row and fold the whole log again; returns the events
    applied. Streams the log, so memory stays flat."""
    views.clear()
    count = 0
    for rec in log.read():
        apply(views, rec)
        count += 1
        if count % 10_000 == 0:
            views.flush()  # bounded memory: at most one chunk of changes pending
            if progress is not None:
                progress(count)
    views.flush()
    return count


@dataclass
class Verification:
    """What `replay --verify` found: empty `problems` means the log and tables agree."""

    events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(log: SqliteStore, views: SqlProjection, limit: int = 20) -> Verification:
    """Check the hash chain, then fold the log in memory and compare with the tables."""
    result = Verification()
    broken = first_broken_link(log.read())
    if broken is not None:
        result.problems.append(f"hash chain broken at seq {broken[0]}: {broken[1]}")
        return result
    expected = fold(log.read())
    result.events = int(expected.meta.get("last_seq", 0))
    stored = MemoryProjection(
        tasks={t.task_id: t for t in views.all_tasks()},
        agents={a.name: a for a in views.all_agents()},
        counts=views.counts(), meta=views.meta())
    for label, want, have in (("task", expected.tasks, stored.tasks),
                              ("agent", expected.agents, stored.agents),
                              ("queue count", expected.counts, stored.counts),
                              ("meta", expected.meta, stored.meta)):
        for key in sorted(set(want) | set(have), key=str):
            if want.get(key) != have.get(key):
                result.problems.append(
                    f"{label} {key}: log gives {want.get(key)!r}, table has {have.get(key)!r}")
    del result.problems[limit:]
    return result
