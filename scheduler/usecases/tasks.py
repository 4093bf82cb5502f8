"""Use cases that read tasks: list (in pick order, with their figures) and show (one
task with its history). The writes are in `actions`."""

# (no `from __future__ import annotations`: real annotations spare pydantic parsing
# strings when a quick command builds its request class)

from typing import Any, NamedTuple, Self

from pydantic import model_validator

from eventlog.errors import BadInput
from eventlog.store import Recorded
from eventlog.values import INT64_MAX, text_problem
from projections.views import TaskView
from scheduler.reads import queries
from scheduler.usecases.base import Request
from scheduler.workspace import Workspace


class ListRequest(Request):
    """Which tasks: of one queue, one status, held by or directed at one agent, or
    directed at none, with some text in the title; at most `limit`, from `cursor` on
    (the `next_cursor` of the page before: a place in pick order, so a task whose place
    changed between two reads may be listed twice or not at all)."""

    where = "tasks"
    queue: str | None = None
    title: str | None = None  # only tasks whose title holds this text (ASCII letters in any case)
    status: str | None = None
    limit: int | None = None
    agent: str | None = None
    unassigned: bool = False
    cursor: str | None = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.limit is not None and self.limit < 1:  # (the CLI's --limit says so itself)
            raise BadInput(f"--limit must be at least 1, not {self.limit}")
        if self.title is not None and (problem := text_problem(self.title)) is not None:
            raise BadInput(f"--title: {problem}")
        if self.cursor is not None and not (self.cursor.isascii() and self.cursor.isdigit()
                                            and len(self.cursor) < 19):
            raise BadInput(f"--cursor {self.cursor[:40]!r} is not a cursor a listing gave")
        return self

    @property
    def offset(self) -> int:
        return int(self.cursor) if self.cursor else 0

    @property
    def paged(self) -> bool:
        """Whether the answer says where the next page starts (a limit or cursor was given)."""
        return self.limit is not None or self.cursor is not None


class TaskList(NamedTuple):
    """Tasks in pick order, each with its figures (place, effective priority, waited,
    estimated start and completion, overdue, unplaceable)."""

    tasks: list[TaskView]
    figures: dict[int, dict[str, Any]]
    paged: bool = False  # with `next_cursor` (None: this page is the last)
    next_cursor: str | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "tasks": [queries.task_dict(t) | self.figures[t.task_id] for t in self.tasks]}
        if self.paged:
            document["next_cursor"] = self.next_cursor
        return document


def list_tasks(ws: Workspace, request: ListRequest) -> TaskList:
    """The tasks the request selects, in the order they will be picked: a page of them
    when it gives a limit or a cursor (one more is read, to know whether a next page
    exists; the figures of a page are those of the whole listing)."""
    offset, limit = request.offset, request.limit
    # (a read of more than 2**63 - 1 rows, more than a database can bind, is a read of all)
    read = None if limit is None or offset + limit >= INT64_MAX else offset + limit + 1
    found, figures = queries.task_listing(
        ws, request.queue, None if request.status is None else [request.status], read,
        request.agent, request.unassigned, request.title)
    if not request.paged:
        return TaskList(found, figures)
    end = None if limit is None else offset + limit
    more = end is not None and len(found) > end
    return TaskList(found[offset:end], figures, True, str(end) if more else None)


class TaskDetail(NamedTuple):
    """One task (with the result its last successful attempt reported) and its events."""

    task: TaskView
    events: list[Recorded]

    @property
    def document(self) -> dict[str, Any]:
        return queries.task_dict(self.task) | {"result": queries.result_of(self.events)}

    def to_json(self) -> dict[str, Any]:
        return {"task": self.document, "events": [queries.event_dict(e) for e in self.events]}


def show(ws: Workspace, task_id: int) -> TaskDetail:
    """One task and its whole history (NotFound if there is none)."""
    task, events = queries.show(ws, task_id)
    return TaskDetail(task, events)


