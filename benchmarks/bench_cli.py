"""Cold command line calls: a new interpreter that imports sched, opens the database
and runs one command: `status --json` (`cold_cli`), `tasks --json` (`cold_tasks`), and
the worker protocol's `heartbeat`, `complete`, `claim` and `fail` (`cold_heartbeat`,
`cold_complete`, `cold_claim`, `cold_fail`; the last two load the tick's machinery),
each against `python -c pass` with the same interpreter, measured in turns.

Byte code is written (PYTHONDONTWRITEBYTECODE is dropped from the commands'
environment) and the first call of each command is a warm-up, as an installed sched
runs: its modules compiled once, the database file in the page cache."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.build import full_fleet_db
from benchmarks.common import Context, fleet, new_workspace, result, task_specs
from scheduler import worker
from scheduler.submit import submit

TASKS_LIMIT = 50  # `tasks --json --limit 50`: start-up and one page, not a 10k-task document


def sched_argv() -> list[str]:
    """The installed `sched` script beside this interpreter, else `python -m cli`."""
    script = Path(sys.executable).with_name("sched")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cli"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SCHED_") and k != "PYTHONDONTWRITEBYTECODE"}


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return seconds, done.stdout


def _in_turns(name: str, ctx: Context, home: Path, argv_of: Callable[[int], list[str]],
              check: Callable[[Any], bool], what: str) -> dict[str, Any]:
    """Median wall time of `argv_of(i)` (call i; call 0 is the warm-up) beside the
    median of `python -c pass`, in turns."""
    env = _env()
    bare = [sys.executable, "-c", "pass"]
    _, out = _run(argv_of(0), env, home)  # warm-up: byte code, page cache; check the output once
    assert check(json.loads(out)), out[:300]
    _run(bare, env, home)
    times, bare_times = [], []
    for i in range(1, ctx.params["cli_repeat"] + 1):
        times.append(_run(argv_of(i), env, home)[0])
        bare_times.append(_run(bare, env, home)[0])
    value, ceiling = statistics.median(times), statistics.median(bare_times)
    shown = argv_of(1)
    return result(
        name, value=value * 1000, unit="ms", ceiling=ceiling * 1000, ratio=value / ceiling,
        target="<= 10", what=f"{what} in a new process (median of {len(times)})",
        ceiling_what="`python -c pass` with the same interpreter, measured in turns",
        details={"argv": [a if a != str(home) else "HOME" for a in shown], "seconds": times,
                 "bare_seconds": bare_times})


def cold_cli(ctx: Context) -> dict[str, Any]:
    """`sched status --json` against a workspace of 10k queued tasks and a full fleet."""
    home = full_fleet_db(ctx, ctx.params["idle_small"])
    argv = [*sched_argv(), "status", "--json", "--home", str(home)]
    return _in_turns("cold_cli", ctx, home, lambda _i: argv, lambda doc: "queues" in doc,
                     "`sched status --json`")


def cold_tasks(ctx: Context) -> dict[str, Any]:
    """`sched tasks --json --limit 50` against the same workspace (in pick order, with
    each task's estimated start)."""
    home = full_fleet_db(ctx, ctx.params["idle_small"])
    argv = [*sched_argv(), "tasks", "--json", "--limit", str(TASKS_LIMIT), "--home", str(home)]
    return _in_turns("cold_tasks", ctx, home, lambda _i: argv, lambda doc: len(doc["tasks"]) == TASKS_LIMIT,
                     f"`sched tasks --json --limit {TASKS_LIMIT}`")


CLAIMER = "w001"  # the pull worker `cold_claim` claims as (w000 holds the running attempts)


def running_attempts(ctx: Context) -> tuple[Path, list[tuple[int, str]]]:
    """A workspace whose pull worker w000 holds one running attempt per call the worker
    figures make, `CLAIMER` a free slot per `cold_claim` call, and the 10k queued tasks
    of the other figures: the attempts' ids and tokens."""
    key = "running_attempts"
    if key not in ctx.cache:
        count = 3 * (ctx.params["cli_repeat"] + 1)
        home = ctx.dir(key)
        (home / "sched.toml").write_text("lease_seconds = 86400\n")  # no lease runs out mid-run
        ws = new_workspace(home, fleet(2, count, prefix="w"))
        submit(ws, task_specs(count))
        claims = [worker.claim(ws, "w000") for _ in range(count)]
        submit(ws, task_specs(ctx.params["idle_small"], start=count))  # a backlog beside them
        ws.close()
        ctx.cache[key] = home, [(c.task.task_id, c.token) for c in claims if c is not None]
    return ctx.cache[key]


def cold_heartbeat(ctx: Context) -> dict[str, Any]:
    """`sched worker heartbeat ID --token T --json` on a running attempt (a write: one
    LeaseRenewed event and its projections, in one transaction)."""
    home, attempts = running_attempts(ctx)
    task_id, token = attempts[0]
    argv = [*sched_argv(), "worker", "heartbeat", str(task_id), "--token", token, "--json",
            "--home", str(home)]
    return _in_turns("cold_heartbeat", ctx, home, lambda _i: argv,
                     lambda doc: doc["task_id"] == task_id, "`sched worker heartbeat ID --token T --json`")


def cold_complete(ctx: Context) -> dict[str, Any]:
    """`sched worker complete ID --token T --json`, each call on another running attempt
    (a write: TaskSucceeded, the task, the agent's load, the counts, the outcome)."""
    home, attempts = running_attempts(ctx)
    mine = _third(attempts, 1)

    def argv(i: int) -> list[str]:
        task_id, token = mine[i]
        return [*sched_argv(), "worker", "complete", str(task_id), "--token", token, "--json",
                "--home", str(home)]

    return _in_turns("cold_complete", ctx, home, argv, lambda doc: doc["status"] == "succeeded",
                     "`sched worker complete ID --token T --json`")


def cold_fail(ctx: Context) -> dict[str, Any]:
    """`sched worker fail ID --token T --error E --json`, each call on another running
    attempt (a write: TaskFailed, and the retry it decides: the task queued again)."""
    home, attempts = running_attempts(ctx)
    mine = _third(attempts, 2)

    def argv(i: int) -> list[str]:
        task_id, token = mine[i]
        return [*sched_argv(), "worker", "fail", str(task_id), "--token", token, "--error", "cold",
                "--json", "--home", str(home)]

    return _in_turns("cold_fail", ctx, home, argv, lambda doc: doc["status"] == "queued",
                     "`sched worker fail ID --token T --error E --json`")


def cold_claim(ctx: Context) -> dict[str, Any]:
    """`sched worker claim --agent A --json` by a pull worker with a free slot, beside
    the 10k queued tasks: each call assigns and starts one (the take-backs, the plan,
    TaskAssigned and TaskStarted, in one transaction)."""
    home, _attempts = running_attempts(ctx)
    argv = [*sched_argv(), "worker", "claim", "--agent", CLAIMER, "--json", "--home", str(home)]
    return _in_turns("cold_claim", ctx, home, lambda _i: argv,
                     lambda doc: doc["task"] is not None and doc["task"]["token"],
                     "`sched worker claim --agent A --json`")


def _third(attempts: list[tuple[int, str]], which: int) -> list[tuple[int, str]]:
    """The `which`th third of the running attempts (the first is heartbeat's): each
    figure that ends attempts ends its own."""
    size = len(attempts) // 3
    return attempts[which * size:(which + 1) * size]
