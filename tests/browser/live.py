"""A live dashboard for a real browser: the app served by uvicorn in a thread on a free
port of 127.0.0.1, and Debian's chromium driven by Playwright (never `playwright
install`: that downloads a browser of its own). Used by the browser tests and by the
screenshot script."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.runner import listening_socket, stopping_server
from tests.conftest import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright

REQUIRE_ENV = "SCHED_REQUIRE_BROWSER"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic"]


def unavailable_reason() -> str | None:
    """None when the browser tests can run here, else one line saying how to enable them."""
    if not CHROMIUM.exists():
        return (f"browser tests skipped: no {CHROMIUM} (apt-get install -y chromium; "
                f"{REQUIRE_ENV}=1 makes this a failure)")
    if importlib.util.find_spec("playwright") is None:
        return (f"browser tests skipped: playwright is not installed (pip install -e '.[dev]'; "
                f"{REQUIRE_ENV}=1 makes this a failure)")
    return None


def required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def skip_module_unless_available() -> None:
    """At the top of a browser test module, before it imports playwright: skip the whole
    module (one line in the summary), or fail when SCHED_REQUIRE_BROWSER=1."""
    import pytest

    reason = unavailable_reason()
    if reason is None:
        return
    if required():
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@contextmanager
def serving(app: Any, port: int = 0) -> Iterator[str]:
    """Serve `app` on `port` (default: a free one) of 127.0.0.1 until the block ends;
    its base URL."""
    import uvicorn

    sock = listening_socket("127.0.0.1", port)
    config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="on",
                            timeout_graceful_shutdown=1, server_header=False)
    server = stopping_server(config)  # (as `sched serve` runs it)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for("the dashboard's server to start", lambda: server.started or not thread.is_alive())
        if not thread.is_alive():
            raise AssertionError("the dashboard's server did not start (see the log above)")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def launch(playwright: Playwright, profile: Path, **options: Any) -> BrowserContext:
    """Chromium with a fresh profile in `profile` (its --user-data-dir)."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=ARGS, **options)


def sign_in(page: Page, base: str, token: str) -> None:
    """Open the dashboard, which asks for a token, and sign in with `token`."""
    from playwright.sync_api import expect

    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/signin")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/")
    expect(page.locator("#overview")).to_be_visible()
