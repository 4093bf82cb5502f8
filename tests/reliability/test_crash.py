"""Crash injection: processes doing real work (batch submit, tick, claim, complete,
fail, exec) are SIGKILLed at named fault points (`SCHED_FAULT`) or after a seeded
random delay. After every kill the database opens, its engine's integrity check says ok,
`replay --verify` passes, a kill before the commit appended nothing, and everything
a process reported as done is in the log. At the end, after the leases run out and a
few ticks with healthy agents, every task is in a final state.

The workers are forked from the test process (no interpreter start per kill), each
opening its own connections; on each storage engine. `make test` runs 50 kills; `make soak` (SCHED_SOAK=1)
runs 500."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eventlog.faults import FAULT_POINTS
from eventlog.sql_store import SqlStore
from eventlog.storage import open_storage
from scheduler import worker
from scheduler.clock import ManualClock
from scheduler.config.settings import load_settings
from scheduler.reads import queries
from scheduler.runner.exec import exec_task
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace
from tests.conftest import new_workspace, write_fleet
from tests.invariants import check_log

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork and SIGKILL")

SOAK = bool(os.environ.get("SCHED_SOAK"))
KILLS = 500 if SOAK else 50
PULL = [f"w{i}" for i in range(3)]
FLEET = [{"agentName": name, "agentType": "dev", "maxConcurrency": 2} for name in PULL] + [
    {"agentName": "push", "agentType": "dev", "maxConcurrency": 2,
     "command": [sys.executable, "-c", "import time; time.sleep(0.05)"]}]
FINAL = {"succeeded", "dead", "cancelled"}


def _open(home: Path, seed: int = 0) -> Workspace:
    settings = load_settings({}, {"home": home}).settings
    return Workspace(settings, rng=random.Random(seed), launcher=lambda _s, _t: None)


def _claim_and(ws: Workspace, rng: random.Random, then: str) -> dict[str, Any]:
    claim = worker.claim(ws, rng.choice(PULL))
    if claim is None:
        return {"claimed": None}
    if then == "complete":
        worker.complete(ws, claim.task.task_id, claim.token, {"ok": True})
    elif then == "fail":
        worker.fail(ws, claim.task.task_id, claim.token, "injected failure")
    return {"claimed": claim.task.task_id, "then": then}


def _exec_one(ws: Workspace, _rng: random.Random) -> dict[str, Any]:
    with ws.read() as (_log, views):
        waiting = views.tasks(status="assigned", agent="push", limit=1)
    if not waiting:
        return {"ran": None}
    outcome = exec_task(ws, waiting[0].task_id, os.environ)
    return {"ran": waiting[0].task_id, "status": outcome.status}


OPS: dict[str, Callable[[Workspace, random.Random], dict[str, Any]]] = {
    "submit": lambda ws, rng: {"task_ids": [r.task_id for r in submit(ws, [
        TaskSpec(queue="dev", title=f"t{rng.random():.6f}", priority=rng.randint(0, 3))
        for _ in range(rng.randint(5, 40))])]},
    "tick": lambda ws, _rng: {"assigned": [a["task_id"] for a in tick(ws).assigned]},
    "claim": lambda ws, rng: _claim_and(ws, rng, "nothing"),
    "complete": lambda ws, rng: _claim_and(ws, rng, "complete"),
    "fail": lambda ws, rng: _claim_and(ws, rng, "fail"),
    "exec": _exec_one,
}
POINTS_OF = {"submit": ("after_append", "before_commit"), "tick": FAULT_POINTS[:3],
             # a tick dies after its commit only when it assigned a push agent's task
             "claim": FAULT_POINTS[:2], "complete": FAULT_POINTS[:2], "fail": FAULT_POINTS[:2],
             "exec": ("after_append", "before_commit", "mid_exec")}


def run_child(home: Path, op: str, seed: int, fault: str | None, delay: float | None,
              result: Path) -> bool:
    """Fork a process that does `op`, maybe dying at `fault` or killed after `delay`;
    returns whether it was killed. A process that finished wrote what it did to `result`."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            if fault:
                os.environ["SCHED_FAULT"] = fault
            ws = _open(home, seed)
            done = OPS[op](ws, random.Random(seed))
            tmp = result.with_suffix(".tmp")
            tmp.write_text(json.dumps(done))
            tmp.rename(result)
            code = 0
        finally:
            os._exit(code)
    if delay is not None:
        time.sleep(delay)  # the kill lands wherever the child is by then: that is the point
        with contextlib.suppress(ProcessLookupError):  # it finished first
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert killed or os.WEXITSTATUS(status) == 0, f"{op} exited {os.WEXITSTATUS(status)}"
    return killed


def log_length(db: str) -> int:
    storage = open_storage(db)
    try:
        with storage.read() as txn:
            return SqlStore(txn).last_position()
    finally:
        storage.close()


def check_after(home: Path, db: str, before: int, op: str, fault: str | None, killed: bool,
                result: Path, full_verify: bool) -> None:
    storage = open_storage(db)
    try:
        assert storage.integrity_check() == "ok"
    finally:
        storage.close()
    if killed and fault in ("after_append", "before_commit"):
        assert log_length(db) == before, f"{op} killed at {fault} appended events"
    ws = _open(home)
    try:
        if full_verify:
            verification = queries.verify_log(ws)
            assert verification.ok, verification.problems
        if result.exists():  # it reported success: what it did is in the log
            done = json.loads(result.read_text())
            for task_id in done.get("task_ids", []):
                queries.show(ws, task_id)
            for task_id in done.get("assigned", []):
                assert any(r.type == "TaskAssigned" for r in queries.show(ws, task_id)[1])
            if done.get("then") == "complete":
                assert queries.show(ws, done["claimed"])[0].status == "succeeded"
            result.unlink()
    finally:
        ws.close()


def drain(home: Path) -> None:
    """Healthy agents after the storm: the push agent leaves the fleet, leases and start
    deadlines run out, ticks take work back and the pull workers complete it all."""
    write_fleet(home, [a for a in FLEET if "command" not in a])
    ws = _open(home)
    ws.clock = ManualClock(start=datetime.now(UTC))
    for _ in range(200):
        ws.clock.advance(ws.settings.lease_seconds + ws.settings.backoff_max_seconds + 1)
        tick(ws)
        for name in PULL:
            while (claim := worker.claim(ws, name)) is not None:
                worker.complete(ws, claim.task.task_id, claim.token)
        counts = queries.status(ws)["queues"]["dev"]
        if not any(counts[s] for s in ("queued", "assigned", "running", "blocked")):
            break
    open_tasks = [t for t in queries.list_tasks(ws) if t.status not in FINAL]
    assert open_tasks == [], f"{len(open_tasks)} tasks never finished"
    assert queries.verify_log(ws).ok
    check_log(list(queries.replay(ws)))
    ws.close()


@pytest.mark.slow
def test_kills_at_fault_points_and_random_moments_lose_nothing(tmp_path, new_database):
    home = tmp_path / "home"
    ws = new_workspace(home, FLEET, database=new_database(), lease_seconds=30, start_deadline_seconds=20,
                       backoff_base_seconds=1, backoff_max_seconds=2, max_attempts=5)
    with (home / "sched.toml").open("a") as toml:
        toml.write(
        "lease_seconds = 30\nstart_deadline_seconds = 20\nbackoff_base_seconds = 1\n"
        "backoff_max_seconds = 2\nmax_attempts = 5\n")
    submit(ws, [TaskSpec(queue="dev", title=f"seed{i}") for i in range(50)])
    db = str(ws.settings.database)
    ws.close()
    rng = random.Random(20261124)
    # first every fault point of every operation, each after a few undisturbed rounds
    # that free slots and make work (so the planned operation has something to do),
    # then kills of random operations at random points or moments
    planned = [(op, point) for op, points in POINTS_OF.items() for point in points]
    kills = rounds = 0
    hit: set[str] = set()
    at_random = 0
    queue: list[tuple[str, str | None]] = []
    while kills < KILLS:
        rounds += 1
        assert rounds < KILLS * 10, f"only {kills} kills in {rounds} rounds"
        if planned and not queue:
            target = planned[0]
            queue = [("submit", None), ("complete", None), ("complete", None), ("exec", None)]
            queue += [] if target[0] == "tick" else [("tick", None)]
            queue.append(target)
        if queue:
            (op, fault), delay = queue.pop(0), None
        else:
            op = rng.choice(list(OPS))
            fault, delay = ((rng.choice(POINTS_OF[op]), None) if rng.random() < 0.5
                            else (None, rng.uniform(0.0, 0.03)))
        before = log_length(db)
        result = tmp_path / f"result{rounds}.json"
        killed = run_child(home, op, rng.randrange(2**32), fault, delay, result)
        if killed:
            kills += 1
            hit.add(f"{op}@{fault or 'random'}")
            at_random += fault is None
            if planned and (op, fault) == planned[0]:
                planned.pop(0)
        elif planned and fault is not None and (op, fault) == planned[0]:
            queue = []  # it did not reach its fault point: prepare and try again
        check_after(home, db, before, op, fault, killed, result,
                    full_verify=killed and (not SOAK or kills % 10 == 0))
    assert {f"{op}@{p}" for op, points in POINTS_OF.items() for p in points} <= hit
    drain(home)
    print(f"\ncrash: {kills} kills ({kills - at_random} at fault points, {at_random} at random "
          f"moments) in {rounds} rounds; {log_length(db)} events; every task final")
