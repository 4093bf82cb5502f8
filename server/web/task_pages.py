"""The dashboard's task pages: the task list (filters, pages), one task (its timeline,
attempts, progress, the tail of its log, explain; live), the dead letters (requeue
through a confirmation step), the approvals, and the metrics as inline SVG charts.
Each calls the use case the CLI calls (`scheduler.usecases`); every change is an
operator's POST with the session's CSRF token (`pages.act`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from eventlog.errors import BadInput, SchedError
from eventlog.values import digits_value, task_id_problem
from projections.views import OPEN_STATUSES
from scheduler.reads import queries
from scheduler.usecases import actions, observe, tasks
from scheduler.workspace import Workspace
from server.auth import workspace
from server.errors import status_of
from server.web import details, security
from server.web.pages import Session, act, error_page, form_pairs, operating, render, session_of

router = APIRouter(include_in_schema=False)  # pages, not the API's contract

STATUSES = (*OPEN_STATUSES, "succeeded", "dead", "cancelled")
PAGE_SIZE = 50
MAX_PAGE = 1000  # as the API's pages
MAX_CHECKED = 1000  # task ids one requeue may carry (the API's bulk limit)
WINDOWS = ("1h", "6h", "24h", "7d")


def viewer(request: Request, ws: Workspace) -> Session | Response:
    """The session of a page's request; else the way to the sign-in form."""
    session = session_of(request, ws)
    if session is not None:
        return session
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=401, headers={"HX-Redirect": "/signin"})
    return RedirectResponse("/signin", status_code=303)


async def form_lists(request: Request) -> dict[str, list[str]]:
    """The fields of a form (`form_pairs`) with every value of a repeated name (checkboxes)."""
    fields: dict[str, list[str]] = {}
    for name, value in await form_pairs(request, MAX_CHECKED + 10):
        fields.setdefault(name, []).append(value)
    return fields


def last(fields: dict[str, list[str]]) -> dict[str, str]:
    return {name: values[-1] for name, values in fields.items()}


def task_ids(values: list[str]) -> list[int]:
    """Task ids from form values; BadInput names the first that is not one, or says
    there are more than one requeue may carry (as the API does)."""
    if len(values) > MAX_CHECKED:
        raise BadInput(f"at most {MAX_CHECKED} ids in one request, not {len(values)}")
    for value in values:
        if (problem := task_id_problem(value)) is not None:
            raise BadInput(problem)
    return [digits_value(value) for value in values]  # (zeros before it: 5,000 are past int())


def blank(value: str | None) -> str | None:
    """A form's empty field is no filter."""
    return value.strip() or None if value is not None else None


@router.get("/tasks")
def task_list(request: Request, ws: Workspace = Depends(workspace),
              queue: str | None = None, status: str | None = None, agent: str | None = None,
              q: str | None = None, cursor: str | None = None, size: str | None = Query(None, alias="limit"),
              ) -> Response:
    """Tasks in pick order, filtered by queue, status, agent and text in the title."""
    session = viewer(request, ws)
    if isinstance(session, Response):
        return session
    size = blank(size)
    if size is not None and not (size.isascii() and size.isdigit() and len(size) <= 4
                                 and 1 <= int(size) <= MAX_PAGE):
        return error_page(request, 400, f"limit must be a number from 1 to {MAX_PAGE}", session)
    limit = int(size) if size is not None else PAGE_SIZE
    filters = {"queue": blank(queue), "status": blank(status), "agent": blank(agent), "q": blank(q)}
    kept = {k: v for k, v in filters.items() if v is not None}
    if limit != PAGE_SIZE:
        kept["limit"] = str(limit)
    here = f"/tasks?{urlencode(kept | ({'cursor': cursor} if blank(cursor) else {}))}"
    template = "_tasks.html" if request.headers.get("HX-Request") == "true" else "tasks.html"
    shown = {"session": session, "filters": filters, "statuses": STATUSES, "here": here,
             "head": queries.head(ws)[0]}
    try:
        listed = tasks.list_tasks(ws, tasks.ListRequest(
            queue=filters["queue"], status=filters["status"], agent=filters["agent"],
            title=filters["q"], limit=limit, cursor=blank(cursor)))
    except SchedError as e:
        return render(request, template, status_of(e), error=e.message, rows=[], next_page=None,
                      first_page=None, **shown)
    next_page = (f"/tasks?{urlencode(kept | {'cursor': listed.next_cursor})}"
                 if listed.next_cursor else None)
    first_page = f"/tasks?{urlencode(kept)}" if blank(cursor) else None
    page = render(request, template, error=None, rows=listed.to_json()["tasks"], next_page=next_page,
                  first_page=first_page, **shown)
    page.headers["Vary"] = "HX-Request, Cookie"
    return page


@router.get("/tasks/{task_id}")
def task_page(request: Request, number: str = Path(alias="task_id"),
              ws: Workspace = Depends(workspace)) -> Response:
    """One task; with `HX-Request` (the live stream moved), only its live part."""
    session = viewer(request, ws)
    if isinstance(session, Response):
        return session
    try:
        (task_id,) = task_ids([number])
        detail = tasks.show(ws, task_id)
    except SchedError as e:
        return error_page(request, status_of(e), e.message, session)
    try:
        why: dict | None = observe.explain(ws, task_id).to_json()
        why_not = None
    except SchedError as e:
        why, why_not = None, e.message
    fragment = request.headers.get("HX-Request") == "true"
    page = render(request, "_task.html" if fragment else "task.html", session=session,
                  task=detail.document, events=detail.events, summary=details.summary,
                  attempts=details.attempts(detail.events), explain=why, explain_error=why_not,
                  log=details.log_tail(detail.task.log_path, ws.settings.home),
                  head=queries.head(ws)[0], last_seq=max((e.seq for e in detail.events), default=0))
    page.headers["Vary"] = "HX-Request, Cookie"
    return page


def status_page(request: Request, ws: Workspace, status: str, cursor: str | None, path: str,
                template: str, **values: Any) -> Response:
    """The page of a signed-in viewer listing the tasks of one `status` (a page of
    `PAGE_SIZE`, from `cursor`), with the link to the next page."""
    session = viewer(request, ws)
    if isinstance(session, Response):
        return session
    try:
        listed = tasks.list_tasks(ws, tasks.ListRequest(status=status, limit=PAGE_SIZE, cursor=blank(cursor)))
    except SchedError as e:
        return error_page(request, status_of(e), e.message, session)
    next_page = f"{path}?{urlencode({'cursor': listed.next_cursor})}" if listed.next_cursor else None
    return render(request, template, session=session, rows=listed.to_json()["tasks"], next_page=next_page,
                  **values)


@router.get("/dead")
def dead_letters(request: Request, ws: Workspace = Depends(workspace), cursor: str | None = None,
                 requeued: str | None = None, mark: str | None = None) -> Response:
    """The dead-letter queue; operators tick tasks to requeue (confirmed next). After a
    requeue, the tasks it requeued, announced only to the session that did it (`mark`)."""
    done = []
    if requeued and security.notice_matches(request.cookies.get(security.SESSION_COOKIE), requeued, mark):
        done = [int(v) for v in requeued.split(",")[:MAX_CHECKED]
                if v.isascii() and v.isdigit() and len(v) <= 19]
    return status_page(request, ws, "dead", cursor, "/dead", "dead.html", requeued=done)


@router.post("/dead/confirm")
def confirm_requeue(request: Request, fields: dict[str, list[str]] = Depends(form_lists),
                    ws: Workspace = Depends(workspace)) -> Response:
    """The confirmation step: what a requeue of the ticked tasks (or the one whose
    button was pressed) will do, worked out by a dry run; nothing is appended."""
    session = operating(request, last(fields), ws)
    if isinstance(session, Response):
        return session
    try:
        chosen = task_ids(fields.get("only") or fields.get("task_id", []))
        if not chosen:
            raise BadInput("tick the tasks to requeue first")
        planned = actions.requeue(ws, actions.RequeueRequest(task_ids=chosen, by=session.token.name,
                                                             dry_run=True))
        rows = [tasks.show(ws, t).document for t in planned.task_ids]
    except SchedError as e:
        return error_page(request, status_of(e), e.message, session)
    return render(request, "dead_confirm.html", session=session, rows=rows)


@router.post("/dead/requeue")
def requeue(request: Request, fields: dict[str, list[str]] = Depends(form_lists),
            ws: Workspace = Depends(workspace)) -> Response:
    """`sched requeue ID...` of the confirmed tasks; back to the dead letters."""
    try:
        chosen = task_ids(fields.get("task_id", []))
    except SchedError as e:
        chosen = []
        refused = e
    else:
        refused = BadInput("no task to requeue") if not chosen else None

    def run(token: object) -> object:
        if refused is not None:
            raise refused
        return actions.requeue(ws, actions.RequeueRequest(task_ids=chosen,
                                                          by=token.name))  # type: ignore[attr-defined]

    done = ",".join(map(str, chosen))
    mark = security.notice_mark(request.cookies.get(security.SESSION_COOKIE), done)
    return act(request, last(fields), ws, run, back=f"/dead?{urlencode({'requeued': done, 'mark': mark})}")


@router.get("/approvals")
def approvals(request: Request, ws: Workspace = Depends(workspace),
              cursor: str | None = None) -> Response:
    """Tasks awaiting approval; operators approve or reject them (with a reason)."""
    return status_page(request, ws, "awaiting_approval", cursor, "/approvals", "approvals.html")


def decide(request: Request, fields: dict[str, list[str]], ws: Workspace, approve: bool) -> Response:
    one = last(fields)
    try:
        chosen, refused = task_ids(fields.get("task_id", [])), None
    except SchedError as e:
        chosen, refused = [], e
    reason = one.get("reason", "").strip() or None

    def run(token: object) -> object:
        if refused is not None:
            raise refused
        name = token.name  # type: ignore[attr-defined]
        if approve:
            return actions.approve(ws, actions.ApprovalRequest(task_ids=chosen, by=name))
        return actions.reject(ws, actions.ApprovalRequest(task_ids=chosen, by=name, reason=reason))

    return act(request, one, ws, run, back="/approvals")


@router.post("/approvals/approve")
def approve(request: Request, fields: dict[str, list[str]] = Depends(form_lists),
            ws: Workspace = Depends(workspace)) -> Response:
    """`sched approve ID`, as the signed-in token."""
    return decide(request, fields, ws, approve=True)


@router.post("/approvals/reject")
def reject(request: Request, fields: dict[str, list[str]] = Depends(form_lists),
           ws: Workspace = Depends(workspace)) -> Response:
    """`sched reject ID [--reason R]`, as the signed-in token."""
    return decide(request, fields, ws, approve=False)


@router.get("/charts")
def charts(request: Request, ws: Workspace = Depends(workspace), since: str = "24h") -> Response:
    """`sched metrics --since W` as charts: throughput per hour, waits and run times,
    utilization (inline SVG drawn here)."""
    session = viewer(request, ws)
    if isinstance(session, Response):
        return session
    try:
        document = observe.metrics(ws, since).to_json()
    except SchedError as e:
        return error_page(request, status_of(e), e.message, session)
    return render(request, "charts.html", session=session, metrics=document, since=since,
                  windows=WINDOWS, charts=details.charts(document))
