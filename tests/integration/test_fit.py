"""Capabilities and working hours through the tick, a claim, health and replay, on a
file database with the manual clock (2026-01-01, a Thursday, 00:00 UTC)."""

from __future__ import annotations

from scheduler import worker
from scheduler.reads import queries
from scheduler.reads.explain import explain
from scheduler.reads.health import health
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from tests.conftest import write_fleet

OFFICE = {"agentName": "office", "agentType": "dev", "maxConcurrency": 2,
          "hours": "Mon-Fri 09:00-17:00"}


def assigned(report) -> list[tuple[int, str]]:
    return [(item["task_id"], item["agent"]) for item in report.assigned]


def test_an_agent_gets_work_only_within_its_hours_and_keeps_what_it_holds(make_workspace):
    ws = make_workspace([OFFICE])
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(3)])
    assert assigned(tick(ws)) == []  # Thursday 00:00: before office hours
    assert worker.claim(ws, "office") is None  # a claim gets nothing either
    ws.clock.advance(16 * 3600 + 58 * 60)  # 16:58
    assert assigned(tick(ws)) == [(1, "office"), (2, "office")]
    claim = worker.claim(ws, "office")
    assert claim is not None and claim.task.task_id == 1
    ws.clock.advance(180)  # 17:01: closed
    report = tick(ws)
    # task 2 was not started by its start deadline: back to the queue, and not assigned again
    assert assigned(report) == [] and [e["task_id"] for e in report.expired] == [2]
    # running work continues: the lease is renewed, the attempt completes
    worker.heartbeat(ws, 1, claim.token)
    worker.complete(ws, 1, claim.token, None)
    assert assigned(tick(ws)) == []  # both slots free, but it is after hours
    doc = explain(ws, 3)
    assert doc["now"]["agents"] == [{
        "agent": "office", "weight": 1.0, "capabilities": [], "hours": ["Mon-Fri 09:00-17:00"],
        "available": False, "why_not": "outside its working hours (Mon-Fri 09:00-17:00)"}]
    ws.clock.advance(16 * 3600)  # Friday 09:01
    assert assigned(tick(ws)) == [(2, "office"), (3, "office")]


def test_capabilities_are_recorded_from_the_control_file_and_replayed(make_workspace):
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "capabilities": ["browser"]}])
    (first,) = submit(ws, [TaskSpec(queue="dev", title="render", requires=["gpu", "browser"])])
    assert assigned(tick(ws)) == []
    checks = {c["name"]: c for c in health(ws)["checks"]}
    assert checks["unplaceable"]["status"] == "degraded"
    assert "no dev agent in the control file has browser and gpu" in checks["unplaceable"]["saw"]
    listed = queries.list_tasks(ws)
    assert queries.pick_figures(ws, listed)[first.task_id]["unplaceable"] == (
        "no dev agent in the control file has browser and gpu")
    configured_at = queries.head(ws)[0]

    write_fleet(ws.settings.home, [{"agentName": "ann", "agentType": "dev",
                                    "capabilities": ["gpu", "browser"], "weight": 2}])
    report = tick(ws)
    assert report.config_recorded and assigned(report) == [(first.task_id, "ann")]
    assert {c["name"]: c["status"] for c in health(ws)["checks"]}["unplaceable"] == "healthy"
    assert queries.verify_log(ws).ok  # the projections are what the log replays to
    now = queries.status(ws)["agents"]["ann"]
    assert (now["capabilities"], now["weight"]) == (["browser", "gpu"], 2.0)
    then = queries.status(ws, at=configured_at)["agents"]["ann"]
    assert (then["capabilities"], then["weight"]) == (["browser"], 1.0)


def test_estimated_start_counts_only_capable_agents_within_their_hours(make_workspace):
    ws = make_workspace([OFFICE, {"agentName": "gpu", "agentType": "dev", "capabilities": ["gpu"]}])
    submit(ws, [TaskSpec(queue="dev", title="render", requires=["gpu"]),
                TaskSpec(queue="dev", title="train", requires=["tpu"]),
                TaskSpec(queue="dev", title="plain"), TaskSpec(queue="dev", title="plain too")])
    starts = queries.estimated_starts(ws, queries.list_tasks(ws))
    now = ws.clock.now().isoformat().replace("+00:00", "Z")
    # the gpu agent starts the first task it may run now; nobody can ever run the tpu one;
    # the plain tasks wait for the gpu agent's slot (office is closed), and no slot freed
    # in the last hour gives no estimate
    assert starts[1] is not None and starts[1][:19] == now[:19]
    assert starts[2] is None
    assert (starts[3], starts[4]) == (None, None)


def test_tasks_of_a_queue_with_no_agent_are_flagged_everywhere(make_workspace):
    """The agents of a queue all left the control file: its tasks waited with `tasks`,
    `explain` and health all saying every waiting task had an agent (only `progress`
    noticed, after 30 minutes). So did a task directed at an agent that left."""
    ws = make_workspace([{"agentName": "ann", "agentType": "dev"}, {"agentName": "otto", "agentType": "ops"}])
    ops = [s.task_id for s in submit(ws, [TaskSpec(queue="ops", title=f"o{n}") for n in range(2)])]
    (gpu,) = submit(ws, [TaskSpec(queue="ops", title="g", requires=["gpu"])])
    (directed,) = submit(ws, [TaskSpec(queue="ops", title="for otto", assignee="otto")])
    assert {c["name"]: c["status"] for c in health(ws)["checks"]}["unplaceable"] == "degraded"  # (gpu)
    write_fleet(ws.settings.home, [{"agentName": "ann", "agentType": "dev"}])
    tick(ws)
    check = {c["name"]: c for c in health(ws)["checks"]}["unplaceable"]
    assert (check["status"], check["saw"]) == (  # the whole queue, once (not its gpu task again)
        "degraded", "4 task(s) can never be taken: 4 in ops: no ops agent in the control file")
    figures = queries.pick_figures(ws, queries.list_tasks(ws))
    assert {figures[t]["unplaceable"] for t in (*ops, gpu.task_id)} == {"no ops agent in the control file"}
    assert explain(ws, ops[0])["now"]["unplaceable"] == "no ops agent in the control file"
    write_fleet(ws.settings.home, [{"agentName": "ann", "agentType": "dev"},
                                   {"agentName": "olga", "agentType": "ops", "capabilities": ["gpu"]}])
    check = {c["name"]: c for c in health(ws)["checks"]}["unplaceable"]
    assert (check["status"], check["saw"]) == (  # the queue has an agent again, but not otto
        "degraded", f"1 task(s) can never be taken: 1 in ops (e.g. task {directed.task_id}): its assignee "
                    "otto is not one of the ops agents of the control file")
    assert queries.pick_figures(ws, queries.list_tasks(ws))[directed.task_id]["unplaceable"] == (
        "its assignee otto is not one of the ops agents of the control file")
