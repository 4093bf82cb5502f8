"""`GET /health`: the checks of `sched health --json`, 200 while the scheduler works
(healthy or degraded), 503 when it is unhealthy. Needs no token: load balancers and
monitors probe it, some with `HEAD` (the same status, no body). So that probing costs
no more than one report per `health_cache_seconds` whoever asks and however often (the
report runs the engine's integrity check and looks through /proc), a report that
recent is answered again."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from scheduler.workspace import Workspace
from server.auth import workspace

router = APIRouter(tags=["health"])


class HealthCheck(BaseModel):
    name: str
    status: str  # healthy | degraded | unhealthy
    saw: str
    threshold: str


class HealthReport(BaseModel):
    """The document of `sched health --json`."""

    status: str
    exit_code: int
    at: str
    checks: list[HealthCheck]


@router.head("/health", include_in_schema=False)
@router.get("/health", response_model=HealthReport,
            responses={503: {"model": HealthReport, "description": "unhealthy: the report says why"}})
def get_health(request: Request, ws: Workspace = Depends(workspace)) -> JSONResponse:
    """Every health check, as `sched health --json` gives them (`at` says when)."""
    from scheduler.reads.health import health

    made: tuple[float, dict[str, Any]] | None = getattr(request.app.state, "health", None)
    if made is None or time.monotonic() - made[0] >= request.app.state.limits.health_cache_seconds:
        made = time.monotonic(), health(ws)
        request.app.state.health = made
    report = made[1]
    return JSONResponse(report, status_code=503 if report["status"] == "unhealthy" else 200)
