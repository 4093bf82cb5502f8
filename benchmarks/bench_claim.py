"""Claims by several worker processes at once: each `worker.claim` assigns and starts a
task and updates the projections in one `BEGIN IMMEDIATE` transaction."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_submit import record_fleet
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
from scheduler import worker

# the candidates query of `SqlProjection.candidates` (unassigned tasks, best first)
PICK = ("SELECT task_id FROM tasks WHERE queue = 'dev' AND status = 'queued' AND assignee IS NULL "
        "AND (not_before IS NULL OR not_before <= ?) "
        "ORDER BY assignee, priority DESC, unblocks DESC, task_id "
        "LIMIT 1")
START = ("UPDATE tasks SET status = 'running', agent = ?, attempt = attempt + 1, deadline = ?, "
         "token_hash = ?, assigned_at = ?, started_at = ?, updated_at = ? WHERE task_id = ?")


def _sched_claimer(home: str, agent: str, count: int, barrier: Any, out: Any) -> None:
    ws = open_workspace(Path(home))
    ws.db  # noqa: B018 -- open the database before the start
    barrier.wait()
    got = sum(worker.claim(ws, agent) is not None for _ in range(count))
    out.put((agent, got, time.monotonic()))
    ws.close()


def _bare_claimer(db: str, agent: str, count: int, barrier: Any, out: Any,
                  templates: list[tuple[Any, ...]]) -> None:
    """A bare claim: pick the best queued task by the same index, mark it running and
    append the two event rows of a claim (TaskAssigned, TaskStarted, payloads of the
    sched run's first claim), in one BEGIN IMMEDIATE transaction."""
    conn = bare_connect(Path(db))
    assigned, started = templates
    barrier.wait()
    got = 0
    for _ in range(count):
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
            got += 1
        conn.execute("COMMIT")
    out.put((agent, got, time.monotonic()))
    conn.close()


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
    agents = fleet(processes, per, prefix="w")  # pull workers, a slot for every claim
    names = [str(a["agentName"]) for a in agents]
    ws = new_workspace(home, agents)
    load_queued(ws, per * processes, ws.clock.now())
    record_fleet(ws)
    ws.close()
    db = home / "sched.db"
    columns = [name for (_cid, name, *_rest) in read_rows(db, "PRAGMA table_info(tasks)")]
    task_rows = read_rows(db, f"SELECT {', '.join(columns)} FROM tasks")
    log_rows = event_rows(db)
    (last_seq,), = read_rows(db, "SELECT max(seq) FROM events")

    seconds, claimed = _race(_sched_claimer, _Args(home, names, per), processes)
    templates = [event_rows(db, after=last_seq, types=[t])[0] for t in ("TaskAssigned", "TaskStarted")]

    bare_db = ctx.root / "bare-claims.db"
    bare = bare_database(bare_db, db, ["events", "tasks"])
    bare.execute("BEGIN")
    bare.executemany(INSERT_EVENT, log_rows)
    bare.executemany(f"INSERT INTO tasks ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                     task_rows)
    bare.execute("COMMIT")
    bare.close()
    bare_seconds, bare_claimed = _race(_bare_claimer, _Args(bare_db, names, per, (templates,)), processes)
    bare_conn = bare_connect(bare_db)
    (running,), = bare_conn.execute("SELECT count(*) FROM tasks WHERE status = 'running'").fetchall()
    bare_conn.close()
    (sched_running,), = read_rows(db, "SELECT count(*) FROM tasks WHERE status = 'running'")
    value, ceiling = claimed / seconds, bare_claimed / bare_seconds
    return result(
        "claims", value=value, unit="claims/s", ceiling=ceiling, ratio=value / ceiling,
        target=">= 0.5",
        what=f"worker.claim() in {processes} processes at once, {per:,} each (assign + start + "
             "projections, one transaction each)",
        ceiling_what=f"{processes} processes of a bare BEGIN IMMEDIATE loop: pick by the same query "
                     "and index, mark the task row running, append the two event rows",
        details={"claimed": claimed, "seconds": seconds, "bare_claimed": bare_claimed,
                 "bare_seconds": bare_seconds, "event_columns": EVENT_COLUMNS},
        ok=claimed == sched_running == per * processes and running == bare_claimed)
