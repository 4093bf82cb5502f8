"""The projected state as plain frozen values: one `TaskView` per task, one
`AgentView` per agent ever configured."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Literal, TypeVar

from eventlog.frozen import constructor

# The shape of the projection tables (`projections/tables.py`, one row per view below).
# Bump whenever a projection table or the meaning of a column changes.
PROJECTION_SCHEMA = 20
# The key of `projection_meta` that holds the shape the tables were made in (written
# with every fold from the start): every write reads the meta first, so a process whose
# tables another version of sched rebuilt meanwhile finds out before it writes
SHAPE_KEY = "projection_schema"

Status = Literal[
    "awaiting_approval", "blocked", "queued", "assigned", "running", "failed", "succeeded", "dead",
    "cancelled",
]
STATUSES: tuple[str, ...] = (
    "awaiting_approval", "blocked", "queued", "assigned", "running", "failed", "succeeded", "dead",
    "cancelled",
)
# "failed" only lives inside one transaction: every TaskFailed or LeaseExpired is
# appended together with the TaskRequeued or TaskDeadLettered that follows it.
VISIBLE_STATUSES: tuple[str, ...] = tuple(s for s in STATUSES if s != "failed")
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "dead", "cancelled"})
HOLDING_STATUSES: frozenset[str] = frozenset({"assigned", "running"})
# waiting to be assigned (some not yet ready); open: not ended (what a queue's depth counts)
WAITING_STATUSES: tuple[str, ...] = ("awaiting_approval", "blocked", "queued")
OPEN_STATUSES: tuple[str, ...] = (*WAITING_STATUSES, "assigned", "running")


V = TypeVar("V")
# a view's class -> its fields' getter and places, and its `constructor`
_SHAPES: dict[type, tuple[Any, dict[str, int], Callable[..., Any]]] = {}


def evolve(view: V, **changes: object) -> V:
    """The view with `changes`: what `dataclasses.replace` gives, in a fraction of the
    time (a 40-field `TaskView` is rebuilt at every event a fold applies, six times in
    a claim). Every field of a view is an `__init__` argument, in order."""
    cls = type(view)
    shape = _SHAPES.get(cls)
    if shape is None:
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        shape = _SHAPES[cls] = (attrgetter(*names), {name: at for at, name in enumerate(names)},
                                constructor(cls))
    values_of, places, build = shape
    values = list(values_of(view))
    for name, value in changes.items():
        if name not in places:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
        values[places[name]] = value
    return build(*values)  # type: ignore[no-any-return]


def due_watch(task: TaskView) -> str | None:
    """The due time of a task still open (not final), else None: the derived column by
    which ticks find missed due times and health counts overdue tasks."""
    return task.due if task.status not in FINAL_STATUSES else None


@dataclass(frozen=True, slots=True)
class TaskView:
    """One task as the log says it is now. Times are fixed-width UTC text."""

    task_id: int
    queue: str
    title: str
    priority: int
    assignee: str | None
    payload: str | None  # canonical JSON text; None where a listing did not load it
    status: str
    attempt: int  # attempts started so far (numbers stay unique across requeues)
    attempt_floor: int  # attempts started before the last operator requeue
    max_attempts: int
    agent: str | None  # holder while assigned or running
    not_before: str | None
    deadline: str | None  # start_by while assigned, lease expiry while running
    token_hash: str | None
    pid: int | None  # the exec wrapper holding the lease, on `host`
    host: str | None
    log_path: str | None  # output of the last exec attempt
    excluded: tuple[str, ...]  # agents whose attempt failed or expired, or that did not start it
    cancelling: bool  # cancel asked while running; the runner learns it at its heartbeat
    waiting_on: tuple[int, ...]  # tasks it runs after that have not succeeded yet
    blocks: tuple[int, ...]  # tasks that run after this one
    doomed_by: int | None  # a task it runs after that ended dead or cancelled
    last_error: str | None
    idempotency_key: str | None
    task_type: str | None  # kind of work: agents' success records are kept per type
    submitted_seq: int
    submitted_at: str
    updated_at: str
    ready_at: str | None = None  # when it last joined its queue ready to run (not_before counted)
    assigned_at: str | None = None  # when its current or last attempt was assigned
    started_at: str | None = None  # when its current or last attempt started
    last_agent: str | None = None  # who ran (started) its latest attempt; kept once it ends
    dead_reason: str | None = None  # why it was dead-lettered, while it is dead
    progress_percent: float | None = None  # the current attempt's last reported progress
    progress_message: str | None = None
    progress_at: str | None = None
    payload_bytes: int = 0  # size of the payload's JSON: listings show it without loading it
    requires: tuple[str, ...] = ()  # capabilities an agent must have to take it
    due: str | None = None  # when it should be done by
    due_missed_at: str | None = None  # when a tick recorded that it was not done by then
    machine: str | None = None  # where the wrapper holding the lease runs (`scheduler.machine`)


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent: its declared shape and the load the log gives it."""

    name: str
    type: str
    capacity: int
    enabled: bool
    configured: bool  # still in the current control file
    command: str | None  # JSON argv, or None for a pull worker
    timeout_seconds: float | None = None  # exec runs longer than this are stopped
    non_retryable_exit_codes: str = "[]"  # JSON list: exit codes that dead-letter at once
    assigned: int = 0
    running: int = 0
    out_of_service: str | None = None  # "drained" or "evicted" by an operator, until restored
    capabilities: tuple[str, ...] = ()  # what tasks may require of it (sorted)
    weight: float = 1.0  # among agents with equally many free slots, the heavier is preferred
    hours: tuple[str, ...] = ()  # availability windows (scheduler.decisions.hours); none: always

    @property
    def load(self) -> int:
        return self.assigned + self.running

    @property
    def in_service(self) -> bool:
        """Whether it may get new work: enabled, in the control file, not drained or evicted."""
        return self.enabled and self.configured and self.out_of_service is None

    @property
    def free(self) -> int:
        if not self.in_service:
            return 0
        return max(self.capacity - self.load, 0)


OUTCOMES: tuple[str, ...] = (
    "succeeded", "failed", "expired", "cancelled", "not_started", "evicted", "interrupted", "dead_lettered",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, or that a task was dead-lettered (`attempt` is then its
    last one and `agent` None). Times are epoch seconds, for arithmetic in SQL; the
    metrics, the dashboard and the health checks read these rows."""

    seq: int  # of the event that ended it
    task_id: int
    queue: str
    agent: str | None
    attempt: int
    outcome: str  # one of OUTCOMES
    detail: str | None  # the error or reason
    ready_ts: float | None  # the task last joined its queue ready to run
    assigned_ts: float | None
    started_ts: float | None  # None: never started (not_started, dead_lettered)
    ended_ts: float
    cpu_seconds: float | None = None  # measured by the exec wrapper
    peak_rss_bytes: int | None = None
    reason: str | None = None  # a failure's reason (`spawn_error`: its command could not start)


@dataclass(frozen=True, slots=True)
class CapacityChange:
    """From `at_ts` on, `agent` (of `type`) offers `slots` slots: its capacity while
    enabled and in the control file, else 0. Utilization integrates these."""

    seq: int
    agent: str
    type: str
    slots: int
    at_ts: float


@dataclass(frozen=True, slots=True)
class TokenView:
    """One bearer token of the HTTP API, from its `TokenCreated` (and `TokenRevoked`).
    Live while `revoked_at` is None; names are unique among live tokens only."""

    seq: int  # of its TokenCreated: the key (a name may be reused after a revoke)
    name: str
    role: str  # operator | submitter | reader | agent | host
    agent: str | None
    token_hash: str
    created_at: str
    created_by: str
    revoked_at: str | None = None
    revoked_by: str | None = None
    host: str | None = None  # a host token's host (TokenCreated v2)
