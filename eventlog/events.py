"""Every fact sched records, as frozen pydantic models.

Each event is named in the past tense, carries a literal `type` (the stable name
stored in the log, never a Python path) and a `schema_version`. Stored rows are
parsed back with `parse_event`, which upgrades old payloads in one place
(`_UPCASTERS`) before validation. Never change the meaning of a stored event: add a
new type, or a new version with an upcaster.
"""

# (no `from __future__ import annotations`: pydantic then reads each field's type as
# an object instead of evaluating its text, which makes building the models cheaper)
import json
from functools import cache
from typing import Annotated, Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from eventlog.errors import CorruptLog, NewerEvent

TaskId = Annotated[int, Field(ge=1, le=2**63 - 1)]
FailureReason = Literal[
    "exit_code", "timeout", "spawn_error", "lease_expired", "cancelled", "reported", "evicted", "undelivered",
    "interrupted",
]
# the reasons a runner reports for an attempt it ran (the others are the scheduler's:
# a lease it took back, an eviction, a pull worker's own report); interrupted: its
# runner was stopped (SIGTERM, SIGINT) and stopped it
RunnerFailure = Literal["exit_code", "timeout", "spawn_error", "cancelled", "interrupted"]
# not_started: an assignment not started by its start_by (or whose start could not
# prepare its working directory); released: an assignment of an agent that left
# service (disabled, removed from the control file, drained) before it started;
# evicted: an operator took the agent out of service at once; undelivered: a pull
# worker's claim that never reached it (its client went away, or it could not be printed)
RequeueReason = Literal["not_started", "failed", "lease_expired", "operator", "evicted", "released",
                        "undelivered", "interrupted"]
# failures that are not the task's doing: the attempt does not count against max_attempts
UNCOUNTED_FAILURES: frozenset[str] = frozenset({"evicted", "undelivered", "interrupted"})


class Event(BaseModel):
    """Base of all events: frozen, strict about unknown fields. Each model's validator
    and serializer are built on its first use (`defer_build`), so that a quick command
    builds only the events it records (issue 13: a quick CLI). No number is infinite or
    NaN (`allow_inf_nan`): JSON cannot carry one (the serializer would store null, a
    different fact from the one folded into the projections), so an event holding one
    is refused when it is made, and a stored number too large for a float is a
    corrupt event, not infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)

    schema_version: int = 1

    @property
    def stream_id(self) -> str:
        """The stream the event belongs to: one per task, one for the scheduler."""
        task_id = getattr(self, "task_id", None)
        return f"task-{task_id}" if task_id is not None else "scheduler"


class TaskSubmitted(Event):
    """A task entered its queue (or waits for approval).

    Version 2 adds `requires`: capabilities an agent must have to take it, and `due`:
    when the task should be done by (its effective priority rises as that nears; None,
    as on version 1 events, means no due time). Version 3 adds `by`: who submitted it
    (the CLI's `--by`, default $USER; through the HTTP API the token's name); None on
    older events, whose submitter is unknown."""

    schema_version: int = 3
    type: Literal["TaskSubmitted"] = "TaskSubmitted"
    task_id: TaskId
    queue: str
    title: str
    priority: int = 0
    assignee: str | None = None
    payload: Any = None
    max_attempts: int = Field(default=3, ge=1)
    not_before: AwareDatetime | None = None
    idempotency_key: str | None = None
    requires_approval: bool = False
    after: tuple[TaskId, ...] = ()  # tasks that must succeed before this one may start
    task_type: str | None = None  # kind of work, for affinity (agents' success records)
    requires: tuple[str, ...] = ()  # (v2) capabilities the agent taking it must have
    due: AwareDatetime | None = None  # (v2) when it should be done by
    by: str | None = None  # (v3) who submitted it; None: unknown (an older event)


class TaskDueMissed(Event):
    """A task was not done by its due time: recorded once per task, by the first tick
    after the time passed while the task was still open (`status`: where it stood)."""

    type: Literal["TaskDueMissed"] = "TaskDueMissed"
    task_id: TaskId
    due: AwareDatetime
    status: str


class CandidateAgent(BaseModel):
    """An agent that could have taken the task when it was assigned."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)

    agent: str
    free: int  # its free slots at that moment
    load: int
    success_rate: float  # smoothed record at the task's type (0.5 when untyped or unknown)
    weight: float = 1.0  # (TaskAssigned v3) its weight in the control file then


class PassedOverAgent(BaseModel):
    """An agent of the queue's type that could not take the task, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)

    agent: str
    why: str


class AssignmentDecision(BaseModel):
    """The inputs of one assignment decision, so `sched explain` can answer "why this
    agent, why not earlier" from the log alone. The lists are capped; the totals are not."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)

    priority: int
    effective_priority: int
    waited_seconds: float  # since the task last became ready to run
    candidates: tuple[CandidateAgent, ...]  # best first; the first one got the task
    candidates_total: int
    passed_over: tuple[PassedOverAgent, ...] = ()
    passed_over_total: int = 0
    policy_hash: str = ""  # of the plan policy and the queue's failure policy
    config_hash: str = ""  # of the agent control file in force
    # claim: a pull worker asked for work for itself. Always recorded since it exists;
    # None on the decisions recorded before (of a tick or a claim: not said)
    via: Literal["tick", "claim"] | None = None


class TaskAssigned(Event):
    """A tick (or a claim) reserved a slot of `agent` for this attempt of the task.

    Version 2 adds `decision` (None on version 1 events); version 3 adds each
    candidate's `weight` (1 on older events: weights did not exist); version 4 adds
    `by`: the name of the HTTP API token whose claim made it (None otherwise).
    `decision.via` came within version 4: None on the decisions recorded before it."""

    schema_version: int = 4
    type: Literal["TaskAssigned"] = "TaskAssigned"
    task_id: TaskId
    agent: str
    attempt: int = Field(ge=1)
    start_by: AwareDatetime
    decision: AssignmentDecision | None = None
    by: str | None = None


class TaskStarted(Event):
    """The runner started the attempt and holds a lease (only the token's hash is kept).

    Version 2 adds `cgroup`: the control group the exec wrapper put the attempt's
    processes in, so whoever takes the attempt back on that host can stop every one;
    version 3 adds `by`: the name of the HTTP API token that started it (a worker's
    claim, a host runner's start; None otherwise); version 4 adds `machine`: the
    machine, boot and pid namespace of the wrapper (`scheduler.machine`), so that only
    there is the attempt judged by its pid (None: not known, or recorded before)."""

    schema_version: int = 4
    type: Literal["TaskStarted"] = "TaskStarted"
    task_id: TaskId
    agent: str
    attempt: int = Field(ge=1)
    token_hash: str
    lease_expires_at: AwareDatetime
    runner: Literal["worker", "exec"] = "worker"
    pid: int | None = None  # the exec wrapper's process, which holds the lease
    host: str | None = None
    argv: tuple[str, ...] | None = None  # the agent command, placeholders filled in
    workdir: str | None = None
    log_path: str | None = None
    cgroup: str | None = None
    by: str | None = None
    machine: str | None = None


class LeaseRenewed(Event):
    """The lease holder sent a heartbeat; the lease now runs until `lease_expires_at`.

    Version 2 adds `by`: the name of the HTTP API token that sent it (None otherwise)."""

    schema_version: int = 2
    type: Literal["LeaseRenewed"] = "LeaseRenewed"
    task_id: TaskId
    attempt: int = Field(ge=1)
    lease_expires_at: AwareDatetime
    by: str | None = None


class LeaseExpired(Event):
    """Nobody renewed the lease of a running attempt in time; the attempt is over.

    Version 2 adds `detail`: why nobody renewed it, when that is known (the exec
    wrapper holding it is gone), instead of plain "lease expired"."""

    schema_version: int = 2
    type: Literal["LeaseExpired"] = "LeaseExpired"
    task_id: TaskId
    agent: str
    attempt: int = Field(ge=1)
    detail: str | None = None


class TaskSucceeded(Event):
    """The attempt finished successfully (final).

    Version 2 adds the run's resource use, as the exec wrapper measured it (None from
    pull workers and on version 1 events); version 3 adds `by`: the name of the HTTP
    API token that reported it (None otherwise); version 4 adds `start_delay_seconds`:
    how long after its `TaskStarted` was recorded the agent's command ran, as its
    runner measured it on one clock (None: not measured, as for pull workers)."""

    schema_version: int = 4
    type: Literal["TaskSucceeded"] = "TaskSucceeded"
    task_id: TaskId
    agent: str
    attempt: int = Field(ge=1)
    result: Any = None
    log_path: str | None = None
    cpu_seconds: float | None = Field(default=None, ge=0)
    peak_rss_bytes: int | None = Field(default=None, ge=0)
    by: str | None = None
    start_delay_seconds: float | None = Field(default=None, ge=0)


class TaskFailed(Event):
    """The attempt failed, for a machine-readable `reason`, with the details beside it.

    Version 2 adds the run's resource use, as for `TaskSucceeded`; version 3 adds the
    reason `evicted` (an operator took the agent out of service while it ran: the
    attempt does not count against max_attempts); version 4 adds `by`: the name of the
    HTTP API token that reported it (None otherwise); version 5 adds
    `start_delay_seconds`, as for `TaskSucceeded` (None also when the command never ran);
    version 6 adds the reason `undelivered`: a pull worker's claim whose answer never
    reached it (its HTTP client went away, or the CLI could not print it). Nothing ran:
    the attempt does not count, and its agent is not passed over for the task. Version
    7 adds the reason `interrupted`: its runner (a daemon's supervisor, an agent host's
    runner, `sched exec`) was stopped by a signal and stopped it. Not the task's doing:
    the attempt does not count, and the task is queued again at once."""

    schema_version: int = 7
    type: Literal["TaskFailed"] = "TaskFailed"
    task_id: TaskId
    agent: str
    attempt: int = Field(ge=1)
    reason: FailureReason
    error: str
    exit_code: int | None = None
    signal: int | None = None  # the signal that ended the agent process, if one did
    log_path: str | None = None
    retryable: bool = True
    cpu_seconds: float | None = Field(default=None, ge=0)
    peak_rss_bytes: int | None = Field(default=None, ge=0)
    by: str | None = None
    start_delay_seconds: float | None = Field(default=None, ge=0)


class TaskRequeued(Event):
    """The task went back to its queue: an assignment not started in time (no attempt
    used), a failed or expired attempt with attempts left (after `not_before`, the
    backoff drawn when it failed), or an operator's requeue of a dead task (with fresh
    attempts).

    Version 2 adds the reasons `evicted` and `released` and `detail` (what happened,
    in words); version 3 adds `by`: the operator who requeued it (reason `operator`;
    through the HTTP API the token's name). None when the scheduler requeued the task
    itself (every other reason), and on older events (unknown). Version 4 adds the
    reason `undelivered` (after a `TaskFailed` of that reason: no attempt used); version
    5 the reason `interrupted` (after a `TaskFailed` of that reason: the attempt not
    counted); version 6 `to_approve`: an operator's requeue of a task submitted to wait
    for approval that was never approved (it died waiting, its parent dead): it waits
    for approval again rather than join its queue. False on older events, whose tasks
    joined the queue."""

    schema_version: int = 6
    type: Literal["TaskRequeued"] = "TaskRequeued"
    task_id: TaskId
    reason: RequeueReason
    not_before: AwareDatetime | None = None
    detail: str | None = None
    by: str | None = None  # (v3) the operator; None: the scheduler itself, or unknown
    to_approve: bool = False  # (v6) back to awaiting_approval, not to the queue


class TaskDeadLettered(Event):
    """The task used up its attempts (or may not be retried): it rests in the
    dead-letter queue with the history of its errors (final until requeued)."""

    type: Literal["TaskDeadLettered"] = "TaskDeadLettered"
    task_id: TaskId
    reason: str
    errors: tuple[str, ...] = ()


class TaskApproved(Event):
    """Someone approved a task that waited for approval: it joins its queue."""

    type: Literal["TaskApproved"] = "TaskApproved"
    task_id: TaskId
    by: str


class TaskRejected(Event):
    """Someone rejected a task that waited for approval: it ends, cancelled (final)."""

    type: Literal["TaskRejected"] = "TaskRejected"
    task_id: TaskId
    by: str
    reason: str | None = None


class TaskCancelRequested(Event):
    """Cancel was asked of a running task: its runner learns it at the next heartbeat."""

    type: Literal["TaskCancelRequested"] = "TaskCancelRequested"
    task_id: TaskId
    by: str
    reason: str | None = None


class TaskCancelled(Event):
    """The task was cancelled (final): at once if it was not running, else once its
    running attempt ended."""

    type: Literal["TaskCancelled"] = "TaskCancelled"
    task_id: TaskId
    by: str
    reason: str | None = None


class TaskProgressed(Event):
    """The runner of the current attempt reported how far it got (rate-limited: at most
    one per `progress_min_interval_seconds` per task).

    Version 2 adds `by`: the name of the HTTP API token that reported it (None otherwise)."""

    schema_version: int = 2
    type: Literal["TaskProgressed"] = "TaskProgressed"
    task_id: TaskId
    attempt: int = Field(ge=1)
    percent: float | None = Field(default=None, ge=0, le=100)
    message: str | None = None
    by: str | None = None


class AgentRecord(BaseModel):
    """One agent as the control file declared it when `AgentsConfigured` was recorded."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, allow_inf_nan=False)

    name: str
    type: str
    capacity: int = Field(ge=0)
    enabled: bool = True
    command: tuple[str, ...] | None = None
    timeout_seconds: float | None = None  # an exec run longer than this is stopped
    non_retryable_exit_codes: tuple[int, ...] = ()  # exit codes that dead-letter at once
    host: str | None = None  # (v2) only a runner on this host starts its command
    capabilities: tuple[str, ...] = ()  # (v3) what tasks may require of it
    weight: float = 1.0  # (v3) preference among agents with equally many free slots
    hours: tuple[str, ...] = ()  # (v3) availability windows; none: always available


class AgentsConfigured(Event):
    """The agent control file changed (or was first seen): this is the fleet from now on.

    Version 2 adds each agent's `host`: the host a push agent is pinned to; version 3
    its `capabilities`, `weight` and working `hours`."""

    schema_version: int = 3
    type: Literal["AgentsConfigured"] = "AgentsConfigured"
    agents: tuple[AgentRecord, ...]
    content_hash: str
    source: str


class AgentDrained(Event):
    """An operator took an agent out of service gently: it gets no new work (its
    assignments not yet started go back to the queue); running attempts finish."""

    type: Literal["AgentDrained"] = "AgentDrained"
    agent: str
    by: str
    reason: str | None = None


class AgentEvicted(Event):
    """An operator took an agent out of service at once: it gets no new work, and its
    assigned and running attempts are taken back (events of their own, in the same
    transaction) to be retried on other agents."""

    type: Literal["AgentEvicted"] = "AgentEvicted"
    agent: str
    by: str
    reason: str | None = None


class AgentRestored(Event):
    """An operator put a drained or evicted agent back in service."""

    type: Literal["AgentRestored"] = "AgentRestored"
    agent: str
    by: str


class SchedulerPaused(Event):
    """An operator paused assignment: ticks still expire leases but assign nothing."""

    type: Literal["SchedulerPaused"] = "SchedulerPaused"
    by: str
    reason: str | None = None


class SchedulerResumed(Event):
    """An operator resumed assignment after a pause."""

    type: Literal["SchedulerResumed"] = "SchedulerResumed"
    by: str


class QueueGateClosed(Event):
    """A queue's gate command failed: ticks assign nothing from the queue until it
    passes again."""

    type: Literal["QueueGateClosed"] = "QueueGateClosed"
    queue: str
    detail: str


class QueueGateOpened(Event):
    """A queue's gate command passed again, or (version 2, `detail`) its gate was taken
    out of the settings while closed: the queue is assigned from once more."""

    schema_version: int = 2
    type: Literal["QueueGateOpened"] = "QueueGateOpened"
    queue: str
    detail: str | None = None  # None: the gate passed (every version 1 event)


class DaemonStarted(Event):
    """A daemon (`sched run`) started on `host` as process `pid`, running sched `version`
    and ticking every `interval_seconds`.

    Version 2 adds `machine`: its machine, boot and pid namespace (`scheduler.machine`),
    so that a daemon starting under the same host name on another machine is refused
    (None: not known, or recorded before)."""

    schema_version: int = 2
    type: Literal["DaemonStarted"] = "DaemonStarted"
    host: str
    pid: int
    version: str
    interval_seconds: float
    machine: str | None = None


class DaemonStopped(Event):
    """A daemon stopped cleanly (a daemon that is killed records no stop: its beats in
    the operational records stop instead)."""

    type: Literal["DaemonStopped"] = "DaemonStopped"
    host: str
    pid: int
    version: str
    reason: str | None = None  # e.g. the signal that asked it to stop


# who a bearer token of the HTTP API acts as: a role, one agent (`agent` names it), or
# the runner of one host's push agents (`host` names it)
TokenRole = Literal["operator", "submitter", "reader", "agent", "host"]


class TokenCreated(Event):
    """A bearer token of the HTTP API was created: `name` (unique among live tokens)
    acts as `role`, an `agent` token only for `agent`. Only the token's hash is kept;
    the token itself was shown once, to `by`.

    Version 2 adds the role `host` and `host`: the token of a runner (`sched run
    --server`) that runs the push agents pinned to that host (None on version 1 events)."""

    schema_version: int = 2
    type: Literal["TokenCreated"] = "TokenCreated"
    name: str
    role: TokenRole
    agent: str | None = None
    host: str | None = None
    token_hash: str
    by: str


class TokenRevoked(Event):
    """A bearer token was revoked: from this event on it is refused, and its name may be
    given to a new token."""

    type: Literal["TokenRevoked"] = "TokenRevoked"
    name: str
    by: str


AnyEvent = Annotated[
    TaskSubmitted
    | TaskAssigned
    | TaskStarted
    | LeaseRenewed
    | LeaseExpired
    | TaskSucceeded
    | TaskFailed
    | TaskRequeued
    | TaskDeadLettered
    | TaskApproved
    | TaskRejected
    | TaskCancelRequested
    | TaskCancelled
    | TaskProgressed
    | AgentsConfigured
    | AgentDrained
    | AgentEvicted
    | AgentRestored
    | SchedulerPaused
    | SchedulerResumed
    | QueueGateClosed
    | QueueGateOpened
    | TaskDueMissed
    | DaemonStarted
    | DaemonStopped
    | TokenCreated
    | TokenRevoked,
    Field(discriminator="type"),
]


@cache
def _adapter() -> TypeAdapter[AnyEvent]:
    """The validator of any stored event (built on the first parse: a command that only
    records events builds just the models it records)."""
    return TypeAdapter(AnyEvent)


# type name -> class, from the union above (one list of the events to keep)
EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls for cls in get_args(get_args(AnyEvent)[0])
}

def build_models() -> None:
    """Build every event model's validator and serializer now rather than on first use:
    a process that forks others (the daemon's launcher) builds them once for all. The
    models an event holds are built too: an event's own build does not build them, and
    `plan()` validates each decision on its own (its first assignment took 5 ms more)."""
    for cls in _MODELS:
        cls.model_rebuild()


# every model of this module: the events and what they hold (a decision, its candidates, ...)
_MODELS = [cls for cls in list(globals().values())
           if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__ == __name__]


def _unchanged(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload of version N that is a valid payload of version N + 1 as it is (the
    next version only added optional fields)."""
    return payload


# (type, stored schema_version) -> function upgrading the payload dict by one version.
# A new version that only adds optional fields still gets its number (an older sched
# then refuses it with "upgrade sched" instead of a confusing field error) and an
# `_unchanged` upcaster.
_UPCASTERS: dict[tuple[str, int], Any] = {
    ("TaskSubmitted", 1): _unchanged,  # v2: + requires, + due
    ("TaskSubmitted", 2): _unchanged,  # v3: + by (None: unknown)
    ("TaskAssigned", 1): _unchanged,  # v2: + decision
    ("TaskAssigned", 2): _unchanged,  # v3: + decision.candidates[].weight
    ("TaskAssigned", 3): _unchanged,  # v4: + by (None: not through the HTTP API, or unknown)
    ("TaskStarted", 2): _unchanged,  # v3: + by
    ("TaskStarted", 3): _unchanged,  # v4: + machine (None: not known)
    ("LeaseRenewed", 1): _unchanged,  # v2: + by
    ("TaskProgressed", 1): _unchanged,  # v2: + by
    ("TaskSucceeded", 2): _unchanged,  # v3: + by
    ("TaskFailed", 3): _unchanged,  # v4: + by
    ("TaskSucceeded", 3): _unchanged,  # v4: + start_delay_seconds
    ("TaskFailed", 4): _unchanged,  # v5: + start_delay_seconds
    ("TaskSucceeded", 1): _unchanged,  # v2: + cpu_seconds, peak_rss_bytes
    ("TaskFailed", 1): _unchanged,  # v2: + cpu_seconds, peak_rss_bytes
    ("TaskFailed", 2): _unchanged,  # v3: + reason "evicted"
    ("TaskStarted", 1): _unchanged,  # v2: + cgroup
    ("LeaseExpired", 1): _unchanged,  # v2: + detail
    ("TaskRequeued", 1): _unchanged,  # v2: + reasons "evicted", "released"; + detail
    ("TaskRequeued", 2): _unchanged,  # v3: + by (None: the scheduler, or unknown)
    ("TaskFailed", 5): _unchanged,  # v6: + reason "undelivered"
    ("TaskRequeued", 3): _unchanged,  # v4: + reason "undelivered"
    ("TaskFailed", 6): _unchanged,  # v7: + reason "interrupted"
    ("TaskRequeued", 4): _unchanged,  # v5: + reason "interrupted"
    ("TaskRequeued", 5): _unchanged,  # v6: + to_approve (False: to the queue, as before)
    ("AgentsConfigured", 1): _unchanged,  # v2: + agents[].host
    ("AgentsConfigured", 2): _unchanged,  # v3: + agents[].capabilities, weight, hours
    ("TokenCreated", 1): _unchanged,  # v2: + role "host", + host
    ("QueueGateOpened", 1): _unchanged,  # v2: + detail (a gate taken out of the settings)
    ("DaemonStarted", 1): _unchanged,  # v2: + machine (None: not known)
}


_VERSIONS = {name: cls.model_fields["schema_version"].default for name, cls in EVENT_TYPES.items()}


def current_version(event_type: str) -> int:
    return _VERSIONS[event_type]


# the row's own columns (a set, never changed: pydantic takes a set as it is and copies
# a frozenset first, which costs more than the dump of a small event)
_NOT_STORED = {"type", "schema_version"}


def dump_event(event: Event) -> str:
    """The stored JSON payload of an event: its fields without `type` and version.
    (The model's serializer, called as `model_dump_json` calls it, without the
    checks of its arguments that cost more than the dump of a small event.)"""
    return event.__pydantic_serializer__.to_json(event, exclude=_NOT_STORED).decode()


def parse_event(event_type: str, schema_version: int, data: str, *, seq: int = 0) -> Event:
    """Rebuild an event from a stored row, upgrading old versions first."""
    if event_type not in EVENT_TYPES:
        raise CorruptLog(f"event seq {seq} has unknown type {event_type!r}")
    latest = current_version(event_type)
    if schema_version > latest:
        raise NewerEvent(
            f"event seq {seq} ({event_type}) has schema_version {schema_version}, "
            f"newer than this sched understands ({latest}); upgrade sched"
        )
    if schema_version == latest:
        try:  # the common case: a current event parsed straight from its JSON text
            return EVENT_TYPES[event_type].model_validate_json(data)
        except ValidationError:
            pass  # the way below reads it (Python's parser takes more) or names what is wrong
    try:
        payload = json.loads(data)
        while schema_version < latest:
            payload = _UPCASTERS[(event_type, schema_version)](payload)
            schema_version += 1
        payload["type"] = event_type
        return _adapter().validate_python(payload)
    except ValidationError as e:  # (its first line names only the union of every event)
        err = e.errors()[0]
        where = ".".join(str(part) for part in err["loc"][1:]) or "data"  # (loc[0] is the type)
        raise CorruptLog(f"event seq {seq} ({event_type}) cannot be read: {where}: {err['msg']}") from e
    except (ValueError, KeyError, TypeError) as e:
        first = str(e).splitlines()[0]
        raise CorruptLog(f"event seq {seq} ({event_type}) cannot be read: {first}") from e

