"""The worker protocol as use cases: claim, heartbeat, progress, complete, fail. Only
the holder of the current attempt's lease token may act on it (`TokenRejected`,
exit 1, otherwise); the token travels in the request, never in a URL."""

# (no `from __future__ import annotations`: real annotations spare pydantic parsing
# strings when a quick command builds its request class)

from typing import Any, NamedTuple, Self

from pydantic import Field, model_validator

from eventlog.errors import BadInput
from eventlog.timeutil import to_text
from eventlog.values import text_problem
from scheduler import worker
from scheduler.usecases.base import Request
from scheduler.workspace import Workspace


class Claimed(NamedTuple):
    """The started attempt (`task_id`, `token`, `lease_expires_at`, `attempt`, `queue`,
    `title`, `priority`, `payload`), or None when there is no work for the agent."""

    claim: worker.Claim | None

    def to_json(self) -> dict[str, Any]:
        return {"task": None if self.claim is None else self.claim.document}


def claim(ws: Workspace, agent: str, by: str | None = None) -> Claimed:
    """Start the best task for the agent (assigning one if it has a free slot); NotFound
    for an agent the control file does not name (exit 2, HTTP 404). A front end that
    cannot hand the token over gives the attempt back (`release`). `by`: the HTTP API
    token claiming (recorded in the events)."""
    return Claimed(worker.claim(ws, agent, by))


def release(ws: Workspace, claimed: Claimed, why: str) -> None:
    """Give back an attempt whose claim never reached its worker."""
    if claimed.claim is not None:
        worker.release_undelivered(ws, claimed.claim, why)


# each request acts on the current attempt of a task: its id, and the lease token the
# claim handed out (a class each, not a shared base: a quick command builds fewer);
# `by`, the HTTP API token acting, is recorded in the events (the server fills it in)


class ProgressRequest(Request):
    """How far the attempt got: a percentage (0 to 100) and/or a message; sent with a
    heartbeat, or on its own."""

    where = "progress"
    task_id: int
    token: str = Field(min_length=1)  # (an empty one is no token: bad input, not a stale one)
    percent: float | None = None
    message: str | None = None
    by: str | None = None

    def report(self) -> worker.Progress | None:
        """The progress sent, if any was."""
        if self.percent is None and self.message is None:
            return None
        return worker.Progress(self.percent, self.message)


class HeartbeatRequest(ProgressRequest):
    """A heartbeat (progress may come with it): named so in messages about its fields."""

    where = "heartbeat"


class Beat(NamedTuple):
    """The new lease expiry; `cancel` True: stop and report `fail`; whether progress
    sent with it was recorded (None: none was sent)."""

    task_id: int
    beat: worker.Beat

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "lease_expires_at": to_text(self.beat.lease_expires_at),
                "cancel": self.beat.cancel, "progress_recorded": self.beat.progress_recorded}


def heartbeat(ws: Workspace, request: ProgressRequest) -> Beat:
    """Extend the lease of the current attempt (and record progress, if `percent` or
    `message` is given)."""
    return Beat(request.task_id, worker.heartbeat(ws, request.task_id, request.token, request.report(),
                                                  request.by))


class ProgressNoted(NamedTuple):
    """`recorded` False: the attempt's last report is more recent than
    progress_min_interval_seconds, so this one was not recorded."""

    task_id: int
    recorded: bool

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "recorded": self.recorded}


def progress(ws: Workspace, request: ProgressRequest) -> ProgressNoted:
    """Report how far the current attempt got."""
    report = request.report() or worker.Progress()  # (an empty report is refused, in one line)
    return ProgressNoted(request.task_id, worker.progress(ws, request.task_id, request.token, report,
                                                          request.by))


class CompleteRequest(Request):
    where = "complete"
    task_id: int
    token: str = Field(min_length=1)  # (an empty one is no token: bad input, not a stale one)
    result: Any = None  # any JSON value, recorded with the success
    by: str | None = None


class Ended(NamedTuple):
    """The task's status after its attempt ended: succeeded, or after a failure queued
    (retried), dead or cancelled."""

    task_id: int
    status: str

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "status": self.status}


def complete(ws: Workspace, request: CompleteRequest) -> Ended:
    """Record that the current attempt succeeded."""
    worker.complete(ws, request.task_id, request.token, request.result, by=request.by)
    return Ended(request.task_id, "succeeded")


class FailRequest(Request):
    where = "fail"
    task_id: int
    token: str = Field(min_length=1)  # (an empty one is no token: bad input, not a stale one)
    error: str  # what went wrong
    retry: bool = True  # False: dead-letter now
    by: str | None = None

    @model_validator(mode="after")
    def _says_what(self) -> Self:
        if not self.error.strip():
            raise BadInput("--error must say what went wrong")
        return self


def fail(ws: Workspace, request: FailRequest) -> Ended:
    """Record that the current attempt failed; the task is retried or dead-lettered."""
    return Ended(request.task_id, worker.fail(ws, request.task_id, request.token, request.error,
                                              retry=request.retry, by=request.by))


class ReleaseRequest(Request):
    """An attempt whose claim never reached its worker (its front end could not print
    or send the answer), given back by whoever holds the claim's answer."""

    where = "release"
    task_id: int
    token: str = Field(min_length=1)  # (an empty one is no token: bad input, not a stale one)
    why: str  # why the claim did not reach its worker
    by: str | None = None

    @model_validator(mode="after")
    def _says_why(self) -> Self:
        if not self.why.strip():
            raise BadInput("release: why must say why the claim did not reach its worker")
        if (problem := text_problem(self.why)) is not None:  # (else refused below as `error`'s)
            raise BadInput(f"release: why: {problem}")
        return self


def give_back(ws: Workspace, request: ReleaseRequest) -> Ended:
    """Give back the current attempt as `undelivered` (`worker.give_back`): queued again
    at once, the attempt not counted, the agent not passed over."""
    return Ended(request.task_id, worker.give_back(ws, request.task_id, request.token, request.why,
                                                   request.by))
