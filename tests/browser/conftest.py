"""Fixtures of the browser tests: a live server over a fresh workspace (manual clock,
tokens of each role) and a page of a chromium with a fresh profile. Without chromium or
playwright every browser test is skipped with one line saying how to enable them, or
fails when SCHED_REQUIRE_BROWSER=1 (CI sets it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scheduler import access
from scheduler.workspace import Workspace
from server.app import create_app
from server.limits import ServerLimits
from tests.browser import live


@pytest.fixture(scope="module")  # not longer: while it runs, the main thread has an asyncio
def browser_driver() -> Iterator[Any]:  # loop running, and later tests' asyncio.run() refuse
    reason = live.unavailable_reason()
    if reason is not None:
        if live.required():
            pytest.fail(f"{live.REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@dataclass
class Dashboard:
    base: str  # http://127.0.0.1:PORT
    ws: Workspace  # the server's database and clock
    tokens: dict[str, str]  # ops (operator), dash (reader)
    page: Any  # a Playwright Page
    console_errors: list[str] = field(default_factory=list)  # CSP violations show here

    def sign_in(self, name: str) -> None:
        live.sign_in(self.page, self.base, self.tokens[name])


@pytest.fixture
def dashboard(browser_driver: Any, make_workspace: Callable[..., Workspace],
              tmp_path: Path) -> Iterator[Dashboard]:
    ws = make_workspace()
    tokens = {name: access.create_token(ws, name, "kim", role=role).token
              for name, role in (("ops", "operator"), ("dash", "reader"))}
    app = create_app(ws.settings, ws.clock, ServerLimits(poll_seconds=0.05))
    with live.serving(app) as base:
        context = live.launch(browser_driver, tmp_path / "profile")
        context.set_default_timeout(15_000)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            board = Dashboard(base, ws, tokens, page)
            page.on("console", lambda m: board.console_errors.append(m.text) if m.type == "error" else None)
            yield board
        finally:
            context.close()  # before the server stops: its event stream ends with the browser
