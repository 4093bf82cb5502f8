"""Several hosts: a push agent pinned to a host is started only there, whoever assigned
it; two daemons on two hosts over one database never double-assign."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from scheduler.config.settings import load_settings
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace
from tests.conftest import new_workspace, wait_for
from tests.invariants import check_log

COMMAND = [sys.executable, "-c", "pass"]


def as_host(ws: Workspace, host: str, started: list[tuple[str, int]]) -> Workspace:
    """The same deployment seen from `host`, whose launcher notes what it starts."""
    settings = load_settings({}, {"home": ws.settings.home, "host": host}).settings
    return Workspace(settings, clock=ws.clock, launcher=lambda _s, task_id: started.append((host, task_id)))


def test_only_the_pinned_host_starts_an_agents_command_whoever_assigned_it(tmp_path):
    agents = [{"agentName": "gpu", "agentType": "dev", "maxConcurrency": 1, "command": COMMAND,
               "host": "gpu-1"},
              {"agentName": "any", "agentType": "qa", "maxConcurrency": 1, "command": COMMAND}]
    ws = new_workspace(tmp_path / "home", agents)
    started: list[tuple[str, int]] = []
    web, gpu = as_host(ws, "web-1", started), as_host(ws, "gpu-1", started)
    (dev,) = [r.task_id for r in submit(ws, [TaskSpec(queue="dev", title="train")])]
    (qa,) = [r.task_id for r in submit(ws, [TaskSpec(queue="qa", title="check")])]
    report = tick(web)
    assert sorted((a["task_id"], a["agent"]) for a in report.assigned) == [(dev, "gpu"), (qa, "any")]
    assert started == [("web-1", qa)]  # it assigned both, and starts only the unpinned one
    assert tick(web).spawned == []  # nor later
    assert tick(gpu).spawned == [dev]  # the pinned host starts what another host assigned
    assert started == [("web-1", qa), ("gpu-1", dev)]
    assert tick(gpu).spawned == []  # once
    assert queries.show(ws, dev)[0].status == "assigned"
    for each in (ws, web, gpu):
        each.close()


def test_a_dry_run_on_the_pinned_host_starts_nothing_and_forgets_nothing(tmp_path):
    agents = [{"agentName": "gpu", "agentType": "dev", "maxConcurrency": 1, "command": COMMAND,
               "host": "gpu-1"}]
    ws = new_workspace(tmp_path / "home", agents)
    started: list[tuple[str, int]] = []
    gpu = as_host(ws, "gpu-1", started)
    (dev,) = [r.task_id for r in submit(ws, [TaskSpec(queue="dev", title="train")])]
    tick(as_host(ws, "web-1", started))
    assert tick(gpu, dry_run=True).spawned == []
    assert tick(gpu).spawned == [dev]
    for each in (ws, gpu):
        each.close()


def test_the_control_file_refuses_an_empty_host(tmp_path):
    from eventlog.errors import ControlFileError

    home = tmp_path / "h"
    home.mkdir()
    (home / "agent-control.json").write_text(json.dumps(
        [{"agentName": "a", "agentType": "dev", "host": ""}]))
    settings = load_settings({}, {"home": home}).settings
    with pytest.raises(ControlFileError, match="host"):
        Workspace(settings).registry()


AGENT = """
import json, os
with open(os.environ["SCHED_RESULT_FILE"], "w") as f:
    json.dump({"agent": os.environ["SCHED_AGENT"]}, f)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc")
def test_two_daemons_on_two_hosts_share_one_database(tmp_path, pg_url):
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    command = [sys.executable, str(script)]
    agents = [{"agentName": f"{host}-{n}", "agentType": "dev", "maxConcurrency": 2, "command": command,
               "host": host} for host in ("h1", "h2") for n in (1, 2)]
    ws = new_workspace(tmp_path / "home", agents, database=pg_url)
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(16)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    daemons = [subprocess.Popen([sys.executable, "-m", "cli", "run", "--interval", "0.3", "--host", host,
                                 "--home", str(ws.settings.home)], env=env, stderr=subprocess.PIPE,
                                text=True) for host in ("h1", "h2")]
    try:
        wait_for("all 16 tasks to succeed",
                 lambda: queries.status(ws)["queues"]["dev"]["succeeded"] == 16, timeout=240)
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        errors = [daemon.communicate(timeout=60)[1] for daemon in daemons]
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.kill()
                daemon.communicate()
    assert [d.returncode for d in daemons] == [0, 0], errors
    events = list(queries.replay(ws))
    check_log(events)  # no task held twice, no agent above its capacity, at any point
    starts = [json.loads(e.data) for e in events if e.type == "TaskStarted"]
    assert len(starts) >= 16
    assert all(s["host"] == s["agent"].split("-")[0] for s in starts), starts  # ran on its host
    assert {s["host"] for s in starts} == {"h1", "h2"}
    assert queries.verify_log(ws).ok
    ws.close()
