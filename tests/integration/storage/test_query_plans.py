"""The queries of a tick, a claim and the metrics window stay on their indexes: the SQL
they really issue (captured from the engine, and from the port's driver-level reads,
`Transaction.rows`) is explained by the engine that ran it.

On SQLite every step on `tasks` or `outcomes` must be a SEARCH through an index or the
integer primary key, never a SCAN of the table, and never a temporary B-tree sort.
(Where SQLite would pick the wrong index, the query writes a term as `+column`, which
keeps that column out of index choice: see `projections/sql.py`.)

On PostgreSQL the planner chooses by its statistics, which a small test table cannot
make realistic; so it is asked with sequential scans and sorts priced out
(`enable_seqscan`, `enable_sort` off), and must still need neither: a Sort or a Seq
Scan left in that plan means no index can give those rows in that order, and a big
backlog would be read whole, at every tick and claim."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import event

from eventlog.storage.base import SqlTransaction, rows_sql, select_sql, term_params, term_shapes
from eventlog.storage.port import WRITE_TIME
from eventlog.storage.postgres import PostgresTransaction
from eventlog.timeutil import to_text
from projections.sql import task_agent_read
from scheduler import worker
from scheduler.clock import ManualClock
from scheduler.reads.metrics import metrics
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from tests.conftest import ENGINES, new_workspace

FLEET = [{"agentName": f"dev-{i}", "agentType": "dev", "maxConcurrency": 2} for i in range(3)] + [
    {"agentName": "puller", "agentType": "dev", "maxConcurrency": 2}]
Captured = list[tuple[str, object]]

# label -> a pattern of the normalized SQL that identifies the query
QUERIES = {
    "candidates, open to any agent": r"^(?!.*ready_at <=).*FROM tasks WHERE .*tasks\.assignee IS NULL",
    "candidates, open to any agent, age band": r"FROM tasks WHERE .*tasks\.assignee IS NULL .*"
                                               r"tasks\.ready_at <= \?",
    "candidates, directed": r"^(?!.*ready_at <=).*FROM tasks WHERE .*tasks\.assignee = \?",
    "candidates, directed, age band": r"FROM tasks WHERE .*tasks\.assignee = \?.*tasks\.ready_at <= \?",
    "candidates, due band": r"FROM tasks WHERE .*tasks\.due <= \?",
    "oldest queued": r"SELECT tasks\.ready_at FROM tasks .*ORDER BY tasks\.ready_at LIMIT",
    "earliest due": r"SELECT tasks\.due FROM tasks .*ORDER BY tasks\.due LIMIT",
    "missed due times": r"FROM tasks WHERE tasks\.due_watch <= \? AND tasks\.due_missed_at IS NULL",
    "agents with directed work": r"SELECT tasks\.assignee FROM tasks .*GROUP BY tasks\.assignee",
    "overdue": r"FROM tasks WHERE \+?tasks\.status IN \(.*\) AND tasks\.deadline <= \?",
    "first deadline": r"SELECT tasks\.deadline FROM tasks WHERE \+?tasks\.status IN \(.*\) "
                      r".*tasks\.deadline IS NOT NULL ORDER BY tasks\.deadline LIMIT",
    "doomed": r"FROM tasks WHERE tasks\.doomed_by IS NOT NULL",
    "running on a host": r"FROM tasks WHERE tasks\.status = \? AND tasks\.host = \?",
    "claim: the best task the agent holds": r"FROM tasks WHERE tasks\.status = \? AND tasks\.agent = \?",
    "claim: anything queued": r"SELECT tasks\.task_id FROM tasks WHERE tasks\.queue = \? "
                              r"AND tasks\.status = \? LIMIT",
    "outcomes window": r"FROM outcomes WHERE outcomes\.ended_ts >= \?",
    "holding": r"FROM tasks WHERE tasks\.status IN \([^)]*\)$",
    "one task": r"FROM tasks WHERE (tasks\.)?task_id = \?$",
}


@contextmanager
def capture(engine) -> Iterator[Captured]:  # type: ignore[no-untyped-def]
    seen: Captured = []

    def listener(_conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
        seen.append((statement, parameters))

    driver_read, driver_fetch_one = SqlTransaction._all, SqlTransaction.fetch_one
    pg_read, pg_send, pg_lock = PostgresTransaction._all, PostgresTransaction._send, PostgresTransaction.lock

    def read(txn, sql, params):  # type: ignore[no-untyped-def]
        seen.append((sql, tuple(params)))
        return driver_read(txn, sql, params)

    def pg_all(txn, sql, params):  # type: ignore[no-untyped-def]
        if (sql, tuple(params)) not in txn._ahead and not txn._pending:  # (else: `lock`, `send`)
            seen.append((sql, tuple(params)))
        return pg_read(txn, sql, params)

    def fetch_one(txn, table, columns, key, value):  # type: ignore[no-untyped-def]
        seen.append((select_sql(txn.mark, table, tuple(columns), key), (value,)))
        return driver_fetch_one(txn, table, columns, key, value)

    def send(txn, statements, read=None, **options):  # type: ignore[no-untyped-def]
        if read is not None:  # a read sent after waiting writes, in their pipeline
            seen.append((read[0], tuple(read[1])))
        return pg_send(txn, statements, read, **options)

    def lock(txn, busy_timeout_ms, prefetch=()):  # type: ignore[no-untyped-def]
        for ahead in prefetch:  # reads asked for ahead: sent with the lock
            sql, params = txn.select(*ahead)
            # (one of the writer's time, explained as when made with its text)
            seen.append((sql, tuple(to_text(datetime.now(UTC)) if p is WRITE_TIME else p for p in params)))
        return pg_lock(txn, busy_timeout_ms, prefetch)

    event.listen(engine, "before_cursor_execute", listener)
    SqlTransaction._all = read  # type: ignore[method-assign]
    SqlTransaction.fetch_one = fetch_one  # type: ignore[method-assign]
    PostgresTransaction._all = pg_all  # type: ignore[method-assign]
    PostgresTransaction._send = send  # type: ignore[method-assign]
    PostgresTransaction.lock = lock  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        SqlTransaction._all = driver_read  # type: ignore[method-assign]
        SqlTransaction.fetch_one = driver_fetch_one  # type: ignore[method-assign]
        PostgresTransaction._all = pg_read  # type: ignore[method-assign]
        PostgresTransaction._send = pg_send  # type: ignore[method-assign]
        PostgresTransaction.lock = pg_lock  # type: ignore[method-assign]
        event.remove(engine, "before_cursor_execute", listener)


def normalized(sql: str) -> str:
    """One line, with `?` for a parameter whichever engine's mark it was written with."""
    return " ".join(sql.split()).replace("%s", "?")


@pytest.fixture(scope="module", params=ENGINES)
def issued(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Explainer, Captured]]:
    """The SELECTs of a tick (with a directed task, an age band, a due band and an
    overdue assignment), a claim, and a metrics window, on one database of each engine."""
    database, cluster = None, None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        database = cluster.create_database("query_plans")
    ws = new_workspace(tmp_path_factory.mktemp("plans"), FLEET, database=database)
    clock = ws.clock
    assert isinstance(clock, ManualClock)
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}", priority=i % 5) for i in range(50)])
    submit(ws, [TaskSpec(queue="dev", title="directed", assignee="dev-1")])
    # due in 50 minutes: at the second tick, 38 minutes to go, in three due bands
    submit(ws, [TaskSpec(queue="dev", title="due", due=clock.now() + timedelta(minutes=50))])
    tick(ws)  # fills the fleet
    clock.advance(ws.settings.start_deadline_seconds + ws.settings.age_boost_seconds + 1)
    with capture(ws.db.engine) as seen:
        tick(ws)  # takes back the overdue assignments, plans over two age bands
        while worker.claim(ws, "puller") is not None:  # the last finds its slots full:
            pass  # it looks whether anything is queued, and plans
        metrics(ws, timedelta(hours=1))
    selects = [(normalized(sql), params) for sql, params in seen
               if sql.lstrip().upper().startswith("SELECT")]
    if cluster is None:
        path = ws.settings.db_path
        ws.close()
        yield partial(explain_sqlite, path), selects
        return
    ws.close()
    try:
        yield partial(explain_postgres, cluster.url("query_plans")), selects
    finally:
        cluster.drop_database("query_plans")


def explain_sqlite(path: Path, sql: str, params: object) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]  # type: ignore[arg-type]
    finally:
        conn.close()


def explain_postgres(url: str, sql: str, params: object) -> list[str]:
    import psycopg

    with psycopg.connect(url, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_sort = off")
        return [row[0] for row in conn.execute("EXPLAIN " + sql.replace("?", "%s"), params)]  # type: ignore[arg-type]


Explainer = Callable[[str, object], list[str]]


def problems(plan: list[str]) -> list[str]:
    """The steps of a plan that scan `tasks` or `outcomes` or sort: SQLite's whole-table
    SCAN or temp B-tree, PostgreSQL's Seq Scan or Sort."""
    # (an Incremental Sort reads its rows in the order of an index's leading columns and
    # sorts only those that tie on them: PostgreSQL's index rows carry no task_id or seq
    # after their columns, as SQLite's carry the rowid)
    bad = [step for step in plan if "TEMP B-TREE" in step or re.search(r"(^|->)\s*Sort\s+\(", step)]
    for step in plan:
        if re.match(r"(SCAN|SEARCH) (tasks|outcomes)\b", step) and not re.search(
                r"USING (COVERING INDEX|INDEX|INTEGER PRIMARY KEY)", step):
            bad.append(step)
        if re.match(r"SCAN (tasks|outcomes)\b", step) or re.search(r"Seq Scan on (tasks|outcomes)\b", step):
            bad.append(step)  # even through an index: every row of the table
    return bad


def test_every_query_on_tasks_and_outcomes_has_a_label(issued):
    _explain, seen = issued
    unlabelled = {sql for sql, _ in seen if re.search(r"FROM (tasks|outcomes)\b", sql)
                  and not any(re.search(p, sql) for p in QUERIES.values())}
    assert not unlabelled, f"queries with no plan check: {sorted(unlabelled)}"


@pytest.mark.parametrize("label", list(QUERIES))
def test_query_plan_uses_an_index_without_a_sort(issued, label: str):
    explain, seen = issued
    matching = [(sql, params) for sql, params in seen if re.search(QUERIES[label], sql)]
    assert matching, f"the run issued no {label!r} query"
    for sql, params in matching:
        plan = explain(sql, params)
        assert any(re.search(r"USING (COVERING INDEX|INDEX|INTEGER PRIMARY KEY)|Index (Only )?Scan", s)
                   for s in plan), plan
        assert not problems(plan), f"{label}: {plan}\n{sql}"


def test_the_agent_holding_a_task_is_read_by_its_keys(issued):
    """The read an attempt's end asks for ahead (`task_agent_read`: the agent whose name
    a task's row holds, a `Lookup`) finds the task by its key and the agent by its own,
    on both engines."""
    explain, _seen = issued
    read = task_agent_read(1)
    sql = rows_sql("?", read.table, read.columns, term_shapes(read.where), read.order, read.limit is not None)
    plan = explain(sql, term_params(read.where))
    assert not problems(plan), plan
    assert sum(bool(re.search(r"USING (COVERING INDEX|INDEX|INTEGER PRIMARY KEY)|Index (Only )?Scan", step))
               for step in plan) >= 2, plan


def test_a_batch_on_postgresql_is_described_to_the_planner_at_once(pg_url: str, tmp_path: Path):
    """A queue filled by one big submit is described to PostgreSQL's planner at once
    (its statistics count the batch), not at autovacuum's next round; and the best
    task's read then uses ix_tasks_pick without a sort."""
    ws = new_workspace(tmp_path / "home", FLEET, database=pg_url)
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}", priority=i % 7) for i in range(1_500)])
    ws.close()
    import psycopg

    with psycopg.connect(pg_url, cursor_factory=psycopg.ClientCursor) as conn:
        (described,), = conn.execute("SELECT reltuples FROM pg_class WHERE relname = 'tasks'").fetchall()
        plan = [row[0] for row in conn.execute(
            "EXPLAIN SELECT * FROM tasks WHERE queue = 'dev' AND status = 'queued' AND assignee IS NULL "
            "ORDER BY assignee, priority DESC, unblocks DESC, task_id LIMIT 1")]
    assert described == 1_500
    assert not problems(plan) and any("ix_tasks_pick" in step for step in plan), plan
