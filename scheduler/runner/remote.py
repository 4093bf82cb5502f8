"""The runner protocol over HTTP: a worker on a machine with no database access talks
to `sched serve` (`sched worker ... --server URL`).

Plain `urllib`, nothing to install. Each call answers the document its use case gives
(the same as the command's `--json`); an error answer becomes the `SchedError` of its
status, with the server's one line. What the network does wrong (refused, reset, timed
out, an answer 5xx) is tried again with backoff, up to `tries` times; an answer 429
waits for its `Retry-After`. An outcome (complete, fail) sent again because the answer
to the first try was lost can find its attempt no longer current: the task's events
then tell whether that is because the first try recorded it (its document is built
from them: recorded once, reported once) or because the attempt was taken back.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from eventlog.errors import (
    BadInput,
    NotFound,
    Refused,
    SchedError,
    ServerUnreachable,
    TokenRefused,
    TokenRejected,
)

SERVER_VARIABLE = "SCHED_SERVER"
TOKEN_VARIABLE = "SCHED_TOKEN"  # the API's bearer token (not an attempt's lease token)
TOKEN_FILE_VARIABLE = "SCHED_TOKEN_FILE"
TRIES = 5
BACKOFF_SECONDS = 0.5  # the first wait before a try again; doubled each time, at most 8 s
TIMEOUT_SECONDS = 30.0  # per try; a claim's long poll adds its wait


def api_token(environ: Mapping[str, str], token_file: Path | None = None) -> str:
    """The bearer token: from `token_file` (or `$SCHED_TOKEN_FILE`), else `$SCHED_TOKEN`."""
    path = token_file or (Path(environ[TOKEN_FILE_VARIABLE]) if environ.get(TOKEN_FILE_VARIABLE) else None)
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as e:
            raise BadInput(f"cannot read the server's token from {path}: {e.strerror or e}") from e
        except UnicodeDecodeError:
            raise BadInput(f"{path} holds no token (it is not text)") from None
        if not token:
            raise BadInput(f"{path} holds no token")
        return _checked_token(token, str(path))
    token = environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise BadInput(f"--server needs a token: set ${TOKEN_VARIABLE} or ${TOKEN_FILE_VARIABLE}, or give "
                       "--server-token-file (one from `sched tokens create`)")
    return _checked_token(token, f"${TOKEN_VARIABLE}")


def _checked_token(token: str, where: str) -> str:
    if not _printable(token):
        raise BadInput(f"{where} holds no token: a token is one word of printable ASCII (from "
                       "`sched tokens create`)")
    return token


def _server_url(url: str) -> str:
    """`--server` as called: an http or https URL naming a host (and a port that is a
    port), else bad input, in one line."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- (raises on a port that is no number, or out of range)
    except ValueError as e:
        raise BadInput(f"--server {url!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not _printable(url):
        raise BadInput(f"--server must be an http:// or https:// URL, not {url!r}")
    return url.rstrip("/")


def _printable(text: str) -> bool:
    """ASCII with no space or control character: a URL as sent, a token (else every try
    failed as if the server were away, and the command ended 7 s later, exit 1)."""
    return text.isascii() and all(32 < ord(c) < 127 for c in text)


class Aborted(ServerUnreachable):
    """The call was cut short by its caller (`Abort`): it may have been met, or not."""


class Abort:
    """Cuts short the call it is given to, from another thread (a runner that stops ends
    its ask for work, in which the server would otherwise still start work for it): its
    connection is shut down, which the server sees as a client gone, and no try follows."""

    def __init__(self) -> None:
        self.asked = False
        self.cut = False  # whether a call was under way when it was asked: cut short
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []  # the connections of the call under way

    def __call__(self) -> None:
        with self._lock:
            self.asked = True
            self.cut = self.cut or bool(self._sockets)  # (asked again later: it stays cut)
            for sock in self._sockets:
                _shut(sock)

    def ended(self) -> None:
        """The call under way ended (its connections are closed): nothing to cut."""
        with self._lock:
            self._sockets.clear()

    def opener(self) -> urllib.request.OpenerDirector:
        """An opener whose connections this abort can shut down."""
        abort = self

        def watched(handler: type[urllib.request.AbstractHTTPHandler]) -> type:
            class Watched(handler):  # type: ignore[valid-type,misc]
                def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
                    class Connection(http_class):  # type: ignore[valid-type,misc]
                        def connect(self) -> None:
                            super().connect()
                            abort._opened(self.sock)
                    return super().do_open(Connection, req, **kwargs)
            return Watched

        return urllib.request.build_opener(watched(urllib.request.HTTPHandler),
                                           watched(urllib.request.HTTPSHandler))

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.asked:  # (asked while the call opened its connection: cut all the same)
                self.cut = True
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):  # (closed already)
        sock.shutdown(socket.SHUT_RDWR)


class Server:
    """A `sched serve` at `url` (http or https), called with the bearer `token`."""

    def __init__(self, url: str, token: str, *, tries: int = TRIES,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url, self._token, self._tries, self._sleep = _server_url(url), token, tries, sleep

    # -- the runner protocol -------------------------------------------------------------

    def claim(self, agent: str, wait_seconds: int = 0) -> dict[str, Any]:
        """`{"task": ...}` or `{"task": null}` (none, or none came within `wait_seconds`).
        A claim whose answer was lost and is sent again may leave an attempt nobody
        runs: its lease runs out and the task goes back, as for a worker that died."""
        return self._call("POST", f"/api/v1/agents/{_quote(agent)}/claim",
                          {"wait_seconds": wait_seconds} if wait_seconds else None,
                          timeout=TIMEOUT_SECONDS + wait_seconds)

    def heartbeat(self, task_id: int, token: str, percent: float | None = None,
                  message: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/tasks/{task_id}/heartbeat",
                          _without_none({"token": token, "percent": percent, "message": message}))

    def progress(self, task_id: int, token: str, percent: float | None = None,
                 message: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/api/v1/tasks/{task_id}/progress",
                          _without_none({"token": token, "percent": percent, "message": message}))

    def complete(self, task_id: int, token: str, result: Any = None) -> dict[str, Any]:
        return self._outcome(task_id, token, "complete", {"token": token, "result": result})

    def fail(self, task_id: int, token: str, error: str, retry: bool = True) -> dict[str, Any]:
        return self._outcome(task_id, token, "fail", {"token": token, "error": error, "retry": retry})

    def release(self, task_id: int, token: str, why: str) -> dict[str, Any]:
        """Give back an attempt whose claim never reached its worker (not counted)."""
        return self._outcome(task_id, token, "release", {"token": token, "why": why})

    # -- a host's runner of push agents (`sched run --server`) ---------------------------

    def host_start(self, host: str, pid: int, home: str, request_id: str,
                   wait_seconds: int = 0, machine: str | None = None,
                   cancelling: list[int] | None = None, abort: Abort | None = None) -> dict[str, Any]:
        """Start the assignments to the push agents pinned to `host`, run by process
        `pid` under `home` there (`machine`: its machine, boot and pid namespace): the
        server's limits, `attempts`, and `cancel` (the tasks running there with a cancel
        pending; a wait ends early for one not in `cancelling`). `request_id`: a secret
        of the caller's, the same until it has an answer (`new_token`): a start whose
        answer was lost is handed over again by the next one sent with it (a try again
        here, or the caller's next ask). `abort`: to cut it short (then `Aborted`)."""
        return self._call("POST", f"/api/v1/hosts/{_quote(host)}/start",
                          _without_none({"pid": pid, "home": home, "request_id": request_id,
                                         "wait_seconds": wait_seconds, "machine": machine,
                                         "cancelling": cancelling}),
                          timeout=TIMEOUT_SECONDS + wait_seconds, abort=abort)

    def host_turn(self, host: str, renew: list[dict[str, Any]],
                  record: list[dict[str, Any]]) -> dict[str, Any]:
        """Renew leases and record endings at once (sent again when the answer is lost:
        an ending already recorded is answered with its status, never recorded twice)."""
        return self._call("POST", f"/api/v1/hosts/{_quote(host)}/turn", {"renew": renew, "record": record})

    # -- calls -------------------------------------------------------------------------

    def _outcome(self, task_id: int, token: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        lost: list[bool] = []  # an earlier try of this outcome got no answer
        try:
            return self._call("POST", f"/api/v1/tasks/{task_id}/{kind}", body, lost=lost)
        except TokenRejected:
            if not lost:
                raise
            recorded = self._recorded_outcome(task_id, token)
            if recorded is None:
                raise
            return recorded

    def _recorded_outcome(self, task_id: int, token: str) -> dict[str, Any] | None:
        """The document of the outcome of the attempt `token` started, if one was
        recorded (None: the attempt was taken back, or its outcome is not there)."""
        shown = self._call("GET", f"/api/v1/tasks/{task_id}")
        digest = hashlib.sha256(token.encode()).hexdigest()
        events = shown.get("events") or []
        attempt = next((e["data"].get("attempt") for e in events if e.get("type") == "TaskStarted"
                        and e.get("data", {}).get("token_hash") == digest), None)
        if attempt is None:
            return None
        ended = any(e.get("type") in ("TaskSucceeded", "TaskFailed") and e["data"].get("attempt") == attempt
                    for e in events)
        return {"task_id": task_id, "status": shown["task"]["status"]} if ended else None

    def _call(self, method: str, path: str, body: Any = None, *, timeout: float = TIMEOUT_SECONDS,
              lost: list[bool] | None = None, abort: Abort | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        open_url = urllib.request.urlopen if abort is None else abort.opener().open
        wait = BACKOFF_SECONDS
        for attempt in range(1, self._tries + 1):
            if abort is not None and abort.asked:
                raise Aborted()
            request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            try:
                with open_url(request, timeout=timeout) as answer:  # (http or https only)
                    return json.loads(answer.read() or b"{}")  # type: ignore[no-any-return]
            except urllib.error.HTTPError as e:
                line = _error_line(e)
                if e.code == 429 and attempt < self._tries:
                    self._sleep(_retry_after(e, wait))
                    continue
                if e.code >= 500 and attempt < self._tries:
                    why = f"the server answered {e.code}: {line}"
                    if lost is not None:
                        lost.append(True)  # it failed after it arrived: it may have been recorded
                else:
                    if e.code == 404 and line == "Not Found":  # no such path, not no such task
                        line = (f"the server has no {method} {self.url}{path}: give --server the "
                                "address the server listens on, without /api/v1")
                    raise _error_for(e.code, line, path) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
                if abort is not None and abort.asked:
                    raise Aborted() from None
                # refused, reset, timed out, unresolvable; an answer cut short, or not JSON
                reason = getattr(e, "reason", e) if isinstance(e, OSError) else f"{type(e).__name__}: {e}"
                why = f"cannot reach the server at {self.url}: {reason}"
                if lost is not None and data is not None and not isinstance(reason, ConnectionRefusedError):
                    lost.append(True)  # it may have arrived: its answer did not
                if attempt == self._tries:
                    raise ServerUnreachable(f"{why} (tried {self._tries} times)") from None
            finally:
                if abort is not None:
                    abort.ended()  # (its connection is closed: the list of them stays short)
            self._sleep(wait)
            wait = min(wait * 2, 8.0)
        raise ServerUnreachable(f"{why} (tried {self._tries} times)")


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _error_line(error: urllib.error.HTTPError) -> str:
    """The server's one line (`{"error": ...}`), else the status's reason."""
    try:
        line = json.loads(error.read() or b"{}").get("error")
    except (ValueError, AttributeError, OSError):
        line = None
    return str(line) if line else f"{error.code} {error.reason}"


def _retry_after(error: urllib.error.HTTPError, default: float) -> float:
    try:
        return max(float(error.headers.get("Retry-After", default)), 0.0)
    except ValueError:
        return default


def _error_for(status: int, line: str, path: str) -> SchedError:
    """The error of an answer, as the CLI would have raised it locally."""
    if status == 409:
        return TokenRejected(line) if "/tasks/" in path else Refused(line)
    if status == 404:
        return NotFound(line)
    if status in (401, 403):
        return TokenRefused(f"the server refused the token: {line}")
    if status < 500:
        return BadInput(line)
    return ServerUnreachable(f"the server answered {status}: {line}")


def from_environment(url: str | None, token_file: Path | None,
                     environ: Mapping[str, str] = os.environ) -> Server | None:
    """The server to talk to (`--server`, else `$SCHED_SERVER`), or None: the database."""
    url = url or environ.get(SERVER_VARIABLE) or None
    if url is None:
        return None
    return Server(url, api_token(environ, token_file))
