"""`GET /api/v1/events`: the log as Server-Sent Events, id = seq, data = the event as
`sched replay --json` prints it; a client resumes with Last-Event-ID; new events arrive
while the stream stays open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from scheduler import access, operator
from scheduler.reads import queries
from server.limits import ServerLimits
from server.routes.events import frame, stream
from server.web.pages import ping
from tests.server.conftest import Api


def messages(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """The SSE messages of a stream of lines (comments and `retry` left out)."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def read(api: Api, count: int, headers: dict[str, str] | None = None,
         params: dict | None = None) -> list[dict]:
    """The first `count` messages of a new stream, which is then closed."""
    with api.client.stream("GET", "/api/v1/events", params=params,
                           headers={**api.auth("dash"), **(headers or {})}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        found = []
        for message in messages(answer.iter_lines()):
            found.append(message)
            if len(found) == count:
                return found
    raise AssertionError("the stream ended")


def replayed(api: Api) -> list[dict]:
    with api.ws.read() as (log, _views):
        return [queries.event_dict(r) for r in log.read()]


def test_the_stream_gives_the_log_with_seq_as_id_and_resumes_after_last_event_id(api: Api):
    operator.pause(api.ws, "kim", "deploy")
    operator.resume(api.ws, "kim")
    log = replayed(api)  # four TokenCreated, then the pause and the resume
    first = read(api, 3)
    assert [m["id"] for m in first] == ["1", "2", "3"]
    assert [json.loads(m["data"]) for m in first] == log[:3]
    rest = read(api, 3, headers={"Last-Event-ID": first[-1]["id"]})
    assert [json.loads(m["data"]) for m in rest] == log[3:6]
    assert [m["id"] for m in read(api, 1, params={"after": 5})] == ["6"]
    assert [m["id"] for m in read(api, 1, headers={"Last-Event-ID": "4"}, params={"after": 1})] == ["5"]


def test_an_event_appended_after_the_stream_opened_is_sent_over_http(api: Api):
    head = len(replayed(api))
    with api.client.stream("GET", "/api/v1/events", params={"after": head},
                           headers=api.auth("dash")) as answer:
        operator.pause(api.ws, "kim", None)
        message = next(messages(answer.iter_lines()))
    assert message["id"] == str(head + 1)
    assert json.loads(message["data"])["type"] == "SchedulerPaused"


@pytest.mark.parametrize("framed", [frame, ping], ids=["api", "dashboard"])
def test_each_event_appended_while_the_stream_waits_is_sent_at_its_next_poll(api: Api, framed):
    """The stream keeps reading the log: an event appended after a read found nothing
    is sent after the next wait, and the one after that after a later one (the
    dashboard's stream, `/live`, is the same loop with smaller messages)."""
    head = len(replayed(api))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the test drives the polls
        slept.append(seconds)
        if len(slept) == 1:
            operator.pause(api.ws, "kim", None)
        elif len(slept) == 3:
            operator.resume(api.ws, "kim")

    async def gone() -> bool:
        return len(slept) >= 5

    async def collect() -> list[tuple[int, bytes]]:  # each chunk, with the waits before it
        limits = ServerLimits(poll_seconds=0.5, keepalive_seconds=60.0)
        return [(len(slept), chunk) async for chunk in stream(api.ws, head, limits, gone, lambda: True,
                                                              sleep, framed)]

    sent = asyncio.run(collect())
    framed_events = [(waits, next(messages([*chunk.decode().splitlines(), ""])))
                     for waits, chunk in sent if chunk.startswith(b"id:")]
    assert [(waits, m["id"]) for waits, m in framed_events] == [(1, str(head + 1)), (3, str(head + 2))]
    assert [json.loads(m["data"])["type"] for _waits, m in framed_events] == ["SchedulerPaused",
                                                                              "SchedulerResumed"]


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "9" * 19, "9" * 30, b"\xb2"])
def test_a_last_event_id_that_is_no_seq_is_400(api: Api, value: str | bytes):
    answer = api.client.get("/api/v1/events", headers={**api.auth("dash"), "Last-Event-ID": value})
    assert answer.status_code == 400 and "is not an event seq" in answer.json()["error"]


def test_the_stream_needs_a_reading_token(api: Api):
    assert api.client.get("/api/v1/events").status_code == 401
    assert api.client.get("/api/v1/events", headers=api.auth("box")).status_code == 403


def test_an_idle_stream_sends_keepalives_and_ends_when_the_client_goes(api: Api):
    head = len(replayed(api))
    slept: list[float] = []
    polls = iter([False] * 5 + [True])

    async def disconnected() -> bool:
        return next(polls)

    async def sleep(seconds: float) -> None:  # no real waiting: the test drives the polls
        slept.append(seconds)

    async def collect() -> list[bytes]:
        limits = ServerLimits(poll_seconds=0.5, keepalive_seconds=1.0)
        return [chunk async for chunk in stream(api.ws, head, limits, disconnected, lambda: True, sleep)]

    chunks = asyncio.run(collect())
    assert chunks == [b"retry: 2000\n\n", b": keepalive\n\n", b": keepalive\n\n"]
    assert slept == [0.5] * 5


def test_an_open_stream_ends_once_its_token_is_revoked(api: Api):
    """A revoke counts at once for new requests, and within `recheck_seconds` for a
    stream already open (it went on sending every event, payloads and all)."""
    head = len(replayed(api))
    token = access.authenticate(api.ws, api.tokens["dash"])
    assert token is not None
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the test drives the polls: a revoke at the second
        slept.append(seconds)
        if len(slept) == 2:
            access.revoke_token(api.ws, "dash", "kim")
            operator.pause(api.ws, "kim", None)  # appended after the revoke: never sent

    async def gone_after_ten_polls() -> bool:  # (a stream that ignored the revoke ends here)
        return len(slept) >= 10

    async def collect() -> list[bytes]:
        limits = ServerLimits(poll_seconds=0.5, keepalive_seconds=60.0, recheck_seconds=1.0)
        return [chunk async for chunk in stream(api.ws, head, limits, gone_after_ten_polls,
                                                lambda: access.still_live(api.ws, token), sleep,
                                                clock=lambda: sum(slept))]

    chunks = asyncio.run(collect())
    assert chunks == [b"retry: 2000\n\n"] and slept == [0.5, 0.5]


def test_a_stream_sending_a_long_backlog_ends_once_its_token_is_revoked(api: Api):
    """The recheck counted only the time spent waiting for new events: a revoked token
    went on streaming a long log to its end (a review)."""
    from scheduler.submit import TaskSpec, submit

    submit(api.ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(30)])
    token = access.authenticate(api.ws, api.tokens["dash"])
    assert token is not None
    now = [0.0]

    def one_second_a_message(rec) -> bytes:  # a slow client: a second per message
        now[0] += 1.0
        if rec.seq == 3:
            access.revoke_token(api.ws, "dash", "kim")
        return frame(rec)

    async def never_gone() -> bool:
        return False

    async def collect() -> list[bytes]:
        limits = ServerLimits(poll_seconds=0.5, keepalive_seconds=60.0, recheck_seconds=5.0, stream_batch=4)
        return [chunk async for chunk in stream(api.ws, 0, limits, never_gone,
                                                lambda: access.still_live(api.ws, token),
                                                frame=one_second_a_message, clock=lambda: now[0])]

    chunks = asyncio.run(collect())
    assert len(chunks) - 1 == 8  # the batches sent within 5 s of the start; none after the recheck
