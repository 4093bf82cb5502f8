"""Who is calling: the bearer token of a request, checked on every request against the
live tokens (a revoke counts at once), and whether its role may do what it asks."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from projections.views import TaskView, TokenView
from scheduler import access
from scheduler.workspace import Workspace

bearer = HTTPBearer(auto_error=False, description="A token from `sched tokens create`.")
Credentials = HTTPAuthorizationCredentials | None  # what `bearer` gives: the header's token, if any
CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def workspace(request: Request) -> Workspace:
    """The app's workspace (one per server: its database connections are pooled). (The
    dependencies that do no I/O are `async`: FastAPI runs a plain one in a worker
    thread, a hop per request for nothing.)"""
    return request.app.state.ws  # type: ignore[no-any-return]


def caller(credentials: Credentials = Depends(bearer),
           ws: Workspace = Depends(workspace)) -> TokenView:
    """The live token the request presents; 401 without one."""
    return live_token(credentials, ws)


def live_token(credentials: Credentials, ws: Workspace) -> TokenView:
    """The live token of `credentials` (read from the database); 401 if none or not live."""
    return live_token_on_task(credentials, ws)[0]


def live_token_on_task(credentials: Credentials, ws: Workspace,
                       task_id: int | None = None) -> tuple[TokenView, TaskView | None]:
    """`live_token`, and the task `task_id` as it stands, read with it."""
    if credentials is None:
        raise HTTPException(401, "no bearer token: send `Authorization: Bearer TOKEN` (a token "
                                 "from `sched tokens create`)", headers=CHALLENGE)
    token, task = access.authenticate_on_task(ws, credentials.credentials, task_id)
    if token is None:
        raise HTTPException(401, "the bearer token is not valid (unknown or revoked)", headers=CHALLENGE)
    return token, task


def authorized(credentials: Credentials, ws: Workspace, action: access.Action,
               task_id: int | None = None) -> tuple[TokenView, TaskView | None]:
    """The live token of `credentials` when its role may do `action` (read from the
    database: call it in a worker thread), and the task `task_id` read with it (an
    attempt's route: who holds it); 401 or 403 otherwise."""
    token, task = live_token_on_task(credentials, ws, task_id)
    why = access.refusal(token, action)
    if why is not None:
        raise HTTPException(403, why)
    return token, task


def require(action: access.Action) -> Callable[..., TokenView]:
    """A dependency giving the caller's token when its role may do `action`; 403 otherwise.
    (The runner's routes check it themselves, in the hop to a worker thread that runs
    their use case: `authorized`.)"""

    def allowed(credentials: Credentials = Depends(bearer),
                ws: Workspace = Depends(workspace)) -> TokenView:
        return authorized(credentials, ws, action)[0]  # (one dependency: one hop to a worker thread)

    return allowed
