"""sched's errors as HTTP responses: `{"error": "<the line the CLI prints after
`sched: `>"}`, with the status the CLI's exit code stands for."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from eventlog.errors import (
    BadInput,
    ConcurrencyConflict,
    ControlFileError,
    DatabaseBusy,
    DatabaseError,
    NotFound,
    OffSchema,
    Refused,
    SchedError,
)

# first match wins: subclasses before their bases (TokenRejected is a Refused: 409)
STATUS_OF: tuple[tuple[type[SchedError], int], ...] = (
    (DatabaseBusy, 503),
    (NotFound, 404),
    (Refused, 409),
    (ConcurrencyConflict, 409),
    (OffSchema, 422),
    (ControlFileError, 503),  # the server's own control file is broken: its operator's to mend
    (BadInput, 400),
    (DatabaseError, 503),  # the database cannot be used just now: not the client's fault
)


class ErrorBody(BaseModel):
    """Every error response: one line saying what went wrong."""

    error: str


def status_of(error: SchedError) -> int:
    for kind, status in STATUS_OF:
        if isinstance(error, kind):
            return status
    return 400 if error.exit_code == 2 else 409


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def validation_line(loc: tuple[object, ...], msg: str) -> str:
    """The one line of a query or path parameter FastAPI refused, as the CLI words the
    same value given to its flag (`?limit=x`: `--limit`) or argument (`/tasks/0`:
    `task_id`); for anything else, `WHERE: what is wrong`."""
    if len(loc) == 2 and loc[0] in ("query", "path"):
        name = str(loc[1])
        flag = f"--{name.replace('_', '-')}" if loc[0] == "query" else name
        return f"Invalid value for '{flag}': {msg}"
    where = ".".join(str(part) for part in loc)
    return f"{where}: {msg}" if where else msg


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into an `ErrorBody`."""

    @app.exception_handler(SchedError)
    async def sched_error(_request: Request, error: SchedError) -> JSONResponse:
        return error_response(status_of(error), error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        return error_response(422, validation_line(tuple(first.get("loc", ())), str(first.get("msg"))))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_request: Request, _error: ClientDisconnect) -> Response:
        # the client went away while its body was read: nobody reads an answer, and it is
        # no error of the server's (the catch-all below would log a traceback for it)
        return Response(status_code=400)

    @app.exception_handler(OverflowError)
    async def too_large_number(_request: Request, _error: OverflowError) -> JSONResponse:
        return error_response(400, "a number is too large (at most 2**63 - 1)")

    @app.exception_handler(Exception)
    async def internal(_request: Request, error: Exception) -> JSONResponse:
        # (Starlette raises the error on after this response: the server logs its traceback)
        return error_response(500, f"internal error: {type(error).__name__} (see the server's log)")


# the error responses every endpoint may give, for /openapi.json
COMMON_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "no bearer token, or not a live one"},
    403: {"model": ErrorBody, "description": "the token's role may not do this"},
    413: {"model": ErrorBody, "description": "the request body is over the size limit"},
    415: {"model": ErrorBody, "description": "the request body is said to be something other than JSON"},
    422: {"model": ErrorBody, "description": "the request does not match its schema"},
    503: {"model": ErrorBody, "description": "the database is busy or cannot be used, or the server's "
          "agent control file is not valid; retry"},
}
