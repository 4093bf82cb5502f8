"""Each of sched's errors becomes its HTTP status and `{"error": message}`: the message
the CLI prints, on one line."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from eventlog.errors import (
    BadInput,
    ConcurrencyConflict,
    ControlFileError,
    CorruptLog,
    DatabaseBusy,
    DatabaseFault,
    NotFound,
    Refused,
    SchedError,
    TokenRejected,
)
from server import errors

CASES = [
    (BadInput("queue 'x' is unknown"), 400),
    (ControlFileError("agent-control.json: duplicate agent 'ann'"), 503),
    (NotFound("no task 99"), 404),
    (Refused("task 3 is already succeeded"), 409),
    (TokenRejected("the lease token of task 3 is stale"), 409),
    (ConcurrencyConflict(), 409),
    (DatabaseBusy(), 503),
    (DatabaseFault("sched.db: disk full; retry once space is freed"), 503),
    (CorruptLog("event seq 4 (TaskAssigned) cannot be read"), 503),
]


def app_raising(error: Exception) -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise error

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("error, status", CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_each_error_has_its_status_and_the_cli_line(error: SchedError, status: int):
    answer = app_raising(error).get("/boom")
    assert answer.status_code == status
    assert answer.json() == {"error": error.message}


def test_a_message_stays_one_line():
    answer = app_raising(BadInput("two\nlines")).get("/boom")
    assert answer.json() == {"error": "two lines"}


def test_an_internal_error_tells_no_internals():
    answer = app_raising(KeyError("secret path /srv/x")).get("/boom")
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error: KeyError (see the server's log)"}


@pytest.mark.parametrize("token", [None, "sched_not-a-token"], ids=["no token", "a dead token"])
def test_a_runner_route_reads_no_large_body_for_a_caller_without_a_live_token(make_workspace, token):
    """The runner's routes read the body first (their token is checked with the use case,
    in one hop): 1,000 connections with no token each made the server hold a body of up
    to `max_body_bytes` (600 MB; a security review). Without a live token, a large body
    is answered 401 before it is read: here it is never sent, and the answer comes."""
    import socket

    from server.app import create_app
    from tests.browser.live import serving

    ws = make_workspace()
    with serving(create_app(ws.settings, ws.clock)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            conn.sendall(f"POST /api/v1/tasks/1/complete HTTP/1.1\r\nHost: {host}\r\n{auth}"
                         "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{".encode())
            answer = conn.recv(4096).decode()  # (a timeout, before: the server waited for the body)
    assert answer.startswith("HTTP/1.1 401 "), answer
