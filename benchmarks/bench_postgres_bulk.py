"""The bulk figures on PostgreSQL, as `batch_submit` and `rebuild` measure them on
SQLite: each beside the same rows written bare through psycopg (`executemany`, which
psycopg sends as one pipeline, as sched sends its writes) on the same server, in the
same run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.bench_postgres import COLUMNS, LOCK, cluster, columns_of, connect, pg_workspace
from benchmarks.bench_submit import BACKLOG_AGENTS, BACKLOG_CAPACITY, record_fleet
from benchmarks.build import load_queued
from benchmarks.common import PROJECTION_TABLES, Context, fleet, open_workspace, result, task_specs, timed
from scheduler.rebuild import rebuild_projections
from scheduler.submit import submit
from scheduler.workspace import Workspace

Writes = list[tuple[str, list[tuple[Any, ...]]]]
BACKLOG = "pg_batch"  # the database of the batch's backlog, folded again by `pg_rebuild`


def table_inserts(ws: Workspace, tables: tuple[str, ...] | list[str]) -> Writes:
    """Every row of `tables` in `ws`'s database, as bare INSERTs with their rows."""
    writes = []
    with connect(ws) as conn:
        for table in tables:
            columns = columns_of(conn, table)
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            if rows:
                marks = ", ".join(["%s"] * len(columns))
                writes.append((f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows))
    return writes


def _empty(ws: Workspace, tables: tuple[str, ...] | list[str]) -> None:
    with connect(ws) as conn:
        for table in tables:
            conn.execute(f"DELETE FROM {table}")


def _insert_all(ws: Workspace, writes: Writes) -> float:
    """The seconds of one transaction under the writers' lock inserting `writes`."""
    with connect(ws) as bare:
        def insert() -> None:
            bare.execute(LOCK)
            for sql, rows in writes:
                bare.cursor().executemany(sql, rows)
            bare.commit()

        return timed(insert)


def pg_batch_submit(ctx: Context) -> dict[str, Any]:
    """`submit(ws, specs)` of N tasks in one transaction on PostgreSQL; the database it
    leaves (the fleet recorded after it) is the log `pg_rebuild` folds again."""
    n = ctx.params["batch_tasks"]
    agents = fleet(BACKLOG_AGENTS, BACKLOG_CAPACITY)
    ws = pg_workspace(ctx, BACKLOG, agents)
    specs = task_specs(n)
    ws.db  # noqa: B018 -- open the database before the clock starts
    seconds = timed(lambda: submit(ws, specs))
    record_fleet(ws)
    events = table_inserts(ws, ["events"])
    projected = table_inserts(ws, PROJECTION_TABLES)
    ws.close()
    ctx.cache["pg_batch_home"] = ws.settings.home
    timings = {}
    for name, writes in (("same", [*events, *projected]), ("events_only", events)):
        bare_ws = pg_workspace(ctx, f"pg_batch_bare_{name}", agents)
        _empty(bare_ws, ["events", *PROJECTION_TABLES])
        timings[name] = _insert_all(bare_ws, writes)
        bare_ws.close()
    rows = len(events[0][1])
    value, ceiling = n / seconds, rows / timings["same"]
    return result(
        "pg_batch_submit", value=value, unit="tasks/s", ceiling=ceiling, ratio=value / ceiling,
        target=">= 0.5",
        what=f"submit() of {n:,} tasks in one transaction on PostgreSQL (events, hash chain, task rows, "
             "counts)",
        ceiling_what=f"the writers' lock and executemany of the same {rows:,} event rows and of the "
                     "projection rows the submit left (its task rows, counts, meta; the fleet's) into "
                     "empty tables of the same shape, one transaction (psycopg)",
        details={"tasks": n, "seconds": seconds, "bare_seconds": timings["same"],
                 "events_only_seconds": timings["events_only"],
                 "events_only_ratio": value / (rows / timings["events_only"])})


def _backlog(ctx: Context) -> Path:
    """The home of the database `pg_batch_submit` left (`BACKLOG`), made with
    `load_queued` when that figure did not run."""
    if "pg_batch_home" not in ctx.cache:
        ws = pg_workspace(ctx, BACKLOG, fleet(BACKLOG_AGENTS, BACKLOG_CAPACITY))
        load_queued(ws, ctx.params["batch_tasks"], ws.clock.now())
        record_fleet(ws)
        ws.close()
        ctx.cache["pg_batch_home"] = ws.settings.home
    return ctx.cache["pg_batch_home"]  # type: ignore[no-any-return]


def _copy(ctx: Context, name: str) -> Workspace:
    """A workspace on a copy of the backlog's database (CREATE DATABASE ... TEMPLATE)."""
    backlog = _backlog(ctx)
    url = cluster(ctx).create_database(name, template=BACKLOG)
    home = ctx.dir(name)
    (home / "sched.toml").write_text(f'database_url = "{url}"\n')
    (home / "agent-control.json").write_bytes((backlog / "agent-control.json").read_bytes())
    return open_workspace(home)


def pg_rebuild(ctx: Context) -> dict[str, Any]:
    """`sched rebuild` on PostgreSQL: drop the projection rows and fold the log of
    `pg_batch_submit` again, in one transaction, on a copy of its database."""
    ws = _copy(ctx, "pg_rebuild")
    ws.db  # noqa: B018 -- open the database before the clock starts
    seconds = timed(lambda: rebuild_projections(ws))
    projected = table_inserts(ws, PROJECTION_TABLES)
    ws.close()

    def read_and_decode(rewrite: bool) -> float:
        bare_ws = _copy(ctx, f"pg_rebuild_bare_{int(rewrite)}")
        with connect(bare_ws) as bare:
            def rebuild() -> None:
                bare.execute(LOCK)
                for row in bare.execute(f"SELECT {COLUMNS} FROM events ORDER BY seq"):
                    json.loads(row[5])
                if rewrite:  # the projection rows dropped and written again, as the rebuild left them
                    for table in PROJECTION_TABLES:
                        bare.execute(f"DELETE FROM {table}")
                    for sql, rows in projected:
                        bare.cursor().executemany(sql, rows)
                bare.commit()

            taken = timed(rebuild)
        bare_ws.close()
        return taken

    with connect(ws) as conn:
        (events,), = conn.execute("SELECT count(*) FROM events").fetchall()
    bare_seconds, read_only_seconds = read_and_decode(True), read_and_decode(False)
    value, ceiling = events / seconds, events / bare_seconds
    return result(
        "pg_rebuild", value=value, unit="events/s", ceiling=ceiling, ratio=value / ceiling,
        target=">= 0.5", what=f"rebuild_projections() on PostgreSQL of a log of {events:,} events",
        ceiling_what="on another copy, one transaction under the writers' lock: SELECT of the same event "
                     "rows in seq order + json.loads of each payload, then the projection rows deleted "
                     "and the rows the rebuild left inserted (psycopg)",
        details={"events": events, "seconds": seconds, "bare_seconds": bare_seconds,
                 "read_only_seconds": read_only_seconds,
                 "read_only_ratio": value / (events / read_only_seconds)})

