"""Starting push agents through `sched run`: how long from an assignment to the agent's
process running, what supervising a running attempt costs in memory, and how many
trivial tasks per second the daemon carries end to end."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_cli import sched_argv
from benchmarks.common import Context, fleet, new_workspace, read_rows, result, stop_process, task_specs
from eventlog.timeutil import from_text
from projections.figures import percentile
from scheduler.submit import submit

# prints the time it started (the attempt's result), then holds its slot a while
STAMP = ["/bin/sh", "-c", 'date +%s.%N; sleep "$0"']


def _daemon(home: Path, interval: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    with (home / "daemon.log").open("w") as log:
        return subprocess.Popen([*sched_argv(), "run", "--interval", str(interval), "--home", str(home)],
                                env=env, stdout=log, stderr=log, cwd=home)


def _ended(db: Path) -> int:
    (count,), = read_rows(db, "SELECT coalesce(sum(count), 0) FROM queue_counts "
                              "WHERE status IN ('succeeded', 'dead', 'cancelled')")
    return int(count)


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def memory_kib(pid: int) -> dict[str, int]:
    """Resident (RSS), proportional (PSS) and private (USS: pages no other process
    shares) memory of a process, from /proc/PID/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def bare_starts(count: int, argv: list[str]) -> list[float]:
    """The ceiling: this process starts `count` copies of `argv` at once; seconds from
    just before each start to the time it printed."""
    procs = []
    for _ in range(count):
        asked = time.time()
        procs.append((asked, subprocess.Popen(argv, stdout=subprocess.PIPE)))
    return [float(p.communicate()[0]) - asked for asked, p in procs]


@dataclass
class Bursts:
    """Start latencies of push agents' attempts through a real `sched run`, in seconds:
    from each attempt's TaskAssigned (the time of the tick's transaction) to the time its
    command printed when it ran (`latencies`, and per burst), and as the log records it
    (`recorded`: what `sched metrics` reports: the TaskStarted, plus the delay the
    supervisor measured to the command running)."""

    latencies: list[float]
    per_burst: list[list[float]]
    recorded: list[float]
    memory: list[dict[str, int]]  # of the processes supervising the first burst, if sampled


def run_bursts(ctx: Context, name: str, n: int, bursts: int, hold: float, *,
               sample_memory: bool = False) -> Bursts:
    """`sched run` with `n` idle push agents of one slot; then, `bursts` times, `n` tasks
    are submitted at once, the daemon's next tick assigns and starts them all, and the
    next burst waits for their end. With `sample_memory`, late in the first burst's run
    (after their leases were renewed once), the memory of the processes supervising
    them."""
    home = ctx.dir(name)
    # leases renewed every third of `hold` (the daemon reads sched.toml): the memory is
    # sampled after a renewal
    (home / "sched.toml").write_text(f"lease_seconds = {hold}\n")
    ws = new_workspace(home, fleet(n, 1, prefix="s", command=[*STAMP, str(hold)]))
    db = home / "sched.db"
    proc = _daemon(home, 0.5)
    memory: list[dict[str, int]] = []
    burst_of: dict[int, int] = {}  # task id -> its burst
    try:
        _wait("the daemon's first tick", lambda: read_rows(
            db, "SELECT count(*) FROM tick_runs")[0][0] > 0, 60)
        for burst in range(bursts):
            burst_of.update((s.task_id, burst) for s in submit(ws, task_specs(n, start=burst * n)))
            total = (burst + 1) * n
            _wait("every attempt to start", lambda total=total: read_rows(
                db, "SELECT count(*) FROM events WHERE type = 'TaskStarted'")[0][0] >= total, 60)
            if burst == 0 and sample_memory:
                first = time.monotonic()
                supervisors = Counter(json.loads(d)["pid"] for (d,) in read_rows(
                    db, "SELECT data FROM events WHERE type = 'TaskStarted'"))
                time.sleep(max(0.0, first + 0.8 * hold - time.monotonic()))  # late in their run
                for pid, attempts in supervisors.items():
                    with contextlib.suppress(OSError, KeyError):  # it ended already
                        memory.append({**memory_kib(pid), "attempts": attempts})
            _wait("every task to end", lambda total=total: _ended(db) >= total, 60 + 10 * hold)
    finally:
        ws.close()
        stop_process(proc)
    assigned = {json.loads(d)["task_id"]: from_text(at).timestamp() for at, d in read_rows(
        db, "SELECT recorded_at, data FROM events WHERE type = 'TaskAssigned'")}
    started = {json.loads(d)["task_id"]: from_text(at).timestamp() for at, d in read_rows(
        db, "SELECT recorded_at, data FROM events WHERE type = 'TaskStarted'")}
    succeeded = [json.loads(d) for (d,) in read_rows(
        db, "SELECT data FROM events WHERE type = 'TaskSucceeded'")]
    ran = {s["task_id"]: float(s["result"]) for s in succeeded}
    return Bursts(
        latencies=sorted(ran[t] - assigned[t] for t in ran),
        per_burst=[sorted(ran[t] - assigned[t] for t in ran if burst_of[t] == b) for b in range(bursts)],
        recorded=sorted(started[s["task_id"]] + (s["start_delay_seconds"] or 0.0) - assigned[s["task_id"]]
                        for s in succeeded),
        memory=memory)


def agent_start(ctx: Context) -> dict[str, Any]:
    """`start_bursts` bursts of `start_agents` push agents' commands starting at once
    (`run_bursts`). The first burst is the daemon's first assignment (its figures are in
    the details too); one burst of 20 is too few starts for a steady median on a shared
    machine."""
    p = ctx.params
    n, bursts = p["start_agents"], p["start_bursts"]
    run = run_bursts(ctx, "agent_start", n, bursts, p["start_hold_seconds"], sample_memory=True)
    latencies, per_burst, recorded = run.latencies, run.per_burst, run.recorded
    bare = sorted(x for _ in range(bursts) for x in bare_starts(n, ["/bin/sh", "-c", "date +%s.%N"]))
    value, ceiling = statistics.median(latencies) * 1000, statistics.median(bare) * 1000
    ctx.cache["wrapper_memory"] = run.memory
    return result(
        "agent_start", value=value, unit="ms", ceiling=ceiling, ratio=value / ceiling,
        target="<= 50 ms", absolute=True,
        what=f"`sched run`: {n} push agents' commands starting at once, {bursts} times, median "
             "from the assignment to the command running (p95 <= 200 ms too)",
        ceiling_what=f"{n} processes of the same command started at once by one warm Python "
                     f"process (subprocess.Popen), {bursts} times, median from the call to the "
                     "command running",
        details={"p95_ms": (percentile(latencies, 95) or 0) * 1000, "max_ms": latencies[-1] * 1000,
                 "bare_p95_ms": (percentile(bare, 95) or 0) * 1000, "started": len(latencies),
                 "bursts": bursts,
                 "burst_medians_ms": [round(statistics.median(b) * 1000, 1) for b in per_burst if b],
                 "first_burst_p95_ms": (percentile(per_burst[0], 95) or 0) * 1000,
                 "first_burst_ms": [round(x * 1000, 1) for x in per_burst[0]],
                 "recorded_median_ms": statistics.median(recorded) * 1000,
                 "recorded_p95_ms": (percentile(recorded, 95) or 0) * 1000},
        ok=len(latencies) == n * bursts and (percentile(latencies, 95) or 0) <= 0.2)


def bare_burst(count: int, argv: list[str]) -> list[float]:
    """The ceiling of a burst: this process starts `count` copies of `argv` at once;
    seconds from the burst's start to the time each printed (so the later ones wait for
    the earlier ones' starts, as in a burst through the daemon)."""
    asked = time.time()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE) for _ in range(count)]
    return [float(p.communicate()[0]) - asked for p in procs]


def agent_start_burst(ctx: Context) -> dict[str, Any]:
    """The fast-path issue's check by hand, "100 concurrent agent tasks and count start
    latency from the log": `burst_agents` push agents' commands starting at once,
    `burst_repeat` times (`run_bursts`), the start latency as `sched metrics` reads it
    from the log, beside the same number of processes started at once by one Python
    process (the machine's own rate of starting processes)."""
    p = ctx.params
    n, bursts = p["burst_agents"], p["burst_repeat"]
    run = run_bursts(ctx, "agent_start_burst", n, bursts, p["start_hold_seconds"])
    bare = sorted(x for _ in range(bursts) for x in bare_burst(n, ["/bin/sh", "-c", "date +%s.%N"]))
    value, ceiling = statistics.median(run.recorded) * 1000, statistics.median(bare) * 1000
    return result(
        "agent_start_burst", value=value, unit="ms", ceiling=ceiling, ratio=value / ceiling,
        target="<= 2",
        what=f"`sched run`: {n} push agents' commands starting at once, {bursts} times, median start "
             "latency as the log records it (TaskStarted + start_delay_seconds - TaskAssigned)",
        ceiling_what=f"{n} processes of the same command started at once by one warm Python process "
                     f"(subprocess.Popen), {bursts} times, median from the burst's start to each "
                     "command running",
        details={"p95_ms": (percentile(run.recorded, 95) or 0) * 1000,
                 "max_ms": run.recorded[-1] * 1000, "bare_p95_ms": (percentile(bare, 95) or 0) * 1000,
                 "started": len(run.latencies), "bursts": bursts,
                 "command_median_ms": statistics.median(run.latencies) * 1000,
                 "command_p95_ms": (percentile(run.latencies, 95) or 0) * 1000,
                 "burst_medians_ms": [round(statistics.median(b) * 1000, 1) for b in run.per_burst if b]},
        ok=len(run.latencies) == n * bursts)


def wrapper_memory(ctx: Context) -> dict[str, Any]:
    """Of the attempts `agent_start` saw running: the proportional memory (PSS: each page
    counted in equal shares among the processes that map it) of the process supervising
    them, per attempt, beside a bare Python interpreter's PSS (like with like)."""
    memory = ctx.cache.get("wrapper_memory") or []
    if not memory:
        agent_start(ctx)
        memory = ctx.cache["wrapper_memory"]
    bare = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        _wait("a bare interpreter", lambda: Path(f"/proc/{bare.pid}/smaps_rollup").exists(), 10)
        time.sleep(0.1)  # it gets to its read
        bare_kib = memory_kib(bare.pid)
    finally:
        bare.communicate(b"")
    pss = statistics.median(m["pss"] / m["attempts"] for m in memory) / 1024
    bare_pss = bare_kib["pss"] / 1024
    return result(
        "wrapper_memory", value=pss, unit="MiB", ceiling=bare_pss, ratio=pss / bare_pss,
        target="<= 10 MiB", absolute=True,
        what="proportional resident memory (PSS, /proc/PID/smaps_rollup: each page counted in "
             "equal shares among the processes that map it) of the process supervising "
             "agent_start's attempts, per attempt it runs",
        ceiling_what="the same (PSS) of a bare `python -c` waiting on its input (the least any "
                     "Python supervisor process costs)",
        details={"supervisors": len(memory), "attempts": sum(m["attempts"] for m in memory),
                 "supervisor_pss_mib": statistics.median(m["pss"] for m in memory) / 1024,
                 "uss_per_attempt_mib": statistics.median(m["uss"] / m["attempts"] for m in memory) / 1024,
                 "rss_per_attempt_mib": statistics.median(m["rss"] / m["attempts"] for m in memory) / 1024,
                 "supervisor_uss_mib": statistics.median(m["uss"] for m in memory) / 1024,
                 "median_rss_mib": statistics.median(m["rss"] for m in memory) / 1024,
                 "median_pss_mib": statistics.median(m["pss"] for m in memory) / 1024,
                 "bare_kib": bare_kib})


def daemon_throughput(ctx: Context) -> dict[str, Any]:
    """`throughput_tasks` tasks of a trivial command (`true`) through `sched run` with
    `throughput_slots` slots, from the daemon's start to the last success."""
    p = ctx.params
    n, slots = p["throughput_tasks"], p["throughput_slots"]
    home = ctx.dir("daemon_throughput")
    ws = new_workspace(home, fleet(1, slots, prefix="t", command=["/bin/true"]))
    submit(ws, task_specs(n))
    ws.close()
    db = home / "sched.db"
    started = time.monotonic()
    proc = _daemon(home, 1.0)
    try:
        _wait("every task to end", lambda: _ended(db) >= n, 60 + n)
        wall = time.monotonic() - started
    finally:
        stop_process(proc)
    succeeded = read_rows(db, "SELECT count(*) FROM events WHERE type = 'TaskSucceeded'")[0][0]
    bare_started = time.monotonic()
    running: list[subprocess.Popen[bytes]] = []
    for _ in range(n):  # the ceiling: the same processes, `slots` at a time, from one process
        if len(running) >= slots:
            running.pop(0).wait()
        running.append(subprocess.Popen(["/bin/true"]))
    for proc_ in running:
        proc_.wait()
    bare_wall = time.monotonic() - bare_started
    value, ceiling = n / wall, n / bare_wall
    return result(
        "daemon_throughput", value=value, unit="tasks/s", ceiling=ceiling, ratio=value / ceiling,
        target=">= 200 tasks/s", absolute=True,
        what=f"`sched run`: {n} tasks of `true` through one push agent with {slots} slots, from "
             "the daemon's start to the last task's end",
        ceiling_what=f"the same {n} processes, {slots} at a time, started and waited for by one "
                     "Python process",
        details={"tasks": n, "slots": slots, "succeeded": succeeded, "wall_seconds": wall,
                 "bare_seconds": bare_wall, "daemon_exit": proc.returncode},
        ok=succeeded == n)
