"""The projection tables through one session: written by `apply`, read by the
scheduler and the CLI. Every query here touches a bounded number of rows, found by
index, so its cost does not grow with the length of the log."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, fields

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.dialects.sqlite import insert
from sqlmodel import Session

from projections.tables import PROJECTION_TABLES, AgentRow, MetaRow, QueueCountRow, TaskRow
from projections.views import AgentView, TaskView

_TASK_FIELDS = [f.name for f in fields(TaskView)]
_AGENT_FIELDS = [f.name for f in fields(AgentView)]
_TASK_COLUMNS = [getattr(TaskRow, name) for name in _TASK_FIELDS]
_AGENT_COLUMNS = [getattr(AgentRow, name) for name in _AGENT_FIELDS]


def task_from_row(row: Iterable[object]) -> TaskView:
    values = dict(zip(_TASK_FIELDS, row, strict=True))
    values["excluded"] = tuple(json.loads(values["excluded"]))  # type: ignore[arg-type]
    return TaskView(**values)  # type: ignore[arg-type]


def agent_from_row(row: Iterable[object]) -> AgentView:
    values = dict(zip(_AGENT_FIELDS, row, strict=True))
    values["enabled"], values["configured"] = bool(values["enabled"]), bool(values["configured"])
    return AgentView(**values)  # type: ignore[arg-type]


class SqlProjection:
    """The `ProjectionState` over the projection tables of one open session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- writes (called by `apply`) ---------------------------------------------------
    def put_task(self, task: TaskView) -> None:
        values = asdict(task)
        values["excluded"] = json.dumps(list(task.excluded))
        stmt = insert(TaskRow).values(values)
        self.session.execute(stmt.on_conflict_do_update(
            index_elements=[TaskRow.task_id],
            set_={k: stmt.excluded[k] for k in values if k != "task_id"}))

    def put_agent(self, agent: AgentView) -> None:
        values = asdict(agent)
        stmt = insert(AgentRow).values(values)
        self.session.execute(stmt.on_conflict_do_update(
            index_elements=[AgentRow.name],
            set_={k: stmt.excluded[k] for k in values if k != "name"}))

    def bump_count(self, queue: str, status: str, delta: int) -> None:
        stmt = insert(QueueCountRow).values(queue=queue, status=status, count=delta)
        self.session.execute(stmt.on_conflict_do_update(
            index_elements=[QueueCountRow.queue, QueueCountRow.status],
            set_={"count": QueueCountRow.count + delta}))
        if delta < 0:
            self.session.execute(delete(QueueCountRow).where(
                QueueCountRow.queue == queue, QueueCountRow.status == status,
                QueueCountRow.count == 0))

    def set_meta(self, key: str, value: str) -> None:
        stmt = insert(MetaRow).values(key=key, value=value)
        self.session.execute(stmt.on_conflict_do_update(
            index_elements=[MetaRow.key], set_={"value": value}))

    def clear(self) -> None:
        """Empty every projection table (the start of a rebuild)."""
        for table in PROJECTION_TABLES:
            self.session.execute(delete(table))

    # -- reads --------------------------------------------------------------------
    def get_task(self, task_id: int) -> TaskView | None:
        row = self.session.execute(
            select(*_TASK_COLUMNS).where(TaskRow.task_id == task_id)).first()
        return task_from_row(row) if row else None

    def get_agent(self, name: str) -> AgentView | None:
        row = self.session.execute(
            select(*_AGENT_COLUMNS).where(AgentRow.name == name)).first()
        return agent_from_row(row) if row else None

    def all_agents(self) -> list[AgentView]:
        rows = self.session.execute(select(*_AGENT_COLUMNS).order_by(AgentRow.name)).all()
        return [agent_from_row(r) for r in rows]

    def all_tasks(self) -> Iterable[TaskView]:
        rows = self.session.execute(select(*_TASK_COLUMNS).order_by(TaskRow.task_id))
        return (task_from_row(r) for r in rows)

    def counts(self) -> dict[tuple[str, str], int]:
        rows = self.session.execute(select(QueueCountRow.queue, QueueCountRow.status,
                                           QueueCountRow.count)).all()
        return {(q, s): c for q, s, c in rows if c}

    def meta(self) -> dict[str, str]:
        return dict(self.session.execute(select(MetaRow.key, MetaRow.value)).all())

    def last_seq(self) -> int:
        return int(self.meta().get("last_seq", 0))

    def next_task_id(self) -> int:
        return (self.session.execute(select(func.max(TaskRow.task_id))).scalar() or 0) + 1

    def task_by_idempotency_key(self, key: str) -> TaskView | None:
        row = self.session.execute(
            select(*_TASK_COLUMNS).where(TaskRow.idempotency_key == key)).first()
        return task_from_row(row) if row else None

    def tasks(self, queue: str | None = None, status: str | None = None,
              agent: str | None = None, limit: int | None = None) -> list[TaskView]:
        """Tasks in pick order (priority, then submission), filtered."""
        query = select(*_TASK_COLUMNS)
        if queue is not None:
            query = query.where(TaskRow.queue == queue)
        if status is not None:
            query = query.where(TaskRow.status == status)
        if agent is not None:
            query = query.where(TaskRow.agent == agent)
        query = query.order_by(TaskRow.priority.desc(), TaskRow.task_id).limit(limit)
        return [task_from_row(r) for r in self.session.execute(query)]

    def overdue(self, now: str, limit: int) -> list[TaskView]:
        """Assignments not started by their `start_by`, and leases past expiry."""
        query = (select(*_TASK_COLUMNS)
                 .where(TaskRow.status.in_(("assigned", "running")), TaskRow.deadline <= now)
                 .order_by(TaskRow.deadline).limit(limit))
        return [task_from_row(r) for r in self.session.execute(query)]

    def candidates(self, queue: str, now: str, limit: int,
                   assignee: str | None = None) -> list[TaskView]:
        """The best `limit` queued tasks of `queue` that may start at `now`: the
        unassigned ones, or those directed at `assignee`."""
        due = or_(TaskRow.not_before.is_(None), TaskRow.not_before <= now)
        who = TaskRow.assignee.is_(None) if assignee is None else TaskRow.assignee == assignee
        query = (select(*_TASK_COLUMNS)
                 .where(and_(TaskRow.queue == queue, TaskRow.status == "queued", who, due))
                 .order_by(TaskRow.priority.desc(), TaskRow.task_id).limit(limit))
        return [task_from_row(r) for r in self.session.execute(query)]

