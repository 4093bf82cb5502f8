"""Use cases that read tasks: list (in pick order, with their figures) and show (one
task with its history). The writes are in `actions`."""

# (no `from __future__ import annotations`: real annotations spare pydantic parsing
# strings when a quick command builds its request class)

from typing import Any, NamedTuple, Self

from pydantic import model_validator

from eventlog.errors import BadInput
from eventlog.store import Recorded
from projections.views import TaskView
from scheduler import queries
from scheduler.usecases.base import Request
from scheduler.workspace import Workspace


class ListRequest(Request):
    """Which tasks: of one queue, one status, held by or directed at one agent, or
    directed at none; at most `limit`."""

    where = "tasks"
    queue: str | None = None
    status: str | None = None
    limit: int | None = None
    agent: str | None = None
    unassigned: bool = False

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if self.limit is not None and self.limit < 1:  # (the CLI's --limit says so itself)
            raise BadInput(f"--limit must be at least 1, not {self.limit}")
        return self


class TaskList(NamedTuple):
    """Tasks in pick order, each with its figures (place, effective priority, waited,
    estimated start and completion, overdue, unplaceable)."""

    tasks: list[TaskView]
    figures: dict[int, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"tasks": [queries.task_dict(t) | self.figures[t.task_id] for t in self.tasks]}


def list_tasks(ws: Workspace, request: ListRequest) -> TaskList:
    """The tasks the request selects, in the order they will be picked."""
    found, figures = queries.task_listing(
        ws, request.queue, None if request.status is None else [request.status], request.limit,
        request.agent, request.unassigned)
    return TaskList(found, figures)


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


