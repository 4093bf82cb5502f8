"""`sched serve`: the HTTP API (see docs/http.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import AgentsOpt, DbOpt, HomeOpt, message, workspace
from eventlog.errors import BadInput
from scheduler import access


def serve_command(
    bind: Annotated[str, typer.Option(
        "--bind", "--host", help="Address to listen on; one reachable from other machines needs "
        "a token to exist (`sched tokens create`).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=1, max=65535)] = 8080,
    workers: Annotated[int, typer.Option(
        "--workers", help="Server processes sharing the port; one per core uses them all.",
        min=1, max=64)] = 1,
    db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None,
) -> None:
    """Run the HTTP API until SIGINT or SIGTERM (FastAPI on uvicorn; docs/http.md)."""
    ws = workspace(home, db, agents)
    why = access.bind_refusal(bind, len(access.list_tokens(ws)))  # (opens the database first)
    if why is not None:
        raise BadInput(why)
    from server.app import create_app
    from server.runner import run

    settings, clock = ws.settings, ws.clock
    ws.close()  # (each worker opens its own connections)
    stopped_by = run(lambda peers: create_app(settings, clock, peers=peers), bind, port, workers)
    message(f"sched serve: stopped{f' ({stopped_by})' if stopped_by else ''}")
