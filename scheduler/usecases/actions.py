"""Use cases that change tasks: submit, cancel, approve, reject, requeue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import ConfigDict, Field, model_validator

from eventlog.errors import BadInput
from scheduler.usecases.base import Reason, Request, trial, with_changes
from scheduler.workspace import Workspace

if TYPE_CHECKING:
    from scheduler.dryrun import DryRun
    from scheduler.submit import Submitted

# submit and the operator actions import their machinery when called: `tasks` and
# `show` (in `tasks`) start without the event models or the submit model (issue 13: a quick CLI)

# the fields of one task, as the CLI's flags name them (a batch takes none of them)
ONE_TASK_FLAGS = (("queue", "--queue"), ("title", "--title"), ("priority", "--priority"),
                  ("assignee", "--assignee"), ("payload", "--payload"),
                  ("max_attempts", "--max-attempts"), ("not_before", "--not-before"),
                  ("delay", "--delay"), ("idempotency_key", "--idempotency-key"),
                  ("after", "--after"), ("requires_approval", "--requires-approval"),
                  ("task_type", "--type"), ("requires", "--requires"), ("due", "--due"))


class SubmitRequest(Request):
    """One task (its fields), or a batch (`tasks`: task objects as a `--file` line
    holds them, submitted all or none). `delay` and a duration `due` count from now."""

    model_config = ConfigDict(populate_by_name=True)  # `type`, as a --file line names it
    where = "submit"
    queue: str | None = None
    title: str | None = None
    priority: int = 0
    assignee: str | None = None
    payload: Any = None
    max_attempts: int | None = None
    not_before: str | None = None  # an ISO time with offset
    delay: str | None = None  # 90s, 10m, 2h, 1d: not before now plus this
    due: str | None = None  # an ISO time with offset, or a duration from now
    idempotency_key: str | None = None
    task_type: str | None = Field(default=None, alias="type")
    after: list[int] = Field(default_factory=list)
    requires_approval: bool = False
    requires: list[str] = Field(default_factory=list)
    tasks: list[Any] | None = None  # a batch: task objects (or `TaskSpec`s)
    sources: list[str] | None = None  # where each task of the batch came from (path:line)
    by: str = "operator"  # who submits: the CLI's --by ($USER), the HTTP API's token name
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_or_batch(self) -> SubmitRequest:
        if self.tasks is not None:
            # given at all (an empty or default value too: it would be dropped unseen)
            given = [flag for name, flag in ONE_TASK_FLAGS if name in self.model_fields_set]
            if given:
                raise BadInput(f"--file takes every field from the file; drop {', '.join(given)}")
            if not self.tasks:
                raise BadInput("submit: no tasks given")
            if self.sources is not None and len(self.sources) != len(self.tasks):
                raise BadInput("submit: sources must name each task once")
            return self
        if self.queue is None or self.title is None:  # (a blank one: the task's own check says so)
            raise BadInput("submit needs --queue and --title (or --file)")
        if self.delay is not None and self.not_before is not None:
            raise BadInput("give --delay or --not-before, not both")
        return self


class SubmitResult(NamedTuple):
    """The submitted task (or tasks, of a batch); `created` False for one whose
    idempotency key named an earlier task."""

    submitted: list[Submitted]
    batch: bool
    dry_run: DryRun | None = None

    @property
    def task_ids(self) -> list[int]:
        return [s.task_id for s in self.submitted]

    @property
    def created(self) -> int:
        return sum(s.created for s in self.submitted)

    def to_json(self) -> dict[str, Any]:
        if self.batch:
            return with_changes({"task_ids": self.task_ids, "created": self.created}, self.dry_run)
        (one,) = self.submitted
        return with_changes({"task_id": one.task_id, "created": one.created}, self.dry_run)


def submit(ws: Workspace, request: SubmitRequest) -> SubmitResult:
    """Submit one task, or a batch in one transaction (all or none); with `dry_run`,
    append nothing and report what would be."""
    from scheduler.durations import parse_duration
    from scheduler.submit import TaskSpec, due_text, parse_spec
    from scheduler.submit import submit as submit_specs

    dry_run = trial(request.dry_run)
    if request.tasks is not None:
        wheres = request.sources or [f"submit: tasks.{i}" for i in range(len(request.tasks))]
        specs = [t if isinstance(t, TaskSpec) else parse_spec(t, where)
                 for t, where in zip(request.tasks, wheres, strict=True)]
        return SubmitResult(submit_specs(ws, specs, wheres, dry_run, request.by), True, dry_run)
    not_before = request.not_before
    if request.delay is not None:
        not_before = (ws.clock.now() + parse_duration(request.delay)).isoformat()
    raw = {"queue": request.queue, "title": request.title, "priority": request.priority,
           "assignee": request.assignee, "payload": request.payload,
           "max_attempts": request.max_attempts, "not_before": not_before,
           "idempotency_key": request.idempotency_key, "requires_approval": request.requires_approval,
           "after": list(request.after), "type": request.task_type, "requires": list(request.requires),
           "due": None if request.due is None else due_text(request.due, ws.clock.now())}
    return SubmitResult(submit_specs(ws, [parse_spec(raw, "submit")], None, dry_run, request.by),
                        False, dry_run)


class CancelRequest(Request):
    where = "cancel"
    task_id: int
    by: str = "operator"
    reason: Reason = None
    dry_run: bool = False


class Cancelled(NamedTuple):
    """The task's status afterwards: cancelled, or running while its runner is told."""

    task_id: int
    status: str
    dry_run: DryRun | None = None

    def to_json(self) -> dict[str, Any]:
        return with_changes({"task_id": self.task_id, "status": self.status,
                             "cancelling": self.status == "running"}, self.dry_run)


def cancel(ws: Workspace, request: CancelRequest) -> Cancelled:
    """Cancel a task: at once unless it runs; a running one stops at its next heartbeat."""
    from scheduler import operator

    dry_run = trial(request.dry_run)
    status = operator.cancel(ws, request.task_id, request.by, request.reason, dry_run)
    return Cancelled(request.task_id, status, dry_run)


class ApprovalRequest(Request):
    """Tasks awaiting approval, who decides, and (for a rejection) why."""

    where = "approval"
    task_ids: list[int]
    by: str = "operator"
    reason: Reason = None

    @model_validator(mode="after")
    def _some(self) -> ApprovalRequest:
        if not self.task_ids:
            raise BadInput("give task ids")
        return self


class Decided(NamedTuple):
    """The tasks approved (`verb` approved) or rejected, each once, in the order given."""

    verb: str
    task_ids: list[int]

    def to_json(self) -> dict[str, Any]:
        return {self.verb: self.task_ids}


def approve(ws: Workspace, request: ApprovalRequest) -> Decided:
    """Approve tasks submitted with requires_approval: they join their queue."""
    from scheduler import operator

    return Decided("approved", operator.decide_approval(ws, request.task_ids, request.by, approve=True))


def reject(ws: Workspace, request: ApprovalRequest) -> Decided:
    """Reject tasks awaiting approval: they end cancelled."""
    from scheduler import operator

    return Decided("rejected", operator.decide_approval(ws, request.task_ids, request.by,
                                                        approve=False, reason=request.reason))


class RequeueRequest(Request):
    """Dead tasks to requeue: these ids, or (`all` with `queue`) every dead one of a
    queue; and who requeues them."""

    where = "requeue"
    task_ids: list[int] = Field(default_factory=list)
    all: bool = False
    queue: str | None = None
    by: str = "operator"
    dry_run: bool = False

    @model_validator(mode="after")
    def _ids_or_all(self) -> RequeueRequest:
        if self.all and self.task_ids:
            raise BadInput("give task ids or --all --queue Q, not both")
        if self.all != (self.queue is not None) or (not self.all and not self.task_ids):
            raise BadInput("give task ids, or --all --queue Q")
        return self


class Requeued(NamedTuple):
    task_ids: list[int]
    dry_run: DryRun | None = None

    def to_json(self) -> dict[str, Any]:
        return with_changes({"requeued": self.task_ids}, self.dry_run)


def requeue(ws: Workspace, request: RequeueRequest) -> Requeued:
    """Put dead tasks back in their queue with fresh attempts (with --all, of a queue
    that exists: a misspelt one is said, not answered with nothing to requeue)."""
    from scheduler import operator

    if request.queue is not None:
        from scheduler.reads.queries import check_known_queue, current_fleet

        with ws.read() as (_log, views):
            check_known_queue(request.queue, current_fleet(ws, views) + views.all_agents(), views)
    dry_run = trial(request.dry_run)
    return Requeued(operator.requeue(ws, request.task_ids, request.queue, dry_run, request.by), dry_run)

