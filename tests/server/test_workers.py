"""`sched serve --workers N` in-process: the workers of one server are apps over the
same database, each with a doorbell the others ring, so a write through one wakes the
claims waiting in another at once (not at its next look at the log head). The forked
processes themselves: tests/cli/commands/test_serve.py."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scheduler import access
from scheduler.workspace import Workspace
from server.app import create_app
from server.calls import Peers
from server.limits import ServerLimits
from tests.conftest import wait_for


@pytest.fixture
def peers() -> Iterator[list[Peers]]:
    made = Peers.for_workers(2)
    yield made
    for p in made:
        os.close(p.own)


def test_each_worker_rings_every_other_and_not_itself(peers: list[Peers]):
    first, second = peers
    assert first.others == (second.own,) and second.others == (first.own,)


def test_a_write_through_one_worker_wakes_a_claim_waiting_in_another(
        make_workspace: Callable[..., Workspace], peers: list[Peers]):
    ws = make_workspace()
    ops = access.create_token(ws, "ops", "kim", role="operator").token
    box = access.create_token(ws, "box", "kim", agent="ann").token
    limits = ServerLimits(claim_poll_seconds=3600)  # no look at the head: only a ring wakes the claim
    waiting_app, writing_app = (create_app(ws.settings, ws.clock, limits, p) for p in peers)
    with TestClient(waiting_app) as waiting, TestClient(writing_app) as writing:
        answers: list[Any] = []
        claim = threading.Thread(target=lambda: answers.append(waiting.post(
            "/api/v1/agents/ann/claim", json={"wait_seconds": 20},
            headers={"Authorization": f"Bearer {box}"})))
        claim.start()
        wait_for("the claim to wait", lambda: waiting_app.state.doorbell.waiting == 1)
        submitted = writing.post("/api/v1/tasks", json={"queue": "dev", "title": "elsewhere"},
                                 headers={"Authorization": f"Bearer {ops}"})
        claim.join(15)  # well before the claim's 20 s
        assert not claim.is_alive()
    (answer,) = answers
    assert answer.status_code == 200
    assert answer.json()["task"]["task_id"] == submitted.json()["task_id"]
