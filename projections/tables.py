"""The projection tables, derived from the log and rebuildable from it at any time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Index
from sqlmodel import Field, SQLModel

from eventlog.storage.types import Int64
from projections.views import PROJECTION_SCHEMA

__all__ = ["PROJECTION_SCHEMA", "PROJECTION_TABLES", "AgentRecordRow", "AgentRow", "CapacityRow", "MetaRow",
           "OutcomeRow", "ProjectionSchemaRow", "QueueCountRow", "TaskRow", "TokenRow", "create_tables",
           "drop_tables"]


class TaskRow(SQLModel, table=True):
    """`TaskView` as a row. The indexes serve the tick: the best queued candidates per
    queue, and the assignments and leases whose deadline has passed."""

    __tablename__ = "tasks"

    task_id: int = Field(primary_key=True, sa_type=Int64, sa_column_kwargs={"autoincrement": False})
    queue: str
    title: str
    priority: int = Field(sa_type=Int64)
    assignee: str | None = None
    payload: str
    status: str
    attempt: int
    attempt_floor: int = 0
    max_attempts: int
    agent: str | None = None
    not_before: str | None = None
    deadline: str | None = None
    token_hash: str | None = None
    pid: int | None = Field(default=None, sa_type=Int64)
    host: str | None = None
    log_path: str | None = None
    excluded: str  # JSON list of agent names
    cancelling: bool = False
    waiting_on: str = "[]"  # JSON list of task ids
    blocks: str = "[]"  # JSON list of task ids
    unblocks: int = 0  # len(blocks), for the pick order
    doomed_by: int | None = Field(default=None, sa_type=Int64)
    last_error: str | None = None
    idempotency_key: str | None = None
    task_type: str | None = None
    submitted_seq: int = Field(sa_type=Int64)
    submitted_at: str
    updated_at: str
    ready_at: str | None = None
    assigned_at: str | None = None
    started_at: str | None = None
    last_agent: str | None = None
    dead_reason: str | None = None
    progress_percent: float | None = None
    progress_message: str | None = None
    progress_at: str | None = None
    payload_bytes: int = Field(default=0, sa_type=Int64)
    requires: str = "[]"  # JSON list of capability names
    due: str | None = None
    due_missed_at: str | None = None
    due_watch: str | None = None  # `due` while the task is open, for the indexes below
    machine: str | None = None


_TASKS = TaskRow.__table__  # type: ignore[attr-defined]
# priority DESC, task_id ASC: the pick order, so the top candidates are read straight
# off the index with no sort over the backlog
Index("ix_tasks_pick", _TASKS.c.queue, _TASKS.c.status, _TASKS.c.assignee, _TASKS.c.priority.desc(),
      _TASKS.c.unblocks.desc(), _TASKS.c.task_id)
Index("ix_tasks_deadline", _TASKS.c.status, _TASKS.c.deadline)
Index("ix_tasks_age", _TASKS.c.queue, _TASKS.c.status, _TASKS.c.ready_at)  # ageing counts from ready_at


def _only_set(name: str, *columns: Any) -> Index:
    """An index of the rows whose first column is set: a task that is only waiting
    (no agent, no deadline, no key, not doomed) is in none of them, so a submit writes
    four index pages fewer. Every query on such a column compares it (`=`, `<=`, `IN`,
    `IS NOT NULL`), which tells both engines the rows are in the index."""
    where = columns[0].isnot(None)
    return Index(name, *columns, sqlite_where=where, postgresql_where=where)


_only_set("ix_tasks_due", _TASKS.c.deadline)  # overdue holding tasks, in deadline order
# an agent's tasks of one status in pick order: a claim takes the best one it holds
# straight off the index, no sort
_only_set("ix_tasks_agent", _TASKS.c.agent, _TASKS.c.status, _TASKS.c.priority.desc(),
          _TASKS.c.unblocks.desc(), _TASKS.c.task_id)
_only_set("ix_tasks_idempotency", _TASKS.c.idempotency_key)
_only_set("ix_tasks_doomed_by", _TASKS.c.doomed_by)  # waiting tasks that can never run
# due times: the earliest of a queue's queued tasks (the tick's due bands); open tasks
# past due (health); those whose miss is not recorded yet (the tick records it once).
# Partial: only tasks with a due time are in them.
Index("ix_tasks_due_by", _TASKS.c.queue, _TASKS.c.status, _TASKS.c.due,
      sqlite_where=_TASKS.c.due.isnot(None), postgresql_where=_TASKS.c.due.isnot(None))
Index("ix_tasks_due_open", _TASKS.c.due_watch, sqlite_where=_TASKS.c.due_watch.isnot(None),
      postgresql_where=_TASKS.c.due_watch.isnot(None))
Index("ix_tasks_due_unmarked", _TASKS.c.due_watch,
      sqlite_where=_TASKS.c.due_watch.isnot(None) & _TASKS.c.due_missed_at.is_(None),
      postgresql_where=_TASKS.c.due_watch.isnot(None) & _TASKS.c.due_missed_at.is_(None))
# the running attempts of one host's exec wrappers (a tick or a claim looks for dead
# ones): only rows with a host, so a submit or a pull worker's claim never writes it
Index("ix_tasks_host", _TASKS.c.host, _TASKS.c.status, sqlite_where=_TASKS.c.host.isnot(None),
      postgresql_where=_TASKS.c.host.isnot(None))


class AgentRow(SQLModel, table=True):
    """`AgentView` as a row."""

    __tablename__ = "agents"

    name: str = Field(primary_key=True)
    type: str = Field(index=True)
    capacity: int
    enabled: bool
    configured: bool
    command: str | None = None
    timeout_seconds: float | None = None
    non_retryable_exit_codes: str = "[]"
    assigned: int = 0
    running: int = 0
    out_of_service: str | None = None
    capabilities: str = "[]"  # JSON list
    weight: float = 1.0
    hours: str = "[]"  # JSON list of availability windows


class QueueCountRow(SQLModel, table=True):
    """How many tasks of a queue are in each status, kept so `status` reads a handful
    of rows however long the log grows."""

    __tablename__ = "queue_counts"

    queue: str = Field(primary_key=True)
    status: str = Field(primary_key=True)
    count: int = Field(sa_type=Int64)


class AgentRecordRow(SQLModel, table=True):
    """How an agent's attempts at one type of task ended, for affinity."""

    __tablename__ = "agent_records"

    agent: str = Field(primary_key=True)
    task_type: str = Field(primary_key=True)
    succeeded: int = Field(default=0, sa_type=Int64)
    failed: int = Field(default=0, sa_type=Int64)


class OutcomeRow(SQLModel, table=True):
    """`Outcome` as a row: one per ended attempt and per dead-lettered task. Metrics read
    a time window of these through `ix_outcomes_ended`, so their cost follows the work
    done in the window, not the length of the log."""

    __tablename__ = "outcomes"
    __table_args__ = (
        Index("ix_outcomes_ended", "ended_ts"),
        Index("ix_outcomes_kind", "outcome", "ended_ts"),
    )

    seq: int = Field(primary_key=True, sa_type=Int64, sa_column_kwargs={"autoincrement": False})
    task_id: int = Field(sa_type=Int64)
    queue: str
    agent: str | None = None
    attempt: int
    outcome: str
    detail: str | None = None
    ready_ts: float | None = None
    assigned_ts: float | None = None
    started_ts: float | None = None
    ended_ts: float
    cpu_seconds: float | None = None
    peak_rss_bytes: int | None = Field(default=None, sa_type=Int64)
    reason: str | None = None  # a failure's reason (TaskFailed.reason)


class CapacityRow(SQLModel, table=True):
    """`CapacityChange` as a row: the slots each agent offered from when on."""

    __tablename__ = "capacity_changes"

    seq: int = Field(primary_key=True, sa_type=Int64, sa_column_kwargs={"autoincrement": False})
    agent: str = Field(primary_key=True)
    type: str
    slots: int
    at_ts: float


class TokenRow(SQLModel, table=True):
    """`TokenView` as a row. A request's bearer token is looked up by its hash among
    the live rows (`ix_tokens_live`: revoked_at NULL), and a create or revoke finds the
    live row of a name the same way."""

    __tablename__ = "tokens"
    __table_args__ = (Index("ix_tokens_live", "revoked_at", "name"),)

    seq: int = Field(primary_key=True, sa_type=Int64, sa_column_kwargs={"autoincrement": False})
    name: str
    role: str
    agent: str | None = None
    token_hash: str
    created_at: str
    created_by: str
    revoked_at: str | None = None
    revoked_by: str | None = None
    host: str | None = None


class MetaRow(SQLModel, table=True):
    """Projection bookkeeping: `last_seq` (the checkpoint) and `config_hash`."""

    __tablename__ = "projection_meta"

    key: str = Field(primary_key=True)
    value: str


class ProjectionSchemaRow(SQLModel, table=True):
    """Which shape of the projection tables this database holds. When the code's
    `PROJECTION_SCHEMA` differs, the tables are dropped and rebuilt from the log: they
    are derived, so a new shape needs no migration, only a replay."""

    __tablename__ = "projection_schema"

    version: int = Field(primary_key=True)


PROJECTION_TABLES = [TaskRow.__table__, AgentRow.__table__, QueueCountRow.__table__,
                     AgentRecordRow.__table__, OutcomeRow.__table__, CapacityRow.__table__,
                     TokenRow.__table__, MetaRow.__table__]


def create_tables(bind: Engine | Connection) -> None:
    """Create the projection tables if they are missing."""
    SQLModel.metadata.create_all(bind, tables=[*PROJECTION_TABLES, ProjectionSchemaRow.__table__])


def drop_tables(bind: Engine | Connection) -> None:
    SQLModel.metadata.drop_all(bind, tables=PROJECTION_TABLES)
