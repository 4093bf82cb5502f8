"""The dashboard's pages: sign-in and sign-out, the overview (whole, or as the fragment
htmx fetches when the live stream says the log moved), pause and resume, and the live
stream the pages listen to. Sessions, CSRF and headers: `server.web.security`."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import anyio
import jinja2
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from eventlog.errors import SchedError
from eventlog.store import Recorded
from eventlog.values import INT64_MAX
from projections.views import TokenView
from scheduler import access, operator
from scheduler.workspace import Workspace
from server.auth import workspace
from server.calls import doorbell
from server.errors import status_of
from server.limits import ServerLimits
from server.routes.events import ended, start_after, stream
from server.web import details, security
from server.web.overview import overview

# the pages that exist, for the nav bar (their routes: here and `server.web.task_pages`)
NAV: tuple[tuple[str, str], ...] = (("/", "Overview"), ("/tasks", "Tasks"), ("/dead", "Dead letters"),
                                    ("/approvals", "Approvals"), ("/charts", "Metrics"))
MAX_FORM_FIELDS = 20

templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.PackageLoader("server.web", "templates"),
    autoescape=True,  # every string is escaped: titles, reasons and errors are untrusted
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True))
templates.env.filters["latency"] = details.latency
router = APIRouter(include_in_schema=False)  # pages, not the API's contract


@dataclass(frozen=True)
class Session:
    """A signed-in browser: its live token, and the CSRF token of its forms."""

    token: TokenView
    csrf: str
    can_operate: bool
    raw: str = field(repr=False)  # the bearer token (never rendered)


def session_of(request: Request, ws: Workspace) -> Session | None:
    """The session of the request's cookie, if it holds a live token that may read."""
    raw = request.cookies.get(security.SESSION_COOKIE)
    if not raw:
        return None
    view = access.authenticate(ws, raw)
    if view is None or access.refusal(view, "read") is not None:
        return None
    return Session(view, security.csrf_token(raw), access.refusal(view, "operate") is None, raw)


async def form_pairs(request: Request, max_fields: int) -> list[tuple[str, str]]:
    """The fields of a url-encoded form, in order (another body gives none that a form
    needs, so its CSRF check fails). A body, or a field whose bytes %-decoded, that is
    not UTF-8 is refused (400), as in a path or a query: read as U+FFFD it would be
    recorded as something nobody sent (a form's CSRF field alone, wrong, is 403); so is
    a form of more than `max_fields` fields (it was no form's, and its CSRF check failed)."""
    try:
        text = (await request.body()).decode()
    except UnicodeDecodeError as e:
        raise HTTPException(400, "the form holds a byte that is not UTF-8") from e
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=max_fields, errors="strict")
    except UnicodeDecodeError as e:
        raise HTTPException(400, "a form field holds a byte that is not UTF-8 once %-decoded") from e
    except ValueError:  # (the only way a lenient parse fails)
        raise HTTPException(400, f"the form has more than {max_fields} fields") from None


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a form (`form_pairs`), the last of a repeated name winning."""
    return dict(await form_pairs(request, MAX_FORM_FIELDS))


def render(request: Request, name: str, status: int = 200, **context: object) -> Response:
    page = templates.TemplateResponse(request, name, {"nav": NAV, "path": request.url.path,
                                                      "session": None, **context}, status_code=status)
    page.headers["Cache-Control"] = "no-store"
    return page


def error_page(request: Request, status: int, message: str, session: Session | None = None) -> Response:
    return render(request, "error.html", status, message=message, code=status, session=session)


def signin_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    value = security.new_signin_value()
    page = render(request, "signin.html", status, error=error, csrf=value)
    security.set_signin(page, request, value)
    return page


@router.get("/")
def index(request: Request, ws: Workspace = Depends(workspace)) -> Response:
    """The overview; with `HX-Request` (htmx refreshing it), only its live fragment."""
    fragment = request.headers.get("HX-Request") == "true"
    session = session_of(request, ws)
    if session is None:
        if fragment:  # htmx follows this header: the whole page goes to the sign-in form
            return Response(status_code=401, headers={"HX-Redirect": "/signin"})
        return RedirectResponse("/signin", status_code=303)
    page = render(request, "_overview.html" if fragment else "overview.html",
                  session=session, view=overview(ws))
    page.headers["Vary"] = "HX-Request, Cookie"
    return page


@router.get("/signin")
def signin_form(request: Request) -> Response:
    return signin_page(request)


@router.post("/signin")
def signin(request: Request, fields: dict[str, str] = Depends(form_fields),
           ws: Workspace = Depends(workspace)) -> Response:
    expected = request.cookies.get(security.SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), fields.get("csrf", "").encode()):
        return signin_page(request, "the sign-in form expired: please sign in again", 403)
    raw = fields.get("token", "").strip()
    view = access.authenticate(ws, raw) if raw else None
    if view is None:
        return signin_page(request, "that token is not valid (unknown or revoked)", 401)
    if access.refusal(view, "read") is not None:
        whose = "a host runner" if view.role == "host" else "an agent"
        return signin_page(request, f"token {view.name!r} is {whose}'s token: sign in with an "
                                    "operator, submitter or reader token", 403)
    page = RedirectResponse("/", status_code=303)
    security.set_session(page, request, raw)
    security.clear_signin(page, request)
    return page


@router.post("/signout")
def signout(request: Request, fields: dict[str, str] = Depends(form_fields),
            ws: Workspace = Depends(workspace)) -> Response:
    session = session_of(request, ws)
    if session is not None and not security.csrf_matches(session.raw, fields.get("csrf")):
        return error_page(request, 403, "the form's CSRF token is missing or wrong: reload the page",
                          session)
    page = RedirectResponse("/signin", status_code=303)
    security.clear_session(page, request)
    return page


def operating(request: Request, fields: dict[str, str], ws: Workspace) -> Session | Response:
    """The checks of an operator's POST: signed in, the session's CSRF token, a role
    that may operate; the session, or the error page that refuses it."""
    session = session_of(request, ws)
    if session is None:
        return error_page(request, 401, "you are not signed in (or your token was revoked): sign in")
    if not security.csrf_matches(session.raw, fields.get("csrf")):
        return error_page(request, 403, "the form's CSRF token is missing or wrong: reload the page",
                          session)
    why = access.refusal(session.token, "operate")
    if why is not None:
        return error_page(request, 403, why, session)
    return session


def act(request: Request, fields: dict[str, str], ws: Workspace,
        action: Callable[[TokenView], object], back: str = "/") -> Response:
    """An operator's change (`operating`'s checks), then back to `back` (303: a reload
    does not post again). The doorbell is rung after it, on the event loop, as after a
    write through the API: waiting claims look again at once."""
    session = operating(request, fields, ws)
    if isinstance(session, Response):
        return session
    try:
        action(session.token)
    except SchedError as e:
        return error_page(request, status_of(e), e.message, session)
    finally:
        anyio.from_thread.run_sync(doorbell(request).ring)  # (this runs in a worker thread)
    return RedirectResponse(back, status_code=303)


@router.post("/pause")
def pause(request: Request, fields: dict[str, str] = Depends(form_fields),
          ws: Workspace = Depends(workspace)) -> Response:
    """`sched pause`, as the signed-in token (an empty reason is none)."""
    reason = fields.get("reason", "").strip() or None
    return act(request, fields, ws, lambda token: operator.pause(ws, token.name, reason))


@router.post("/resume")
def resume(request: Request, fields: dict[str, str] = Depends(form_fields),
           ws: Workspace = Depends(workspace)) -> Response:
    """`sched resume`, as the signed-in token."""
    return act(request, fields, ws, lambda token: operator.resume(ws, token.name))


def ping(rec: Recorded) -> bytes:
    """A message of the dashboard's stream: the seq and type only (pages re-fetch what
    they show; payloads need not travel)."""
    return f"id: {rec.seq}\ndata: {json.dumps({'seq': rec.seq, 'type': rec.type})}\n\n".encode()


@router.get("/live")
async def live(request: Request, after: int = Query(0, ge=0, le=INT64_MAX),
               ws: Workspace = Depends(workspace)) -> Response:
    """The log's moves for the pages, as Server-Sent Events (`/api/v1/events`, with the
    session cookie instead of a bearer header, which an EventSource cannot send)."""
    session = await run_in_threadpool(session_of, request, ws)
    if session is None:
        return Response(status_code=401)
    limits: ServerLimits = request.app.state.limits
    start = start_after(request.headers.get("last-event-id"), after)
    return StreamingResponse(stream(ws, start, limits, ended(request),
                                    lambda: access.still_live(ws, session.token), frame=ping),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
