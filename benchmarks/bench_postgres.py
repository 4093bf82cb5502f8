"""The hot paths on PostgreSQL, each beside a ceiling measured on the same server in
the same run: a bare psycopg loop doing the same statements under the same advisory
lock (`pg_advisory_xact_lock`, the writers' lock of the adapter).

The server is the suite's own throwaway cluster (tests/pgcluster.py: a temporary data
directory, a unix socket, fsync off), started once per run (and a second one with the
server's durability, for `pg_single_submit_durable`); without PostgreSQL's binaries
these figures report an error and the others still run. The bulk figures are in
`bench_postgres_bulk`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.bench_claim import COUNT, LAST_SEQ, LOAD, WARM, ZEROS, _race, _sched_claimer
from benchmarks.bench_submit import BACKLOG_AGENTS, BACKLOG_CAPACITY, record_fleet
from benchmarks.build import NEVER, load_queued
from benchmarks.common import Context, fleet, new_workspace, open_workspace, result, task_specs, timed
from eventlog.schema import EVENT_COLUMNS
from eventlog.storage.postgres import WRITER_LOCK
from scheduler.reads import queries
from scheduler.submit import submit
from scheduler.tick import tick
from scheduler.workspace import Workspace

COLUMNS = ", ".join(EVENT_COLUMNS)
INSERT_EVENT = f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))})"
LOCK = f"SELECT pg_advisory_xact_lock({WRITER_LOCK})"
PICK = ("SELECT task_id FROM tasks WHERE queue = 'dev' AND status = 'queued' AND assignee IS NULL "
        "AND (not_before IS NULL OR not_before <= %s) "
        "ORDER BY assignee, priority DESC, unblocks DESC, task_id "
        "LIMIT 1")
START = ("UPDATE tasks SET status = 'running', agent = %s, attempt = attempt + 1, deadline = %s, "
         "token_hash = %s, assigned_at = %s, started_at = %s, updated_at = %s WHERE task_id = %s")


def cluster(ctx: Context, *, durable: bool = False) -> Any:
    """The run's PostgreSQL cluster (started on first use; `benchmarks.run` stops it);
    `durable`: a second one with the server's durability (fsync, synchronous_commit and
    full_page_writes on), for `pg_single_submit_durable`."""
    key = "pg_durable" if durable else "pg"
    if key not in ctx.cache:
        from tests.pgcluster import PgCluster, unavailable_reason

        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        ctx.cache[key] = PgCluster(durable=durable).start(ctx.dir(key))
    return ctx.cache[key]


def pg_workspace(ctx: Context, name: str, agents: list[dict[str, object]], *, durable: bool = False,
                 **settings: object) -> Workspace:
    """A sched workspace on a fresh database of the run's cluster (`durable`: of the
    durable one); its home's sched.toml names it, so other processes opening the home
    use it too."""
    url = cluster(ctx, durable=durable).create_database(name)
    home = ctx.dir(name)
    (home / "sched.toml").write_text(f'database_url = "{url}"\n')
    return new_workspace(home, agents, **settings)


def connect(ws: Workspace) -> Any:
    import psycopg

    return psycopg.connect(str(ws.settings.database))


def columns_of(conn: Any, table: str) -> list[str]:
    """The columns of `table`, in their order, as the server has them."""
    return [d.name for d in conn.execute(f"SELECT * FROM {table} LIMIT 0").description]


def rows_of(ws: Workspace, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with connect(ws) as conn:
        return conn.execute(sql, params).fetchall()


def bare_copy(ctx: Context, name: str, shape: list[dict[str, object]],
              tables: dict[str, list[tuple[Any, ...]]]) -> Workspace:
    """A database of sched's shape (made by `sched init`) holding `tables`' rows (in place
    of any the new database had)."""
    ws = pg_workspace(ctx, name, shape)
    with connect(ws) as conn:
        for table, rows in tables.items():
            conn.execute(f"DELETE FROM {table}")
            if rows:
                columns = columns_of(conn, table)
                with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        # the planner's statistics, as sched's own bulk writes leave them (and autovacuum would)
        conn.execute("ANALYZE")
    return ws


def _pg_single(ctx: Context, name: str, n: int, target: str, durable: bool) -> dict[str, Any]:
    ws = pg_workspace(ctx, name, fleet(4, 1), durable=durable)
    specs = task_specs(n)
    ws.db  # noqa: B018 -- open the database before the clock starts
    seconds = timed(lambda: [submit(ws, [spec]) for spec in specs])
    rows = rows_of(ws, f"SELECT {COLUMNS} FROM events ORDER BY seq")
    bare_ws = pg_workspace(ctx, f"{name}_bare", fleet(4, 1), durable=durable)
    with connect(bare_ws) as bare:
        def one_row_transactions() -> None:
            for row in rows:
                bare.execute(LOCK)
                bare.execute(INSERT_EVENT, row)
                bare.commit()

        bare_seconds = timed(one_row_transactions)
    ws.close(), bare_ws.close()
    server = "durable: fsync, synchronous_commit and full_page_writes on" if durable else "durability off"
    value, ceiling = n / seconds, len(rows) / bare_seconds
    return result(
        name, value=value, unit="submits/s", ceiling=ceiling, ratio=value / ceiling,
        target=target, what=f"{n:,} calls of submit(ws, [spec]) on PostgreSQL ({server}), one "
                            "transaction each",
        ceiling_what=f"the same {len(rows):,} event rows, each: advisory lock + INSERT + COMMIT (psycopg)",
        details={"seconds": seconds, "bare_seconds": bare_seconds,
                 "ms_per_submit": 1000 * seconds / n, "bare_ms_per_row": 1000 * bare_seconds / len(rows)})


def pg_single_submit(ctx: Context) -> dict[str, Any]:
    return _pg_single(ctx, "pg_single_submit", ctx.params["single_submits"], ">= 0.5", durable=False)


def pg_single_submit_durable(ctx: Context) -> dict[str, Any]:
    """The same on a server whose commits wait for their fsync (its defaults)."""
    return _pg_single(ctx, "pg_single_submit_durable", ctx.params["single_submits_full"], ">= 0.8",
                      durable=True)


# one round trip: whether it was a pipeline, and its (method, statement, parameters, options)
Trip = tuple[bool, list[tuple[str, str, Any, dict[str, Any]]]]


@contextmanager
def statements_sent() -> Iterator[list[Trip]]:
    """Every statement sent through psycopg while the block runs, grouped by round trip
    (a pipeline's statements, or one statement outside a pipeline): the benchmark wraps
    psycopg's cursor methods for the block, to replay the same statements bare."""
    trips: list[Trip] = []
    piped: list[list[tuple[str, str, Any, dict[str, Any]]]] = []  # the pipeline being filled, if one is open
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
    pipeline = psycopg.Connection.pipeline

    def sent(method: str, query: Any, params: Any, options: dict[str, Any]) -> None:
        statement = (method, query, params, options)
        if piped:
            piped[-1].append(statement)
        else:
            trips.append((False, [statement]))

    def recorded_execute(self: Any, query: Any, params: Any = None, **options: Any) -> Any:
        sent("execute", query, params, options)
        return execute(self, query, params, **options)

    def recorded_executemany(self: Any, query: Any, params_seq: Any, **options: Any) -> Any:
        params_seq = list(params_seq)
        sent("executemany", query, params_seq, options)
        return executemany(self, query, params_seq, **options)

    @contextmanager
    def recorded_pipeline(self: Any) -> Iterator[Any]:
        piped.append([])
        try:
            with pipeline(self) as opened:
                yield opened
        finally:
            trips.append((True, piped.pop()))

    psycopg.Cursor.execute, psycopg.Cursor.executemany = recorded_execute, recorded_executemany  # type: ignore[method-assign]
    psycopg.Connection.pipeline = recorded_pipeline  # type: ignore[method-assign]
    try:
        yield trips
    finally:
        psycopg.Cursor.execute, psycopg.Cursor.executemany = execute, executemany  # type: ignore[method-assign]
        psycopg.Connection.pipeline = pipeline  # type: ignore[method-assign]


def replay(conn: Any, trips: list[Trip]) -> None:
    """Send `trips` again through the bare connection `conn` (autocommit: each BEGIN and
    COMMIT is a recorded statement), each round trip as it was sent (a pipeline, with a
    cursor per statement kept from one trip to the next, as sched keeps them), reading
    every answer."""
    cursors: dict[str, Any] = {}
    for piped, statements in trips:
        used: list[Any] = []
        with conn.pipeline() if piped else nullcontext():
            for method, query, params, options in statements:
                cursor = cursors.get(query)
                if cursor is None:
                    cursor = cursors[query] = conn.cursor()
                elif cursor in used:  # (the statement twice in one trip: a cursor of its own)
                    cursor = conn.cursor()
                getattr(cursor, method)(query, params, **options)
                used.append(cursor)
        for cursor in used:
            if cursor.description is not None:
                cursor.fetchall()


def pg_single_submit_statements(ctx: Context) -> dict[str, Any]:
    """`pg_single_submit` against the ceiling of the PostgreSQL issue: the same statements,
    in the same round trips, under the same advisory lock, through a bare psycopg loop.
    Recorded from an untimed run of the same submits on a second database, replayed on a
    third made the same way; the replay must leave the same events."""
    n = ctx.params["single_submits"]
    specs = task_specs(n)
    timed_ws = pg_workspace(ctx, "pg_statements", fleet(4, 1))
    timed_ws.db  # noqa: B018 -- open the database before the clock starts
    seconds = timed(lambda: [submit(timed_ws, [spec]) for spec in specs])
    timed_ws.close()
    recorded_ws = pg_workspace(ctx, "pg_statements_recorded", fleet(4, 1))
    recorded_ws.db  # noqa: B018 -- (not recorded: the first connection, the schema check)
    with statements_sent() as trips:
        for spec in specs:
            submit(recorded_ws, [spec])
    bare_ws = pg_workspace(ctx, "pg_statements_bare", fleet(4, 1))
    bare_ws.db  # noqa: B018 -- the same state as the recorded database had before its submits
    bare_ws.close()
    with psycopg.connect(str(bare_ws.settings.database), autocommit=True) as bare:
        bare_seconds = timed(lambda: replay(bare, trips))
    same = rows_of(recorded_ws, f"SELECT {COLUMNS} FROM events ORDER BY seq") == \
        rows_of(bare_ws, f"SELECT {COLUMNS} FROM events ORDER BY seq")
    recorded_ws.close()
    value, ceiling = n / seconds, n / bare_seconds
    return result(
        "pg_single_submit_statements", value=value, unit="submits/s", ceiling=ceiling,
        ratio=value / ceiling, target=">= 0.5", ok=same,
        what=f"{n:,} calls of submit(ws, [spec]) on PostgreSQL, one transaction each",
        ceiling_what=f"the statements those {n:,} submits sent (recorded from a run of the same "
                     "submits), in the same round trips, through a bare psycopg connection",
        details={"seconds": seconds, "bare_seconds": bare_seconds, "round_trips": len(trips),
                 "statements": sum(len(statements) for _piped, statements in trips),
                 "replay_left_the_same_events": same})


def _bare_claim(conn: Any, agent: str, templates: list[tuple[Any, ...]]) -> bool:
    """One bare claim on PostgreSQL, as `bench_claim._bare_claim` on SQLite: under the
    writers' lock, pick the best queued task by the same query, mark it running, append
    the two event rows of a claim, add the attempt to the agent's load, move one from
    queued to running in the counts, drop the zero counts and record the last seq."""
    assigned, started = templates
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    conn.execute(LOCK)
    row = conn.execute(PICK, (now,)).fetchone()
    if row is not None:
        task_id = row[0]
        (seq,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        conn.execute(START, (agent, now, started[6], now, now, now, task_id))
        conn.cursor().executemany(INSERT_EVENT, [
            (seq + 1, f"task-{task_id}", assigned[2], assigned[3], now, assigned[5], assigned[6],
             assigned[7]),
            (seq + 2, f"task-{task_id}", started[2], started[3], now, started[5], assigned[7],
             started[7])])
        conn.execute(_pg(LOAD), (agent,))
        conn.cursor().executemany(_pg(COUNT), [("dev", "queued", -1), ("dev", "running", 1)])
        conn.execute(ZEROS)
        conn.execute(_pg(LAST_SEQ), (str(seq + 2),))
    conn.commit()
    return row is not None


def _pg(sql: str) -> str:
    """A statement of `bench_claim`'s bare claim with psycopg's placeholders."""
    return sql.replace("?", "%s")


def _bare_claimer(url: str, agent: str, count: int, barrier: Any, out: Any,
                  templates: list[tuple[Any, ...]]) -> None:
    """`count` bare claims by `agent` after `WARM` untimed ones (as sched's claimers)."""
    import psycopg

    with psycopg.connect(url) as conn:
        for _ in range(WARM):
            _bare_claim(conn, agent, templates)
        barrier.wait()
        got = sum(_bare_claim(conn, agent, templates) for _ in range(count))
        out.put((agent, got, time.monotonic()))


class _BareArgs:
    def __init__(self, url: str, agents: list[str], per: int, templates: list[tuple[Any, ...]]) -> None:
        self.url, self.agents, self.per, self.extra = url, agents, per, (templates,)

    def __call__(self, i: int) -> tuple[Any, ...]:
        return (self.url, self.agents[i], self.per)


class _SchedArgs:
    extra: tuple[Any, ...] = (WARM,)

    def __init__(self, home: Path, agents: list[str], per: int) -> None:
        self.home, self.agents, self.per = home, agents, per

    def __call__(self, i: int) -> tuple[Any, ...]:
        return (str(self.home), self.agents[i], self.per)


def _claims(ctx: Context, processes: int) -> dict[str, Any]:
    name = f"pg_claims_{processes}"
    per = ctx.params["claims"] // processes
    # pull workers, a slot for every claim (their warm-up claims' too)
    agents = fleet(processes, per + WARM, prefix="w")
    names = [str(a["agentName"]) for a in agents]
    ws = pg_workspace(ctx, name, agents)
    load_queued(ws, (per + WARM) * processes, ws.clock.now())
    record_fleet(ws)
    (last_seq,), = rows_of(ws, "SELECT max(seq) FROM events")
    tables = {t: rows_of(ws, f"SELECT * FROM {t}")
              for t in ("events", "tasks", "agents", "queue_counts", "projection_meta")}
    home = ws.settings.home
    ws.close()
    seconds, claimed = _race(_sched_claimer, _SchedArgs(home, names, per), processes)
    ws = open_workspace(home)
    templates = [rows_of(ws, f"SELECT {COLUMNS} FROM events WHERE seq > %s AND type = %s ORDER BY seq "
                             "LIMIT 1", (last_seq, t))[0] for t in ("TaskAssigned", "TaskStarted")]
    bare_ws = bare_copy(ctx, f"{name}_bare", agents, tables)
    url = str(bare_ws.settings.database)
    bare_seconds, bare_claimed = _race(_bare_claimer, _BareArgs(url, names, per, templates), processes)
    # what each side's claims left: running tasks, the agents' loads, the counts
    written = {side: {"running": rows_of(w, "SELECT count(*) FROM tasks WHERE status = 'running'")[0][0],
                      "loads": rows_of(w, "SELECT name, running FROM agents ORDER BY name"),
                      "counts": rows_of(w, "SELECT queue, status, count FROM queue_counts ORDER BY 1, 2")}
               for side, w in (("sched", ws), ("bare", bare_ws))}
    ws.close(), bare_ws.close()
    value, ceiling = claimed / seconds, bare_claimed / bare_seconds
    return result(
        name, value=value, unit="claims/s", ceiling=ceiling, ratio=value / ceiling, target=">= 0.5",
        what=f"worker.claim() in {processes} processes at once on PostgreSQL, {per:,} each, after "
             f"{WARM} untimed claim each",
        ceiling_what=f"{processes} processes of a bare psycopg loop, after {WARM} untimed claim each: "
                     "advisory lock, pick by the same query, mark the task running, append the two "
                     "event rows, add to the agent's load, move one from queued to running in the "
                     "queue counts, delete zero counts, record the last seq, commit",
        details={"claimed": claimed, "seconds": seconds, "bare_claimed": bare_claimed,
                 "bare_seconds": bare_seconds, "warm_claims_per_process": WARM,
                 "running": written["sched"]["running"]},
        ok=claimed == bare_claimed == per * processes
        and written["sched"]["running"] == (per + WARM) * processes and written["sched"] == written["bare"])


def pg_claims_4(ctx: Context) -> dict[str, Any]:
    return _claims(ctx, 4)


def pg_claims_8(ctx: Context) -> dict[str, Any]:
    return _claims(ctx, 8)


def _tick_writes(url: str, after_seq: int) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """What a tick wrote, as bare statements with their rows (as `bench_tick.same_writes`):
    its events, then the assigned tasks', the agents', the counts' and projection_meta's
    rows as it left them."""
    import psycopg

    with psycopg.connect(url) as conn:
        writes: list[tuple[str, list[tuple[Any, ...]]]] = [(INSERT_EVENT, conn.execute(
            f"SELECT {COLUMNS} FROM events WHERE seq > %s ORDER BY seq", (after_seq,)).fetchall())]
        for table, key, where in (("tasks", "task_id", "status = 'assigned'"), ("agents", "name", "true")):
            names = [c for c in columns_of(conn, table) if c != key]
            rows = conn.execute(f"SELECT {', '.join(names)}, {key} FROM {table} WHERE {where}").fetchall()
            sets = ", ".join(f"{c} = %s" for c in names)
            writes.append((f"UPDATE {table} SET {sets} WHERE {key} = %s", rows))
        for table, keys, value in (("queue_counts", "queue, status", "count"),
                                   ("projection_meta", "key", "value")):
            names = columns_of(conn, table)
            marks = ", ".join(["%s"] * len(names))
            writes.append((f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}) "
                           f"ON CONFLICT ({keys}) DO UPDATE SET {value} = excluded.{value}",
                           conn.execute(f"SELECT {', '.join(names)} FROM {table}").fetchall()))
    return writes


def _bare_transaction(url: str, writes: list[tuple[str, list[tuple[Any, ...]]]]) -> float:
    """The seconds of one transaction under the writers' lock making `writes`."""
    import psycopg

    with psycopg.connect(url) as bare:
        started = time.perf_counter()
        bare.execute(LOCK)
        for sql, rows in writes:
            bare.cursor().executemany(sql, rows)
        bare.commit()
        return time.perf_counter() - started


def pg_tick_assign(ctx: Context) -> dict[str, Any]:
    """One tick assigning one task per free slot (1,000) out of the batch backlog, on
    each of three copies of the database (CREATE DATABASE ... TEMPLATE); the ceiling
    makes the same writes, bare, on another copy as it stood before the tick. Beside it
    (in the details): the same rows inserted into empty tables (the ceiling until
    2026-12-04)."""
    import psycopg

    agents = fleet(BACKLOG_AGENTS, BACKLOG_CAPACITY)
    ws = pg_workspace(ctx, "pg_tick", agents)
    load_queued(ws, ctx.params["batch_tasks"], ws.clock.now())
    record_fleet(ws)
    (last_seq,), = rows_of(ws, "SELECT max(seq) FROM events")
    template_home = ws.settings.home
    ws.close()  # (a template database must have no connection)
    pg = cluster(ctx)
    times, bare_times, tasks, events, assigned_rows = [], [], 0, [], []
    for rep in range(ctx.params["tick_repeat"]):
        url = pg.create_database(f"pg_tick_{rep}", template="pg_tick")
        home = ctx.dir(f"pg_tick_{rep}")
        (home / "sched.toml").write_text(f'database_url = "{url}"\n')
        (home / "agent-control.json").write_bytes((template_home / "agent-control.json").read_bytes())
        copy = open_workspace(home)
        copy.db  # noqa: B018 -- open the database before the clock starts
        times.append(timed(lambda copy=copy: tick(copy)))
        copy.close()
        writes = _tick_writes(url, last_seq)
        events, tasks = writes[0][1], len(writes[1][1])
        if rep == 0:
            with psycopg.connect(url) as conn:
                assigned_rows = conn.execute("SELECT * FROM tasks WHERE status = 'assigned'").fetchall()
        bare_times.append(_bare_transaction(pg.create_database(f"pg_tick_bare_{rep}", template="pg_tick"),
                                            writes))
    bare_ws = pg_workspace(ctx, "pg_tick_empty", agents)
    with connect(bare_ws) as bare:
        columns = columns_of(bare, "tasks")
    insert_task = f"INSERT INTO tasks ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    empty_seconds = _bare_transaction(str(bare_ws.settings.database),
                                      [(INSERT_EVENT, events), (insert_task, assigned_rows)])
    bare_ws.close()
    value, ceiling = statistics.median(times), statistics.median(bare_times)
    slots = BACKLOG_AGENTS * BACKLOG_CAPACITY
    return result(
        "pg_tick_assign", value=value, unit="s", ceiling=ceiling, ratio=value / ceiling,
        target="<= 2", what=f"one tick on PostgreSQL assigning {tasks:,} tasks out of a "
                            f"{ctx.params['batch_tasks']:,} backlog, median of {len(times)} copies",
        ceiling_what=f"the writers' lock and the same writes in one transaction on a copy of the "
                     f"database before the tick: {len(events):,} event rows inserted, the {tasks:,} task "
                     "rows, the agent rows, the counts and projection_meta as the tick left them",
        details={"events_appended": len(events), "tick_seconds": times, "bare_seconds": bare_times,
                 "empty_tables_seconds": empty_seconds, "empty_tables_ratio": value / empty_seconds},
        ok=tasks == slots)


def _full_fleet(ctx: Context, queued: int) -> Workspace:
    ws = pg_workspace(ctx, f"pg_full_{queued}", fleet(10, 10), start_deadline_seconds=NEVER)
    load_queued(ws, queued + 100, ws.clock.now())
    assert len(tick(ws).assigned) == 100
    return ws


def pg_status(ctx: Context) -> dict[str, Any]:
    """`queries.status` on a long and a short log: flat in the log's length."""
    big_n, small_n = ctx.params["idle_big"], ctx.params["idle_small"]
    big_ws, small_ws = _full_fleet(ctx, big_n), _full_fleet(ctx, small_n)
    queries.status(big_ws), queries.status(small_ws)  # warm
    big, small = [], []
    for _ in range(ctx.params["status_repeat"]):
        big.append(timed(lambda: queries.status(big_ws)))
        small.append(timed(lambda: queries.status(small_ws)))
    big_s, small_s = statistics.median(big), statistics.median(small)
    big_ws.close(), small_ws.close()
    return result(
        "pg_status", value=big_s * 1000, unit="ms", ceiling=small_s * 1000, ratio=big_s / small_s,
        target="<= 1.5", what=f"status() on PostgreSQL over a log of about {big_n:,} events "
                              f"(median of {len(big)})",
        ceiling_what=f"the same over about {small_n:,} events, measured in turns")


def stop(ctx: Context) -> None:
    for key in ("pg", "pg_durable"):
        if key in ctx.cache:
            ctx.cache.pop(key).stop()

