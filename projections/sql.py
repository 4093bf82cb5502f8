"""The projection tables through one session: written by `apply`, read by the
scheduler and the CLI. Every query here touches a bounded number of rows, found by
index, so its cost does not grow with the length of the log."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from eventlog.errors import MEND_DAMAGE, DamagedProjection
from eventlog.frozen import constructor
from eventlog.storage.port import Lookup, Read, Row, Term, Transaction, Unindexed
from projections.views import (
    PROJECTION_SCHEMA,
    SHAPE_KEY,
    AgentView,
    CapacityChange,
    Outcome,
    TaskView,
    TokenView,
    due_watch,
)

if TYPE_CHECKING:

    from projections.apply import MemoryProjection

# The reads of the quick commands (status, tasks, show, the worker protocol) go
# through the port's driver-level `rows`; the other queries are written with
# SQLAlchemy's expression language, which (with the tables) is loaded on first use.

_TASK_FIELDS = [f.name for f in fields(TaskView)]
_TUPLE_FIELDS = ("excluded", "waiting_on", "blocks", "requires")  # stored as JSON lists
_AGENT_TUPLE_FIELDS = ("capabilities", "hours")
_AGENT_FIELDS = [f.name for f in fields(AgentView)]
_OUTCOME_FIELDS = [f.name for f in fields(Outcome)]
_CAPACITY_FIELDS = [f.name for f in fields(CapacityChange)]
_TOKEN_FIELDS = [f.name for f in fields(TokenView)]
# a view's row, its fields in order (all plain values: `dataclasses.astuple`, which copies
# deeply, took 14 us an outcome; this takes half a microsecond)
_outcome_row = attrgetter(*_OUTCOME_FIELDS)
_capacity_row = attrgetter(*_CAPACITY_FIELDS)
_token_row = attrgetter(*_TOKEN_FIELDS)
_PAYLOAD_AT = _TASK_FIELDS.index("payload")
# the task columns of a listing: the payload left unread
_LISTED_FIELDS = [name for name in _TASK_FIELDS if name != "payload"]
PICK_ORDER_COLUMNS = ("-priority", "-unblocks", "task_id")
# the projection's values (every write transaction asks for them ahead: `Workspace.write`)
META = Read("projection_meta", ("key", "value"))

_TASK_TUPLES_AT = tuple(_TASK_FIELDS.index(name) for name in _TUPLE_FIELDS)
_CANCELLING_AT = _TASK_FIELDS.index("cancelling")
_task_values = attrgetter(*_TASK_FIELDS)
_new_task, _new_agent = constructor(TaskView), constructor(AgentView)


def _json_tuple(text: object) -> tuple[object, ...]:
    """A stored JSON list as a tuple; most are empty, which takes no parse."""
    return () if text == "[]" else tuple(json.loads(text))  # type: ignore[arg-type]


def task_from_row(row: Iterable[object]) -> TaskView:
    values = list(row)
    if len(values) != len(_TASK_FIELDS):
        raise ValueError(f"a task row has {len(values)} columns, not {len(_TASK_FIELDS)}")
    for at in _TASK_TUPLES_AT:
        try:
            values[at] = _json_tuple(values[at])
        except (TypeError, ValueError) as e:
            raise DamagedProjection(
                f"the row of task {values[0]} in the tasks table is damaged ({_TASK_FIELDS[at]} is not a "
                f"JSON list): {MEND_DAMAGE}") from e
    values[_CANCELLING_AT] = bool(values[_CANCELLING_AT])  # SQLite stores booleans as 0/1
    return _new_task(*values)


def agent_from_row(row: Iterable[object]) -> AgentView:
    values = dict(zip(_AGENT_FIELDS, row, strict=True))
    values["enabled"], values["configured"] = bool(values["enabled"]), bool(values["configured"])
    for name in _AGENT_TUPLE_FIELDS:
        try:
            values[name] = _json_tuple(values[name])
        except (TypeError, ValueError) as e:
            raise DamagedProjection(
                f"the row of agent {values['name']} in the agents table is damaged ({name} is not a "
                f"JSON list): {MEND_DAMAGE}") from e
    return _new_agent(**values)


def damaged_meta(key: str, value: str) -> DamagedProjection:
    """A `projection_meta` value that is not what sched writes there (a damaged file)."""
    return DamagedProjection(f"the projections' {key} value is damaged ({value[:40]!r}): {MEND_DAMAGE}")


def meta_json(key: str, value: str) -> Any:
    """A JSON value of `projection_meta` (the pause, a gate), parsed."""
    try:
        return json.loads(value)
    except ValueError as e:
        raise damaged_meta(key, value) from e


def _json_list(values: tuple[object, ...]) -> str:
    return json.dumps(list(values)) if values else "[]"


def _task_params(task: TaskView) -> tuple[object, ...]:
    values = list(_task_values(task))
    for at in _TASK_TUPLES_AT:
        values[at] = _json_list(values[at])  # type: ignore[arg-type]
    return (*values, len(task.blocks), due_watch(task))


def _agent_params(agent: AgentView) -> tuple[object, ...]:
    return tuple(_json_list(getattr(agent, name)) if name in _AGENT_TUPLE_FIELDS else getattr(agent, name)
                 for name in _AGENT_FIELDS)


_TASK_ROW = (*_TASK_FIELDS, "unblocks", "due_watch")


# table -> (its key columns, its other columns), as `flush` writes them
ROW_SHAPES: dict[str, tuple[list[str], list[str]]] = {
    "tasks": (["task_id"], [*_TASK_FIELDS[1:], "unblocks", "due_watch"]),
    "agents": (["name"], _AGENT_FIELDS[1:]),
    "queue_counts": (["queue", "status"], ["count"]),
    "agent_records": (["agent", "task_type"], ["succeeded", "failed"]),
    "outcomes": (["seq"], _OUTCOME_FIELDS[1:]),
    "capacity_changes": (["seq", "agent"], [n for n in _CAPACITY_FIELDS if n not in ("seq", "agent")]),
    "tokens": (["seq"], _TOKEN_FIELDS[1:]),
    "projection_meta": (["key"], ["value"]),
}
Key = tuple[object, ...]  # a row's key columns (or its other columns)


class DerivedRows(Mapping[Key, Key]):
    """The rows a table keyed by its first column must hold, each derived when asked
    for from the view of that key in `views` (`row`: the view's row, key first): a
    table's worth of rows is never held beside the views."""

    def __init__(self, views: Mapping[Any, Any], row: Callable[[Any], tuple[object, ...]]) -> None:
        self._views, self._row = views, row

    def __getitem__(self, key: Key) -> Key:
        if len(key) != 1:
            raise KeyError(key)
        return tuple(self._row(self._views[key[0]])[1:])

    def __iter__(self) -> Iterator[Key]:
        return ((key,) for key in self._views)

    def __len__(self) -> int:
        return len(self._views)


def wanted_rows(state: MemoryProjection) -> dict[str, Mapping[Key, Key]]:
    """The rows `flush` would write for a projection state held in memory: what the
    tables must hold, column for column (derived columns such as `unblocks` included),
    key -> other columns, in the order of `ROW_SHAPES`."""
    def split(table: str, params: tuple[object, ...], names: list[str]) -> tuple[Key, Key]:
        keys, others = ROW_SHAPES[table]
        value = dict(zip(names, params, strict=True))
        return tuple(value[k] for k in keys), tuple(value[c] for c in others)

    return {
        "tasks": DerivedRows(state.tasks, _task_params),
        "agents": DerivedRows(state.agents, _agent_params),
        "queue_counts": {(q, st): (n,) for (q, st), n in state.counts.items() if n},
        "agent_records": {key: pair for key, pair in state.records.items()},
        "outcomes": DerivedRows(state.outcomes, _outcome_row),
        "capacity_changes": dict(split("capacity_changes", _capacity_row(c), _CAPACITY_FIELDS)
                                 for c in state.capacity.values()),
        "tokens": DerivedRows(state.tokens, _token_row),
        "projection_meta": {(k,): (v,) for k, v in {**state.meta, SHAPE_KEY: str(PROJECTION_SCHEMA)}.items()},
    }


def _listing(queue: str | None, status: str | None, agent: str | None, title: str | None) -> list[Any]:
    """The terms of a task listing's read (`title`: the text anywhere in the title)."""
    where: list[Any] = [(column, "=", value) for column, value in (
        ("queue", queue), ("status", status), ("agent", agent)) if value is not None]
    if title is not None:
        where.append(("title", "contains", title))
    return where


# Reads as values (`Read`: the arguments of `Transaction.rows`), for the reads that a
# command can name before it makes them, so that it can ask for them ahead
# (`Workspace.write`'s and `read`'s `prefetch`); the methods below make the same reads.

def task_read(task_id: int) -> Read:
    """`get_task`'s point read, as PostgreSQL's `fetch_one` makes it (as this `rows`
    read, so that it can be asked for ahead; SQLite needs no read ahead)."""
    return Read("tasks", tuple(_TASK_FIELDS), (("task_id", "=", task_id),))


NEXT_TASK_ID = Read("tasks", ("max(task_id)",))
COUNTS = Read("queue_counts", ("queue", "status", "count"))


def live_token_read(token_hash: str) -> Read:
    """The live tokens whose hash is `token_hash` (`live_token_hashed`)."""
    return Read("tokens", tuple(_TOKEN_FIELDS), (("revoked_at", "is", None), ("token_hash", "=", token_hash)),
                ("seq",))


def agent_read(name: str) -> Read:
    """`get_agent`'s point read, as PostgreSQL's `fetch_one` makes it (see `task_read`)."""
    return Read("agents", tuple(_AGENT_FIELDS), (("name", "=", name),))


def task_agent_read(task_id: int) -> Read:
    """`agent_read` of the agent that holds task `task_id`, named before the task is read
    (a `Lookup`): the agent an attempt's end frees a slot of."""
    holder = Lookup("tasks", "agent", (("task_id", "=", task_id),))
    return Read("agents", tuple(_AGENT_FIELDS), (("name", "=", holder),))


ALL_AGENTS = Read("agents", tuple(_AGENT_FIELDS), order=("name",))


def records_read(agents: Iterable[str] | None = None) -> Read:
    """`records`' read: of some agents, or all."""
    where: tuple[Term, ...] = () if agents is None else (("agent", "in", tuple(agents)),)
    return Read("agent_records", ("agent", "task_type", "succeeded", "failed"), where)


def listing_read(queue: str | None = None, status: str | None = None, agent: str | None = None,
                 limit: int | None = None, title: str | None = None) -> Read:
    """`tasks`' read."""
    return Read("tasks", tuple(_LISTED_FIELDS), tuple(_listing(queue, status, agent, title)),
                PICK_ORDER_COLUMNS, limit)


def candidates_read(queue: str, now: object, limit: int, who: Term = ("assignee", "is", None),
                    ready_by: str | None = None, due_by: str | None = None) -> Read:
    """`candidates`' read of one agent's tasks (`who`: ("assignee", "=", name)) or of
    the unassigned ones. `now`: the time as text, or `WRITE_TIME` asked for ahead."""
    where: list[Term] = [("queue", "=", queue), ("status", "=", "queued"), who,
                         ("not_before", "<= or null", now)]
    if ready_by is not None:
        # unindexed: filter while reading ix_tasks_pick in order; as a plain term SQLite
        # would prefer the range of ix_tasks_age and sort every older queued task
        where.append((Unindexed("ready_at"), "<=", ready_by))
    if due_by is not None:  # unindexed, as ready_at: read ix_tasks_pick in order, filtered
        where.append((Unindexed("due"), "<=", due_by))
    # ordered by `assignee` first, which the terms fix: PostgreSQL reads ix_tasks_pick
    # in order only when every column before the pick order is fixed by an `=`, and
    # `IS NULL` does not count, so without it it sorts every queued task of the queue
    return Read("tasks", tuple(_TASK_FIELDS), tuple(where), ("assignee", *PICK_ORDER_COLUMNS), limit)


def any_queued_read(queue: str) -> Read:
    # the first entry of the index, no order (in pick order SQLite would sort every
    # queued task of the queue first)
    return Read("tasks", ("task_id",), (("queue", "=", queue), ("status", "=", "queued")), limit=1)


def first_queued_read(queue: str, column: str) -> Read:
    """The lowest `column` of the queued tasks of `queue` that have one, read as the
    first row of an index range in that order: not min(), which PostgreSQL reads as a
    scan of the whole range when its statistics say the range is small (a table just
    filled, before its first ANALYZE)."""
    where: tuple[Term, ...] = (("queue", "=", queue), ("status", "=", "queued"), (column, "is not", None))
    return Read("tasks", (column,), where, (column,), 1)


def directed_at_read(queue: str) -> Read:
    return Read("tasks", ("assignee",), (("queue", "=", queue), ("status", "=", "queued"),
                                         ("assignee", "is not", None)), group=("assignee",))


def doomed_read(limit: int) -> Read:
    # status unindexed: read ix_tasks_doomed_by in order, not every waiting task by status
    where: tuple[Term, ...] = (("doomed_by", "is not", None),
                               (Unindexed("status"), "in", ("awaiting_approval", "blocked")))
    return Read("tasks", tuple(_TASK_FIELDS), where, ("doomed_by", "task_id"), limit)


def _holding_terms(queue: str | None) -> tuple[Term, ...]:
    # status unindexed: one ordered range of ix_tasks_due (only holding tasks have a
    # deadline), rather than two ranges of ix_tasks_deadline and a sort; queue
    # unindexed: still one ordered range of ix_tasks_due, filtered
    where: tuple[Term, ...] = ((Unindexed("status"), "in", ("assigned", "running")),)
    return where if queue is None else (*where, (Unindexed("queue"), "=", queue))


def first_deadline_read(queue: str | None) -> Read:
    """The earliest deadline of the assigned and running tasks (of one queue, or all)."""
    where = (*_holding_terms(queue), ("deadline", "is not", None))
    return Read("tasks", ("deadline",), where, ("deadline",), 1)


def running_on_read(host: str, queue: str | None) -> Read:
    where: tuple[Term, ...] = (("status", "=", "running"), ("host", "=", host))
    if queue is not None:  # unindexed: a range of ix_tasks_host, not of the whole queue
        where = (*where, (Unindexed("queue"), "=", queue))
    return Read("tasks", tuple(_TASK_FIELDS), where)


class SqlProjection:
    """The `ProjectionState` over the projection tables of one open session.

    Writes collect in memory and reach the tables in a few `executemany` calls at
    `flush()`; reads see the pending writes (point reads check them first, queries
    flush before they run). So applying a batch of events costs a handful of
    statements, not several per event."""

    def __init__(self, txn: Transaction) -> None:
        self.txn = txn
        self._tasks: dict[int, TaskView] = {}
        self._agents: dict[str, AgentView] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._records: dict[tuple[str, str, str], int] = {}
        self._meta: dict[str, str] = {}
        self._stored_meta: dict[str, str] | None = None  # read once per transaction
        # rows as they are in the table, known without asking it again: those the last
        # flush wrote and those point reads, candidate reads and `all_agents` found since
        # (a change drops its row): the agents and the chosen tasks of a tick or a claim,
        # read again when their events are folded
        self._known_tasks: dict[int, TaskView] = {}
        self._known_agents: dict[str, AgentView] = {}
        self._outcomes: list[Outcome] = []
        self._capacity: list[CapacityChange] = []
        self._tokens: dict[int, TokenView] = {}

    @property
    def session(self) -> Any:
        """The SQLAlchemy session of the transaction (opened on first use)."""
        return self.txn.session

    # -- writes (called by `apply`) ---------------------------------------------------
    def put_task(self, task: TaskView) -> None:
        if task.payload is None:  # a view from a listing: storing it would lose the payload
            raise ValueError(f"task {task.task_id}: a listed view (payload not loaded) cannot be stored")
        self._tasks[task.task_id] = task
        self._known_tasks.pop(task.task_id, None)

    def put_agent(self, agent: AgentView) -> None:
        self._agents[agent.name] = agent
        self._known_agents.pop(agent.name, None)

    def bump_count(self, queue: str, status: str, delta: int) -> None:
        key = (queue, status)
        self._counts[key] = self._counts.get(key, 0) + delta

    def bump_record(self, agent: str, task_type: str, outcome: str) -> None:
        key = (agent, task_type, outcome)
        self._records[key] = self._records.get(key, 0) + 1

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def add_outcome(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)

    def add_capacity(self, change: CapacityChange) -> None:
        self._capacity.append(change)

    def put_token(self, token: TokenView) -> None:
        self._tokens[token.seq] = token

    def flush(self) -> None:
        """Write the pending changes to the tables (inside the open transaction)."""
        if not (self._tasks or self._agents or self._counts or self._records or self._meta
                or self._outcomes or self._capacity or self._tokens):
            return
        txn = self.txn
        txn.upsert("tasks", _TASK_ROW, ("task_id",), [_task_params(t) for t in self._tasks.values()])
        txn.upsert("agents", _AGENT_FIELDS, ("name",), [_agent_params(a) for a in self._agents.values()])
        changed = [(q, s, d) for (q, s), d in self._counts.items() if d]
        if changed:
            txn.upsert("queue_counts", ("queue", "status", "count"), ("queue", "status"), changed,
                       add=("count",))
            if any(d < 0 for _q, _s, d in changed):  # only a decrease can reach zero
                txn.delete("queue_counts", [("count", "=", 0)])
        txn.upsert("agent_records", ("agent", "task_type", "succeeded", "failed"), ("agent", "task_type"),
                   [(agent, task_type, n if outcome == "succeeded" else 0, n if outcome == "failed" else 0)
                    for (agent, task_type, outcome), n in self._records.items()],
                   add=("succeeded", "failed"))
        txn.upsert("projection_meta", ("key", "value"), ("key",), list(self._meta.items()))
        if self._stored_meta is not None:
            self._stored_meta.update(self._meta)
        txn.insert("outcomes", _OUTCOME_FIELDS, [_outcome_row(o) for o in self._outcomes])
        txn.insert("capacity_changes", _CAPACITY_FIELDS, [_capacity_row(c) for c in self._capacity])
        txn.upsert("tokens", _TOKEN_FIELDS, ("seq",), [_token_row(t) for t in self._tokens.values()])
        self._known_tasks, self._known_agents = self._tasks, self._agents  # (bounded by one flush)
        self._forget_pending()

    def _forget_pending(self) -> None:
        self._tasks, self._agents, self._counts, self._records, self._meta = {}, {}, {}, {}, {}
        self._outcomes, self._capacity, self._tokens = [], [], {}

    def stored_rows(self, table: str, *, keys_only: bool = False) -> Iterator[Row]:
        """The rows of a projection table as stored, column for column, nothing parsed
        (a damaged value is compared, not crashed on), in key order, streamed."""
        self.flush()
        keys, others = ROW_SHAPES[table]
        return self.txn.fetch_all(table, keys if keys_only else keys + others, order=keys)

    def clear(self) -> None:
        """Empty every projection table (the start of a rebuild)."""
        self._forget_pending()
        self._stored_meta, self._known_tasks, self._known_agents = {}, {}, {}
        for table in ROW_SHAPES:  # every projection table
            self.txn.delete(table, ())

    # -- reads --------------------------------------------------------------------
    def get_task(self, task_id: int) -> TaskView | None:
        known = self._tasks.get(task_id) or self._known_tasks.get(task_id)
        if known is not None:
            return known
        row = self.txn.fetch_one("tasks", _TASK_FIELDS, "task_id", task_id)
        if row is None:
            return None
        task = self._known_tasks[task_id] = task_from_row(row)
        return task

    def get_agent(self, name: str) -> AgentView | None:
        known = self._agents.get(name) or self._known_agents.get(name)
        if known is not None:
            return known
        row = self.txn.fetch_one("agents", _AGENT_FIELDS, "name", name)
        if row is None:
            return None
        agent = self._known_agents[name] = agent_from_row(row)
        return agent

    def all_agents(self) -> list[AgentView]:
        self.flush()
        agents = [agent_from_row(r) for r in self.txn.rows(*ALL_AGENTS)]
        self._known_agents.update((a.name, a) for a in agents)
        return agents

    def counts(self) -> dict[tuple[str, str], int]:
        self.flush()
        rows = self.txn.rows(*COUNTS)
        return {(q, s): c for q, s, c in rows if c}

    def records(self, agents: Iterable[str] | None = None) -> dict[tuple[str, str], tuple[int, int]]:
        """Success records: (agent, task type) -> (succeeded, failed), for some agents or all."""
        self.flush()
        found = self.txn.rows(*records_read(agents))
        return {(a, t): (s, f) for a, t, s, f in found}  # type: ignore[misc]

    def outcomes(self, since_ts: float | None = None, kinds: Iterable[str] | None = None) -> list[Outcome]:
        """Ended attempts, in the order they ended: those ended at or after `since_ts`
        (a range of `ix_outcomes_ended`, or of `ix_outcomes_kind` with `kinds`), or all."""
        self.flush()
        where: list[Any] = []
        if since_ts is not None:
            where.append(("ended_ts", ">=", since_ts))
        if kinds is not None:
            where.append(("outcome", "in", list(kinds)))
        found = self.txn.rows("outcomes", _OUTCOME_FIELDS, where, ("ended_ts", "seq"))
        return [Outcome(*r) for r in found]  # type: ignore[arg-type]

    def latest_outcomes(self, count: int, kinds: Iterable[str]) -> list[Outcome]:
        """The last `count` outcomes of some kinds, newest first: read backwards by seq
        (kept off `ix_outcomes_kind`, which would sort all its rows of those kinds)."""
        self.flush()
        found = self.txn.rows("outcomes", _OUTCOME_FIELDS, [(Unindexed("outcome"), "in", list(kinds))],
                              ("-seq",), count)
        return [Outcome(*r) for r in found]  # type: ignore[arg-type]

    def count_outcomes(self, since_ts: float, kinds: Iterable[str], queue: str | None = None) -> int:
        """How many attempts of these kinds (of one queue, or all) ended at or after `since_ts`."""
        self.flush()
        where: list[Any] = [("outcome", "in", list(kinds)), ("ended_ts", ">=", since_ts)]
        if queue is not None:
            where.append(("queue", "=", queue))
        return self.txn.rows("outcomes", ("count(*)",), where)[0][0] or 0  # type: ignore[return-value]

    def outcomes_by_agent(self, since_ts: float) -> dict[tuple[str | None, str], tuple[int, int]]:
        """Of the attempts that ended at or after `since_ts`: per (agent, outcome), how
        many and the seq of the latest (by `ix_outcomes_ended`: the window's rows; a
        dead letter's agent is None). A failure whose command could not start is its own
        outcome here, `spawn_error`, not `failed`."""
        self.flush()
        rows = self.txn.rows("outcomes", ("agent", "outcome", "reason", "count(*)", "max(seq)"),
                             [("ended_ts", ">=", since_ts)], group=("agent", "outcome", "reason"))
        found: dict[tuple[str | None, str], tuple[int, int]] = {}
        for agent, outcome, reason, count, seq in rows:
            key = (agent, "spawn_error" if outcome == "failed" and reason == "spawn_error" else outcome)
            had, latest = found.get(key, (0, 0))  # type: ignore[arg-type]
            found[key] = (had + count, max(latest, seq))  # type: ignore[arg-type, operator]
        return found

    def outcome_detail(self, seq: int) -> str | None:
        """The error or reason of the attempt that the event `seq` ended."""
        self.flush()
        found = self.txn.rows("outcomes", ("detail",), [("seq", "=", seq)], limit=1)
        return found[0][0] if found else None  # type: ignore[return-value]

    def last_outcome_ts(self, kind: str) -> float | None:
        """When the latest attempt of this kind ended (by `ix_outcomes_kind`)."""
        self.flush()
        return self.txn.rows("outcomes", ("max(ended_ts)",), [("outcome", "=", kind)])[0][0]  # type: ignore[return-value]

    def capacity_history(self) -> list[CapacityChange]:
        """Every change of offered slots, in log order (one per agent per control file
        change, so a short table)."""
        self.flush()
        return [CapacityChange(*r) for r in self.txn.rows("capacity_changes", _CAPACITY_FIELDS,  # type: ignore[arg-type]
                                                          order=("seq", "agent"))]

    def holding(self) -> list[TaskView]:
        """Tasks assigned or running now, by agent (at most the fleet's capacity of them:
        sorted here rather than by SQLite, which would need a temporary B-tree)."""
        self.flush()
        found = self.txn.rows("tasks", _TASK_FIELDS, [("status", "in", ("assigned", "running"))])
        tasks = [task_from_row(r) for r in found]
        return sorted(tasks, key=lambda t: (t.agent or "", t.task_id))

    def live_token(self, name: str) -> TokenView | None:
        """The live (not revoked) token of that name, if any (a range of ix_tokens_live)."""
        found = self.tokens(name=name)
        return found[0] if found else None

    def live_token_hashed(self, token_hash: str) -> TokenView | None:
        """The live token whose hash is `token_hash` (the newest, should a secret have
        been drawn twice), if any: filtered by the database, so a request does not read
        every live token (a range of ix_tokens_live, then the hash)."""
        self.flush()
        found = self.txn.rows(*live_token_read(token_hash))
        return TokenView(*found[-1]) if found else None  # type: ignore[arg-type]

    def tokens(self, name: str | None = None, revoked: bool = False) -> list[TokenView]:
        """The live tokens (with `revoked`, every token ever created), in the order they
        were created; of one name, or all."""
        self.flush()
        where: list[Any] = [] if revoked else [("revoked_at", "is", None)]
        if name is not None:
            where.append(("name", "=", name))
        return [TokenView(*r) for r in self.txn.rows("tokens", _TOKEN_FIELDS, where, ("seq",))]  # type: ignore[arg-type]

    def meta(self) -> dict[str, str]:
        """The projection's values (checkpoint, pause, gates, ...): read from the table
        once per transaction, then kept (only this projection writes them)."""
        self.flush()
        if self._stored_meta is None:
            self._stored_meta = dict(self.txn.rows(*META))  # type: ignore[arg-type]
        return dict(self._stored_meta)

    def last_seq(self) -> int:
        value = self.meta().get("last_seq", "0")
        try:
            return int(value)
        except ValueError as e:
            raise damaged_meta("last_seq", value) from e

    def next_task_id(self) -> int:
        self.flush()
        return (self.txn.rows(*NEXT_TASK_ID)[0][0] or 0) + 1  # type: ignore[operator]

    def task_by_idempotency_key(self, key: str) -> TaskView | None:
        self.flush()
        found = self.txn.rows("tasks", _TASK_FIELDS, [("idempotency_key", "=", key)], limit=1)
        return task_from_row(found[0]) if found else None

    def tasks(self, queue: str | None = None, status: str | None = None,
              agent: str | None = None, limit: int | None = None,
              title: str | None = None) -> list[TaskView]:
        """Tasks in pick order (priority, then submission), filtered (`title`: the text
        anywhere in the title, ASCII letters in any case: a term of the same read, so
        only the matching rows are read and `limit` counts them); their payloads are
        not loaded (`payload` None, `payload_bytes` says how big): a listing of tasks
        with big payloads reads only their rows. `get_task` gives the whole task."""
        self.flush()
        found = self.txn.rows(*listing_read(queue, status, agent, limit, title))
        return [task_from_row((*r[:_PAYLOAD_AT], None, *r[_PAYLOAD_AT:])) for r in found]

    def listing_bounds(self, queue: str | None = None, status: str | None = None,
                       title: str | None = None) -> tuple[str | None, str | None]:
        """The earliest `ready_at` and the earliest `due` of the tasks `tasks` selects
        (with the same filters): they bound the points any of them gained by waiting
        or by nearing its due time (`plan.most_gained`)."""
        self.flush()
        where = _listing(queue, status, None, title)
        ((ready, due),) = self.txn.rows("tasks", ("min(ready_at)", "min(due)"), where)
        return ready, due  # type: ignore[return-value]

    def any_queued(self, queue: str) -> bool:
        """Whether a task of `queue` is queued."""
        self.flush()
        return bool(self.txn.rows(*any_queued_read(queue)))

    def payloads(self, task_ids: list[int]) -> dict[int, str]:
        """The payload JSON of these tasks."""
        self.flush()
        found: dict[int, str] = {}
        for start in range(0, len(task_ids), 500):  # SQLite's limit on bound parameters
            chunk = task_ids[start:start + 500]
            rows = self.txn.rows("tasks", ("task_id", "payload"), [("task_id", "in", chunk)])
            found.update((task_id, payload) for task_id, payload in rows)  # type: ignore[misc]
        return found

    def doomed(self, limit: int) -> list[TaskView]:
        """Tasks waiting on a task that ended dead or cancelled (they can never run)."""
        self.flush()
        found = self.txn.rows(*doomed_read(limit))
        return [task_from_row(r) for r in found]

    def first_deadline(self, queue: str | None = None) -> str | None:
        """The earliest deadline of the assigned and running tasks (of one queue, or of
        all): whether any is `overdue` yet."""
        self.flush()
        found = self.txn.rows(*first_deadline_read(queue))
        return found[0][0] if found else None  # type: ignore[return-value]

    def overdue(self, now: str, limit: int, queue: str | None = None) -> list[TaskView]:
        """Assignments not started by their `start_by`, and leases past expiry (of one
        queue, or of all)."""
        self.flush()
        where = (*_holding_terms(queue), ("deadline", "<=", now))
        return [task_from_row(r) for r in self.txn.rows("tasks", _TASK_FIELDS, where, ("deadline",), limit)]

    def running_on(self, host: str, queue: str | None = None) -> list[TaskView]:
        """Running attempts whose exec wrapper lives on `host` (at most the fleet's
        capacity of them), of one queue or of all."""
        self.flush()
        return [task_from_row(r) for r in self.txn.rows(*running_on_read(host, queue))]

    def ready_backlog(self, now: str) -> tuple[int, str | None]:
        """How many queued tasks may start at `now` (their `not_before` or backoff has
        passed), and since when the longest-ready of them has been ready. Reads the
        queued tasks through `ix_tasks_deadline`: a health check's cost, not a tick's."""
        self.flush()
        ((count, oldest),) = self.txn.rows("tasks", ("count(*)", "min(ready_at)"),
                                           [("status", "=", "queued"), ("ready_at", "<=", now)])
        return count, oldest  # type: ignore[return-value]

    def waiting_requirements(self) -> list[tuple[str, str | None, tuple[str, ...], int, int]]:
        """The tasks not yet assigned (awaiting approval, blocked or queued) that require
        capabilities or are directed at an agent, grouped: (queue, assignee, requires,
        how many, the lowest task id). Reads the waiting tasks by `ix_tasks_deadline`: a
        health check's cost."""
        self.flush()
        groups: dict[tuple[Any, ...], None] = {}  # (a directed task that requires: in both reads)
        for narrowed in (("requires", "!=", "[]"), ("assignee", "is not", None)):
            found = self.txn.rows("tasks", ("queue", "assignee", "requires", "count(*)", "min(task_id)"),
                                  [("status", "in", ("awaiting_approval", "blocked", "queued")), narrowed],
                                  group=("queue", "assignee", "requires"))
            groups.update(dict.fromkeys(tuple(row) for row in found))
        return [(q, a, tuple(json.loads(r)), n, first) for q, a, r, n, first in groups]  # type: ignore[misc, arg-type]

    def oldest_queued(self, queue: str) -> str | None:
        """Since when the longest-waiting queued task of `queue` has been ready."""
        return self._first_queued(queue, "ready_at")

    def _first_queued(self, queue: str, column: str) -> str | None:
        self.flush()
        found = self.txn.rows(*first_queued_read(queue, column))
        return found[0][0] if found else None  # type: ignore[return-value]

    def candidates(self, queue: str, now: str, limit: int, assignees: list[str] | None = None,
                   ready_by: str | None = None, due_by: str | None = None) -> list[TaskView]:
        """The best `limit` queued tasks of `queue` (by base priority) that may start at
        `now`: the unassigned ones, or those directed at one of `assignees`; with
        `ready_by`, only those ready since then or earlier; with `due_by`, only those due
        by then."""
        self.flush()
        if assignees is not None:  # one ordered index range per agent, merged in pick order
            targets = self.directed_at(queue) & set(assignees)
            found = [t for name in sorted(targets)
                     for t in self._candidates(queue, now, limit, ("assignee", "=", name), ready_by, due_by)]
            return sorted(found, key=lambda t: (-t.priority, -len(t.blocks), t.task_id))[:limit]
        return self._candidates(queue, now, limit, ("assignee", "is", None), ready_by, due_by)

    def earliest_due(self, queue: str) -> str | None:
        """The earliest due time of the queued tasks of `queue` (None: none has one)."""
        return self._first_queued(queue, "due")

    def missed_due(self, now: str, limit: int) -> list[TaskView]:
        """Open tasks whose due time passed by `now` and whose miss is not recorded yet,
        earliest due first (a range of `ix_tasks_due_unmarked`)."""
        self.flush()
        where: list[Any] = [("due_watch", "<=", now), ("due_missed_at", "is", None)]
        return [task_from_row(r) for r in self.txn.rows("tasks", _TASK_FIELDS, where, ("due_watch",), limit)]

    def overdue_open(self, now: str) -> tuple[int, str | None]:
        """How many open tasks are past their due time at `now`, and the earliest such
        due time (a range of `ix_tasks_due_open`)."""
        self.flush()
        ((count, earliest),) = self.txn.rows("tasks", ("count(*)", "min(due_watch)"),
                                             [("due_watch", "<=", now)])
        return count, earliest  # type: ignore[return-value]

    def directed_at(self, queue: str) -> set[str]:
        """The agents that queued tasks of `queue` are directed at (one step of
        ix_tasks_pick per agent, so ticks query only those)."""
        self.flush()
        found = self.txn.rows(*directed_at_read(queue))
        return {name for (name,) in found}  # type: ignore[misc]

    def _candidates(self, queue: str, now: str, limit: int, who: Term,
                    ready_by: str | None, due_by: str | None = None) -> list[TaskView]:
        found = self.txn.rows(*candidates_read(queue, now, limit, who, ready_by, due_by))
        tasks = [task_from_row(r) for r in found]
        self._known_tasks.update((t.task_id, t) for t in tasks)  # whole rows: an assignment reads none
        return tasks
