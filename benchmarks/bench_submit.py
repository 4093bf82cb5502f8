"""Submitting: a batch of tasks in one transaction, and one task per transaction (in the
default durability and with `synchronous=FULL`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.build import load_queued
from benchmarks.common import (
    INSERT_EVENT,
    PROJECTION_TABLES,
    Context,
    bare_database,
    event_rows,
    fleet,
    new_workspace,
    projection_inserts,
    result,
    task_specs,
    timed,
)
from scheduler.planning import record_config_if_changed
from scheduler.submit import submit
from scheduler.workspace import Workspace

# the backlog fleet: also the fleet of the tick figure, which reuses this database
BACKLOG_AGENTS, BACKLOG_CAPACITY = 100, 10


def batch_submit(ctx: Context) -> dict[str, Any]:
    """`submit(ws, specs)` of N tasks at once: N TaskSubmitted events sealed into the
    hash chain, N task rows and the queue counts, in one transaction."""
    n = ctx.params["batch_tasks"]
    home = ctx.dir("backlog")
    ws = new_workspace(home, fleet(BACKLOG_AGENTS, BACKLOG_CAPACITY))
    specs = task_specs(n)
    seconds = timed(lambda: submit(ws, specs))
    db = ws.settings.db_path
    record_fleet(ws)
    ws.close()
    ctx.cache["backlog_home"] = home
    rows = event_rows(db)
    projected = projection_inserts(db)

    def insert_all(bare: Any, writes: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        bare.execute("BEGIN IMMEDIATE")
        for sql, many in writes:
            bare.executemany(sql, many)
        bare.execute("COMMIT")

    same = bare_database(ctx.root / "bare-batch.db", db, ["events", *PROJECTION_TABLES])
    bare_seconds = timed(lambda: insert_all(same, [(INSERT_EVENT, rows), *projected]))
    same.close()
    events_only = bare_database(ctx.root / "bare-batch-events.db", db, ["events"])
    events_seconds = timed(lambda: insert_all(events_only, [(INSERT_EVENT, rows)]))
    events_only.close()
    value, ceiling = n / seconds, len(rows) / bare_seconds
    return result(
        "batch_submit", value=value, unit="tasks/s", ceiling=ceiling, ratio=value / ceiling,
        target=">= 0.5",
        what=f"submit() of {n:,} tasks in one transaction (events, hash chain, task rows, counts)",
        ceiling_what=f"executemany of the same {len(rows):,} event rows and of the projection rows "
                     "the submit left (its task rows, counts, meta; the fleet's) into empty tables of the "
                     "same shape, one transaction",
        details={"tasks": n, "seconds": seconds, "bare_seconds": bare_seconds,
                 "events_only_seconds": events_seconds,
                 "events_only_ratio": value / (len(rows) / events_seconds)})


def record_fleet(ws: Workspace) -> None:
    """Record the control file (`AgentsConfigured`), as the first tick would: the figures
    that tick this database then measure a tick in a steady state."""
    with ws.write() as recorder:
        record_config_if_changed(recorder, ws.registry().control)


def backlog_home(ctx: Context) -> Path:
    """The workspace of `batch_submit` (its tasks queued, the fleet of 100 agents of 10
    slots recorded); built with `load_queued` when that figure did not run."""
    if "backlog_home" not in ctx.cache:
        home = ctx.dir("backlog")
        ws = new_workspace(home, fleet(BACKLOG_AGENTS, BACKLOG_CAPACITY))
        load_queued(ws, ctx.params["batch_tasks"], ws.clock.now())
        record_fleet(ws)
        ws.close()
        ctx.cache["backlog_home"] = home
    return ctx.cache["backlog_home"]


def _single(ctx: Context, name: str, n: int, synchronous: str, target: str) -> dict[str, Any]:
    home = ctx.dir(name)
    ws = new_workspace(home, fleet(4, 1), synchronous=synchronous)
    specs = task_specs(n)
    ws.db  # noqa: B018 -- open the database before the clock starts

    def one_by_one() -> None:
        for spec in specs:
            submit(ws, [spec])

    seconds = timed(one_by_one)
    db = ws.settings.db_path
    ws.close()
    rows = event_rows(db)
    bare = bare_database(ctx.root / f"bare-{name}.db", db, ["events"], synchronous=synchronous)

    def one_row_transactions() -> None:
        for row in rows:
            bare.execute("BEGIN IMMEDIATE")
            bare.execute(INSERT_EVENT, row)
            bare.execute("COMMIT")

    bare_seconds = timed(one_row_transactions)
    bare.close()
    same_seconds = _same_writes_seconds(ctx.root / f"bare-{name}-same.db", db, synchronous)
    value, ceiling = n / seconds, len(rows) / bare_seconds
    return result(
        name, value=value, unit="submits/s", ceiling=ceiling, ratio=value / ceiling, target=target,
        what=f"{n:,} calls of submit(ws, [spec]), one transaction each, synchronous={synchronous}",
        ceiling_what=f"the same {len(rows):,} event rows, BEGIN IMMEDIATE + INSERT + COMMIT each, "
                     f"synchronous={synchronous}",
        details={"submits": n, "seconds": seconds, "bare_seconds": bare_seconds,
                 "ms_per_submit": 1000 * seconds / n, "bare_ms_per_row": 1000 * bare_seconds / len(rows),
                 "same_writes_seconds": same_seconds, "same_writes_ratio": same_seconds / seconds})


def _same_writes_seconds(path: Path, db: Path, synchronous: str) -> float:
    """What the rows a submit writes cost bare: per task, one transaction inserting its
    `TaskSubmitted` row and its task row (as sched left them), adding one to its queue's
    count of queued tasks and setting `last_seq` (the issue's ceiling is the event row
    alone; this one says how much of the gap is the other rows)."""
    events = event_rows(db, types=["TaskSubmitted"])
    (task_sql, tasks), = [(sql, rows) for sql, rows in projection_inserts(db) if " tasks " in sql]
    bare = bare_database(path, db, ["events", "tasks", "queue_counts", "projection_meta"],
                         synchronous=synchronous)
    queues = [str(row[1]) for row in tasks]  # (task_id, queue, ...): the columns' order

    def same_writes() -> None:
        for event, task, queue in zip(events, tasks, queues, strict=True):
            bare.execute("BEGIN IMMEDIATE")
            bare.execute(INSERT_EVENT, event)
            bare.execute(task_sql, task)
            bare.execute("INSERT INTO queue_counts (queue, status, count) VALUES (?, 'queued', 1) "
                         "ON CONFLICT (queue, status) DO UPDATE SET count = count + 1", (queue,))
            bare.execute("INSERT OR REPLACE INTO projection_meta (key, value) VALUES ('last_seq', ?)",
                         (str(event[0]),))
            bare.execute("COMMIT")

    try:
        return timed(same_writes)
    finally:
        bare.close()


def single_submit(ctx: Context) -> dict[str, Any]:
    """One task per call of the Python API, each its own transaction (default durability)."""
    return _single(ctx, "single_submit", ctx.params["single_submits"], "NORMAL", ">= 0.5")


def single_submit_durable(ctx: Context) -> dict[str, Any]:
    """The same with `synchronous=FULL`: each commit waits for fsync."""
    return _single(ctx, "single_submit_durable", ctx.params["single_submits_full"], "FULL", ">= 0.8")
