"""`GET /health`: the checks of `sched health --json`, 200 while the scheduler works
(healthy or degraded), 503 when it is unhealthy. Needs no token: load balancers and
monitors probe it."""

from __future__ import annotations

from fastapi import APIRouter, Depends
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


@router.get("/health", response_model=HealthReport,
            responses={503: {"model": HealthReport, "description": "unhealthy: the report says why"}})
def get_health(ws: Workspace = Depends(workspace)) -> JSONResponse:
    """Every health check, as `sched health --json` gives them."""
    from scheduler.reads.health import health

    report = health(ws)
    return JSONResponse(report, status_code=503 if report["status"] == "unhealthy" else 200)
