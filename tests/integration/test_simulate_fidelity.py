"""Fidelity of `sched simulate`: a workload run for real through the tick and the
worker protocol (a manual clock, pull agents that start at once and end when their run
time is up), then simulated from its log with the same control file and settings,
gives the same assignments in the same order, to the same agents."""

from __future__ import annotations

import heapq
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import worker
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.whatif.engine import fleet_of, simulate
from scheduler.whatif.simulate import scenario
from scheduler.whatif.workload import LogWorkload
from tests.conftest import new_workspace

INTERVAL = 10

task = st.fixed_dictionaries({
    "at": st.integers(0, 120),
    "priority": st.integers(0, 2),
    "queue": st.sampled_from(["dev", "dev", "qa"]),
    "task_type": st.sampled_from([None, "fix", "doc"]),
    "directed": st.booleans(),
    "requires": st.sampled_from([[], [], ["gpu"]]),
    "due_in": st.sampled_from([None, None, 30, 600]),  # seconds after its arrival
    # each attempt's run time, and whether it fails (retryably, or not)
    "attempts": st.lists(st.tuples(st.integers(1, 40), st.sampled_from(["ok", "fail", "fatal"])),
                         min_size=1, max_size=3),
})
# (type, capacity, capabilities, weight)
fleet = st.lists(st.tuples(st.sampled_from(["dev", "qa"]), st.integers(1, 2),
                           st.sampled_from([[], ["gpu"]]), st.sampled_from([1.0, 2.0])),
                 min_size=1, max_size=4)


def run_for_real(ws, tasks: list[dict]) -> None:
    """Drive the real scheduler in time order as the daemon would: at each moment,
    arrivals, then attempts whose run time is up, then a tick (on the interval, and at
    once after an attempt ended)."""
    clock, start = ws.clock, ws.clock.now()
    names = {a.name: a.type for a in ws.registry().agents}
    arrivals = sorted(((t["at"], i) for i, t in enumerate(tasks)))
    ends: list[tuple[int, int, int, str, str]] = []  # (at, order, task id, token, how)
    ids: dict[int, int] = {}  # task id -> index in tasks
    tries: dict[int, int] = {}
    order = 0
    grid = arrivals[0][0]
    while True:
        now = min([grid] + [a[0] for a in arrivals[:1]] + [e[0] for e in ends[:1]])
        clock._now = start + timedelta(seconds=now)
        while arrivals and arrivals[0][0] == now:
            _, index = arrivals.pop(0)
            spec = tasks[index]
            mates = [n for n, kind in names.items() if kind == spec["queue"]]
            directed = mates[:1] if spec["directed"] else []
            (sub,) = submit(ws, [TaskSpec(queue=spec["queue"], title=f"t{index}", priority=spec["priority"],
                                          task_type=spec["task_type"], requires=spec["requires"],
                                          due=None if spec["due_in"] is None
                                          else clock.now() + timedelta(seconds=spec["due_in"]),
                                          assignee=directed[0] if directed else None)])
            ids[sub.task_id] = index
        woke = False
        while ends and ends[0][0] == now:
            _, _, task_id, token, how = heapq.heappop(ends)
            if how == "ok":
                worker.complete(ws, task_id, token)
            else:
                worker.fail(ws, task_id, token, "no", retry=how == "fail")
            woke = True
        if now == grid or woke:
            if now == grid:
                grid += INTERVAL
            assigned = tick(ws).assigned
            if not assigned and not arrivals and not ends:
                return  # nothing left to run
            for item in assigned:
                claimed = worker.claim(ws, str(item["agent"]))
                assert claimed is not None
                task_id = claimed.task.task_id
                tries[task_id] = tries.get(task_id, 0) + 1
                attempts = tasks[ids[task_id]]["attempts"]
                run, how = attempts[min(tries[task_id], len(attempts)) - 1]
                order += 1
                heapq.heappush(ends, (now + run, order, task_id, claimed.token, how))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tasks=st.lists(task, min_size=1, max_size=14), agents=fleet)
def test_a_simulation_of_the_recorded_log_makes_the_same_assignments(tmp_path_factory, tasks, agents):
    home = tmp_path_factory.mktemp("fidelity")
    control = [{"agentName": f"{kind}-{i}", "agentType": kind, "maxConcurrency": capacity,
                "capabilities": capabilities, "weight": weight}
               for i, (kind, capacity, capabilities, weight) in enumerate(agents)]
    if not any(a["agentType"] == "qa" for a in control):
        tasks = [dict(t, queue="dev") for t in tasks]
    if not any(a["agentType"] == "dev" for a in control):
        tasks = [dict(t, queue="qa") for t in tasks]
    ws = new_workspace(home, control, tick_interval_seconds=INTERVAL, backoff_base_seconds=0,
                       lease_seconds=3600, start_deadline_seconds=3600)
    run_for_real(ws, tasks)
    recorded = [(r.event.task_id, r.event.agent) for r in queries.replay(ws) if r.type == "TaskAssigned"]

    settings_ = ws.settings
    with ws.read() as (log, _views):
        workload = LogWorkload(log.read(), None, None, lambda q: settings_.queue_policy(q).max_attempts)
        run = simulate(workload, scenario(settings_, fleet_of(ws.registry().agents), 0, 60.0),
                       keep_order=True)
    assert run.order == recorded
    recorded_waits = [r.event.decision.waited_seconds for r in queries.replay(ws) if r.type == "TaskAssigned"]
    assert run.waited == recorded_waits  # each assignment waited as long as it did for real
    for queue, waits in workload.recorded_waits.items():  # the figures' sketches hold the same
        mine = run.queues[queue].waits
        assert (mine.count, mine.largest, mine.buckets, mine.zeros) == (
            waits.count, waits.largest, waits.buckets, waits.zeros)
