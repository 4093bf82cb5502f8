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
    (ControlFileError("agent-control.json: duplicate agent 'ann'"), 400),
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
