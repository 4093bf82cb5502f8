"""The screenshot of the dashboard in the README (docs/dashboard.png), made by the
browser the browser tests drive: a small fleet with work queued, assigned and running,
seen by an operator. Run it with `make screenshot`, or

    python -m tests.browser.screenshot [PATH] [--dark]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from scheduler import access, worker
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace
from server.app import create_app
from tests.browser import live
from tests.conftest import new_workspace

FLEET = [
    {"agentName": "vaela", "agentType": "dev", "maxConcurrency": 3},
    {"agentName": "damien", "agentType": "dev", "maxConcurrency": 2},
    {"agentName": "oscar", "agentType": "qa", "maxConcurrency": 2},
    {"agentName": "iris", "agentType": "product", "maxConcurrency": 1},
    {"agentName": "noor", "agentType": "architect", "maxConcurrency": 1, "enabled": False},
]
WORK = [
    ("dev", "Parse the agent control file once per tick", 5),
    ("dev", "Add cursor pagination to the task list", 3),
    ("dev", "Retry webhook deliveries with backoff", 2),
    ("dev", "Fix the flaky lease-renewal test", 4),
    ("qa", "Soak-test 10,000 tasks on PostgreSQL", 1),
    ("qa", "Check the dashboard in a screen reader", 0),
    ("product", "Write the release notes for 0.2", 0),
    ("dev", "Index the tasks table by queue and status", 0),
    ("dev", "Trim the cold start of `sched status`", 0),
    ("qa", "Replay last week's log and verify it", 0),
    ("product", "Interview two operators about alerts", 0),
    ("dev", "Document running behind nginx", 0),
]


def stage(ws: Workspace) -> str:
    """Fill `ws` with a morning's work; the operator token."""
    submit(ws, [TaskSpec(queue=q, title=t, priority=p) for q, t, p in WORK])
    ws.clock.advance(30)  # type: ignore[attr-defined]
    tick(ws)
    done = worker.claim(ws, "vaela")
    failed = worker.claim(ws, "oscar")
    ws.clock.advance(42)  # type: ignore[attr-defined]
    assert done is not None and failed is not None
    worker.complete(ws, done.task.task_id, done.token, {"pr": 512})
    worker.fail(ws, failed.task.task_id, failed.token, "staging is down: connection refused")
    ws.clock.advance(3)  # type: ignore[attr-defined]
    tick(ws)
    for agent in ("vaela", "vaela", "damien", "oscar", "iris"):
        worker.claim(ws, agent)  # started: running
    ws.clock.advance(5)  # type: ignore[attr-defined]
    return access.create_token(ws, "ops", "kim", role="operator").token


def shoot(path: Path, dark: bool = False) -> None:
    reason = live.unavailable_reason()
    if reason is not None:
        sys.exit(reason)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        ws = new_workspace(Path(tmp) / "home", FLEET)
        token = stage(ws)
        with live.serving(create_app(ws.settings, ws.clock)) as base, sync_playwright() as driver:
            context = live.launch(driver, Path(tmp) / "profile", viewport={"width": 1200, "height": 900},
                                  color_scheme="dark" if dark else "light", device_scale_factor=1)
            try:
                page = context.pages[0] if context.pages else context.new_page()
                live.sign_in(page, base, token)
                page.screenshot(path=str(path), full_page=True)
            finally:
                context.close()
        ws.close()
    print(f"wrote {path}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="docs/dashboard.png", type=Path)
    parser.add_argument("--dark", action="store_true", help="the dark colour scheme")
    args = parser.parse_args()
    shoot(args.path, args.dark)


if __name__ == "__main__":
    main()
