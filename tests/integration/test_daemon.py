"""The daemon as a real subprocess with real push agents."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler import queries
from scheduler.settings import load_settings
from scheduler.submit import TaskSpec, submit
from scheduler.workspace import Workspace
from tests.conftest import new_workspace, wait_for
from tests.invariants import check_log

AGENT = """
import json, os
payload = json.load(open(os.environ["SCHED_PAYLOAD_FILE"]))
with open(os.environ["SCHED_RESULT_FILE"], "w") as f:
    json.dump({"square": payload["n"] ** 2, "agent": os.environ["SCHED_AGENT"]}, f)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc")
def test_the_daemon_runs_fifty_tasks_through_four_push_agents_and_stops_on_sigterm(tmp_path, new_database):
    script = tmp_path / "square.py"
    script.write_text(AGENT)
    command = [sys.executable, str(script)]
    agents = [{"agentName": "d1", "agentType": "dev", "maxConcurrency": 2, "command": command},
              {"agentName": "d2", "agentType": "dev", "maxConcurrency": 1, "command": command},
              {"agentName": "q1", "agentType": "qa", "maxConcurrency": 2, "command": command},
              {"agentName": "q2", "agentType": "qa", "maxConcurrency": 1, "command": command}]
    ws = new_workspace(tmp_path / "home", agents, database=new_database())
    home = ws.settings.home
    submit(ws, [TaskSpec(queue="dev" if i % 2 else "qa", title=f"t{i}", payload={"n": i})
                for i in range(50)])
    ws.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    daemon = subprocess.Popen([sys.executable, "-m", "cli", "run", "--interval", "0.2",
                               "--home", str(home)], env=env, stderr=subprocess.PIPE, text=True,
                              cwd=Path.cwd())
    try:
        ws = Workspace(load_settings({}, {"home": home}).settings)
        wait_for("all 50 tasks to succeed",
                 lambda: queries.status(ws)["queues"]["dev"]["succeeded"]
                 + queries.status(ws)["queues"]["qa"]["succeeded"] == 50, timeout=180)
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert "received SIGTERM" in err and "Traceback" not in err
    events = list(queries.replay(ws))
    check_log(events)  # no task held twice, no agent above capacity at any assignment
    results = [json.loads(e.data)["result"] for e in events if e.type == "TaskSucceeded"]
    assert sorted(r["square"] for r in results) == sorted(i * i for i in range(50))
    assert queries.verify_log(ws).ok
    ws.close()
