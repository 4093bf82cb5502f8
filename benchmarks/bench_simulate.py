"""`sched simulate`: a day of generated work over a big fleet, and the memory it needs
as the day grows. `python -m benchmarks.bench_simulate TASKS AGENTS` is the child that
simulates in a fresh process and prints one JSON line (seconds, events, peak memory)."""

from __future__ import annotations

import heapq
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Context, growth_ratio, result
from benchmarks.rebuild_child import peak_kib

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400.0
BUSY = 0.7  # the share of the fleet's slots the day's work keeps busy
FAIL_SHARE = 0.05


def _loads(tasks: int, agents: int) -> list[Any]:
    from scheduler.whatif.workload import LoadSpec

    return [LoadSpec("dev", per_hour=tasks / 24.0, run_seconds=BUSY * agents * DAY / tasks,
                     fail_share=FAIL_SHARE)]


def simulate_day_once(tasks: int, agents: int) -> dict[str, Any]:
    """One simulated day of `tasks` arrivals over `agents` one-slot agents, through the
    engine `sched simulate` runs (default settings; the generator's seed 1)."""
    from scheduler.config.settings import Settings
    from scheduler.planning import ordering_policy
    from scheduler.whatif.engine import FleetAgent, Scenario, simulate
    from scheduler.whatif.workload import ListedWorkload, generate

    settings = Settings()
    fleet = tuple(FleetAgent(f"dev-{i}", "dev", 1) for i in range(agents))
    scenario = Scenario(agents=fleet, plan_policy=ordering_policy(settings),
                        queue_policy=settings.queue_policy, tick_seconds=settings.tick_interval_seconds)
    before = peak_kib()
    started = time.perf_counter()
    run = simulate(ListedWorkload(generate(_loads(tasks, agents), DAY, seed=1)), scenario)
    seconds = time.perf_counter() - started
    queue = run.queue("dev")
    return {"seconds": seconds, "arrived": queue.arrived, "succeeded": queue.succeeded, "dead": queue.dead,
            "unfinished": run.unfinished, "attempts": len(queue.runs), "baseline_kib": before,
            "peak_kib": peak_kib()}


def bare_day(tasks: int, agents: int) -> float:
    """The ceiling: the same day's arrivals and ends through a bare heap of events, each
    arrival taking the first free slot at once (no plan, no policy, no figures)."""
    draws = random.Random(1)
    (load,) = _loads(tasks, agents)
    started = time.perf_counter()
    ends: list[float] = []
    waiting: list[float] = []
    at = draws.expovariate(load.per_hour / 3600.0)
    free = agents
    while at <= DAY or ends:
        if ends and (at > DAY or ends[0] <= at):
            now = heapq.heappop(ends)
            free += 1
        else:
            now = at
            waiting.append(now)
            at += draws.expovariate(load.per_hour / 3600.0)
        while free and waiting:
            waiting.pop()
            free -= 1
            heapq.heappush(ends, now + draws.expovariate(1.0 / load.run_seconds))
    return time.perf_counter() - started


def _child(tasks: int, agents: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_simulate", str(tasks), str(agents)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"simulate child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _whole(day: dict[str, Any], tasks: int) -> bool:
    """The day really ran: about the arrivals asked for (a Poisson count: within 5%),
    and every one of them ended (succeeded or dead) or was left unfinished."""
    return (abs(day["arrived"] - tasks) <= 0.05 * tasks
            and day["succeeded"] + day["dead"] + day["unfinished"] == day["arrived"])


def simulate_day(ctx: Context) -> dict[str, Any]:
    tasks, agents = ctx.params["sim_tasks"], ctx.params["sim_agents"]
    day = _child(tasks, agents)
    bare = bare_day(tasks, agents)
    return result(
        "simulate_day", value=day["seconds"], unit="s", ceiling=bare, ratio=day["seconds"] / bare,
        target="<= 30 s", absolute=True,
        what=f"a simulated day of {day['arrived']:,} tasks over {agents} agents ({BUSY:.0%} busy, "
             f"{FAIL_SHARE:.0%} of attempts failing) through plan() and settle_failure",
        ceiling_what="the same arrivals and ends through a bare heap of events",
        details=day, ok=_whole(day, tasks))


def simulate_memory(ctx: Context) -> dict[str, Any]:
    tasks, agents = ctx.params["sim_tasks"], ctx.params["sim_agents"]
    small, big = _child(tasks // 10, agents), _child(tasks, agents)
    big_mib, small_mib, ratio = growth_ratio(big, small)
    return result(
        "simulate_memory", value=big_mib, unit="MiB", ceiling=small_mib, ratio=ratio, target="<= 1.2",
        what=f"peak resident memory a process gains simulating a day of {big['arrived']:,} tasks",
        ceiling_what=f"the same for a day of {small['arrived']:,} tasks (the same fleet)",
        details={"big": big, "small": small, "big_peak_mib": big["peak_kib"] / 1024,
                 "small_peak_mib": small["peak_kib"] / 1024})


if __name__ == "__main__":
    print(json.dumps(simulate_day_once(int(sys.argv[1]), int(sys.argv[2]))))
