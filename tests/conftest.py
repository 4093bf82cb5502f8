"""Shared factories: a workspace on a fresh database file with a manual clock."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.clock import ManualClock
from scheduler.settings import load_settings
from scheduler.workspace import Workspace

Agents = list[dict[str, object]]
DEFAULT_FLEET: Agents = [
    {"agentName": "ann", "agentType": "dev", "maxConcurrency": 2},
    {"agentName": "bob", "agentType": "dev", "maxConcurrency": 1},
    {"agentName": "qin", "agentType": "qa", "maxConcurrency": 1},
]


def write_fleet(home: Path, agents: Agents) -> Path:
    path = home / "agent-control.json"
    path.write_text(json.dumps(agents))
    return path


def new_workspace(home: Path, agents: Agents | None = None, **settings: object) -> Workspace:
    """A workspace in `home` with its own control file, database and manual clock."""
    home.mkdir(parents=True, exist_ok=True)
    write_fleet(home, DEFAULT_FLEET if agents is None else agents)
    loaded = load_settings({}, {"home": home, **settings})
    ws = Workspace(loaded.settings, clock=ManualClock())
    ws.init_db()
    return ws


def wait_for(what: str, check: Callable[[], object], timeout: float = 30.0) -> object:
    """Poll `check` until it returns something truthy, failing after `timeout` seconds
    (for waiting on real processes; never a bare sleep for a race)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def make_workspace(tmp_path: Path) -> Callable[..., Workspace]:
    created: list[Workspace] = []
    counter = iter(range(1_000_000))

    def factory(agents: Agents | None = None, **settings: object) -> Workspace:
        ws = new_workspace(tmp_path / f"ws{next(counter)}", agents, **settings)
        created.append(ws)
        return ws

    yield factory
    for ws in created:
        ws.close()
