"""Submitting tasks: validated in full before the write transaction, appended in one."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from eventlog.errors import BadInput, OffSchema, Refused, off_schema
from eventlog.values import INT64_MAX, check_actor, check_json, parse_json, text_problem
from projections.sql import COUNTS, NEXT_TASK_ID, SqlProjection
from projections.views import OPEN_STATUSES
from scheduler.config.registry import AgentRegistry
from scheduler.config.settings import Settings
from scheduler.decisions.fit import capability_list
from scheduler.decisions.policy import MAX_ATTEMPTS
from scheduler.durations import UNITS, parse_duration
from scheduler.workspace import Workspace

if TYPE_CHECKING:
    from eventlog.events import TaskSubmitted
    from scheduler.dryrun import DryRun


class TaskSpec(BaseModel):
    """What a user submits (one CLI call, or one line of a `--file` batch). As strict
    as the control file: `"5"` is not a number, `1` is not a boolean."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    queue: StrictStr = Field(min_length=1)
    title: StrictStr = Field(min_length=1)
    priority: StrictInt = Field(default=0, ge=-INT64_MAX, le=INT64_MAX)
    assignee: StrictStr | None = None
    payload: Any = None
    max_attempts: StrictInt | None = Field(default=None, ge=1, le=MAX_ATTEMPTS)
    not_before: AwareDatetime | None = None
    idempotency_key: StrictStr | None = Field(default=None, min_length=1)
    requires_approval: StrictBool = False
    after: list[Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]] = []  # tasks that must succeed first
    task_type: StrictStr | None = Field(default=None, alias="type", min_length=1)
    due: AwareDatetime | None = None  # when it should be done by
    requires: tuple[str, ...] = ()  # capabilities the agent taking it must have (checked, sorted)

    @field_validator("after")
    @classmethod
    def _each_once(cls, value: list[int]) -> list[int]:
        return list(dict.fromkeys(value))  # `--after 1 --after 1` waits on task 1 once

    @field_validator("requires", mode="before")
    @classmethod
    def _capability_names(cls, value: object) -> object:
        if not isinstance(value, list | tuple):
            raise ValueError('must be a list of capability names, e.g. ["browser", "gpu"]')
        return capability_list(value)

    @field_validator("not_before", "due", mode="before")
    @classmethod
    def _a_time_not_a_number(cls, value: object) -> object:
        # (pydantic would read 3600 as a Unix time: the task would be due, or may start,
        # in 1970, where `--delay 3600` and `--due 3600` mean an hour from now)
        if (isinstance(value, int | float) and not isinstance(value, bool)) or (
                isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
            raise ValueError(f"must be an ISO time with its offset, e.g. 2026-12-05T09:00:00Z, not the "
                             f"number {str(value).strip()[:40]}")
        return value

    @field_validator("not_before", "due")
    @classmethod
    def _within_calendar(cls, value: datetime | None) -> datetime | None:
        if value is not None and not (datetime(1970, 1, 1, tzinfo=UTC) <= value
                                      <= datetime(9999, 1, 1, tzinfo=UTC)):
            raise ValueError("must lie between 1970-01-01 and 9999-01-01")
        return value

    @field_validator("title", mode="before")  # (before: an empty one is blank too, not "too short")
    @classmethod
    def _not_blank(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():  # (as `worker fail --error`: spaces say nothing)
            raise ValueError("must say what the task is, not be blank")
        return value

    @field_validator("queue", "title", "assignee", "idempotency_key", "task_type", mode="before")
    @classmethod
    def _storable_text(cls, value: object) -> object:
        if isinstance(value, str) and (problem := text_problem(value)) is not None:
            raise ValueError(problem)
        return value

    def check_sizes(self, settings: Settings, where: str) -> None:
        """The limits of the settings: title, the short names, the payload's JSON. (That
        the texts can be stored was checked when the spec was made: only their sizes
        are left. A batch checks every line, so the names in a message are built only
        for a line that fails.)"""
        limit = settings.max_title_bytes
        for name in _SIZED_TEXTS:
            text = getattr(self, name)  # (a character is at most 4 bytes of UTF-8)
            if text is not None and len(text) * 4 > limit and (size := len(text.encode("utf-8"))) > limit:
                raise BadInput(f"{where + ': ' if where else ''}{name}: is {size} bytes, over the "
                               f"limit of {limit}")
        check_json(self.payload, f"{where}: payload" if where else "payload", settings.max_payload_bytes)


_SIZED_TEXTS = ("title", "queue", "assignee", "idempotency_key", "task_type")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Submitted:
    task_id: int
    created: bool  # False when an idempotency key matched an earlier task


def due_text(text: str, now: datetime) -> str:
    """`--due`: an ISO time with offset (as `--not-before`), or a duration from now (as
    `--delay`: 90s, 10m, 2h, 1d), as ISO text for the spec to validate. Text that is
    neither (`tomorrow`) is refused saying both forms."""
    if text[:1].isdigit() and (text[-1] in UNITS or text.replace(".", "", 1).isdigit()):
        return (now + parse_duration(text)).isoformat()
    if not text[:1].isdigit():
        raise BadInput(f"submit: due: {text[:40]!r} is neither an ISO time with its offset (e.g. "
                       "2026-12-05T09:00:00Z) nor a duration from now (90s, 10m, 2h, 1d)")
    return text


def parse_spec(raw: object, where: str) -> TaskSpec:
    """A task of the fields `raw` (a `--file` line, an item of a batch); BadInput naming
    `where`: `OffSchema` when it is not the shape of a task (a wrong type, an unknown
    or missing field), as a request body off its schema is."""
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "task"
        said = err["msg"].removeprefix("Value error, ")
        if err["type"].startswith(("datetime", "timezone")):  # not_before, due: what a time looks like
            said += " (give an ISO time with its offset, e.g. 2026-12-05T09:00:00Z)"
        if err["type"] == "model_type":  # (not the model's name: what the input should be)
            said = f"must be a JSON object of a task's fields, not {type(raw).__name__}"
        kind = OffSchema if off_schema(err["type"]) else BadInput
        raise kind(f"{where}: {loc}: {said}") from e


STDIN = Path("-")


def read_batch(path: Path) -> list[tuple[str, TaskSpec]]:
    """Parse a JSONL file of task specs (`-`: standard input), each with its
    `path:line` for later errors; the first bad line is named in the error."""
    name = "stdin" if path == STDIN else str(path)
    try:
        data = sys.stdin.buffer.read() if path == STDIN else path.read_bytes()
        lines = data.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{name}: cannot read: {e}") from e
    specs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        specs.append((where, parse_spec(parse_json(line, where), where)))
    if not specs:
        raise BadInput(f"{name}: no tasks in file")
    return specs


def check_against_fleet(spec: TaskSpec, registry: AgentRegistry, where: str = "",
                        types: Sequence[str] | None = None) -> None:
    """A queue must be served by an agent (`types`: the registry's, if already known);
    a directed task's agent must serve it."""
    prefix = f"{where}: " if where else ""
    types = registry.get_all_types() if types is None else types
    if spec.queue not in types:
        known = ", ".join(types) or "none"
        raise BadInput(f"{prefix}no agent serves queue {spec.queue!r} (known queues: {known})")
    if spec.assignee is not None:
        agent = registry.get(spec.assignee)
        if agent is None:
            raise BadInput(f"{prefix}unknown assignee {spec.assignee!r}")
        if agent.type != spec.queue:
            raise BadInput(f"{prefix}assignee {spec.assignee!r} serves queue {agent.type!r}, "
                           f"not {spec.queue!r}")


def submit(ws: Workspace, specs: Sequence[TaskSpec],
           wheres: Sequence[str] | None = None, dry_run: DryRun | None = None,
           by: str | None = None) -> list[Submitted]:
    """Submit every spec in one transaction, or none of them (with `dry_run`: none,
    reporting what would be submitted). `by`: who submits (recorded in each
    `TaskSubmitted`; None: not known)."""
    from eventlog.events import TaskSubmitted
    from scheduler.dryrun import writing

    check_actor(by, "--by", ws.settings.max_title_bytes)
    ws.require_db()
    registry = ws.registry()
    types = registry.get_all_types()
    for index, spec in enumerate(specs):
        where = wheres[index] if wheres else ""
        spec.check_sizes(ws.settings, where)
        check_against_fleet(spec, registry, where, types)
    default_attempts = {q: ws.settings.queue_policy(q).max_attempts for q in {s.queue for s in specs}}
    with writing(ws, dry_run, prefetch=[NEXT_TASK_ID, COUNTS]) as recorder:
        views = recorder.views
        next_id = views.next_task_id()
        results: list[Submitted] = []
        keys: dict[str, tuple[int, str, str]] = {}  # idempotency key -> (task id, queue, where in the batch)
        events = []
        for index, spec in enumerate(specs):
            key = spec.idempotency_key
            if key:
                earlier = keys.get(key)
                if earlier is None and (found := views.task_by_idempotency_key(key)) is not None:
                    earlier = (found.task_id, found.queue, "")
                if earlier is not None:
                    task_id, queue, given_at = earlier
                    if queue != spec.queue:
                        named = (f"is also that of {given_at}, a task of queue {queue!r}" if given_at
                                 else f"already names task {task_id} of queue {queue!r}")
                        raise BadInput(f"{_where(wheres, index)}idempotency key {key!r} {named}, not a task "
                                       f"of {spec.queue!r}; nothing submitted")
                    results.append(Submitted(task_id, created=False))
                    continue
            check_after(views, spec.after, wheres[index] if wheres else "")
            events.append(TaskSubmitted(
                task_id=next_id, queue=spec.queue, title=spec.title, priority=spec.priority,
                assignee=spec.assignee, payload=spec.payload,
                max_attempts=spec.max_attempts or default_attempts[spec.queue],
                not_before=spec.not_before, idempotency_key=key,
                requires_approval=spec.requires_approval, after=tuple(spec.after),
                task_type=spec.task_type, requires=spec.requires, due=spec.due, by=by))
            if key:
                given_at = wheres[index] if wheres else f"task {index + 1} of the batch"
                keys[key] = (next_id, spec.queue, given_at)
            results.append(Submitted(next_id, created=True))
            next_id += 1
        check_queue_depth(ws, views.counts(), events)  # raises: the transaction rolls back
        recorder.record(events)
    return results


def _where(wheres: Sequence[str] | None, index: int) -> str:
    """The prefix naming a batch's line in a message ("" for a task of the flags)."""
    return f"{wheres[index]}: " if wheres else ""


def check_after(views: SqlProjection, after: Sequence[int], where: str = "") -> None:
    """A task may run only after tasks that exist and can still succeed. They exist
    already, so the new task can never be among their ancestors: no cycle can form
    (`where`: the line of a batch, which names it; else the flag)."""
    for parent_id in after:
        parent = views.get_task(parent_id)
        named = f"{where}: after {parent_id}" if where else f"--after {parent_id}"
        if parent is None:
            raise BadInput(f"{named}: no such task" + (
                " (a task of the same batch has no id before it is submitted: submit it first)"
                if where else ""))
        if parent.status in ("dead", "cancelled"):
            raise BadInput(f"{named}: that task is {parent.status}, so this one could never run")


def check_queue_depth(ws: Workspace, counts: dict[tuple[str, str], int],
                      new: Sequence[TaskSubmitted]) -> None:
    """Backpressure: refuse the whole batch if any queue would hold more open tasks
    than its `max_queue_depth`."""
    adding: dict[str, int] = {}
    for event in new:
        adding[event.queue] = adding.get(event.queue, 0) + 1
    for queue, extra in sorted(adding.items()):
        limit = ws.settings.queue_policy(queue).max_queue_depth
        open_now = sum(counts.get((queue, status), 0) for status in OPEN_STATUSES)
        if open_now + extra > limit:
            raise Refused(f"queue full: {queue!r} holds {open_now} open tasks, max_queue_depth is "
                          f"{limit}; {extra} more refused, nothing submitted")
