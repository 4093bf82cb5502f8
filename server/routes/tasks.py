"""`/api/v1/tasks`: submit, list, show, explain, and the operator's actions on tasks
(cancel, approve, reject, requeue), one task by its path or many by `{"ids": [...]}`.
Each answer is the document of the CLI command (`sched submit --json`, `sched tasks
--json`, ...)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict

from eventlog.errors import BadInput, SchedError
from eventlog.store import Recorded
from eventlog.values import INT64_MAX
from projections.views import VISIBLE_STATUSES, TokenView
from scheduler import access
from scheduler.usecases import actions, observe, tasks
from scheduler.workspace import Workspace
from server.auth import caller, require, workspace
from server.calls import (
    Document,
    TaskId,
    answer,
    body_of,
    ids_of,
    known_query,
    page_limit,
    parse,
    schema_of,
    write,
)
from server.errors import COMMON_ERRORS, ErrorBody, one_line

router = APIRouter(prefix="/api/v1", tags=["tasks"], responses=COMMON_ERRORS)
REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "bad input: the CLI's line"},
    404: {"model": ErrorBody, "description": "no such task"},
    409: {"model": ErrorBody, "description": "refused in the task's state"},
}


# (2**53 - 1: /openapi.json writes these bounds as floats, exact only up to there)
ID = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}
IDS = {"ids": {"type": "array", "items": ID, "minItems": 1, "maxItems": 1000}}


class Open(BaseModel):
    """A document whose fields are those of the CLI's `--json` (docs/cli.md)."""

    model_config = ConfigDict(extra="allow")


class Changes(Open):
    dry_run: bool | None = None  # present (true) in a dry run, with `changes`
    changes: list[dict[str, Any]] | None = None


class SubmittedOne(Changes):
    task_id: int
    created: bool  # false: the idempotency key named an earlier task, which is this one


class SubmittedBatch(Changes):
    task_ids: list[int]
    created: int


class TaskPage(BaseModel):
    tasks: list[dict[str, Any]]
    next_cursor: str | None  # the `cursor` of the next page; null: this is the last


class TaskDetail(BaseModel):
    task: dict[str, Any]
    events: list[dict[str, Any]]


class CancelledTask(Changes):
    task_id: int
    status: str
    cancelling: bool  # running: it stops at its runner's next heartbeat


class CancelOutcome(Open):
    """One task of a bulk cancel: what `sched cancel ID --json` gives, or its `error`."""

    task_id: int
    status: str | None = None
    cancelling: bool | None = None
    error: str | None = None


class CancelledMany(BaseModel):
    results: list[CancelOutcome]


class Approved(BaseModel):
    approved: list[int]


class Rejected(BaseModel):
    rejected: list[int]


class RequeuedTasks(Changes):
    requeued: list[int]


@router.post("/tasks", response_model=SubmittedOne | SubmittedBatch, responses=REFUSED,
             openapi_extra=schema_of(actions.SubmitRequest, drop=("sources", "by"), required=True))
async def post_tasks(request: Request, idempotency_key: str | None = Header(
                         None, description="The task's idempotency key (one task only)."),
                     token: TokenView = Depends(require("submit")),
                     ws: Workspace = Depends(workspace)) -> Document:
    """Submit one task (its fields, as `sched submit`'s flags) or a batch (`{"tasks":
    [...]}`, each as a `--file` line; all or none), as `sched submit --json`; the
    token's name is recorded as who submitted it."""
    data = await body_of(request, "submit", reserved=("sources", "by"))
    cap = request.app.state.limits.max_page  # (each task is validated here, on the event loop)
    if isinstance(batch := data.get("tasks"), list) and len(batch) > cap:
        raise BadInput(f"at most {cap} tasks in one request, not {len(batch)}: send the rest in "
                       "further requests")
    if len(request.headers.getlist("idempotency-key")) > 1:  # which one was meant cannot be told
        raise HTTPException(422, "Idempotency-Key: given more than once")
    if idempotency_key is not None:
        idempotency_key = header_text(idempotency_key, "Idempotency-Key")
        if "tasks" in data:
            raise BadInput("Idempotency-Key goes with one task: give each task of a batch its own "
                           "idempotency_key")
        if data.get("idempotency_key", idempotency_key) != idempotency_key:
            raise BadInput("the Idempotency-Key header and the body's idempotency_key differ")
        data["idempotency_key"] = idempotency_key
    asked = parse(actions.SubmitRequest, {**data, "by": token.name})
    return answer(await write(request, actions.submit, ws, asked))


def ran(events: Iterable[Recorded], agent: str) -> bool:
    """Whether `agent` started an attempt among a task's `events`."""
    return any(rec.type == "TaskStarted" and rec.fields().get("agent") == agent for rec in events)


def header_text(value: str, name: str) -> str:
    """A header's value as the UTF-8 text its bytes are (the HTTP stack gives them as
    Latin-1: a key `café` sent as UTF-8 read as `cafÃ©`, another key than the CLI's or
    the body's `café`); 400 when they are not UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise BadInput(f"{name}: not UTF-8 text") from None


@router.get("/tasks", response_model=TaskPage, responses={400: REFUSED[400], 404: REFUSED[404]})
def get_tasks(request: Request,
              queue: str | None = Query(None, description="Only this queue."),
              title: str | None = Query(None, description="Only tasks whose title holds this text "
                                                          "(ASCII letters in any case)."),
              status: str | None = Query(None, description="Only this status.",
                                         json_schema_extra={"enum": list(VISIBLE_STATUSES)}),
              agent: str | None = Query(None, description="Only tasks this agent holds or that "
                                                          "are directed at it."),
              unassigned: bool = Query(False, description="Only tasks directed at no agent."),
              limit: int | None = Query(None, ge=1, le=INT64_MAX,
                                        description="At most this many (default 100, at most 1000).",
                                        json_schema_extra={"maximum": 1000}),
              cursor: str | None = Query(None, description="The `next_cursor` of the page before.",
                                         json_schema_extra={"pattern": "^[0-9]{1,18}$"}),
              _token: TokenView = Depends(require("read")),
              _query: None = Depends(known_query("queue", "title", "status", "agent", "unassigned", "limit",
                                                 "cursor")),
              ws: Workspace = Depends(workspace)) -> Document:
    """Tasks in the order they will be picked, a page at a time, as `sched tasks --json
    --limit N --cursor C` (filters as its flags: `--title TEXT` is `title`)."""
    asked = tasks.ListRequest(queue=queue, title=title, status=status, agent=agent, unassigned=unassigned,
                              limit=page_limit(request, limit), cursor=cursor)
    if agent is not None and not unassigned:
        from server.routes.agents import known_agent

        known_agent(ws, agent)
    return answer(tasks.list_tasks(ws, asked))


@router.get("/tasks/{task_id}", response_model=TaskDetail, responses={404: REFUSED[404]})
def get_task(task_id: TaskId, token: TokenView = Depends(caller), _query: None = Depends(known_query()),
             ws: Workspace = Depends(workspace)) -> Document:
    """One task (with its result) and its events, as `sched show --json`. An agent's
    token reads only the tasks it ran, another agent since or not (how a worker whose
    answer was lost learns whether its outcome was recorded)."""
    shown = tasks.show(ws, task_id)
    why = access.refusal(token, "read")
    if why is not None and not (token.agent is not None and ran(shown.events, token.agent)):
        raise HTTPException(403, why)
    return answer(shown)


@router.get("/tasks/{task_id}/explain", response_model=dict[str, Any], responses={404: REFUSED[404]})
def get_explain(task_id: TaskId, _token: TokenView = Depends(require("read")),
                _query: None = Depends(known_query()),
                ws: Workspace = Depends(workspace)) -> Document:
    """Why the task went to its agent, or why no agent takes it now, as `sched explain --json`."""
    return answer(observe.explain(ws, task_id))


@router.post("/tasks/{task_id}/cancel", response_model=CancelledTask, responses=REFUSED,
             openapi_extra=schema_of(actions.CancelRequest, drop=("by", "task_id")))
async def post_cancel(request: Request, task_id: TaskId,
                      token: TokenView = Depends(require("operate")),
                      ws: Workspace = Depends(workspace)) -> Document:
    """Cancel the task (`{"reason": ..., "dry_run": ...}`, both optional), as `sched cancel --json`."""
    data = await body_of(request, "cancel", reserved=("by", "task_id"))
    asked = parse(actions.CancelRequest, {**data, "task_id": task_id, "by": token.name})
    return answer(await write(request, actions.cancel, ws, asked))


@router.post("/tasks/cancel", response_model=CancelledMany, responses=REFUSED,
             openapi_extra=schema_of(actions.CancelRequest, drop=("by", "task_id", "dry_run"),
                                     extra=IDS,
                                     required=True, needs=("ids",)))
async def post_cancel_many(request: Request, token: TokenView = Depends(require("operate")),
                           ws: Workspace = Depends(workspace)) -> Document:
    """Cancel up to 1,000 tasks (`{"ids": [...], "reason": ...}`), each on its own: the
    answer lists, in the order given, each one's `sched cancel --json` document or its
    `error` (one task's refusal leaves the others cancelled)."""
    data = await body_of(request, "cancel", reserved=("by", "task_id", "dry_run"))
    ids = ids_of(request, data, "cancel")
    asked = [parse(actions.CancelRequest, {**data, "task_id": i, "by": token.name}) for i in ids]

    def cancel_each() -> list[dict[str, Any]]:
        results = []
        for one in asked:
            try:
                results.append(actions.cancel(ws, one).to_json())
            except SchedError as e:
                results.append({"task_id": one.task_id, "error": one_line(e.message)})
        return results

    return Document({"results": await write(request, cancel_each)})


REJECT_BODY = schema_of(actions.ApprovalRequest, drop=("by", "task_ids"))


@router.post("/tasks/{task_id}/approve", response_model=Approved, responses=REFUSED)
async def post_approve(request: Request, task_id: TaskId,
                       token: TokenView = Depends(require("operate")),
                       ws: Workspace = Depends(workspace)) -> Document:
    """Approve a task awaiting approval (no body), as `sched approve --json`."""
    data = await body_of(request, "approval", reserved=("by", "task_ids", "reason"))
    asked = parse(actions.ApprovalRequest, {**data, "task_ids": [task_id], "by": token.name})
    return answer(await write(request, actions.approve, ws, asked))


@router.post("/tasks/approve", response_model=Approved, responses=REFUSED,
             openapi_extra=schema_of(actions.ApprovalRequest, drop=("by", "task_ids", "reason"),
                                     extra=IDS, required=True, needs=("ids",)))
async def post_approve_many(request: Request, token: TokenView = Depends(require("operate")),
                            ws: Workspace = Depends(workspace)) -> Document:
    """Approve up to 1,000 tasks (`{"ids": [...]}`), all or none, as `sched approve ID... --json`."""
    data = await body_of(request, "approval", reserved=("by", "task_ids", "reason"))
    ids = ids_of(request, data, "approval")
    asked = parse(actions.ApprovalRequest, {**data, "task_ids": ids, "by": token.name})
    return answer(await write(request, actions.approve, ws, asked))


@router.post("/tasks/{task_id}/reject", response_model=Rejected, responses=REFUSED,
             openapi_extra=REJECT_BODY)
async def post_reject(request: Request, task_id: TaskId,
                      token: TokenView = Depends(require("operate")),
                      ws: Workspace = Depends(workspace)) -> Document:
    """Reject a task awaiting approval (`{"reason": ...}`, optional), as `sched reject --json`."""
    data = await body_of(request, "approval", reserved=("by", "task_ids"))
    asked = parse(actions.ApprovalRequest, {**data, "task_ids": [task_id], "by": token.name})
    return answer(await write(request, actions.reject, ws, asked))


@router.post("/tasks/reject", response_model=Rejected, responses=REFUSED,
             openapi_extra=schema_of(actions.ApprovalRequest, drop=("by", "task_ids"), extra=IDS,
                                     required=True, needs=("ids",)))
async def post_reject_many(request: Request, token: TokenView = Depends(require("operate")),
                           ws: Workspace = Depends(workspace)) -> Document:
    """Reject up to 1,000 tasks (`{"ids": [...], "reason": ...}`), all or none, as `sched
    reject ID... --json`."""
    data = await body_of(request, "approval", reserved=("by", "task_ids"))
    ids = ids_of(request, data, "approval")
    asked = parse(actions.ApprovalRequest, {**data, "task_ids": ids, "by": token.name})
    return answer(await write(request, actions.reject, ws, asked))


@router.post("/tasks/{task_id}/requeue", response_model=RequeuedTasks, responses=REFUSED,
             openapi_extra=schema_of(actions.RequeueRequest, drop=("by", "task_ids", "all", "queue")))
async def post_requeue(request: Request, task_id: TaskId,
                       token: TokenView = Depends(require("operate")),
                       ws: Workspace = Depends(workspace)) -> Document:
    """Requeue a dead task with fresh attempts (`{"dry_run": true}` optional), as `sched
    requeue --json`."""
    data = await body_of(request, "requeue", reserved=("by", "task_ids", "all", "queue"))
    asked = parse(actions.RequeueRequest, {**data, "task_ids": [task_id], "by": token.name})
    return answer(await write(request, actions.requeue, ws, asked))


@router.post("/tasks/requeue", response_model=RequeuedTasks, responses=REFUSED,
             openapi_extra=schema_of(actions.RequeueRequest, drop=("by", "task_ids"), extra=IDS,
                                     required=True))
async def post_requeue_many(request: Request, token: TokenView = Depends(require("operate")),
                            ws: Workspace = Depends(workspace)) -> Document:
    """Requeue up to 1,000 dead tasks (`{"ids": [...]}`), or every dead task of a queue
    (`{"all": true, "queue": "Q"}`), as `sched requeue --json`."""
    data = await body_of(request, "requeue", reserved=("by", "task_ids"))
    if "ids" in data:
        data["task_ids"] = ids_of(request, data, "requeue")
    asked = parse(actions.RequeueRequest, {**data, "by": token.name})
    return answer(await write(request, actions.requeue, ws, asked))

