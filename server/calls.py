"""How a route calls a use case: its body parsed into the use case's request (the same
checks and one-line errors as the CLI), the call made in a worker thread (never on the
event loop), the result's `to_json()` sent as the body, and the doorbell rung after a
write so that waiting claims look again at once."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from eventlog.errors import BadInput, SchedError
from eventlog.values import INT64_MAX, DuplicateKey, digits_value, task_id_problem, unique_keys
from scheduler.usecases.base import Request as UseCaseRequest
from scheduler.workspace import Workspace
from server.errors import one_line

R = TypeVar("R", bound=UseCaseRequest)
T = TypeVar("T")


def _task_id(value: object) -> object:
    """A task id in a path or query, refused with the CLI's line (`task_id_problem`)."""
    if isinstance(value, str):
        if (problem := task_id_problem(value)) is not None:
            raise PydanticCustomError("task_id", "{problem}", {"problem": problem})
        return digits_value(value)
    return value


TASK_ID_TEXT = BeforeValidator(_task_id)
TaskId = Annotated[int, TASK_ID_TEXT, Path(ge=1, le=INT64_MAX, description="The task's id.")]


class Document(JSONResponse):
    """A use case's document, serialized as the CLI's `--json` is (`default=str`), compact."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")


def answer(result: Any, status: int = 200) -> Document:
    """The HTTP answer of a use case's result: its `to_json()`."""
    return Document(result.to_json(), status_code=status)


def parse(model: type[R], data: dict[str, Any]) -> R:
    """The use case's request from `data`: a check of the use case that refused it is
    its own error (400, the CLI's line); a body that does not match the schema (a
    wrong type, an unknown field) is 422 with the same one line the use case gives."""
    try:
        return model(**data)
    except SchedError as e:
        cause = e.__cause__
        if isinstance(cause, ValidationError):
            raised = (cause.errors()[0].get("ctx") or {}).get("error")
            if not isinstance(raised, SchedError):
                raise HTTPException(422, e.message) from e
        raise


async def body_of(request: Request, where: str, reserved: tuple[str, ...] = ("by",)) -> dict[str, Any]:
    """The JSON object of the request's body (`data_of`)."""
    return data_of(await request.body(), where, reserved, request.query_params,
                   request.headers.get("content-type"))


def data_of(raw: bytes, where: str, reserved: tuple[str, ...] = ("by",),
            query: Iterable[str] = (), content_type: str | None = None) -> dict[str, Any]:
    """The JSON object of a request's body `raw` (an absent or empty body is `{}`; one of
    only blanks is no JSON, and refused). The fields in `reserved` come from the path or
    the token, never from the body. `query`: the names of the request's query
    parameters, which a request with a body never reads (refused: `?reason=...` on a
    pause must not be dropped unseen). `content_type`: the request's header; a body
    said to be anything but JSON is refused (415: `curl -d` says form data unless told)
    rather than read as JSON regardless; a body with no such header (or an empty one) is
    read as JSON."""
    name = next(iter(query), None)
    if name is not None:
        raise HTTPException(422, f"{where}: {name[:40]}: a query parameter is not read here "
                                 "(the fields go in the JSON body)")
    if not raw:
        return {}
    if content_type and content_type.strip() and not is_json(content_type):
        raise HTTPException(415, f"{where}: the body must be JSON (Content-Type: application/json), "
                                 f"not {one_line(content_type)[:80]}")
    try:
        data = json.loads(raw, object_pairs_hook=unique_keys)
    except DuplicateKey as e:
        raise HTTPException(422, f"{where}: {e}") from e
    except (ValueError, RecursionError) as e:
        raise HTTPException(422, f"the request body is not JSON: {str(e)[:200]}") from e
    if not isinstance(data, dict):
        raise HTTPException(422, f"{where}: the body must be a JSON object, not {type(data).__name__}")
    for name in reserved:
        if name in data:
            raise HTTPException(422, f"{where}: {name}: Extra inputs are not permitted")
    return data


def is_json(content_type: str) -> bool:
    """Whether a Content-Type names JSON: `application/json` or a `+json` type, any
    parameters (`; charset=utf-8`) aside."""
    kind, _, subtype = content_type.split(";", 1)[0].strip().lower().partition("/")
    base, plus, suffix = subtype.rpartition("+")  # a structured syntax suffix (RFC 6839)
    return kind == "application" and (subtype == "json" or (bool(base and plus) and suffix == "json"))


async def call(function: Callable[..., T], *args: Any) -> T:
    """Run a use case in a worker thread: the event loop stays free for long polls."""
    return await run_in_threadpool(function, *args)


@dataclass(frozen=True)
class Peers:
    """The doorbells of a server's other worker processes (`sched serve --workers N`):
    an eventfd each, made before the workers were forked. A write through one worker
    wakes the claims waiting in every worker at once."""

    own: int  # this worker's eventfd: the others write to it
    others: tuple[int, ...]

    @staticmethod
    def for_workers(n: int) -> list[Peers]:
        fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(n)]
        return [Peers(fd, tuple(f for f in fds if f != fd)) for fd in fds]


class Doorbell:
    """Rung after every write made through this server (all its worker processes), and
    woken when the log's head moved (`watch_head`: one look per worker, not one per
    waiting claim): claims waiting for work look again at once. `head` is the head seq
    the last look saw. Used on the event loop only."""

    def __init__(self, peers: Peers | None = None) -> None:
        self._event = asyncio.Event()
        self.peers = peers
        self.waiting = 0  # claims waiting now (tests and logs look at it)
        self.head = -1  # the log's head seq at the last look (-1: not looked yet)
        self.closing = False  # the server is stopping: long polls answer at once

    def ring(self) -> None:
        """A write through this server: wake the claims of this worker and of the others."""
        self.wake()
        for fd in self.peers.others if self.peers else ():
            os.eventfd_write(fd, 1)

    def wake(self) -> None:
        """Wake the claims waiting in this worker only."""
        self._event.set()
        self._event = asyncio.Event()

    def close(self) -> None:
        """The server stops: every long poll answers now with what it has (else it is
        cut when the grace of the shutdown runs out: a 500 and a traceback)."""
        self.closing = True
        self.wake()

    def listen(self, loop: asyncio.AbstractEventLoop, stop: bool = False) -> None:
        """Wake on the other workers' rings from now on (at start-up), or `stop` (at shutdown)."""
        if self.peers is None:
            return
        if stop:
            loop.remove_reader(self.peers.own)
        else:
            loop.add_reader(self.peers.own, self._rung_by_peer)

    def _rung_by_peer(self) -> None:
        assert self.peers is not None
        try:
            os.eventfd_read(self.peers.own)  # (resets it: rings in between count once)
        except BlockingIOError:  # another read took it
            return
        self.wake()

    async def wait(self, seconds: float) -> bool:
        """Wait until the next ring (True) or `seconds` pass (False)."""
        event = self._event
        self.waiting += 1
        try:
            await asyncio.wait_for(event.wait(), max(seconds, 0.0))
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
        return True


async def watch_head(ws: Workspace, bell: Doorbell, every: float) -> None:
    """While claims wait, look at the log's head every `every` seconds and ring when it
    moved: work written by other processes (the CLI, a daemon, another server) wakes
    them. One read per look for the whole worker, however many claims wait (idle long
    polls cost no reads of their own); none while nobody waits."""
    while True:
        await asyncio.sleep(every)
        if not bell.waiting:
            continue
        try:
            head = await call(head_seq, ws)
        except SchedError:  # the database is away: look again at the next interval
            continue
        if head != bell.head:
            bell.head = head
            bell.wake()  # (every worker has its own watcher)


def ring_on_commits(ws: Workspace, bell: Doorbell, loop: asyncio.AbstractEventLoop,
                    stopping: threading.Event) -> None:
    """On an engine that notifies commits (PostgreSQL's LISTEN), ring the doorbell for
    every commit of any process: one thread per worker process, started with it,
    so work submitted elsewhere wakes waiting claims at once rather than at their next
    look at the log head."""
    while not stopping.is_set():
        try:
            wakeups = ws.db.wakeups()
        except SchedError:  # the database is away: the claims' looks at the head go on
            stopping.wait(1.0)
            continue
        try:
            while not stopping.is_set():
                if wakeups.wait(1.0) is not None:
                    loop.call_soon_threadsafe(bell.wake)  # (each worker listens)
        finally:
            wakeups.close()


def doorbell(request: Request) -> Doorbell:
    return request.app.state.doorbell  # type: ignore[no-any-return]


def head_seq(ws: Workspace) -> int:
    from scheduler.reads import queries

    return queries.head(ws)[0]


async def long_poll(request: Request, wait: float, act: Callable[[], Awaitable[T]],
                    found: Callable[[T], bool], worth_a_look: Callable[[], bool],
                    first: tuple[T, int] | None = None) -> T:
    """`act` until it `found` something or `wait` seconds pass, waiting on the event
    loop (no thread held, no read of its own) between tries: the doorbell wakes it at
    once after a write through this server, and when `watch_head` sees that the log's
    head moved (writes from elsewhere); `worth_a_look` (one read) then says whether to
    `act` again. A client that went away ends the wait. The last answer of `act` is
    returned. `first`: the answer of a first try the caller made, and the doorbell's
    `head` before it."""
    bell = doorbell(request)
    loop_time = asyncio.get_running_loop().time
    deadline = loop_time() + wait
    while True:
        if first is not None:
            got, seen = first
            first = None
        else:
            seen = bell.head  # before `act`: a move after it is a reason to look again
            got = await act()
        if found(got):
            return got
        while (left := deadline - loop_time()) > 0:
            if bell.closing:
                return got
            if bell.head == seen:  # (else it moved while `act` ran: look at once)
                rung = await bell.wait(left)
                if bell.closing or await request.is_disconnected():
                    return got
                if not rung:
                    continue
            seen = bell.head
            if await call(worth_a_look):
                break
        else:
            return got


async def write(request: Request, function: Callable[..., T], *args: Any) -> T:
    """Run a use case that appends, then ring the doorbell (rung on failure too: a
    refusal may still have changed nothing, and an extra look costs one read)."""
    try:
        return await call(function, *args)
    finally:
        doorbell(request).ring()


def known_query(*names: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing query parameters other than `names` (422, the line the CLI
    prints for an unknown flag): a misspelt filter is an error, never ignored; so is
    one given twice (`?queue=dev&queue=qa`: the framework would read the last). A route
    names it as a parameter after its token's, so that a caller without a valid token
    hears 401 first, as from every other route (a route's `dependencies=` would run
    before its parameters'). Run on the event loop: it only looks at the URL."""
    allowed = frozenset(names)

    async def check(request: Request) -> None:
        given = request.query_params
        for name in given:
            if name not in allowed:
                raise HTTPException(422, f"No such option: --{name.replace('_', '-')[:40]}")
        if len(given.multi_items()) != len(given):
            twice = next(name for name in given if len(given.getlist(name)) > 1)
            raise HTTPException(422, f"--{twice.replace('_', '-')[:40]}: given more than once")

    return check


# what a query value must look like, for /openapi.json only (the use case checks it and
# says what is wrong in the CLI's words), told as a named format, not as a pattern: the
# parser decides (`queries.parse_position`: a seq number or an ISO time with offset;
# `durations.parse_duration`: 90, 90s, 1.5h, 10m, 7d), and a pattern stricter or looser
# than it would be a contract the server does not keep
SEQ_OR_TIME: dict[str, str] = {"format": "seq-or-date-time"}
DURATION: dict[str, str] = {"format": "sched-duration"}


def page_limit(request: Request, limit: int | None) -> int:
    """The page size asked for, within the server's cap (400 past it)."""
    limits = request.app.state.limits
    if limit is None:
        return int(limits.default_page)
    if limit > limits.max_page:
        raise BadInput(f"limit must be at most {limits.max_page}, not {limit}")
    return limit


def ids_of(request: Request, data: dict[str, Any], where: str) -> list[int]:
    """The `ids` of a bulk request: a list of 1 to `max_page` task ids."""
    ids = data.pop("ids", None)
    if isinstance(ids, list):  # (2.0 is an integer to JSON Schema, and to /openapi.json)
        ids = [int(i) if type(i) is float and i.is_integer() and abs(i) < 2**63 else i for i in ids]
    if not isinstance(ids, list) or not all(type(i) is int and 1 <= i <= INT64_MAX for i in ids):
        raise HTTPException(422, f"{where}: ids: give a list of task ids (1 to {INT64_MAX})")
    cap = request.app.state.limits.max_page
    if not ids:
        raise BadInput("give task ids")
    if len(ids) > cap:
        raise BadInput(f"at most {cap} ids in one request, not {len(ids)}")
    return ids


def schema_of(model: type[UseCaseRequest], *, drop: tuple[str, ...] = ("by",),
              extra: dict[str, Any] | None = None, required: bool = False,
              needs: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request body of an endpoint for /openapi.json: the use case's request less
    the fields the path or the token give."""
    schema = _inlined(model.model_json_schema())
    properties = {k: v for k, v in schema.get("properties", {}).items() if k not in drop}
    properties.update(extra or {})
    body: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    needed = [k for k in schema.get("required", []) if k not in drop] + list(needs)
    if needed:
        body["required"] = needed
    return {"requestBody": {"required": required or bool(needed),
                            "content": {"application/json": {"schema": body}}}}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the `$defs` of nested models written in place of their `$ref`s (a
    request body in /openapi.json cannot refer to definitions of its own)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]
