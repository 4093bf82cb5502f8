"""Claims by several worker processes at once: each `worker.claim` assigns and starts a
task and updates the projections in one `BEGIN IMMEDIATE` transaction."""

from __future__ import annotations

import multiprocessing
import shutil
import time
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks.bench_submit import record_fleet
from benchmarks.bench_tick import copy_home
from benchmarks.build import load_queued
from benchmarks.common import (
    EVENT_COLUMNS,
    INSERT_EVENT,
    Context,
    bare_connect,
    bare_database,
    event_rows,
    fleet,
    new_workspace,
    open_workspace,
    read_rows,
    result,
)
from eventlog.storage.base import SqlTransaction
from scheduler import worker

# the candidates query of `SqlProjection.candidates` (unassigned tasks, best first)
PICK = ("SELECT task_id FROM tasks WHERE queue = 'dev' AND status = 'queued' AND assignee IS NULL "
        "AND (not_before IS NULL OR not_before <= ?) "
        "ORDER BY assignee, priority DESC, unblocks DESC, task_id "
        "LIMIT 1")
START = ("UPDATE tasks SET status = 'running', agent = ?, attempt = attempt + 1, deadline = ?, "
         "token_hash = ?, assigned_at = ?, started_at = ?, updated_at = ? WHERE task_id = ?")
# the rest of what a claim's flush writes (projections/sql.py, `SqlProjection.flush`): the
# agent's load, the queue counts (added to, as sched's upsert does), the clean-up of zero
# counts that follows a decrease, and the last folded seq
LOAD = "UPDATE agents SET running = running + 1 WHERE name = ?"
COUNT = ("INSERT INTO queue_counts (queue, status, count) VALUES (?, ?, ?) ON CONFLICT (queue, status) "
         "DO UPDATE SET count = queue_counts.count + excluded.count")
ZEROS = "DELETE FROM queue_counts WHERE count = 0"
LAST_SEQ = ("INSERT INTO projection_meta (key, value) VALUES ('last_seq', ?) ON CONFLICT (key) "
            "DO UPDATE SET value = excluded.value")
WARM = 1  # claims each process makes before the start (the first claim's setup is not timed)


def _sched_claimer(home: str, agent: str, count: int, barrier: Any, out: Any, warm: int = 0) -> None:
    """`count` claims by `agent` after `warm` untimed ones (`pg_claims_*` shares this
    claimer and makes none)."""
    ws = open_workspace(Path(home))
    ws.db  # noqa: B018 -- open the database before the start
    for _ in range(warm):
        worker.claim(ws, agent)
    barrier.wait()
    got = sum(worker.claim(ws, agent) is not None for _ in range(count))
    out.put((agent, got, time.monotonic()))
    ws.close()


def _bare_claim(conn: Any, agent: str, templates: list[tuple[Any, ...]]) -> bool:
    """One bare claim, in one BEGIN IMMEDIATE transaction: pick the best queued task by
    the same index, mark it running, append the two event rows of a claim
    (TaskAssigned, TaskStarted, payloads of the sched run's first claim), add the
    attempt to the agent's load, move one from queued to running in the counts, drop
    the zero counts and record the last seq."""
    assigned, started = templates
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute(PICK, (now,)).fetchone()
    if row is not None:
        task_id = row[0]
        (seq,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        conn.execute(START, (agent, now, started[6], now, now, now, task_id))
        conn.executemany(INSERT_EVENT, [
            (seq + 1, f"task-{task_id}", assigned[2], assigned[3], now, assigned[5], assigned[6],
             assigned[7]),
            (seq + 2, f"task-{task_id}", started[2], started[3], now, started[5], assigned[7],
             started[7])])
        conn.execute(LOAD, (agent,))
        conn.executemany(COUNT, [("dev", "queued", -1), ("dev", "running", 1)])
        conn.execute(ZEROS)
        conn.execute(LAST_SEQ, (str(seq + 2),))
    conn.execute("COMMIT")
    return row is not None


def _bare_claimer(db: str, agent: str, count: int, barrier: Any, out: Any,
                  templates: list[tuple[Any, ...]], warm: int) -> None:
    """`count` bare claims by `agent` after `warm` untimed ones."""
    conn = bare_connect(Path(db))
    for _ in range(warm):
        _bare_claim(conn, agent, templates)
    barrier.wait()
    got = sum(_bare_claim(conn, agent, templates) for _ in range(count))
    out.put((agent, got, time.monotonic()))
    conn.close()


class _Noting:
    """A driver connection that notes each statement sched's storage runs through it
    (`(sql, params, many)`, into `into`), and runs it."""

    def __init__(self, conn: Any, into: list[tuple[str, Any, bool]]) -> None:
        self._conn, self._into = conn, into

    def cursor(self) -> Any:
        return _NotingCursor(self._conn.cursor(), self._into)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _NotingCursor:
    def __init__(self, cursor: Any, into: list[tuple[str, Any, bool]]) -> None:
        self._cursor, self._into = cursor, into

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._into.append((sql, tuple(params), False))
        return self._cursor.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = [tuple(r) for r in rows]
        self._into.append((sql, rows, True))
        return self._cursor.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def _one_process(home: Path, root: Path, agent: str, count: int) -> dict[str, Any]:
    """A claim split into its statements and the rest: `count` claims by `agent` in one
    process, after one untimed, on a copy of the workspace; the statements the same
    claims ran (noted on another copy), replayed through a bare connection on a third,
    one BEGIN IMMEDIATE transaction per claim (each SELECT's rows fetched); what is left
    is Python. Both leave the same rows."""
    timed_home, noted_home, replayed_home = (copy_home(home, root / name)
                                             for name in ("timed", "noted", "replayed"))
    ws = open_workspace(timed_home)
    worker.claim(ws, agent)
    started = time.perf_counter()
    for _ in range(count):
        worker.claim(ws, agent)
    sched_seconds = time.perf_counter() - started
    ws.close()
    claims: list[list[tuple[str, Any, bool]]] = []
    driver = SqlTransaction._driver
    ws = open_workspace(noted_home)
    with mock.patch.object(SqlTransaction, "_driver", lambda txn: _Noting(driver(txn), claims[-1])):
        for _ in range(count + 1):
            claims.append([])
            worker.claim(ws, agent)
    ws.close()
    conn = bare_connect(replayed_home / "sched.db")

    def replay(statements: list[tuple[str, Any, bool]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        for sql, params, many in statements:
            if many:
                conn.executemany(sql, params)
            else:
                conn.execute(sql, params).fetchall()
        conn.execute("COMMIT")

    replay(claims[0])
    started = time.perf_counter()
    for statements in claims[1:]:
        replay(statements)
    replay_seconds = time.perf_counter() - started
    conn.close()
    left = [read_rows(h / "sched.db", "SELECT seq, type FROM events ORDER BY seq DESC LIMIT 3")
            + read_rows(h / "sched.db", "SELECT count(*) FROM tasks WHERE status = 'running'")
            for h in (noted_home, replayed_home)]
    for h in (timed_home, noted_home, replayed_home):
        shutil.rmtree(h)
    return {"claims": count, "sched_ms_per_claim": 1000 * sched_seconds / count,
            "statements_ms_per_claim": 1000 * replay_seconds / count,
            "statements_share": replay_seconds / sched_seconds,
            "statements_per_claim": len(claims[-1]), "replay_left_the_same_rows": left[0] == left[1]}


class _Args:
    def __init__(self, path: Path, agents: list[str], per: int, extra: tuple[Any, ...] = ()) -> None:
        self.path, self.agents, self.per, self.extra = path, agents, per, extra

    def __call__(self, i: int) -> tuple[Any, ...]:
        return (str(self.path), self.agents[i], self.per)


def _race(target: Any, args_of: _Args, processes: int) -> tuple[float, int]:
    """Start `processes` workers, release them together, and return the seconds from
    the release until the last one finished and the claims they made."""
    mp = multiprocessing.get_context("spawn")
    barrier, out = mp.Barrier(processes + 1), mp.Queue()
    workers = [mp.Process(target=target, args=(*args_of(i), barrier, out, *args_of.extra))
               for i in range(processes)]
    for w in workers:
        w.start()
    barrier.wait()
    released = time.monotonic()
    finished = [out.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    return max(end for _a, _g, end in finished) - released, sum(g for _a, g, _e in finished)


def claims(ctx: Context) -> dict[str, Any]:
    processes, total = ctx.params["claim_processes"], ctx.params["claims"]
    per = total // processes
    home = ctx.dir("claims")
    # pull workers, a slot for every claim (their warm-up claim's too)
    agents = fleet(processes, per + WARM, prefix="w")
    names = [str(a["agentName"]) for a in agents]
    ws = new_workspace(home, agents)
    load_queued(ws, (per + WARM) * processes, ws.clock.now())
    record_fleet(ws)
    ws.close()
    db = home / "sched.db"
    tables = ("events", "tasks", "agents", "queue_counts", "projection_meta")
    columns = {t: [name for (_cid, name, *_rest) in read_rows(db, f"PRAGMA table_info({t})")] for t in tables}
    rows = {t: read_rows(db, f"SELECT {', '.join(columns[t])} FROM {t}") for t in tables}
    (last_seq,), = read_rows(db, "SELECT max(seq) FROM events")
    alone = _one_process(home, ctx.root / "claims-one-process", names[0], per)

    seconds, claimed = _race(_sched_claimer, _Args(home, names, per, (WARM,)), processes)
    templates = [event_rows(db, after=last_seq, types=[t])[0] for t in ("TaskAssigned", "TaskStarted")]

    bare_db = ctx.root / "bare-claims.db"
    bare = bare_database(bare_db, db, list(tables))
    bare.execute("BEGIN")
    for t in tables:
        marks = ", ".join("?" * len(columns[t]))
        bare.executemany(f"INSERT INTO {t} ({', '.join(columns[t])}) VALUES ({marks})", rows[t])
    bare.execute("COMMIT")
    bare.close()
    bare_seconds, bare_claimed = _race(_bare_claimer, _Args(bare_db, names, per, (templates, WARM)),
                                       processes)
    written = {}  # what each side's claims left: running tasks, the agents' loads, the counts
    for side, path in (("sched", db), ("bare", bare_db)):
        written[side] = {
            "running": read_rows(path, "SELECT count(*) FROM tasks WHERE status = 'running'")[0][0],
            "loads": read_rows(path, "SELECT name, running FROM agents ORDER BY name"),
            "counts": read_rows(path, "SELECT queue, status, count FROM queue_counts ORDER BY 1, 2"),
            "last_seq": read_rows(path, "SELECT value FROM projection_meta WHERE key = 'last_seq'"),
            "max_seq": read_rows(path, "SELECT max(seq) FROM events")}
    value, ceiling = claimed / seconds, bare_claimed / bare_seconds
    return result(
        "claims", value=value, unit="claims/s", ceiling=ceiling, ratio=value / ceiling,
        target=">= 0.5",
        what=f"worker.claim() in {processes} processes at once, {per:,} each (assign + start + "
             f"projections, one transaction each), after {WARM} untimed claim each",
        ceiling_what=f"{processes} processes of a bare BEGIN IMMEDIATE loop, after {WARM} untimed claim "
                     "each: pick by the same query and index, mark the task row running, append the "
                     "two event rows, add to the agent's load, move one from queued to running in the "
                     "queue counts, delete zero counts, record the last seq",
        details={"claimed": claimed, "seconds": seconds, "bare_claimed": bare_claimed,
                 "bare_seconds": bare_seconds, "warm_claims_per_process": WARM,
                 "running": {side: w["running"] for side, w in written.items()},
                 "counts": {side: w["counts"] for side, w in written.items()},
                 "event_columns": EVENT_COLUMNS, "one_process": alone},
        ok=claimed == bare_claimed == per * processes and alone["replay_left_the_same_rows"]
        and written["sched"]["running"] == (per + WARM) * processes
        and all(written["bare"][k] == written["sched"][k] for k in ("running", "loads", "counts"))
        and written["bare"]["last_seq"] == [(str(written["bare"]["max_seq"][0][0]),)])
