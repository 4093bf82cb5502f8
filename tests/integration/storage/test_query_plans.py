"""The queries of a tick, a claim and the metrics window stay on their indexes: the SQL
they really issue (captured from the engine, and from the port's driver-level reads,
`Transaction.rows`) is explained by SQLite, and every step on
`tasks` or `outcomes` must be a SEARCH through an index or the integer primary key,
never a SCAN of the table, and never a temporary B-tree sort. (Where SQLite would pick
the wrong index, the query writes a term as `+column`, which keeps that column out of
index choice: see `projections/sql.py`.)"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from eventlog.storage.base import SqlTransaction
from scheduler import worker
from scheduler.clock import ManualClock
from scheduler.reads.metrics import metrics
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from tests.conftest import new_workspace

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
    "oldest queued": r"SELECT min\(tasks\.ready_at\)",
    "earliest due": r"SELECT min\(tasks\.due\)",
    "missed due times": r"FROM tasks WHERE tasks\.due_watch <= \? AND tasks\.due_missed_at IS NULL",
    "agents with directed work": r"SELECT tasks\.assignee FROM tasks .*GROUP BY tasks\.assignee",
    "overdue": r"FROM tasks WHERE \+tasks\.status IN \(.*\) AND tasks\.deadline <= \?",
    "doomed": r"FROM tasks WHERE tasks\.doomed_by IS NOT NULL",
    "running on a host": r"FROM tasks WHERE tasks\.status = \? AND tasks\.host = \?",
    "claim: the best task the agent holds": r"FROM tasks WHERE tasks\.status = \? AND tasks\.agent = \?",
    "claim: anything queued": r"SELECT tasks\.task_id FROM tasks WHERE tasks\.queue = \? "
                              r"AND tasks\.status = \? LIMIT",
    "outcomes window": r"FROM outcomes WHERE outcomes\.ended_ts >= \?",
    "holding": r"FROM tasks WHERE tasks\.status IN \([^)]*\)$",
}


@contextmanager
def capture(engine) -> Iterator[Captured]:  # type: ignore[no-untyped-def]
    seen: Captured = []

    def listener(_conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
        seen.append((statement, parameters))

    driver_read = SqlTransaction._all

    def read(txn, sql, params):  # type: ignore[no-untyped-def]
        seen.append((sql, tuple(params)))
        return driver_read(txn, sql, params)

    event.listen(engine, "before_cursor_execute", listener)
    SqlTransaction._all = read  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        SqlTransaction._all = driver_read  # type: ignore[method-assign]
        event.remove(engine, "before_cursor_execute", listener)


def normalized(sql: str) -> str:
    return " ".join(sql.split())


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Captured]:
    """The SELECTs of a tick (with a directed task, an age band, a due band and an
    overdue assignment), a claim, and a metrics window, on one database."""
    ws = new_workspace(tmp_path_factory.mktemp("plans"), FLEET)
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
    path = ws.settings.db_path
    ws.close()
    return path, [(normalized(sql), params) for sql, params in seen
                  if sql.lstrip().upper().startswith("SELECT")]


def explain(path: Path, sql: str, params: object) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]  # type: ignore[arg-type]
    finally:
        conn.close()


def problems(plan: list[str]) -> list[str]:
    """The steps of a plan that scan `tasks` or `outcomes` or sort in a temp B-tree."""
    bad = [step for step in plan if "TEMP B-TREE" in step]
    for step in plan:
        if re.match(r"(SCAN|SEARCH) (tasks|outcomes)\b", step) and not re.search(
                r"USING (COVERING INDEX|INDEX|INTEGER PRIMARY KEY)", step):
            bad.append(step)
        if re.match(r"SCAN (tasks|outcomes)\b", step):
            bad.append(step)  # even through an index: every row of the table
    return bad


def test_every_query_on_tasks_and_outcomes_has_a_label(issued):
    _path, seen = issued
    unlabelled = {sql for sql, _ in seen if re.search(r"FROM (tasks|outcomes)\b", sql)
                  and not any(re.search(p, sql) for p in QUERIES.values())}
    assert not unlabelled, f"queries with no plan check: {sorted(unlabelled)}"


@pytest.mark.parametrize("label", list(QUERIES))
def test_query_plan_uses_an_index_without_a_sort(issued, label: str):
    path, seen = issued
    matching = [(sql, params) for sql, params in seen if re.search(QUERIES[label], sql)]
    assert matching, f"the run issued no {label!r} query"
    for sql, params in matching:
        plan = explain(path, sql, params)
        assert any(re.search(r"USING (COVERING INDEX|INDEX|INTEGER PRIMARY KEY)", s) for s in plan), plan
        assert not problems(plan), f"{label}: {plan}\n{sql}"
