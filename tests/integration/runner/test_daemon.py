"""The daemon as a real subprocess with real push agents."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.config.settings import load_settings
from scheduler.reads import queries
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
    ws = Workspace(load_settings({}, {"home": home}).settings)
    code, err = run_until_sigterm(
        home, ["--interval", "0.2"], "all 50 tasks to succeed",
        lambda _pid: queries.status(ws)["queues"]["dev"]["succeeded"]
        + queries.status(ws)["queues"]["qa"]["succeeded"] == 50, timeout=180)
    assert code == 0, err
    assert "received SIGTERM" in err and "Traceback" not in err
    events = list(queries.replay(ws))
    check_log(events)  # no task held twice, no agent above capacity at any assignment
    results = [json.loads(e.data)["result"] for e in events if e.type == "TaskSucceeded"]
    assert sorted(r["square"] for r in results) == sorted(i * i for i in range(50))
    assert queries.verify_log(ws).ok
    ws.close()


@pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc")
def test_a_json_log_is_one_object_per_line_and_each_task_line_carries_its_task_id(tmp_path, new_database):
    """`sched run --log-format json`: every line of stderr parses as JSON with time,
    level, event and host; the lines about the events the daemon appended carry their
    seq and task id, as the log has them."""
    script = tmp_path / "square.py"
    script.write_text(AGENT)
    agents = [{"agentName": "d1", "agentType": "dev", "maxConcurrency": 2,
               "command": [sys.executable, str(script)]}]
    ws = new_workspace(tmp_path / "home", agents, database=new_database(), host="log-host")
    home = ws.settings.home
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}", payload={"n": i}) for i in range(3)])
    ws.close()
    ws = Workspace(load_settings({}, {"home": home}).settings)
    code, err = run_until_sigterm(
        home, ["--interval", "0.2", "--host", "log-host", "--log-format", "json"],
        "all 3 tasks to succeed", lambda _pid: queries.status(ws)["queues"]["dev"]["succeeded"] == 3,
        timeout=120)
    assert code == 0, err
    lines = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    assert all({"time", "level", "event", "host", "message"} <= line.keys() for line in lines)
    assert {line["host"] for line in lines} == {"log-host"}
    assert {line["level"] for line in lines} <= {"info", "warning", "error"}
    events = [line["event"] for line in lines]
    assert events[0] == "daemon.started" and events[-1] == "daemon.stopped"
    assert "daemon.stopping" in events and "tick" in events
    logged = {line["seq"]: line for line in lines if "seq" in line}
    recorded = {e.seq: e for e in queries.replay(ws)}
    for seq, line in logged.items():  # each as the log has it
        data = json.loads(recorded[seq].data)
        assert line["event"] == recorded[seq].type
        assert line.get("task_id") == data.get("task_id")
    for task_id in (1, 2, 3):  # the daemon assigned and started each: those lines name the task
        mine = {line["event"] for line in logged.values() if line.get("task_id") == task_id}
        assert {"TaskAssigned", "TaskStarted"} <= mine
    ws.close()


def run_until_sigterm(home: Path, args: list[str], what: str, until: Callable[[int], object],
                      timeout: float = 30.0) -> tuple[int, str]:
    """`sched run ARGS` in `home` until `until(its pid)` holds, then SIGTERM: its exit
    code and stderr (killed if it does not stop within a minute)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    daemon = subprocess.Popen([sys.executable, "-m", "cli", "run", "--home", str(home), *args],
                              env=env, stderr=subprocess.PIPE, text=True, cwd=Path.cwd())
    try:
        wait_for(what, lambda: until(daemon.pid), timeout=timeout)
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    return daemon.returncode, err
