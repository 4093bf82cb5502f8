"""Four processes ticking and four claiming, against one database file: the write
transaction serializes them, so nothing is assigned twice and nobody sees a lock error."""

from __future__ import annotations

import json
import multiprocessing
import random
from pathlib import Path

import pytest

from scheduler import worker
from scheduler.config.settings import load_settings
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace
from tests.conftest import new_workspace
from tests.invariants import check_log

AGENTS = [{"agentName": f"{kind}{i}", "agentType": kind, "maxConcurrency": 1 + i % 4}
          for kind in ("dev", "qa") for i in range(10)]
TASKS = 2_000


def _open(home: str) -> Workspace:
    return Workspace(load_settings({}, {"home": Path(home)}).settings)


def _ticker(home: str, rounds: int, errors) -> None:
    ws = _open(home)
    try:
        for _ in range(rounds):
            tick(ws)
    except Exception as e:  # reported to the parent, which fails the test
        errors.put(f"tick: {type(e).__name__}: {e}")
    finally:
        ws.close()


def _claimer(home: str, seed: int, rounds: int, errors) -> None:
    ws = _open(home)
    rng = random.Random(seed)
    try:
        for _ in range(rounds):
            agent = rng.choice(AGENTS)["agentName"]
            got = worker.claim(ws, agent)
            if got is None:
                continue
            if rng.random() < 0.8:
                worker.complete(ws, got.task.task_id, got.token, {"by": agent})
            else:
                worker.fail(ws, got.task.task_id, got.token, "flaky")
    except Exception as e:
        errors.put(f"claim: {type(e).__name__}: {e}")
    finally:
        ws.close()


@pytest.mark.slow
def test_ticks_and_claims_in_eight_processes(tmp_path, new_database):
    ws = new_workspace(tmp_path / "home", AGENTS, database=new_database())
    submit(ws, [TaskSpec(queue="dev" if i % 2 else "qa", title=f"t{i}", priority=i % 5)
                for i in range(TASKS)])
    tick(ws)  # record the fleet once, so every process starts from the same control file
    home = str(ws.settings.home)
    ws.close()
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_ticker, args=(home, 25, errors)) for _ in range(4)]
    procs += [ctx.Process(target=_claimer, args=(home, seed, 150, errors)) for seed in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == [], found
    assert [p.exitcode for p in procs] == [0] * 8

    ws = _open(home)
    events = list(queries.replay(ws))
    check_log(events)
    kinds = [e.type for e in events]
    assert kinds.count("TaskStarted") > 100  # the claimers did real work
    assert queries.verify_log(ws).ok
    tasks = queries.list_tasks(ws)
    assert len(tasks) == TASKS
    for name, agent in queries.status(ws)["agents"].items():
        capacity = next(a["maxConcurrency"] for a in AGENTS if a["agentName"] == name)
        assert agent["assigned"] + agent["running"] <= capacity, name
    starts = [json.loads(e.data) for e in events if e.type == "TaskStarted"]
    assert all(s["attempt"] <= 3 for s in starts)
    ws.close()
