"""The FastAPI app of `sched serve`: one workspace for the server's life, the routes,
the error mapping and the body size limit. `/openapi.json` is the API's contract."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib.metadata import version

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from eventlog.errors import OutOfDate
from scheduler.clock import Clock, SystemClock
from scheduler.config.settings import Settings
from scheduler.workspace import Workspace
from server import errors
from server.calls import Doorbell, Peers, head_seq, ring_on_commits, watch_head
from server.limits import BodySizeLimit, RateLimit, ServerLimits, UrlText
from server.routes import agents, events, health, hosts, scheduler, tasks
from server.web import pages, task_pages
from server.web.security import SecurityHeaders

BODY_OVERHEAD = 64 * 1024  # room for the fields beside the largest payload


def create_app(settings: Settings, clock: Clock | None = None,
               limits: ServerLimits | None = None, peers: Peers | None = None) -> FastAPI:
    """The API over the database and control file of `settings`, with `clock` (tests
    inject one). The database is opened at start-up and closed at shutdown. `peers`:
    the doorbells of the other worker processes of the same server, if it has any."""
    limits = limits or ServerLimits()
    if limits.max_body_bytes is None:
        limits = replace(limits, max_body_bytes=settings.max_payload_bytes + BODY_OVERHEAD)
    ws = Workspace(settings, clock=clock or SystemClock())

    def now() -> float:
        return ws.clock.now().timestamp()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ws.db  # noqa: B018  (opened once, before the first request: every request shares its pool)
        stopping = threading.Event()
        bell = app.state.doorbell
        bell.head = head_seq(ws)
        loop = asyncio.get_running_loop()
        bell.listen(loop)
        if ws.db.engine_name == "postgresql":  # commits of other processes wake waiting claims
            threading.Thread(target=ring_on_commits, name="wakeups", daemon=True,
                             args=(ws, bell, loop, stopping)).start()
        watcher = asyncio.create_task(watch_head(ws, bell, limits.claim_poll_seconds))  # the safety net
        try:
            yield
        finally:
            watcher.cancel()
            bell.listen(loop, stop=True)
            stopping.set()
            ws.close()

    app = FastAPI(title="sched", version=version("sched"), lifespan=lifespan,
                  description="The HTTP API of sched, an event-sourced scheduler for fleets of "
                              "AI agents: the same operations and documents as its CLI.",
                  docs_url=None, redoc_url=None,  # (their pages load scripts from a CDN)
                  # a path with a slash too many is a path that does not exist (404), not a
                  # redirect to an address built from the client's Host header
                  redirect_slashes=False)
    app.state.ws = ws

    def stop_serving(error: OutOfDate) -> None:
        # another version of sched changed the database: no retry mends this process, so
        # the request is answered (503) and the server stops (`server.runner` says why; a
        # service manager restarts it with the version installed), as the daemon does;
        # told by the workspace, so a route that catches the error stops it too
        app.state.out_of_date = error
        stop = getattr(app.state, "stop", None)
        if stop is not None:
            stop()

    ws.out_of_date = stop_serving
    app.state.limits = limits
    app.state.doorbell = Doorbell(peers)  # rung after each write: waiting claims look again
    app.state.rates = {"claim": RateLimit(limits.claim_burst, limits.claims_per_second, now),
                       "heartbeat": RateLimit(limits.heartbeat_burst, limits.heartbeats_per_second, now)}
    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(UrlText)
    app.add_middleware(SecurityHeaders)  # outermost: a 413 or a 400 gets the headers too
    # a request is matched against every route of each router in turn until one fits: the
    # workers' routes (claim, heartbeat, complete, a host runner's turn), most of the
    # traffic, come first
    for router in (agents.router, hosts.router, tasks.router, scheduler.router, events.router,
                   health.router, pages.router, task_pages.router, scheduler.top):
        app.include_router(router)
    app.mount("/static", StaticFiles(packages=[("server.web", "static")]), name="static")
    return app
