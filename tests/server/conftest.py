"""The API in-process: a FastAPI TestClient over a fresh workspace with a manual clock,
and tokens of every kind."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from scheduler import access
from scheduler.workspace import Workspace
from server.app import create_app
from server.limits import ServerLimits


@dataclass
class Api:
    client: TestClient
    ws: Workspace  # the same database and clock as the app's
    tokens: dict[str, str]  # name -> token: ops (operator), ci (submitter), dash (reader), box (agent ann)

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def events(self) -> list[dict]:
        with self.ws.read() as (log, _views):
            return [{"seq": r.seq, "type": r.type, "data": json.loads(r.data)} for r in log.read()]


@pytest.fixture
def make_api(make_workspace: Callable[..., Workspace]) -> Iterator[Callable[..., Api]]:
    """An API over a fresh workspace (`settings` as `make_workspace` takes them: e.g.
    `database`), with `limits` (the defaults of `api` otherwise)."""
    with ExitStack() as stack:

        def make(limits: ServerLimits | None = None, **settings: object) -> Api:
            ws = make_workspace(**settings)
            tokens = {name: access.create_token(ws, name, "kim", role=role, agent=agent).token
                      for name, role, agent in (("ops", "operator", None), ("ci", "submitter", None),
                                                ("dash", "reader", None), ("box", None, "ann"))}
            app = create_app(ws.settings, ws.clock,
                             limits or ServerLimits(poll_seconds=0.01, max_body_bytes=4096))
            return Api(stack.enter_context(TestClient(app)), ws, tokens)

        yield make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()
