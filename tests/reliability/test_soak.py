"""Concurrency soak: 8 processes mixing submit, tick, claim, heartbeat, complete, fail
and cancel against one database for a bounded time. Then, from the event log alone:
no task with two live leases, no agent above capacity, no task lost, and no caller
ever saw "database is locked". `make test` runs 8 seconds over about 1,000 tasks;
`make soak` (SCHED_SOAK=1) a minute over 10,000."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from eventlog.errors import Refused, TokenRejected
from scheduler import operator, worker
from scheduler.config.settings import load_settings
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace
from tests.conftest import new_workspace
from tests.invariants import check_log

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork")

SOAK = bool(os.environ.get("SCHED_SOAK"))
SECONDS = 60.0 if SOAK else 8.0
TASKS = 10_000 if SOAK else 1_000
PROCESSES = 8
AGENTS = [{"agentName": f"a{i}", "agentType": "dev", "maxConcurrency": 1 + i % 3} for i in range(12)]


def mixer(home: Path, seed: int, deadline: float, report: Path) -> None:
    """One process: random operations until the deadline; writes what it submitted and
    every error it met to `report`."""
    rng = random.Random(seed)
    ws = Workspace(load_settings({}, {"home": home}).settings, rng=rng, launcher=lambda _s, _t: None)
    submitted: list[int] = []
    errors: list[str] = []
    quota = TASKS // PROCESSES
    while time.monotonic() < deadline:
        op = rng.choice(["submit", "tick", "work", "work", "work", "cancel"])
        try:
            if op == "submit" and len(submitted) < quota:
                batch = [TaskSpec(queue="dev", title=f"p{seed}", priority=rng.randint(0, 5))
                         for _ in range(min(rng.randint(1, 40), quota - len(submitted)))]
                submitted += [r.task_id for r in submit(ws, batch)]
            elif op == "tick":
                tick(ws)
            elif op == "work":
                claim = worker.claim(ws, rng.choice(AGENTS)["agentName"])
                if claim is None:
                    continue
                beat = worker.heartbeat(ws, claim.task.task_id, claim.token)
                if beat.cancel or rng.random() < 0.2:
                    worker.fail(ws, claim.task.task_id, claim.token, "flaky")
                else:
                    worker.complete(ws, claim.task.task_id, claim.token)
            elif op == "cancel" and submitted and rng.random() < 0.3:
                operator.cancel(ws, rng.choice(submitted), by=f"p{seed}")
        except (TokenRejected, Refused):
            pass  # another process cancelled or finished it: a refusal, not a failure
        except Exception as e:  # anything else, "database is locked" first, fails the test
            errors.append(f"{op}: {type(e).__name__}: {e}")
    ws.close()
    report.write_text(json.dumps({"submitted": submitted, "errors": errors}))


@pytest.mark.slow
def test_eight_processes_mixing_every_operation(tmp_path, new_database):
    ws = new_workspace(tmp_path / "home", AGENTS, database=new_database(), max_attempts=3,
                       backoff_base_seconds=0)
    with (ws.settings.home / "sched.toml").open("a") as toml:
        toml.write("max_attempts = 3\nbackoff_base_seconds = 0\n")
    tick(ws)
    home = ws.settings.home
    ws.close()
    deadline = time.monotonic() + SECONDS
    children = []
    for seed in range(PROCESSES):
        report = tmp_path / f"report{seed}.json"
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                mixer(home, seed, deadline, report)
                code = 0
            finally:
                os._exit(code)
        children.append((pid, report))
    for pid, _ in children:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    reports = [json.loads(report.read_text()) for _, report in children]
    assert [e for r in reports for e in r["errors"]] == []
    submitted = [t for r in reports for t in r["submitted"]]
    assert len(submitted) == len(set(submitted)) > 0

    ws = Workspace(load_settings({}, {"home": home}).settings)
    records = list(queries.replay(ws))
    check_log(records)  # one holder per task, capacity, attempts, failover
    in_log = {json.loads(r.data)["task_id"] for r in records if r.type == "TaskSubmitted"}
    assert in_log == set(submitted)  # every task a caller was told about, and no other
    assert queries.verify_log(ws).ok
    ws.close()
    kinds = Counter(r.type for r in records)
    print(f"soak: {len(submitted)} tasks, {len(records)} events: {dict(kinds)}")
    for kind in ("TaskAssigned", "TaskStarted", "LeaseRenewed", "TaskSucceeded", "TaskFailed",
                 "TaskCancelled"):
        assert kinds[kind] > 0, f"no {kind}: the mix did not exercise it"
