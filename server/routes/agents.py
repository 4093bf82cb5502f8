"""`/api/v1/agents` and the runner protocol of pull workers: list the agents; drain,
evict and restore one; claim work for one (long polling up to 20 s, waiting on the
event loop, not in a thread); and heartbeat, progress, complete and fail the attempt
a claim started, with its lease token in the body. An agent's token acts only for its
own agent (403 otherwise). Each answer is the CLI command's `--json` document."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel

from eventlog.errors import BadInput, ControlFileError, NotFound
from eventlog.values import text_problem
from projections.sql import any_queued_read, listing_read
from projections.views import TaskView, TokenView
from scheduler import access
from scheduler.tokens import token_matches
from scheduler.usecases import fleet, work
from scheduler.workspace import Workspace
from server.auth import Credentials, authorized, bearer, live_token, require, workspace
from server.calls import (
    Document,
    TaskId,
    answer,
    body_of,
    call,
    data_of,
    doorbell,
    known_query,
    long_poll,
    parse,
    schema_of,
    write,
)
from server.errors import COMMON_ERRORS, ErrorBody
from server.limits import ServerLimits
from server.routes.tasks import Changes, ran

router = APIRouter(prefix="/api/v1", tags=["agents"], responses=COMMON_ERRORS)
AgentName = Annotated[str, Path(description="The agent's name, as the control file gives it.")]
REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad input: the CLI's line"},
    404: {"model": ErrorBody, "description": "no such agent or task"},
    409: {"model": ErrorBody, "description": "refused: e.g. a lease token that is not the current one"},
}
LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorBody, "description": "over this token's rate: retry after `Retry-After` seconds",
          "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
}


class AgentList(BaseModel):
    agents: dict[str, dict[str, Any]]
    path: str  # the control file


class ServiceChange(Changes):
    agent: str
    changed: bool
    out_of_service: bool | str | None = None
    released: list[int]
    taken_back: list[int]
    stopped: list[int]


class ClaimedTask(BaseModel):
    task: dict[str, Any] | None  # null: no work for the agent (within `wait_seconds`)


class Beat(BaseModel):
    task_id: int
    lease_expires_at: str
    cancel: bool  # true: stop and report `fail`
    progress_recorded: bool | None


class ProgressNoted(BaseModel):
    task_id: int
    recorded: bool


class Ended(BaseModel):
    task_id: int
    status: str


def acting_for(token: TokenView, agent: str) -> None:
    """403 unless the token may act for `agent` (an agent's token: only its own)."""
    why = access.refusal(token, "work", agent)
    if why is not None:
        raise HTTPException(403, why)


def is_current_lease(task: TaskView, lease: object) -> bool:
    """Whether `lease` is the lease token of the task's attempt under way: another
    agent's to refuse (403). A lease token of an attempt that ended, sent by an agent
    that ran the task (again, its answer lost, after the task went to another agent), is
    answered by the use case: 409 `already ended (...)`, nothing changed."""
    try:
        return isinstance(lease, str) and token_matches(lease, task.token_hash)
    except UnicodeEncodeError:  # (a lone surrogate: the use case refuses it, 400)
        return False


def started_by(ws: Workspace, task_id: int, agent: str | None) -> bool:
    """Whether `agent` started an attempt of the task (None: a token of no agent)."""
    if agent is None:
        return False
    with ws.read() as (log, _views):
        return ran(log.read_stream(f"task-{task_id}"), agent)


def known_agent(ws: Workspace, name: str) -> None:
    """404 for an agent neither the control file nor the log knows, with the line the
    CLI prints for it (a path names a resource: one that does not exist is not found).
    A name no agent could have (a NUL: PostgreSQL refuses it in a query) is not looked for."""
    if text_problem(name) is not None:
        raise NotFound(f"unknown agent {name!r}")
    with contextlib.suppress(ControlFileError):
        if ws.registry().get(name) is not None:
            return
    with ws.read() as (_log, views):
        if views.get_agent(name) is None:
            raise NotFound(f"unknown agent {name!r}")


def rates(request: Request, which: str, token: TokenView, what: str) -> None:
    request.app.state.rates[which].check(token.name, what)


@router.get("/agents", response_model=AgentList)
def get_agents(_token: TokenView = Depends(require("read")), _query: None = Depends(known_query()),
               ws: Workspace = Depends(workspace)) -> Document:
    """Each agent of the control file with its load and free slots, as `sched agents list --json`."""
    return answer(fleet.list_agents(ws))


SERVICE = schema_of(fleet.ServiceRequest, drop=("by", "agent"))


async def service(request: Request, use_case: Any, agent: str, token: TokenView,
                  ws: Workspace) -> Document:
    data = await body_of(request, use_case.__name__, reserved=("by", "agent"))  # drain, evict, restore
    asked = parse(fleet.ServiceRequest, {**data, "agent": agent, "by": token.name})
    await call(known_agent, ws, agent)
    return answer(await write(request, use_case, ws, asked))


@router.post("/agents/{name}/drain", response_model=ServiceChange, responses=REFUSED, openapi_extra=SERVICE)
async def post_drain(request: Request, name: AgentName, token: TokenView = Depends(require("operate")),
                     ws: Workspace = Depends(workspace)) -> Document:
    """No new work for the agent; its assignments not started go back (`{"reason": ...}`
    optional), as `sched agents drain --json`."""
    return await service(request, fleet.drain, name, token, ws)


@router.post("/agents/{name}/evict", response_model=ServiceChange, responses=REFUSED, openapi_extra=SERVICE)
async def post_evict(request: Request, name: AgentName, token: TokenView = Depends(require("operate")),
                     ws: Workspace = Depends(workspace)) -> Document:
    """No new work for the agent; its attempts are stopped and retried elsewhere
    (`{"reason": ..., "dry_run": ...}` optional), as `sched agents evict --json`."""
    return await service(request, fleet.evict, name, token, ws)


@router.post("/agents/{name}/restore", response_model=ServiceChange, responses=REFUSED,
             openapi_extra=SERVICE)
async def post_restore(request: Request, name: AgentName, token: TokenView = Depends(require("operate")),
                       ws: Workspace = Depends(workspace)) -> Document:
    """Put a drained or evicted agent back in service, as `sched agents restore --json`."""
    return await service(request, fleet.restore, name, token, ws)


def wait_of(data: dict[str, Any], limits: ServerLimits, where: str = "claim") -> int:
    """The long poll's `wait_seconds` of a request body (`where`: the operation, as its
    lines name it); any other field of `data` is refused."""
    wait = data.pop("wait_seconds", 0)
    if type(wait) is not int:
        raise HTTPException(422, f"{where}: wait_seconds: Input should be a valid integer")
    if not 0 <= wait <= limits.max_wait_seconds:
        raise BadInput(f"wait_seconds must be 0 to {limits.max_wait_seconds}, not {wait}")
    for name in data:
        raise HTTPException(422, f"{where}: {name}: Extra inputs are not permitted")
    return wait


def may_have_work(ws: Workspace, agent: str) -> bool:
    """Whether a claim for `agent` might find work: a task assigned to it, or one queued
    in its queue (one read; False spares a write transaction per waiting claim at each
    commit that brought it nothing)."""
    spec = ws.registry().get(agent)
    reads = [listing_read(status="assigned", agent=agent, limit=1),
             *([any_queued_read(spec.type)] if spec is not None else [])]
    with ws.read(prefetch=reads) as (_log, views):
        return bool(views.tasks(status="assigned", agent=agent, limit=1)
                    or (spec is not None and views.any_queued(spec.type)))


@router.post("/agents/{name}/claim", response_model=ClaimedTask, responses={**REFUSED, **LIMITED},
             openapi_extra={"requestBody": {"required": False, "content": {"application/json": {"schema": {
                 "type": "object", "additionalProperties": False,
                 "properties": {"wait_seconds": {"type": "integer", "minimum": 0, "maximum": 20,
                                                 "default": 0}}}}}}})
async def post_claim(request: Request, name: AgentName, credentials: Credentials = Depends(bearer),
                     ws: Workspace = Depends(workspace)) -> Document:
    """Start the best task for the agent, as `sched worker claim --json`. With
    `{"wait_seconds": N}` (0 to 20) and no work now, wait up to N s for some: woken at
    once by work submitted through this server, and by a look at the log head every
    `claim_poll_seconds` for work from elsewhere. `{"task": null}`: none came."""
    limits: ServerLimits = request.app.state.limits
    raw = await body_for_a_token(request, credentials, ws)

    def checked_claim() -> tuple[TokenView, int, work.Claimed]:
        # the checks in the order a client meets them (401, 403, 422 or 400, 429), then
        # the first try: one hop to a worker thread
        token, _ = authorized(credentials, ws, "work")
        acting_for(token, name)
        wait = wait_of(data_of(raw, "claim", reserved=(), query=request.query_params,
                                   content_type=request.headers.get("content-type")), limits)
        rates(request, "claim", token, "claims")
        return token, wait, work.claim(ws, name, token.name)

    async def handed(claimed: work.Claimed) -> work.Claimed:
        if claimed.claim is not None and await request.is_disconnected():  # nobody to hand the token to
            await call(work.release, ws, claimed, "the claim's client went away")
            doorbell(request).ring()
        return claimed

    seen = doorbell(request).head
    token, wait, claimed = await call(checked_claim)

    def claim_again() -> work.Claimed:
        authorized(credentials, ws, "work")  # a token revoked while the claim waited: 401, nothing started
        return work.claim(ws, name, token.name)

    async def claim() -> work.Claimed:
        return await handed(await call(claim_again))

    return answer(await long_poll(request, wait, claim, lambda got: got.claim is not None,
                                  lambda: may_have_work(ws, name), first=(await handed(claimed), seen)))


SMALL_BODY = 64 * 1024  # bytes: a claim's, a heartbeat's (a result may be larger)


async def body_for_a_token(request: Request, credentials: Credentials, ws: Workspace) -> bytes:
    """The body of a runner's request, read once its token is known where that matters:
    the token is checked with the use case, in one hop to a worker thread, after the body
    is read, so that a client without a live token made the server hold up to
    `max_body_bytes` per connection (1,000 such connections: 600 MB, in a security
    review). No token: 401 now. A body declared larger than `SMALL_BODY`, or chunked (of
    a size not declared): the token is checked first, in a hop of its own."""
    if credentials is None:
        live_token(credentials, ws)  # (401, no I/O)
    declared = request.headers.get("content-length")
    if "transfer-encoding" in request.headers or (
            declared is not None and (not declared.isdigit() or int(declared) > SMALL_BODY)):
        await call(live_token, credentials, ws)
    return await request.body()


def lease_body(schema_model: Any) -> dict[str, Any]:
    return schema_of(schema_model, drop=("by", "task_id"), required=True)


async def on_attempt(request: Request, model: Any, use_case: Any, task_id: int, credentials: Credentials,
                     ws: Workspace, where: str, *, frees: bool = True, rate: tuple[str, str] | None = None
                     ) -> Document:
    """Act on the attempt; `frees`: its end frees a slot, so waiting claims look again
    (a heartbeat or progress report does not: it wakes none of them); `rate`: the rate
    limit it counts in, and what it calls what it counts."""
    raw = await body_for_a_token(request, credentials, ws)
    caller_known = False

    def act() -> Any:
        nonlocal caller_known
        # the checks in the order a client meets them (401, 403, 429, 422, the holder's
        # 403 before what is asked: a 400), then the use case: one hop to a worker thread,
        # one read for the token and the task's holder
        token, task = authorized(credentials, ws, "work", task_id)
        caller_known = True
        if rate is not None:
            rates(request, rate[0], token, rate[1])
        data = data_of(raw, where, reserved=("task_id", "by"), query=request.query_params,
                       content_type=request.headers.get("content-type"))
        if task is not None and task.agent is not None and (
                is_current_lease(task, data.get("token")) or not started_by(ws, task_id, token.agent)):
            acting_for(token, task.agent)  # an agent's token acts on its own agent's attempts only
        return use_case(ws, parse(model, {**data, "task_id": task_id, "by": token.name}))

    try:
        return answer(await call(act))
    finally:
        if frees and caller_known:  # as `write` does, but a stranger wakes no waiting claim
            doorbell(request).ring()


@router.post("/tasks/{task_id}/heartbeat", response_model=Beat, responses={**REFUSED, **LIMITED},
             tags=["runner"], openapi_extra=lease_body(work.HeartbeatRequest))
async def post_heartbeat(request: Request, task_id: TaskId, credentials: Credentials = Depends(bearer),
                         ws: Workspace = Depends(workspace)) -> Document:
    """Extend the lease of the current attempt (`{"token": ..., "percent": ...,
    "message": ...}`), as `sched worker heartbeat --json`; `cancel` true: stop and fail."""
    return await on_attempt(request, work.HeartbeatRequest, work.heartbeat, task_id, credentials, ws,
                            "heartbeat", frees=False, rate=("heartbeat", "heartbeats"))


@router.post("/tasks/{task_id}/progress", response_model=ProgressNoted, responses=REFUSED,
             tags=["runner"], openapi_extra=lease_body(work.ProgressRequest))
async def post_progress(request: Request, task_id: TaskId, credentials: Credentials = Depends(bearer),
                        ws: Workspace = Depends(workspace)) -> Document:
    """Report how far the attempt got (`{"token": ..., "percent": ..., "message": ...}`),
    as `sched worker progress --json`."""
    return await on_attempt(request, work.ProgressRequest, work.progress, task_id, credentials, ws,
                            "progress", frees=False)


@router.post("/tasks/{task_id}/complete", response_model=Ended, responses=REFUSED,
             tags=["runner"], openapi_extra=lease_body(work.CompleteRequest))
async def post_complete(request: Request, task_id: TaskId, credentials: Credentials = Depends(bearer),
                        ws: Workspace = Depends(workspace)) -> Document:
    """The attempt succeeded (`{"token": ..., "result": ...}`), as `sched worker complete --json`."""
    return await on_attempt(request, work.CompleteRequest, work.complete, task_id, credentials, ws,
                            "complete")


@router.post("/tasks/{task_id}/fail", response_model=Ended, responses=REFUSED,
             tags=["runner"], openapi_extra=lease_body(work.FailRequest))
async def post_fail(request: Request, task_id: TaskId, credentials: Credentials = Depends(bearer),
                    ws: Workspace = Depends(workspace)) -> Document:
    """The attempt failed (`{"token": ..., "error": ..., "retry": ...}`): retried or
    dead-lettered, as `sched worker fail --json`."""
    return await on_attempt(request, work.FailRequest, work.fail, task_id, credentials, ws, "fail")


@router.post("/tasks/{task_id}/release", response_model=Ended, responses=REFUSED,
             tags=["runner"], openapi_extra=lease_body(work.ReleaseRequest))
async def post_release(request: Request, task_id: TaskId, credentials: Credentials = Depends(bearer),
                       ws: Workspace = Depends(workspace)) -> Document:
    """Give back an attempt whose claim never reached its worker (`{"token": ..., "why":
    ...}`, as `sched worker claim --server` does when it cannot print the claim): queued
    again at once, the attempt not counted, the agent not passed over."""
    return await on_attempt(request, work.ReleaseRequest, work.give_back, task_id, credentials, ws,
                            "release")
