"""`/api/v1/hosts/{host}`: the protocol of a runner of push agents on a host with no
database access (`sched run --server URL --host H`). `start` starts the assignments to
the agents pinned to the host (long polling up to 20 s, as a claim does) and hands the
runner what it needs to run them; `turn` renews the leases of what runs and records
what ended, in one transaction. Only a host token for that host may call them."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel

from projections.views import TokenView
from scheduler import access
from scheduler.config.settings import MAX_HOST_CHARS
from scheduler.usecases import hosts
from scheduler.workspace import Workspace
from server.auth import Credentials, authorized, bearer, require, workspace
from server.calls import Document, answer, body_of, call, long_poll, parse, schema_of, write
from server.errors import COMMON_ERRORS, ErrorBody
from server.routes.agents import wait_of

router = APIRouter(prefix="/api/v1", tags=["hosts"], responses=COMMON_ERRORS)
HostName = Annotated[str, Path(min_length=1, max_length=MAX_HOST_CHARS,
                               description="The host, as the control file pins agents to it.")]
REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad input: the CLI's line"},
}


class Starts(BaseModel):
    lease_seconds: float
    max_message_bytes: int
    max_payload_bytes: int
    attempts: list[dict[str, Any]]
    cancel: list[int]  # the tasks running on the host whose cancel is pending
    held_seconds: float  # how long the server held the request before granting the leases


class TurnDone(BaseModel):
    beats: list[dict[str, Any]]
    statuses: list[dict[str, Any]]


def for_host(token: TokenView, host: str) -> None:
    """403 unless the token is the host's own."""
    why = access.refusal(token, "host", host=host)
    if why is not None:
        raise HTTPException(403, why)


@router.post("/hosts/{host}/start", response_model=Starts, responses=REFUSED,
             openapi_extra=schema_of(hosts.StartRequest, drop=("host", "by"), extra={
                 "wait_seconds": {"type": "integer", "minimum": 0, "maximum": 20, "default": 0}}))
async def post_start(request: Request, host: HostName, token: TokenView = Depends(require("host")),
                     ws: Workspace = Depends(workspace), credentials: Credentials = Depends(bearer)
                     ) -> Document:
    """Start every assignment to the push agents pinned to `host`, to be run by the
    runner's process `pid` in `HOME/work/TASK/ATTEMPT` (`{"pid": ..., "home": ...}`).
    With `"wait_seconds": N` (0 to 20) and nothing to start, wait up to N s for some.
    Each attempt comes with its lease token, argv, variables, payload and timeout.
    `cancel` lists the tasks running on the host whose cancel is pending; a runner
    that sends those it has heard of (`"cancelling": [task, ...]`) is answered at once
    when another cancel is asked for, rather than at its next turn."""
    for_host(token, host)
    data = await body_of(request, "start", reserved=("host", "by"))
    wait = wait_of({"wait_seconds": data.pop("wait_seconds", 0)}, request.app.state.limits, "start")
    asked = parse(hosts.StartRequest, {**data, "host": host, "by": token.name})

    received, held, tries = time.monotonic(), [0.0], [0]

    def start_now() -> hosts.Started:
        if tries[0]:  # a token revoked while the request waited: 401, nothing started
            authorized(credentials, ws, "host")
        tries[0] += 1
        return hosts.start(ws, asked)

    async def start() -> hosts.Started:
        held[0] = time.monotonic() - received  # before the transaction that grants the leases
        return await write(request, start_now)

    started = await long_poll(request, wait, start, lambda started: started.news_for(asked),
                              lambda: hosts.has_starts(ws, asked))
    # (the runner counts the leases from its request's send plus this: never past the server's)
    return Document({**started.to_json(), "held_seconds": held[0]})


@router.post("/hosts/{host}/turn", response_model=TurnDone, responses=REFUSED,
             openapi_extra=schema_of(hosts.TurnRequest, drop=("host", "by")))
async def post_turn(request: Request, host: HostName, token: TokenView = Depends(require("host")),
                    ws: Workspace = Depends(workspace)) -> Document:
    """Renew leases (`renew`: task id and lease token each) and record endings
    (`record`: task id, lease token and how it ended), for attempts running on `host`:
    per renewal the new expiry and `cancel`, or why it was `refused`; per ending the
    task's new status, `already` when a turn sent again finds it recorded, or `lost`."""
    for_host(token, host)
    data = await body_of(request, "turn", reserved=("host", "by"))
    asked = parse(hosts.TurnRequest, {**data, "host": host, "by": token.name})
    if asked.record:
        return answer(await write(request, hosts.turn, ws, asked))
    return answer(await call(hosts.turn, ws, asked))
