"""The scheduler as a whole: status, pause and resume, metrics and the audit trail (the
documents of `sched status --json`, `sched pause --json`, `sched resume --json`,
`sched metrics --json` and `sched replay`), and `/metrics` in Prometheus's text format."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from eventlog.values import INT64_MAX
from projections.views import TokenView
from scheduler.usecases import fleet, observe
from scheduler.workspace import Workspace
from server.auth import require, workspace
from server.calls import (
    DURATION,
    SEQ_OR_TIME,
    TASK_ID_TEXT,
    Document,
    answer,
    body_of,
    known_query,
    page_limit,
    parse,
    schema_of,
    write,
)
from server.errors import COMMON_ERRORS, ErrorBody

router = APIRouter(prefix="/api/v1", tags=["scheduler"], responses=COMMON_ERRORS)
top = APIRouter(tags=["scheduler"], responses=COMMON_ERRORS)  # `/metrics`, where scrapers look
BAD = {400: {"model": ErrorBody, "description": "bad input: the CLI's line"}}


class PauseResult(BaseModel):
    paused: bool
    changed: bool  # False: it already was paused, nothing was appended


class ResumeResult(BaseModel):
    paused: bool  # still stopped: the stop file exists
    changed: bool  # False: it was not paused, nothing was appended
    stop_file: bool


class ReplayPage(BaseModel):
    """A page of the trail (`events`, and `next_since`: the `since` of the next page,
    null on the last), or with `verify` (`ok`, `events` counted, `problems`), or with
    `head` (`seq`, `hash`)."""

    events: list[dict[str, Any]] | int | None = None
    next_since: str | None = None
    ok: bool | None = None
    problems: list[str] | None = None
    seq: int | None = None
    hash: str | None = None


@router.get("/status", response_model=dict[str, Any], responses=BAD)
def get_status(at: str | None = Query(None, description="As it stood after this seq or ISO time.",
                                      json_schema_extra=SEQ_OR_TIME),
               _token: TokenView = Depends(require("read")), _query: None = Depends(known_query("at")),
               ws: Workspace = Depends(workspace)) -> Document:
    """Queue depths and agent load: the document of `sched status --json [--at]`."""
    return answer(observe.status(ws, at))


@router.post("/pause", response_model=PauseResult, responses=BAD,
             openapi_extra=schema_of(fleet.PauseRequest))
async def post_pause(request: Request, token: TokenView = Depends(require("operate")),
                     ws: Workspace = Depends(workspace)) -> Document:
    """Stop assigning work (`sched pause`; `{"reason": ...}` optional); the token's name
    is recorded as who paused."""
    data = await body_of(request, "pause")
    asked = parse(fleet.PauseRequest, {**data, "by": token.name})
    return answer(await write(request, fleet.pause, ws, asked))


@router.post("/resume", response_model=ResumeResult, openapi_extra=schema_of(fleet.ResumeRequest))
async def post_resume(request: Request, token: TokenView = Depends(require("operate")),
                      ws: Workspace = Depends(workspace)) -> Document:
    """Assign work again (`sched resume`); the token's name is recorded as who resumed."""
    data = await body_of(request, "resume")
    asked = parse(fleet.ResumeRequest, {**data, "by": token.name})
    return answer(await write(request, fleet.resume, ws, asked))


@router.get("/metrics", response_model=dict[str, Any], responses=BAD)
def get_metrics(since: str = Query("1h", description="The window that ends now: 30m, 1h, 24h, 7d...",
                                   json_schema_extra=DURATION),
                _token: TokenView = Depends(require("read")), _query: None = Depends(known_query("since")),
                ws: Workspace = Depends(workspace)) -> Document:
    """Throughput, errors, waits, run times and utilization: `sched metrics --json [--since]`."""
    return answer(observe.metrics(ws, since))


@top.get("/metrics", response_model=None, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "the Prometheus text exposition format"}, **BAD})
def get_prometheus(since: str = Query("1h", description="The window that ends now.",
                                      json_schema_extra=DURATION),
                   _token: TokenView = Depends(require("read")),
                   _query: None = Depends(known_query("since")),
                   ws: Workspace = Depends(workspace)) -> PlainTextResponse:
    """The metrics in Prometheus's text format, as `sched metrics --prometheus`."""
    from scheduler.reads.metrics import prometheus_text

    text = prometheus_text(ws, observe.metrics(ws, since).to_json())
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/replay", response_model=ReplayPage,
            responses={**BAD, 404: {"model": ErrorBody, "description": "no such task (`task`)"}})
def get_replay(request: Request,
               task: Annotated[int | None, TASK_ID_TEXT,
                               Query(ge=1, le=INT64_MAX, description="Only this task's events.")] = None,
               since: str | None = Query(None, description="From this seq or ISO time (inclusive).",
                                         json_schema_extra=SEQ_OR_TIME),
               until: str | None = Query(None, description="Up to this seq or ISO time (inclusive).",
                                         json_schema_extra=SEQ_OR_TIME),
               limit: int | None = Query(None, ge=1, le=INT64_MAX,
                                         description="At most this many events (default 100, at most 1000).",
                                         json_schema_extra={"maximum": 1000}),
               verify: bool = Query(False, description="Check the hash chain and the projections."),
               expect_head: str | None = Query(None, description="With verify: SEQ:HASH the head had."),
               head: bool = Query(False, description="The last seq and its hash."),
               _token: TokenView = Depends(require("read")),
               _query: None = Depends(known_query("task", "since", "until", "limit", "verify", "expect_head",
                                                  "head")),
               ws: Workspace = Depends(workspace)) -> Document:
    """The audit trail a page at a time (`sched replay --json`, its lines as `events`),
    or its verification (`verify`), or its head (`head`)."""
    asked = observe.ReplayRequest(task=task, since=since, until=until, verify=verify,
                                  expect_head=expect_head, head=head,
                                  limit=limit if verify or head else page_limit(request, limit))
    return answer(observe.replay(ws, asked))

