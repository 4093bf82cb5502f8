"""A host with no database access runs the push agents pinned to it through a server
(`sched run --server URL --host H`). It asks for work (`start`: every assignment to
an agent pinned to its host is started, recorded as run by the runner's process on
that host, in a working directory under the runner's home), then renews the leases of
what runs and records what ended, all at once, one call per turn (`turn`). Its agents
are assigned by a daemon or tick that has the database, as any pinned agent's are.

A turn sent again because its answer was lost records nothing twice: an outcome whose
lease token is refused, when the attempt's own outcome is already in the log, is
answered with the status it left."""

# (no `from __future__ import annotations`: real annotations spare pydantic parsing
# strings when a quick command builds its request class)

import json
from pathlib import PurePosixPath
from typing import Any, NamedTuple, Self

from pydantic import Field, field_validator, model_validator

from eventlog.errors import BadInput, NotFound, TokenRejected
from eventlog.events import RunnerFailure, TaskFailed, TaskStarted, TaskSucceeded
from eventlog.timeutil import to_text
from eventlog.values import INT64_MAX, check_json, fit_text
from projections.recorder import Recorder
from projections.sql import SqlProjection
from projections.views import AgentView, TaskView
from scheduler import worker
from scheduler.config.settings import MAX_HOST_CHARS, Settings
from scheduler.runner import exec as runner
from scheduler.runner.usage import Usage
from scheduler.tokens import derived_token, token_matches
from scheduler.usecases.base import Request
from scheduler.workspace import Workspace

MAX_BATCH = 1000  # leases or endings in one turn


class StartRequest(Request):
    """Start every assignment to the push agents pinned to `host`, to be run by the
    process `pid` there, each in `HOME/work/TASK/ATTEMPT`. With `request_id` (a secret
    the runner chose for this request, kept until it has an answer), each attempt's
    lease token is derived from it, and the same request sent again is also answered
    with the attempts it started that still run there."""

    where = "start"
    host: str = Field(min_length=1, max_length=MAX_HOST_CHARS)
    pid: int = Field(ge=1, le=2**31 - 1)
    home: str = Field(min_length=2, max_length=4096)
    request_id: str | None = Field(default=None, min_length=32, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    # the runner's machine, boot and pid namespace (`scheduler.machine`; None: not sent), no
    # control character (a NUL cannot be stored)
    machine: str | None = Field(default=None, max_length=256,
                                pattern=r"^[^/\x00-\x1f\x7f]*/[^/\x00-\x1f\x7f]+/[0-9]+$")
    # the tasks running there whose cancel the runner has heard of: a runner that sends
    # it is answered at once when another is asked for, so that a cancel reaches it
    # without waiting for its next turn (None: an older runner, never answered early)
    cancelling: list[int] | None = Field(default=None, max_length=MAX_BATCH)
    by: str | None = None  # the HTTP API token asking, recorded in the events

    @field_validator("home")
    @classmethod
    def _absolute(cls, home: str) -> str:
        if not home.startswith("/") or "\0" in home:
            raise ValueError(f"must be an absolute path, not {home!r}")
        return home


class Started(NamedTuple):
    """The attempts started, each with what its runner needs to run it; the tasks
    running on the host whose cancel is pending; and the server's limits the runner
    keeps to (its lease, the sizes an outcome may have)."""

    lease_seconds: float
    max_message_bytes: int
    max_payload_bytes: int
    attempts: list[dict[str, Any]]
    cancel: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"lease_seconds": self.lease_seconds, "max_message_bytes": self.max_message_bytes,
                "max_payload_bytes": self.max_payload_bytes, "attempts": self.attempts,
                "cancel": self.cancel}

    def news_for(self, request: StartRequest) -> bool:
        """Whether the runner asking has something to act on: attempts to run, or a
        cancel it has not heard of."""
        return bool(self.attempts) or unheard(self.cancel, request)


def unheard(cancel: list[int], request: StartRequest) -> bool:
    """Whether some of these pending cancels are new to the runner asking (only a
    runner that says which it heard of is told early: an older one would ask again at
    once, and again, while a cancel is pending)."""
    return request.cancelling is not None and not set(cancel) <= set(request.cancelling)


def pinned_push_agents(ws: Workspace, host: str) -> list[str]:
    """The agents with a command that the control file pins to `host`."""
    return sorted(a.name for a in ws.registry().control.agents if a.command is not None and a.host == host)


def has_starts(ws: Workspace, request: StartRequest) -> bool:
    """Whether `start` would find something for the runner asking (a read: a waiting
    runner looks with it): an assignment to start, or a cancel it has not heard of."""
    names = pinned_push_agents(ws, request.host)
    with ws.read() as (_log, views):
        if any(views.tasks(status="assigned", agent=name, limit=1) for name in names):
            return True
        return request.cancelling is not None and unheard(_cancelling_on(views, request.host, names), request)


def _cancelling_on(views: SqlProjection, host: str, names: list[str]) -> list[int]:
    """The tasks running on `host` for the agents `names` whose cancel is pending."""
    return [task.task_id for name in names
            for task in views.tasks(status="running", agent=name)
            if task.cancelling and task.host == host]


def start(ws: Workspace, request: StartRequest) -> Started:
    """Record the start of every assignment to the push agents pinned to the host, in
    one write transaction. A request sent again (the same `request_id`: its answer was
    lost) is answered with the attempts it started too, those still running there:
    handed over again, nothing recorded twice."""
    names = pinned_push_agents(ws, request.host)
    settings = ws.settings
    attempts: list[dict[str, Any]] = []
    with ws.write() as recorder:
        views = recorder.views
        for name in names:
            agent = views.get_agent(name)
            if agent is None or agent.command is None:
                continue
            started: list[tuple[TaskView, TaskStarted, str]] = []
            if request.request_id is not None:
                started += _started_by(recorder, request, name)
            for task in views.tasks(status="assigned", agent=name):
                workdir = PurePosixPath(request.home, "work", str(task.task_id), str(task.attempt + 1))
                token = None if request.request_id is None else \
                    derived_token(request.request_id, task.task_id, task.attempt + 1)
                event, token = runner.started_event(ws, recorder, task, agent, request.pid, request.host,
                                                    workdir, None, request.by, token,
                                                    machine=request.machine)
                recorder.record([event])
                started.append((task, event, token))
            payloads = views.payloads([task.task_id for task, _event, _token in started])
            attempts += [_attempt_document(settings, agent, task, event, token, payloads[task.task_id])
                         for task, event, token in started]
        cancel = _cancelling_on(views, request.host, names)[:MAX_BATCH]  # (what `cancelling` may hold)
    return Started(settings.lease_seconds, settings.max_message_bytes, settings.max_payload_bytes, attempts,
                   cancel)


def _started_by(recorder: Recorder, request: StartRequest,
                agent: str) -> list[tuple[TaskView, TaskStarted, str]]:
    """The attempts of `agent` that this request (its `request_id`) started before and
    that still run on its host: each task, its `TaskStarted` and its token."""
    assert request.request_id is not None
    found = []
    for task in recorder.views.tasks(status="running", agent=agent):
        if task.host != request.host:
            continue
        token = derived_token(request.request_id, task.task_id, task.attempt)
        if not token_matches(token, task.token_hash):
            continue
        event = next(rec.event for rec in reversed(recorder.log.read_stream(f"task-{task.task_id}"))
                     if rec.type == "TaskStarted")
        assert isinstance(event, TaskStarted)
        found.append((task, event, token))
    return found


def _attempt_document(settings: Settings, agent: AgentView, task: TaskView, event: TaskStarted, token: str,
                      payload: str) -> dict[str, Any]:
    """What the runner needs to run the attempt `event` started."""
    return {
        "task_id": task.task_id, "attempt": event.attempt, "queue": task.queue, "agent": agent.name,
        "token": token, "argv": list(event.argv), "workdir": event.workdir,
        "log_path": event.log_path, "payload": payload,
        "variables": runner.task_variables(event, task.queue, token),
        "timeout_seconds": agent.timeout_seconds or settings.exec_timeout_seconds,
        "lease_expires_at": to_text(event.lease_expires_at),
        "non_retryable_exit_codes": sorted(json.loads(agent.non_retryable_exit_codes)),
        "retry_spawn_errors": settings.queue_policy(task.queue).retry_spawn_errors,
    }


class Lease(Request):
    """An attempt the runner holds: its task and lease token."""

    where = "renew"
    task_id: int = Field(ge=1, le=INT64_MAX)
    token: str = Field(min_length=1, max_length=200)


class EndingReport(Request):
    """How an attempt ended, as its runner saw it (`exec.Ending`)."""

    where = "record"
    task_id: int = Field(ge=1, le=INT64_MAX)
    token: str = Field(min_length=1, max_length=200)
    succeeded: bool = False
    result: Any = None
    error: str = ""
    reason: RunnerFailure = "exit_code"
    retry: bool = True
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    signal: int | None = Field(default=None, ge=1, le=128)
    cpu_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    peak_rss_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX)
    start_delay_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _a_failure_says_what(self) -> Self:
        if not self.succeeded and not self.error.strip():  # (as `worker fail --error`)
            raise BadInput(f"task {self.task_id}: an attempt that did not succeed needs its error "
                           "(what went wrong)")
        return self


class TurnRequest(Request):
    """Renew these leases and record these endings, for attempts running on `host`."""

    where = "turn"
    host: str = Field(min_length=1, max_length=MAX_HOST_CHARS)
    renew: list[Lease] = Field(default_factory=list, max_length=MAX_BATCH)
    record: list[EndingReport] = Field(default_factory=list, max_length=MAX_BATCH)
    by: str | None = None  # the HTTP API token asking, recorded in the events

    @model_validator(mode="after")
    def _each_attempt_once(self) -> Self:
        for name, items in (("renew", self.renew), ("record", self.record)):
            seen: set[int] = set()
            for item in items:
                if item.task_id in seen:  # (twice renewed: two events for one renewal)
                    raise BadInput(f"{name}: task {item.task_id} is given more than once")
                seen.add(item.task_id)
        return self


class Turn(NamedTuple):
    """Per renewal its new expiry and whether to stop (cancelled), or why it was
    refused; per ending the task's new status, or "lost" with why."""

    beats: list[dict[str, Any]]
    statuses: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"beats": self.beats, "statuses": self.statuses}


def turn(ws: Workspace, request: TurnRequest) -> Turn:
    """One write transaction for the whole turn. An attempt that does not run on the
    host, or whose lease token is not the current one, is refused (nothing recorded
    for it); the others are done."""
    beats: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    with ws.write() as recorder:
        for lease in request.renew:
            try:
                _on_host(recorder, lease.task_id, request.host)
                beat = worker.renew_in(ws, recorder, lease.task_id, lease.token, by=request.by)
            except (TokenRejected, NotFound) as e:
                beats.append({"task_id": lease.task_id, "refused": e.message})
            else:
                beats.append({"task_id": lease.task_id, "lease_expires_at": to_text(beat.lease_expires_at),
                              "cancel": beat.cancel})
        for report in request.record:
            statuses.append({"task_id": report.task_id,
                             **_record(ws, recorder, request.host, report, request.by)})
    return Turn(beats, statuses)


def _on_host(recorder: Recorder, task_id: int, host: str) -> None:
    task = recorder.views.get_task(task_id)
    if task is not None and task.status == "running" and task.host != host:
        where = "was claimed by a pull worker" if task.host is None else f"runs on host {task.host!r}"
        raise TokenRejected(f"task {task_id}: its attempt {where}, not on {host!r}")


def _record(ws: Workspace, recorder: Recorder, host: str, report: EndingReport,
            by: str | None) -> dict[str, Any]:
    measured = (report.cpu_seconds, report.peak_rss_bytes, report.start_delay_seconds)
    usage = Usage(report.cpu_seconds or 0.0, report.peak_rss_bytes, report.start_delay_seconds) \
        if any(m is not None for m in measured) else None
    try:
        _on_host(recorder, report.task_id, host)
        if report.succeeded:
            check_json(report.result, "result", ws.settings.max_payload_bytes)
        task = recorder.views.get_task(report.task_id)
        log_path = task.log_path if task is not None else None
        if report.succeeded:
            worker.complete_in(recorder, report.task_id, report.token, report.result, log_path=log_path,
                               usage=usage, by=by)
            return {"status": "succeeded"}
        return {"status": worker.fail_in(ws, recorder, report.task_id, report.token,
                                         fit_text(report.error, ws.settings.max_message_bytes),
                                         retry=report.retry, reason=report.reason,
                                         exit_code=report.exit_code, signal=report.signal,
                                         log_path=log_path, usage=usage, by=by)}
    except TokenRejected as e:
        return _already(recorder, report) or {"status": "lost", "why": e.message}
    except (BadInput, NotFound) as e:  # not recorded: the lease runs out and the task is tried again
        return {"status": "lost", "why": e.message}


def _already(recorder: Recorder, report: EndingReport) -> dict[str, Any] | None:
    """The status the attempt's outcome left, when this outcome is already recorded (a
    turn sent again after its answer was lost); an attempt that ended the other way
    (a success reported, a failure recorded, or the reverse) answers `lost`, saying so;
    None when the attempt has not ended, or its lease expired (the refusal says so)."""
    attempt, ended = worker.token_attempt(recorder.log.read_stream(f"task-{report.task_id}"), report.token)
    task = recorder.views.get_task(report.task_id)
    if ended is None or task is None or not isinstance(ended.event, TaskSucceeded | TaskFailed):
        return None
    if isinstance(ended.event, TaskSucceeded) != report.succeeded:
        how = "succeeded" if isinstance(ended.event, TaskSucceeded) else "failed"
        return {"status": "lost", "why": f"task {report.task_id}: its attempt {attempt} already ended "
                                         f"({how}); this ending is not recorded"}
    return {"status": task.status, "already": True}
