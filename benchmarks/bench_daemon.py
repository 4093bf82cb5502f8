"""The daemon end to end: `sched run` with push agents whose command sleeps, until every
task succeeded; how well it kept the slots busy while work was queued."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

from benchmarks.bench_cli import sched_argv
from benchmarks.common import (
    Context,
    fleet,
    new_workspace,
    open_workspace,
    read_rows,
    result,
    stop_process,
    task_specs,
)
from eventlog.timeutil import from_text
from scheduler.reads.metrics import metrics
from scheduler.submit import submit

# the agent's command: takes the time it started as its first statement, sleeps, and
# gives that time as its result (as bench_start's STAMP prints it)
SLEEPER = """\
import time
STARTED = time.time()
import json, os, sys
time.sleep(float(sys.argv[1]))
with open(os.environ["SCHED_RESULT_FILE"], "w") as f:
    json.dump({"started": STARTED, "slept": float(sys.argv[1])}, f)
"""
ENDS = ("TaskSucceeded", "TaskFailed", "LeaseExpired", "TaskRequeued", "TaskCancelled")


def _agent_start(type_: str, data: dict[str, Any]) -> float | None:
    """The time the agent's command gave as its start (its result), if it ended with one."""
    result = data.get("result") if type_ == "TaskSucceeded" else None
    started = result.get("started") if isinstance(result, dict) else None
    return float(started) if isinstance(started, (int, float)) else None


def busy_while_queued(rows: list[tuple[str, str, str]], slots: int) -> dict[str, Any]:
    """Slot utilization from the log: a slot is busy from the agent's own start (the time
    its command took as its first statement, given in its result) to the event that
    ended the attempt (stricter than `sched metrics`, which counts from the command
    running: `TaskStarted`, recorded with the assignment for a push attempt, plus the
    `start_delay_seconds` the supervisor measured to `Popen` returning); the window runs from
    the first assignment to the last one (after it no task waited any more).
    Utilization = busy slot-seconds inside the window / (slots x window). An attempt
    that ended without its start given counts as not busy."""
    assigned: dict[int, float] = {}
    started: dict[int, float] = {}
    # (assigned, ended, TaskStarted, the agent's own start)
    spans: list[tuple[float, float, float | None, float | None]] = []
    for type_, at_text, data_text in rows:
        data = json.loads(data_text)
        task_id, at = data.get("task_id"), from_text(at_text).timestamp()
        if type_ == "TaskAssigned":
            assigned[task_id] = at
        elif type_ == "TaskStarted":
            started[task_id] = at
        elif type_ in ENDS and task_id in assigned:
            recorded_start = started.pop(task_id, None)
            if recorded_start is not None:  # as metrics count it: when the command ran
                recorded_start += data.get("start_delay_seconds") or 0.0
            spans.append((assigned.pop(task_id), at, recorded_start, _agent_start(type_, data)))
    firsts = [a for a, _e, _st, _ag in spans]
    lo, hi = min(firsts), max(firsts)

    def inside(start: float, end: float) -> float:
        return max(0.0, min(end, hi) - max(start, lo))

    busy = sum(inside(ag, end) for _a, end, _st, ag in spans if ag is not None)
    busy_from_assigned = sum(inside(a, end) for a, end, _st, _ag in spans)
    held = sum(end - a for a, end, _st, _ag in spans)
    recorded = [st - a for a, _e, st, _ag in spans if st is not None]
    own = [ag - a for a, _e, _st, ag in spans if ag is not None]
    window = slots * (hi - lo)
    return {"utilization": busy / window if hi > lo else None,
            "utilization_from_assigned": busy_from_assigned / window if hi > lo else None,
            "window_seconds": hi - lo, "busy_slot_seconds": busy,
            "mean_held_seconds": held / len(spans),
            "mean_assigned_to_started_seconds": sum(recorded) / len(recorded) if recorded else None,
            "mean_assigned_to_agent_start_seconds": sum(own) / len(own) if own else None,
            "max_assigned_to_agent_start_seconds": max(own) if own else None,
            "attempts": len(spans), "attempts_with_agent_start": len(own)}


def daemon(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    n, sleep = p["daemon_tasks"], p["daemon_sleep"]
    slots = p["daemon_agents"] * p["daemon_capacity"]
    home = ctx.dir("daemon")
    script = home / "sleeper.py"
    script.write_text(SLEEPER)
    agents = fleet(p["daemon_agents"], p["daemon_capacity"], prefix="p",
                   command=[sys.executable, str(script), str(sleep)])
    ws = new_workspace(home, agents)
    submit(ws, task_specs(n))
    ws.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    log_path = home / "daemon.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen([*sched_argv(), "run", "--interval", str(p["daemon_interval"]),
                                 "--home", str(home)], env=env, stdout=log, stderr=log, cwd=home)
    db = home / "sched.db"
    try:
        deadline = time.monotonic() + 60 + 10 * n * sleep
        while time.monotonic() < deadline and proc.poll() is None:
            (ended,), = read_rows(db, "SELECT coalesce(sum(count), 0) FROM queue_counts "
                                      "WHERE status IN ('succeeded', 'dead', 'cancelled')")
            if ended >= n:
                break
            time.sleep(0.2)
        wall = time.monotonic() - started
    finally:
        stop_process(proc)
    rows = read_rows(db, "SELECT type, recorded_at, data FROM events WHERE stream_id != 'scheduler' "
                         "ORDER BY seq")
    succeeded = sum(1 for t, _a, _d in rows if t == "TaskSucceeded")
    failed = sum(1 for t, _a, _d in rows if t in ("TaskFailed", "LeaseExpired"))
    figures = busy_while_queued(rows, slots)
    ws = open_workspace(home)
    whole = metrics(ws, timedelta(seconds=wall + 5))["overall"]
    ws.close()
    utilization = figures["utilization"] or 0.0
    return result(
        "daemon", value=utilization, unit="busy share", ceiling=1.0, ratio=utilization,
        target=">= 0.8",
        what=f"`sched run --interval {p['daemon_interval']:g}`: {n} tasks through {p['daemon_agents']} "
             f"push agents x {p['daemon_capacity']} slots, each command sleeps {sleep:g} s; slot "
             "utilization while work was queued, from the log (a slot is busy from the agent's own "
             "start, the time its command took first and gave as its result, to the attempt's end; "
             "window: first to last assignment)",
        ceiling_what="every slot busy for the whole window",
        details={**figures, "succeeded": succeeded, "failed": failed, "tasks": n, "slots": slots,
                 "wall_seconds": wall, "daemon_exit": proc.returncode,
                 "metrics_utilization_whole_run": whole.get("utilization")},
        ok=succeeded == n and failed == 0 and figures["attempts_with_agent_start"] == n)
