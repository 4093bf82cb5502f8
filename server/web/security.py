"""The dashboard's guards: the session cookie, CSRF tokens and the security headers.

- The session cookie holds the bearer token the user signed in with, HttpOnly (no
  script can read it), SameSite=Strict (no other site's page can make the browser send
  it), Secure when the page was served over HTTPS, and no Max-Age (it ends with the
  browser session). The token is checked against the live tokens on every request, as
  a bearer token is, so revoking it signs the browser out at once.
- Every change is a POST carrying a CSRF token: an HMAC of a fixed label keyed with the
  session's token, so only a page served to that session can know it, it needs no
  server-side state and it survives a restart of the server. The sign-in form, before
  any session exists, carries a random value that must match a cookie set with the form
  (double submit).
- Every response carries a Content-Security-Policy of `default-src 'self'` (no inline
  script or style, nothing from another origin), no framing, no sniffing, no referrer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from fastapi import Request
from fastapi.responses import Response

SESSION_COOKIE = "sched_session"
SIGNIN_COOKIE = "sched_signin"  # the sign-in form's double-submit value
SIGNIN_SECONDS = 3600  # how long a sign-in form stays usable
CSRF_LABEL = b"sched dashboard csrf v1"

CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
HEADERS = {
    b"content-security-policy": CSP.encode(),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
}


def csrf_token(session_token: str) -> str:
    """The CSRF token of the session signed in with `session_token`."""
    return hmac.new(session_token.encode(), CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(session_token).encode(),
                                                         presented.encode())


NOTICE_LABEL = b"sched dashboard notice v1\n"


def notice_mark(session_token: str | None, notice: str) -> str:
    """The mark of a notice a page shows after a redirect (`/dead?requeued=1,2`): an
    HMAC of it keyed with the session's token, so that only the change this session
    made is announced, never a link someone else crafted."""
    key = (session_token or "").encode()
    return hmac.new(key, NOTICE_LABEL + notice.encode(), hashlib.sha256).hexdigest()[:32]


def notice_matches(session_token: str | None, notice: str, presented: str | None) -> bool:
    return (session_token is not None and presented is not None
            and hmac.compare_digest(notice_mark(session_token, notice).encode(), presented.encode()))


def new_signin_value() -> str:
    return secrets.token_urlsafe(24)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=_secure(request), path="/")


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict",
                           secure=_secure(request), path="/")


def set_signin(response: Response, request: Request, value: str) -> None:
    response.set_cookie(SIGNIN_COOKIE, value, max_age=SIGNIN_SECONDS, httponly=True,
                        samesite="strict", secure=_secure(request), path="/signin")


def clear_signin(response: Response, request: Request) -> None:
    response.delete_cookie(SIGNIN_COOKIE, httponly=True, samesite="strict",
                           secure=_secure(request), path="/signin")


class SecurityHeaders:
    """ASGI middleware: the headers of `HEADERS` on every HTTP response that does not set
    them itself (pages, fragments, static files, the API's JSON alike)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(k, v) for k, v in HEADERS.items() if k not in present]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
