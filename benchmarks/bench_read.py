"""Reading: `status` on a long log, rebuilding the projections from the log, and the
memory a rebuild needs as the log grows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.bench_submit import backlog_home
from benchmarks.bench_tick import _alternating, copy_home
from benchmarks.build import describe, full_fleet_db
from benchmarks.common import (
    EVENT_COLUMNS,
    PROJECTION_TABLES,
    Context,
    bare_connect,
    growth_ratio,
    open_workspace,
    projection_inserts,
    result,
    timed,
)
from scheduler.reads import queries
from scheduler.rebuild import rebuild_projections

ROOT = Path(__file__).resolve().parents[1]


def status(ctx: Context) -> dict[str, Any]:
    """`queries.status` (what `sched status --json` prints) on a long and a short log."""
    big_n, small_n = ctx.params["idle_big"], ctx.params["idle_small"]
    big_home, small_home = full_fleet_db(ctx, big_n), full_fleet_db(ctx, small_n)
    big_ws, small_ws = open_workspace(big_home), open_workspace(small_home)
    big, small = _alternating(ctx, lambda: queries.status(big_ws), lambda: queries.status(small_ws),
                              ctx.params["status_repeat"])
    big_ws.close(), small_ws.close()
    big_info, small_info = describe(big_home), describe(small_home)
    return result(
        "status", value=big * 1000, unit="ms", ceiling=small * 1000, ratio=big / small,
        target="<= 1.5",
        what=f"status() on a log of {big_info['events']:,} events (median of "
             f"{ctx.params['status_repeat']})",
        ceiling_what=f"the same on a log of {small_info['events']:,} events, measured in turns",
        details={"big": big_info, "small": small_info})


def rebuild(ctx: Context) -> dict[str, Any]:
    """`sched rebuild`: drop the projection rows and fold the whole log again, in one
    transaction, on a copy of the backlog of `batch_submit`."""
    home = copy_home(backlog_home(ctx), ctx.root / "rebuild")
    db = home / "sched.db"
    ws = open_workspace(home)
    ws.db  # noqa: B018 -- open the database before the clock starts
    seconds = timed(lambda: rebuild_projections(ws))
    ws.close()
    projected = projection_inserts(db)

    def read_and_decode(bare: Any, rewrite: bool) -> None:
        bare.execute("BEGIN IMMEDIATE")
        for row in bare.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq"):
            json.loads(row[5])
        if rewrite:  # the projection rows dropped and written again, as the rebuild left them
            for table in PROJECTION_TABLES:
                bare.execute(f"DELETE FROM {table}")
            for sql, rows in projected:
                bare.executemany(sql, rows)
        bare.execute("COMMIT")

    timings = {}
    for rewrite in (True, False):
        copy = copy_home(backlog_home(ctx), ctx.root / "rebuild-bare")
        bare = bare_connect(copy / "sched.db")
        (events,), = bare.execute("SELECT count(*) FROM events").fetchall()
        timings[rewrite] = timed(lambda bare=bare, rewrite=rewrite: read_and_decode(bare, rewrite))
        bare.close()
    bare_seconds = timings[True]
    value, ceiling = events / seconds, events / bare_seconds
    return result(
        "rebuild", value=value, unit="events/s", ceiling=ceiling, ratio=value / ceiling,
        target=">= 0.5", what=f"rebuild_projections() of a log of {events:,} events",
        ceiling_what="on another copy, one transaction: SELECT of the same event rows in seq order + "
                     "json.loads of each payload, then the projection rows deleted and the rows the "
                     "rebuild left inserted",
        details={"events": events, "seconds": seconds, "bare_seconds": bare_seconds,
                 "read_only_seconds": timings[False],
                 "read_only_ratio": value / (events / timings[False])})


def child_rebuild(home: Path) -> dict[str, Any]:
    """Rebuild in a fresh process, so its peak memory is the rebuild's alone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.rebuild_child", str(home)], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rebuild child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rebuild_memory(ctx: Context) -> dict[str, Any]:
    """Peak resident memory of a process that rebuilds a long and a short log: a
    streaming rebuild needs about the same for both."""
    big_n, small_n = ctx.params["memory_big"], ctx.params["memory_small"]
    big_home, small_home = full_fleet_db(ctx, big_n), full_fleet_db(ctx, small_n)
    small, big = child_rebuild(small_home), child_rebuild(big_home)
    big_mib, small_mib, ratio = growth_ratio(big, small)
    return result(
        "rebuild_memory", value=big_mib, unit="MiB", ceiling=small_mib, ratio=ratio, target="<= 1.2",
        what=f"peak resident memory a process gains rebuilding a log of {big['events']:,} events",
        ceiling_what=f"the same for a log of {small['events']:,} events",
        details={"big": big, "small": small, "big_peak_mib": big["peak_kib"] / 1024,
                 "small_peak_mib": small["peak_kib"] / 1024,
                 "big_events_per_s": big["events"] / big["seconds"]})
