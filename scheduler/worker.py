"""The runner protocol: claim, heartbeat, progress, complete, fail.

A claim starts an attempt and hands out a lease token; only a hash of it is stored.
Every later call must present the token of the current attempt before its lease
expires, or it is refused (exit 1) and nothing is appended.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from eventlog.errors import BadInput, NotFound, TokenRejected
from eventlog.events import (
    Event,
    FailureReason,
    LeaseExpired,
    LeaseRenewed,
    TaskFailed,
    TaskProgressed,
    TaskStarted,
    TaskSucceeded,
)
from eventlog.sql_store import stream_read
from eventlog.timeutil import from_text, to_text
from eventlog.values import check_json, check_text
from projections.recorder import Recorder
from projections.sql import task_agent_read, task_read
from projections.views import TaskView
from scheduler.tokens import hash_token, new_token, token_matches
from scheduler.workspace import Workspace, describe_pause

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventlog.storage.port import Read
    from eventlog.store import Recorded
    from scheduler.runner.usage import Usage

# the tick's machinery is imported by claim and fail, which use it: a heartbeat or a
# complete starts without it (issue 13: a quick CLI)


@dataclass(frozen=True)
class Claim:
    """A started attempt: the task, the secret its runner must present, and the
    document a front end hands to the runner (built, and checked to encode, before the
    claim commits: a claim that could not be printed must not hold an attempt)."""

    task: TaskView
    token: str
    lease_expires_at: datetime
    attempt: int
    document: dict[str, Any]
    by: str | None = None  # the HTTP API token that claimed it


def claim_document(task: TaskView, token: str, expires: datetime, attempt: int) -> dict[str, Any]:
    return {"task_id": task.task_id, "token": token, "lease_expires_at": to_text(expires),
            "attempt": attempt, "queue": task.queue, "title": task.title,
            "priority": task.priority, "payload": json.loads(task.payload)}


def claim(ws: Workspace, agent_name: str, by: str | None = None) -> Claim | None:
    """Start the best task already assigned to the agent; if none and it has a free
    slot (and assignment is not paused), assign and start one in the same
    transaction. None when there is no work. `by`: the HTTP API token claiming, for
    the events. First, in its agent type, take back what
    is overdue: a fleet of pull workers with no tick running still recovers from a dead
    worker."""
    from eventlog.storage.port import WRITE_TIME
    from projections.sql import ALL_AGENTS, agent_read, any_queued_read, candidates_read, listing_read
    from scheduler.gates import closed_gates
    from scheduler.machine import this_machine
    from scheduler.planning import gather_and_plan, plan_policy, plan_reads, record_config_if_changed
    from scheduler.takeback import (
        reap_dead_wrappers,
        release_out_of_service,
        take_back_overdue,
        take_back_reads,
    )
    from scheduler.tick import TickReport
    from scheduler.tick_runs import pid_alive

    ws.require_db()
    registry = ws.registry()
    spec = registry.get(agent_name)
    if spec is None:  # a thing that does not exist: NotFound (exit 2 on the CLI, 404 over HTTP)
        raise NotFound(f"no agent {agent_name!r} in {registry.path}")
    if spec.command is not None:
        raise BadInput(f"agent {agent_name!r} has a command: sched runs its tasks itself "
                       "(`sched exec`); only agents without one claim work")
    host = ws.settings.host_name
    # what a claim reads when it has nothing to take back, asked for ahead (PostgreSQL:
    # with the lock, in one round trip), down to the best task open to any agent that
    # may start at the time the claim reads under the lock
    reads = [*take_back_reads(host, spec.type), agent_read(agent_name),
             listing_read(status="assigned", agent=agent_name, limit=1), any_queued_read(spec.type),
             ALL_AGENTS, *plan_reads(spec.type, [agent_name]), candidates_read(spec.type, WRITE_TIME, 1)]
    with ws.write(prefetch=reads) as recorder:
        record_config_if_changed(recorder, registry.control)
        cleanup = TickReport()
        take_back_overdue(ws, recorder, host, cleanup, queue=spec.type)
        reap_dead_wrappers(ws, recorder, host, pid_alive, this_machine(), cleanup, queue=spec.type)
        views, now = recorder.views, recorder.now  # after the take-backs, which may move it on
        me = views.get_agent(agent_name)
        if me is not None and not me.in_service:  # disabled, drained or evicted: no work, and
            release_out_of_service(recorder, [me])  # what was assigned to it goes back (as a tick does)
            return None
        # what the tick assigned to it, if its load says there is any (most claims: none)
        held = views.tasks(status="assigned", agent=agent_name, limit=1) \
            if me is None or me.assigned else []
        assigned: list[Event] = []  # the assignment this claim makes, if it makes one
        if held:
            task = held[0]
        elif (describe_pause(views.meta().get("paused"), ws.stop_file) is not None
              or spec.type in closed_gates(views.meta())):
            return None  # paused or gated: what is assigned may start, nothing new is assigned
        elif not views.any_queued(spec.type):
            return None  # nothing queued: the fleet is not read (an idle look costs the same at any size)
        else:
            policy = replace(plan_policy(ws.settings, registry.control.content_hash),
                             claimant=agent_name)
            assigned = list(gather_and_plan(views, views.all_agents(), spec.type, now, policy)[:1])
            if by is not None:
                assigned = [decision.model_copy(update={"by": by}) for decision in assigned]
            if not assigned:
                return None
            task = views.get_task(assigned[0].task_id)  # queued: its attempts so far
            assert task is not None
        token = new_token()
        expires = now + timedelta(seconds=ws.settings.lease_seconds)
        attempt = task.attempt + 1
        # assigned and started, recorded (and folded) together
        recorder.record([*assigned, TaskStarted(task_id=task.task_id, agent=agent_name, attempt=attempt,
                                                token_hash=hash_token(token), lease_expires_at=expires,
                                                runner="worker", by=by)])
        started = views.get_task(task.task_id)
        assert started is not None
        document = claim_document(started, token, expires, attempt)
        json.dumps(document)  # raises here, before the commit, if it cannot be printed
        return Claim(started, token, expires, attempt, document, by)


def give_back(ws: Workspace, task_id: int, token: str, why: str, by: str | None = None) -> str:
    """Give back an attempt whose claim never reached its worker (it could not be
    printed, its HTTP client went away), rather than leave it held by nobody until its
    lease runs out: recorded as `undelivered`, back in its queue at once, the attempt
    not counted and the agent not passed over (nothing ran). The task's new status."""
    return fail(ws, task_id, token, why, reason="undelivered", by=by)


def release_undelivered(ws: Workspace, claimed: Claim, why: str) -> None:
    """`give_back` of a claim this process made."""
    give_back(ws, claimed.task.task_id, claimed.token, why, claimed.by)


def _current_attempt(recorder: Recorder, task_id: int, token: str, now: datetime) -> TaskView:
    task = recorder.views.get_task(task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if task.status != "running" or not token_matches(token, task.token_hash):
        raise TokenRejected(f"task {task_id}: {_whose_token(recorder, task_id, token)} "
                            f"(task is {task.status})")
    if task.deadline is not None and task.deadline <= to_text(now):
        raise TokenRejected(f"task {task_id}: the lease expired at {task.deadline}")
    return task


def token_attempt(history: Sequence[Recorded], token: str) -> tuple[int | None, Recorded | None]:
    """The attempt `token` started, from its task's events, and the event that ended
    that attempt (success, failure or expired lease); (None, None) when no attempt of
    the task was started with it."""
    digest = hash_token(token)
    attempt: int | None = None
    for rec in history:
        event = rec.event
        if attempt is None:
            if isinstance(event, TaskStarted) and event.token_hash == digest:
                attempt = event.attempt
        elif isinstance(event, TaskSucceeded | TaskFailed | LeaseExpired) and event.attempt == attempt:
            return attempt, rec
    return attempt, None


def _whose_token(recorder: Recorder, task_id: int, token: str) -> str:
    """Why a token is not that of the task's current attempt, from the task's events:
    the attempt it started already ended (a report sent again because its answer was
    lost, a report after a take-back), or it started none. Read only on a refusal."""
    from scheduler.reads.explain import describe

    attempt, ended = token_attempt(recorder.log.read_stream(f"task-{task_id}"), token)
    if attempt is None:
        return "the token is not that of any of its attempts"
    if ended is None:  # (a current attempt's token is refused only once its lease expired)
        return f"the token's attempt {attempt} is not the current one"
    return (f"the token's attempt {attempt} already ended ({describe(ended.event)}, at "
            f"{ended.recorded_at}); nothing recorded")


@dataclass(frozen=True)
class Beat:
    """A heartbeat's answer: the new lease expiry, whether to stop (cancelled), and
    whether progress sent with it was recorded (None: none was sent)."""

    lease_expires_at: datetime
    cancel: bool
    progress_recorded: bool | None = None


@dataclass(frozen=True)
class Progress:
    """How far an attempt got: a percentage (0 to 100) and/or a message."""

    percent: float | None = None
    message: str | None = None

    def check(self, ws: Workspace) -> Progress:
        """This report if it is one the log can carry (BadInput otherwise)."""
        if self.percent is None and self.message is None:
            raise BadInput("progress needs --percent or --message")
        if self.message is not None and not self.message.strip():
            raise BadInput("--message must say what the attempt is doing, not be blank")
        if self.percent is not None and not (math.isfinite(self.percent) and 0 <= self.percent <= 100):
            raise BadInput(f"--percent must be a number from 0 to 100, not {self.percent!r}")
        check_text(self.message, "--message", ws.settings.max_message_bytes)
        return self


def _progress_event(ws: Workspace, task: TaskView, progress: Progress, now: datetime,
                    by: str | None) -> list[TaskProgressed]:
    """The progress event to record, or none when the last one of this attempt is more
    recent than `progress_min_interval_seconds` (a chatty agent cannot flood the log)."""
    gap = timedelta(seconds=ws.settings.progress_min_interval_seconds)
    if task.progress_at is not None and from_text(task.progress_at) + gap > now:
        return []
    return [TaskProgressed(task_id=task.task_id, attempt=task.attempt, percent=progress.percent,
                           message=progress.message, by=by)]


def heartbeat(ws: Workspace, task_id: int, token: str, progress: Progress | None = None,
              by: str | None = None) -> Beat:
    """Extend the lease of the current attempt (and record progress sent with it); the
    answer says if it was cancelled, in which case the runner should stop and report
    `fail` (it ends as cancelled)."""
    if progress is not None:
        progress.check(ws)
    with ws.write(prefetch=[task_read(task_id)]) as recorder:
        return renew_in(ws, recorder, task_id, token, progress, by)


def renew_in(ws: Workspace, recorder: Recorder, task_id: int, token: str,
             progress: Progress | None = None, by: str | None = None) -> Beat:
    """`heartbeat` inside the caller's write transaction (a supervisor renews all its
    leases in one). Raises `TokenRejected` before recording anything."""
    now = recorder.now
    task = _current_attempt(recorder, task_id, token, now)
    expires = now + timedelta(seconds=ws.settings.lease_seconds)
    noted = _progress_event(ws, task, progress, now, by) if progress is not None else []
    recorder.record([LeaseRenewed(task_id=task_id, attempt=task.attempt,
                                  lease_expires_at=expires, by=by), *noted])
    return Beat(expires, task.cancelling, bool(noted) if progress is not None else None)


def progress(ws: Workspace, task_id: int, token: str, report: Progress, by: str | None = None) -> bool:
    """Record how far the current attempt got; False when it was not recorded because
    the attempt's last progress is too recent (see `progress_min_interval_seconds`)."""
    report.check(ws)
    with ws.write(prefetch=[task_read(task_id)]) as recorder:
        task = _current_attempt(recorder, task_id, token, recorder.now)
        noted = _progress_event(ws, task, report, recorder.now, by)
        recorder.record(noted)
        return bool(noted)


def _usage_fields(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {}
    return {"cpu_seconds": usage.cpu_seconds, "peak_rss_bytes": usage.peak_rss_bytes,
            "start_delay_seconds": usage.start_delay_seconds}


def ending_reads(task_id: int) -> list[Read]:
    """What ending an attempt reads, asked for ahead: the task, and the agent whose slot
    it frees."""
    return [task_read(task_id), task_agent_read(task_id)]


def complete(ws: Workspace, task_id: int, token: str, result: Any = None,
             log_path: str | None = None, usage: Usage | None = None, by: str | None = None) -> None:
    """Record the success of the current attempt (with its resource use, if measured)."""
    check_json(result, "result", ws.settings.max_payload_bytes)
    with ws.write(prefetch=ending_reads(task_id)) as recorder:
        complete_in(recorder, task_id, token, result, log_path, usage, by)


def complete_in(recorder: Recorder, task_id: int, token: str, result: Any = None,
                log_path: str | None = None, usage: Usage | None = None, by: str | None = None) -> None:
    """`complete` inside the caller's write transaction, `result` already checked.
    Raises `TokenRejected` before recording anything."""
    task = _current_attempt(recorder, task_id, token, recorder.now)
    recorder.record([TaskSucceeded(task_id=task_id, agent=task.agent or "",
                                   attempt=task.attempt, result=result, log_path=log_path,
                                   by=by, **_usage_fields(usage))])


def fail(ws: Workspace, task_id: int, token: str, error: str, *, retry: bool = True,
         reason: FailureReason = "reported", exit_code: int | None = None,
         signal: int | None = None, log_path: str | None = None,
         usage: Usage | None = None, by: str | None = None) -> str:
    """Record the failure of the current attempt; returns the task's new status."""
    check_text(error, "error", ws.settings.max_message_bytes)
    # and the task's stream: the failure policy reads its earlier errors
    with ws.write(prefetch=[*ending_reads(task_id), stream_read(f"task-{task_id}")]) as recorder:
        return fail_in(ws, recorder, task_id, token, error, retry=retry, reason=reason,
                       exit_code=exit_code, signal=signal, log_path=log_path, usage=usage, by=by)


def fail_in(ws: Workspace, recorder: Recorder, task_id: int, token: str, error: str, *,
            retry: bool = True, reason: FailureReason = "reported", exit_code: int | None = None,
            signal: int | None = None, log_path: str | None = None,
            usage: Usage | None = None, by: str | None = None) -> str:
    """`fail` inside the caller's write transaction, `error` already checked; returns
    the task's new status. Raises `TokenRejected` before recording anything."""
    from scheduler.takeback import settle

    task = _current_attempt(recorder, task_id, token, recorder.now)
    if task.cancelling:
        reason, retry = "cancelled", False
    failure = TaskFailed(task_id=task_id, agent=task.agent or "", attempt=task.attempt,
                         reason=reason, error=error, exit_code=exit_code, signal=signal,
                         log_path=log_path, retryable=retry, by=by, **_usage_fields(usage))
    recorder.record(settle(ws, recorder, task, failure))
    after = recorder.views.get_task(task_id)
    assert after is not None
    return after.status
