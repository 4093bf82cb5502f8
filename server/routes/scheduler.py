"""The scheduler as a whole: status, pause and resume (the documents of `sched status
--json`, `sched pause --json` and `sched resume --json`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, StrictStr

from projections.views import TokenView
from scheduler import operator, queries
from scheduler.workspace import Workspace
from server.auth import require, workspace
from server.errors import COMMON_ERRORS, ErrorBody

router = APIRouter(prefix="/api/v1", tags=["scheduler"], responses=COMMON_ERRORS)


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: StrictStr | None = None  # why, shown by status


class PauseResult(BaseModel):
    paused: bool
    changed: bool  # False: it already was paused, nothing was appended


class ResumeResult(BaseModel):
    paused: bool  # still stopped: the stop file exists
    changed: bool  # False: it was not paused, nothing was appended
    stop_file: bool


@router.get("/status", response_model=dict[str, Any])
def get_status(_token: TokenView = Depends(require("read")),
               ws: Workspace = Depends(workspace)) -> dict[str, Any]:
    """Queue depths and agent load: the document of `sched status --json`."""
    return queries.status(ws)


@router.post("/pause", response_model=PauseResult, responses={400: {"model": ErrorBody}})
def post_pause(body: PauseRequest | None = Body(None), token: TokenView = Depends(require("operate")),
               ws: Workspace = Depends(workspace)) -> PauseResult:
    """Stop assigning work (`sched pause`); the token's name is recorded as who paused."""
    changed = operator.pause(ws, token.name, body.reason if body else None)
    return PauseResult(paused=True, changed=changed)


@router.post("/resume", response_model=ResumeResult)
def post_resume(token: TokenView = Depends(require("operate")),
                ws: Workspace = Depends(workspace)) -> ResumeResult:
    """Assign work again (`sched resume`); the token's name is recorded as who resumed."""
    changed = operator.resume(ws, token.name)
    stopped = ws.stop_file.exists()
    return ResumeResult(paused=stopped, changed=changed, stop_file=stopped)
