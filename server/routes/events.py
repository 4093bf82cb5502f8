"""`GET /api/v1/events`: the log as Server-Sent Events. Each event is one message whose
`id` is its seq and whose `data` is the event as `sched replay --json` prints it; a
client that reconnects with `Last-Event-ID` (or `?after=SEQ`) resumes after that seq.
The stream polls the log head every `poll_seconds` and never ends by itself."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from eventlog.errors import BadInput
from eventlog.store import Recorded
from eventlog.values import INT64_MAX
from projections.views import TokenView
from scheduler import access
from scheduler.reads.queries import event_dict
from scheduler.workspace import Workspace
from server.auth import require, workspace
from server.calls import doorbell, known_query
from server.errors import COMMON_ERRORS, ErrorBody
from server.limits import ServerLimits

SEQ = re.compile(r"[0-9]{1,19}")  # (not str.isdigit: it takes "²", which int() refuses)
router = APIRouter(prefix="/api/v1", tags=["events"], responses=COMMON_ERRORS)


def ended(request: Request) -> Callable[[], Awaitable[bool]]:
    """Whether a stream of `request` is over: its client went away, or the server is
    stopping (a stream still open when the shutdown's grace runs out is cut with an
    error and a traceback in the log)."""
    bell = doorbell(request)

    async def over() -> bool:
        return bell.closing or await request.is_disconnected()

    return over


def read_after(ws: Workspace, after: int, limit: int) -> list[Recorded]:
    with ws.read() as (log, _views):
        return list(log.read(after=after, limit=limit))


def frame(rec: Recorded) -> bytes:
    """One SSE message: `id` the seq, `data` the event's JSON on one line."""
    return f"id: {rec.seq}\ndata: {json.dumps(event_dict(rec), separators=(',', ':'))}\n\n".encode()


def start_after(last_event_id: str | None, after: int | None) -> int:
    """The seq to resume after: `Last-Event-ID` (what a reconnecting client sends),
    else `after`, else 0 (the whole log)."""
    if last_event_id is not None and last_event_id.strip():
        text = last_event_id.strip()
        if not SEQ.fullmatch(text) or int(text) > INT64_MAX:
            raise BadInput(f"Last-Event-ID {text[:40]!r} is not an event seq")
        return int(text)
    return after or 0


async def stream(ws: Workspace, after: int, limits: ServerLimits,
                 disconnected: Callable[[], Awaitable[bool]], live: Callable[[], bool],
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 frame: Callable[[Recorded], bytes] = frame,
                 clock: Callable[[], float] = time.monotonic) -> AsyncIterator[bytes]:
    """The events after `after`, then each new one as it is appended (the database is
    read in a worker thread, never on the event loop); `frame` makes each message (the
    dashboard's stream sends less). Every `recheck_seconds` (by `clock`, sending a
    backlog included: counted in polls, a revoked token streamed a long log to its
    end) it asks `live` whether the token it was opened with is live still, and ends
    once it is not (a revoke counts for an open stream too)."""
    yield b"retry: 2000\n\n"  # a browser reconnects after 2 s, with Last-Event-ID
    idle = 0.0
    checked = clock()
    while not await disconnected():
        if clock() - checked >= limits.recheck_seconds:
            if not await run_in_threadpool(live):
                return
            checked = clock()
        batch = await run_in_threadpool(read_after, ws, after, limits.stream_batch)
        for rec in batch:
            yield frame(rec)
            after = rec.seq
        if len(batch) == limits.stream_batch:
            continue  # more are waiting
        if batch:
            idle = 0.0
        elif idle >= limits.keepalive_seconds:
            yield b": keepalive\n\n"
            idle = 0.0
        await sleep(limits.poll_seconds)
        idle += limits.poll_seconds


@router.get("/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "the log, one message per event; id = seq"},
                       400: {"model": ErrorBody}})
async def get_events(
    request: Request,
    after: int | None = Query(None, ge=0, le=INT64_MAX,
                              description="Start after this seq (default 0: the whole log)."),
    last_event_id: str | None = Header(None, description="Resume after this seq (wins over `after`)."),
    token: TokenView = Depends(require("read")),
    _query: None = Depends(known_query("after")),
    ws: Workspace = Depends(workspace),
) -> StreamingResponse:
    """The event log as Server-Sent Events, live, while the token stays live."""
    limits: ServerLimits = request.app.state.limits
    start = start_after(last_event_id, after)
    return StreamingResponse(stream(ws, start, limits, ended(request),
                                    lambda: access.still_live(ws, token)),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
