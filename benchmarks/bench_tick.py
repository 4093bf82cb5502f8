"""The tick: assigning a thousand tasks out of a big backlog, and a tick that finds no
free slot, whose cost must not grow with the backlog."""

from __future__ import annotations

import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.bench_submit import BACKLOG_AGENTS, BACKLOG_CAPACITY, backlog_home
from benchmarks.build import describe, full_fleet_db
from benchmarks.common import (
    EVENT_COLUMNS,
    INSERT_EVENT,
    Context,
    bare_connect,
    bare_database,
    event_rows,
    open_workspace,
    read_rows,
    result,
    timed,
)
from scheduler.tick import TickReport, tick


def copy_home(source: Path, target: Path) -> Path:
    """A copy of a closed workspace (its database and control file)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("sched.db", "agent-control.json"):
        shutil.copyfile(source / name, target / name)
    return target


class LaterClock:
    """The system clock, `offset` later: a backlog that has waited that long."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _tick_copy(template: Path, home: Path, clock: LaterClock | None = None) -> tuple[float, TickReport]:
    """Tick a fresh copy of a workspace once; the seconds it took and its report."""
    copy_home(template, home)
    ws = open_workspace(home)
    if clock is not None:
        ws.clock = clock
    ws.db  # noqa: B018 -- open (and check) the database before the clock starts
    started = time.perf_counter()
    report = tick(ws)
    seconds = time.perf_counter() - started
    ws.close()
    return seconds, report


def same_writes(db: Path, after_seq: int) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """What a tick wrote to a sched database, as bare statements with their rows: the
    events after `after_seq`, and the rows of the tasks it assigned, of every agent, of
    the queue counts and of projection_meta, as they stand after it (each an UPDATE of a
    row the database already had, or an INSERT OR REPLACE of a count or a meta value)."""
    def table_columns(table: str) -> list[str]:
        return [name for (_cid, name, *_rest) in read_rows(db, f"PRAGMA table_info({table})")]

    writes: list[tuple[str, list[tuple[Any, ...]]]] = [(INSERT_EVENT, event_rows(db, after=after_seq))]
    for table, key, where in (("tasks", "task_id", "status = 'assigned'"), ("agents", "name", "1")):
        columns = [c for c in table_columns(table) if c != key]
        rows = read_rows(db, f"SELECT {', '.join(columns)}, {key} FROM {table} WHERE {where}")
        writes.append((f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE {key} = ?", rows))
    for table in ("queue_counts", "projection_meta"):
        columns = table_columns(table)
        writes.append((f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) "
                       f"VALUES ({', '.join('?' * len(columns))})", read_rows(db, f"SELECT * FROM {table}")))
    return writes


def bare_writes(conn: Any, writes: list[tuple[str, list[tuple[Any, ...]]]]) -> float:
    """The seconds of one transaction making `writes` through a bare connection."""
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    for sql, rows in writes:
        conn.executemany(sql, rows)
    conn.execute("COMMIT")
    return time.perf_counter() - started


def tick_assign(ctx: Context) -> dict[str, Any]:
    """One tick over the backlog of `batch_submit` with every slot of its 100 agents
    free: it assigns one task per slot (1,000) in one transaction. Each repetition ticks
    a fresh copy of the database; its ceiling makes the same writes through bare
    sqlite3 in another fresh copy of the database as it stood before the tick (the same
    rows, in the same tables and indexes). Beside it (in the details, not the ratio):
    the same rows inserted into empty tables (the ceiling until 2026-12-04), and the
    same tick an hour later, when the backlog has earned age boosts."""
    template = backlog_home(ctx)
    (last_seq,), = read_rows(template / "sched.db", "SELECT max(seq) FROM events")
    slots = BACKLOG_AGENTS * BACKLOG_CAPACITY
    columns = [name for (_cid, name, *_rest) in read_rows(template / "sched.db", "PRAGMA table_info(tasks)")]
    insert_task = f"INSERT INTO tasks ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    times, bare_times, empty_times, assigned, events = [], [], [], 0, []
    for rep in range(ctx.params["tick_repeat"]):
        home = ctx.root / f"tick-assign-{rep}"
        seconds, report = _tick_copy(template, home)
        times.append(seconds)
        assigned = len(report.assigned)
        db = home / "sched.db"
        writes = same_writes(db, last_seq)
        events = writes[0][1]
        before = copy_home(template, ctx.root / f"bare-tick-{rep}")
        bare = bare_connect(before / "sched.db")
        bare_times.append(bare_writes(bare, writes))
        bare.close()
        shutil.rmtree(before)
        tasks = read_rows(db, f"SELECT {', '.join(columns)} FROM tasks WHERE status = 'assigned'")
        empty = bare_database(ctx.root / f"bare-empty-{rep}.db", db, ["events", "tasks"])
        empty_times.append(bare_writes(empty, [(INSERT_EVENT, events), (insert_task, tasks)]))
        empty.close()
        shutil.rmtree(home)
    aged_seconds, aged = _tick_copy(template, ctx.root / "tick-aged", LaterClock(timedelta(hours=1)))
    shutil.rmtree(ctx.root / "tick-aged")
    value, ceiling = statistics.median(times), statistics.median(bare_times)
    backlog = ctx.params["batch_tasks"]
    return result(
        "tick_assign", value=value, unit="s", ceiling=ceiling, ratio=value / ceiling, target="<= 2",
        what=f"one tick assigning {assigned:,} tasks out of a {backlog:,} backlog over "
             f"{BACKLOG_AGENTS} agents ({slots:,} free slots), median of {len(times)}",
        ceiling_what=f"the same writes in one bare transaction on a copy of the database before the "
                     f"tick: {len(events):,} event rows inserted, the {assigned:,} task rows, the agent "
                     "rows, the counts and projection_meta as the tick left them",
        details={"assigned": assigned, "tick_seconds": times, "bare_seconds": bare_times,
                 "empty_tables_seconds": empty_times,
                 "empty_tables_ratio": value / statistics.median(empty_times),
                 "events_appended": len(events), "event_columns": EVENT_COLUMNS,
                 "aged_backlog": {"clock_offset_hours": 1, "tick_seconds": aged_seconds,
                                  "assigned": len(aged.assigned)}},
        ok=assigned == slots)


def _alternating(ctx: Context, run_big: Any, run_small: Any, repeat: int) -> tuple[float, float]:
    """Median time of each, measured in turns so that a noisy moment hits both."""
    run_big(), run_small()  # warm: connections, caches, imports
    big, small = [], []
    for _ in range(repeat):
        big.append(timed(run_big))
        small.append(timed(run_small))
    return statistics.median(big), statistics.median(small)


def tick_idle(ctx: Context) -> dict[str, Any]:
    """A tick whose fleet is full (nothing to assign, nothing overdue), over a big and a
    small backlog: the cost must not follow the backlog."""
    big_n, small_n = ctx.params["idle_big"], ctx.params["idle_small"]
    big_home, small_home = full_fleet_db(ctx, big_n), full_fleet_db(ctx, small_n)
    big_ws, small_ws = open_workspace(big_home), open_workspace(small_home)
    reports: list[Any] = []
    big, small = _alternating(ctx, lambda: reports.append(tick(big_ws)),
                              lambda: reports.append(tick(small_ws)), ctx.params["idle_repeat"])
    big_ws.close(), small_ws.close()
    idle = all(not r.assigned and not r.expired for r in reports)
    return result(
        "tick_idle", value=big * 1000, unit="ms", ceiling=small * 1000, ratio=big / small,
        target="<= 1.5",
        what=f"a tick with no free slot over {big_n:,} queued tasks (median of "
             f"{ctx.params['idle_repeat']})",
        ceiling_what=f"the same tick over {small_n:,} queued tasks, measured in turns",
        details={"big": describe(big_home), "small": describe(small_home), "idle": idle},
        ok=idle)
