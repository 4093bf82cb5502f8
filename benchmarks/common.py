"""What every figure shares: the result record, workspaces for sched, and bare sqlite3
connections with the same pragmas and the same table shapes for the ceilings."""

from __future__ import annotations

import json
import operator
import signal
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.config.settings import load_settings
from scheduler.submit import TaskSpec
from scheduler.workspace import Workspace

EVENT_COLUMNS = "seq, stream_id, type, schema_version, recorded_at, data, prev_hash, hash"
# a backlog of 1M tasks is far above the default backpressure limit (10,000 per queue)
BENCH_SETTINGS: dict[str, object] = {"max_queue_depth": 1_000_000_000}
_OPS = {">=": operator.ge, "<=": operator.le}


@dataclass
class Context:
    """One run: its scratch directory, its sizes, and what figures build for others
    (big databases are built once per run and reused)."""

    root: Path
    size: str
    params: dict[str, Any]
    cache: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def result(name: str, *, value: float, unit: str, ceiling: float | None, ratio: float | None,
           target: str, what: str, ceiling_what: str, details: dict[str, Any] | None = None,
           ok: bool = True, absolute: bool = False) -> dict[str, Any]:
    """One figure. `target` is `">= X"` or `"<= X"` on the ratio, or with `absolute` on
    the value itself, in its unit (`"<= 50 ms"`: the ceiling is then beside it for
    comparison); `ok` adds a condition besides it (e.g. every task succeeded)."""
    op, bound = target.split()[:2]
    judged = value if absolute else ratio
    met = ok and judged is not None and _OPS[op](judged, float(bound))
    return {"name": name, "value": _round(value), "unit": unit, "ceiling": _round(ceiling),
            "ratio": _round(ratio), "target": target, "target_on": "value" if absolute else "ratio",
            "met": bool(met), "what": what, "ceiling_what": ceiling_what, "details": details or {}}


def _round(x: float | None) -> float | None:
    if x is None:
        return None
    return float(f"{x:.4g}")


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_time(fn: Callable[[], object], repeat: int) -> float:
    return statistics.median(timed(fn) for _ in range(repeat))


# -- sched -----------------------------------------------------------------------------

def fleet(agents: int, capacity: int, *, type_: str = "dev", prefix: str = "a",
          command: list[str] | None = None) -> list[dict[str, object]]:
    """A control file's agents: `agents` agents of one type, `capacity` slots each."""
    return [{"agentName": f"{prefix}{i:03d}", "agentType": type_, "maxConcurrency": capacity,
             **({"command": command} if command else {})} for i in range(agents)]


def settings_for(home: Path, **settings: object) -> Any:
    return load_settings({}, {"home": home, **BENCH_SETTINGS, **settings}).settings


def new_workspace(home: Path, agents: list[dict[str, object]], **settings: object) -> Workspace:
    """A fresh sched workspace in `home` (its control file, a new database)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "agent-control.json").write_text(json.dumps(agents))
    ws = Workspace(settings_for(home, **settings))
    ws.init_db()
    return ws


def open_workspace(home: Path, **settings: object) -> Workspace:
    return Workspace(settings_for(home, **settings))


def task_specs(count: int, start: int = 0, queue: str = "dev") -> list[TaskSpec]:
    """Ordinary tasks: a title, a small payload and ten priority levels."""
    return [TaskSpec(queue=queue, title=f"benchmark task {i}", priority=i % 10, payload={"n": i})
            for i in range(start, start + count)]


# -- bare sqlite3 ----------------------------------------------------------------------

def bare_connect(path: Path, *, synchronous: str = "NORMAL", busy_timeout_ms: int = 30_000
                 ) -> sqlite3.Connection:
    """A plain sqlite3 connection with the pragmas of `eventlog.storage.sqlite.connect`, in
    autocommit mode (transactions are begun explicitly, as sched does)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def copy_shape(source: Path, target: sqlite3.Connection, tables: Sequence[str]) -> None:
    """Create `tables` in `target` exactly as they are in the sched database `source`:
    the same columns, keys and indexes (their DDL read from sqlite_master)."""
    with sqlite3.connect(source) as src:
        ddl = src.execute(
            f"SELECT sql FROM sqlite_master WHERE tbl_name IN ({', '.join('?' * len(tables))}) "
            "AND sql IS NOT NULL ORDER BY type DESC", list(tables)).fetchall()
    src.close()
    for (sql,) in ddl:  # tables first ("table" > "index" in DESC order)
        target.execute(sql)


def read_rows(path: Path, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def event_rows(path: Path, after: int = 0, types: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
    """The stored event rows of a sched database, as they are (the ceilings insert
    exactly these)."""
    where = "seq > ?"
    params: list[object] = [after]
    if types:
        where += f" AND type IN ({', '.join('?' * len(types))})"
        params += list(types)
    return read_rows(path, f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY seq", params)


def bare_database(path: Path, shape_from: Path, tables: Sequence[str], *,
                  synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A new database file holding empty copies of `tables` of a sched database."""
    if path.exists():
        path.unlink()
    conn = bare_connect(path, synchronous=synchronous)
    copy_shape(shape_from, conn, tables)
    return conn


INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def stop_process(proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    """SIGTERM, as an operator stops a daemon or a server; killed if it has not ended
    within `timeout` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


GROWTH_FLOOR_KIB = 1024  # a memory growth below this is counted as this much (page-level noise)


def growth_ratio(big: dict[str, Any], small: dict[str, Any]) -> tuple[float, float, float]:
    """How much more memory the big run grew than the small one, above each process's
    own baseline (its interpreter and imports, which would hide the growth): (big MiB,
    small MiB, ratio)."""
    grown = [max(run["peak_kib"] - run["baseline_kib"], 0) for run in (big, small)]
    return grown[0] / 1024, grown[1] / 1024, max(grown[0], GROWTH_FLOOR_KIB) / max(grown[1], GROWTH_FLOOR_KIB)


PROJECTION_TABLES = ("tasks", "agents", "queue_counts", "agent_records", "outcomes", "capacity_changes",
                     "tokens", "projection_meta")


def projection_inserts(db: Path) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Every row of the projection tables of a sched database, as bare INSERTs with
    their rows (a ceiling writing the rows sched's fold wrote)."""
    writes = []
    for table in PROJECTION_TABLES:
        columns = [name for (_cid, name, *_rest) in read_rows(db, f"PRAGMA table_info({table})")]
        rows = read_rows(db, f"SELECT {', '.join(columns)} FROM {table}")
        if rows:
            marks = ", ".join("?" * len(columns))
            writes.append((f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows))
    return writes
