"""`python -m benchmarks.run [--size small|default] [--only NAME...] [--json-out FILE]`

Runs the figures in order, prints a readable table on stderr and one JSON document on
stdout. A missed target is reported (`met: false`), never hidden; the exit code is 1
only when a figure could not be measured at all (an error)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import (
    bench_claim,
    bench_cli,
    bench_daemon,
    bench_http,
    bench_postgres,
    bench_postgres_bulk,
    bench_read,
    bench_simulate,
    bench_start,
    bench_submit,
    bench_tick,
)
from benchmarks.common import Context

Figure = Callable[[Context], dict[str, Any]]
FIGURES: dict[str, Figure] = {
    "batch_submit": bench_submit.batch_submit,
    "single_submit": bench_submit.single_submit,
    "single_submit_durable": bench_submit.single_submit_durable,
    "claims": bench_claim.claims,
    "tick_assign": bench_tick.tick_assign,
    "tick_idle": bench_tick.tick_idle,
    "status": bench_read.status,
    "rebuild": bench_read.rebuild,
    "rebuild_memory": bench_read.rebuild_memory,
    "cold_cli": bench_cli.cold_cli,
    "cold_tasks": bench_cli.cold_tasks,
    "cold_heartbeat": bench_cli.cold_heartbeat,
    "cold_complete": bench_cli.cold_complete,
    "cold_claim": bench_cli.cold_claim,
    "cold_fail": bench_cli.cold_fail,
    "daemon": bench_daemon.daemon,
    "agent_start": bench_start.agent_start,
    "agent_start_burst": bench_start.agent_start_burst,
    "wrapper_memory": bench_start.wrapper_memory,
    "daemon_throughput": bench_start.daemon_throughput,
    "simulate_day": bench_simulate.simulate_day,
    "simulate_memory": bench_simulate.simulate_memory,
    "http_claims": bench_http.http_claims,
    "http_claim_latency": bench_http.http_claim_latency,
    "http_idle_polls": bench_http.http_idle_polls,
    "pg_single_submit": bench_postgres.pg_single_submit,
    "pg_single_submit_statements": bench_postgres.pg_single_submit_statements,
    "pg_single_submit_durable": bench_postgres.pg_single_submit_durable,
    "pg_batch_submit": bench_postgres_bulk.pg_batch_submit,
    "pg_rebuild": bench_postgres_bulk.pg_rebuild,
    "pg_claims_4": bench_postgres.pg_claims_4,
    "pg_claims_8": bench_postgres.pg_claims_8,
    "pg_tick_assign": bench_postgres.pg_tick_assign,
    "pg_status": bench_postgres.pg_status,
}
# cheap at --size small: the smoke test runs these (no extra processes)
CHEAP = ["batch_submit", "single_submit", "single_submit_durable", "tick_assign", "tick_idle",
         "status", "rebuild", "simulate_day"]
# the cold command line: a new interpreter per call (the smoke test runs them too)
COLD = ["cold_cli", "cold_tasks", "cold_heartbeat", "cold_complete", "cold_claim", "cold_fail"]
# the push agents' start through a real daemon (the smoke test runs them too)
START = ["agent_start", "agent_start_burst", "wrapper_memory", "daemon_throughput"]
# the HTTP API through a real `sched serve` (the smoke test runs them too)
HTTP = ["http_claims", "http_claim_latency", "http_idle_polls"]
# the same on PostgreSQL (they start a throwaway cluster: the smoke test runs them
# where the server's binaries are installed)
CHEAP_POSTGRES = ["pg_single_submit", "pg_single_submit_statements", "pg_single_submit_durable",
                  "pg_batch_submit", "pg_rebuild", "pg_tick_assign", "pg_status"]

SIZES: dict[str, dict[str, Any]] = {
    "default": {
        "batch_tasks": 100_000,  # batch_submit; the backlog of tick_assign and rebuild
        "single_submits": 2_000,
        "single_submits_full": 300,
        "claims": 1_000, "claim_processes": 4,
        "tick_repeat": 3,
        "idle_big": 1_000_000, "idle_small": 10_000, "idle_repeat": 30,  # also status
        "status_repeat": 50,
        "memory_big": 1_000_000, "memory_small": 100_000,
        "cli_repeat": 7,
        "daemon_tasks": 100, "daemon_agents": 4, "daemon_capacity": 5, "daemon_sleep": 1.0,
        "daemon_interval": 0.2,
        "start_agents": 20, "start_hold_seconds": 2.0, "start_bursts": 5,
        "burst_agents": 100, "burst_repeat": 2,
        "throughput_tasks": 1_000, "throughput_slots": 20,
        "sim_tasks": 100_000, "sim_agents": 100,
        "http_clients": 8, "http_rounds": 150, "latency_claims": 300,
        "idle_clients": 200, "idle_window": 10.0, "idle_wait": 20,
    },
    "small": {
        "batch_tasks": 2_000,
        "single_submits": 100,
        "single_submits_full": 20,
        "claims": 100, "claim_processes": 4,
        "tick_repeat": 1,
        "idle_big": 5_000, "idle_small": 500, "idle_repeat": 5,
        "status_repeat": 5,
        "memory_big": 5_000, "memory_small": 500,
        "cli_repeat": 3,
        "daemon_tasks": 8, "daemon_agents": 2, "daemon_capacity": 2, "daemon_sleep": 0.5,
        "daemon_interval": 0.2,
        "start_agents": 10, "start_hold_seconds": 1.0, "start_bursts": 2,
        "burst_agents": 10, "burst_repeat": 1,
        "throughput_tasks": 50, "throughput_slots": 10,
        "sim_tasks": 2_000, "sim_agents": 10,
        "http_clients": 2, "http_rounds": 10, "latency_claims": 20,
        "idle_clients": 10, "idle_window": 1.0, "idle_wait": 4,
    },
}


def run(names: Sequence[str], size: str, workdir: Path | None = None,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the figures `names` at `size`; returns the JSON document."""
    params = SIZES[size]
    started = time.perf_counter()
    figures = []
    with tempfile.TemporaryDirectory(prefix="sched-bench-", dir=workdir) as tmp:
        ctx = Context(Path(tmp), size, params, log=log or (lambda _line: None))
        for name in names:
            ctx.log(f"bench: {name} ...")
            began = time.perf_counter()
            try:
                figure = FIGURES[name](ctx)
            except Exception as e:  # report it and go on with the other figures
                figure = {"name": name, "value": None, "unit": None, "ceiling": None, "ratio": None,
                          "target": None, "met": False,
                          "error": "".join(traceback.format_exception_only(e)).strip(),
                          "traceback": traceback.format_exc()}
            figure["seconds"] = round(time.perf_counter() - began, 2)
            figures.append(figure)
            ctx.log(f"bench: {name} done in {figure['seconds']} s")
        bench_postgres.stop(ctx)
    return {
        "suite": "sched benchmarks",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": size,
        "params": params,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                    "load_average": list(os.getloadavg())},
        "duration_seconds": round(time.perf_counter() - started, 1),
        "figures": figures,
        "missed": [f["name"] for f in figures if not f["met"]],
    }


def print_table(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sched benchmarks ({doc['size']}, {doc['date']}, "
                        f"{doc['duration_seconds']} s)")
    for column in ("figure", "sched", "ceiling", "ratio", "target", "met"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for f in doc["figures"]:
        if "error" in f:
            table.add_row(f["name"], "error", "", "", "", "[red]no[/red]")
            continue
        met = "[green]yes[/green]" if f["met"] else "[red]no[/red]"
        table.add_row(f["name"], f"{f['value']:,.4g} {f['unit']}",
                      "" if f["ceiling"] is None else f"{f['ceiling']:,.4g}",
                      "" if f["ratio"] is None else f"{f['ratio']:.3g}", f["target"], met)
    console = Console(stderr=True)
    console.print(table)
    for f in doc["figures"]:
        if "error" in f:
            console.print(f"{f['name']}: {f['error']}", style="red", markup=False, highlight=False)
        else:
            console.print(f"{f['name']}: {f['what']}; ceiling: {f['ceiling_what']}", markup=False,
                          highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), metavar="NAME",
                        help=f"figures to run (default all): {', '.join(FIGURES)}")
    parser.add_argument("--json-out", type=Path, help="also write the JSON document here")
    parser.add_argument("--workdir", type=Path,
                        help="where the scratch databases go (default: the system temp dir; "
                             "it must be a real disk for the fsync figure)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    names = [n for n in FIGURES if n in args.only] if args.only else list(FIGURES)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    doc = run(names, args.size, args.workdir, None if args.quiet else log)
    print_table(doc)
    text = json.dumps(doc, indent=2)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)
    return 1 if any("error" in f for f in doc["figures"]) else 0


if __name__ == "__main__":
    sys.exit(main())
