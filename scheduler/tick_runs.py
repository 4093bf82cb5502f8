"""Who ticks: when each host last ticked, and which daemons (`sched run`) are up.
Operational records (not projections: a tick that changes nothing appends no event),
read by the health check and the dashboard."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from eventlog.storage.port import Transaction
from eventlog.timeutil import from_text
from scheduler.machine import where_started

# the tables: scheduler.operational_tables.TickRunRow ("tick_runs") and DaemonRow ("daemons")
_TICK_RUN = ("at", "host", "pid", "duration_ms")
_DAEMON = ("host", "pid", "started_at", "beat_at", "interval_seconds", "machine")


def note_tick(txn: Transaction, host: str, pid: int, at: str, duration_ms: float) -> None:
    """Inside the tick's write transaction: remember that it ran."""
    txn.upsert("tick_runs", ("host", "at", "pid", "duration_ms"), ("host",), [(host, at, pid, duration_ms)])


def last_tick_at(txn: Transaction) -> str | None:
    """When any host last ticked (None: never)."""
    return txn.rows("tick_runs", ("max(at)",))[0][0]  # type: ignore[return-value]


def note_daemon(txn: Transaction, host: str, pid: int, machine: str | None, at: str,
                interval: float) -> None:
    """Inside the daemon's tick transaction: it is alive at `at` (started then, if new)
    on `machine` (`scheduler.machine`)."""
    found = txn.rows("daemons", ("started_at",), [("host", "=", host), ("pid", "=", pid)])
    started_at = found[0][0] if found else at
    txn.upsert("daemons", _DAEMON, ("host", "pid"), [(host, pid, started_at, at, interval, machine)])


def forget_daemon(txn: Transaction, host: str, pid: int) -> None:
    """The daemon stopped cleanly."""
    txn.delete("daemons", [("host", "=", host), ("pid", "=", pid)])


def forget_dead_daemons(txn: Transaction, host: str, alive: Callable[[int], bool],
                        machine: str | None, now: datetime) -> list[int]:
    """Forget the records of this host's daemons that are gone (killed without recording
    a stop: their process is gone, their machine restarted, or, for one of another
    machine under this host name, whose pid means nothing here, their beats stopped): a
    daemon starting on the host has replaced them. Returns their pids."""
    gone = [int(row["pid"]) for row in daemons(txn)  # type: ignore[call-overload]
            if row["host"] == host and (where := _where(row, host, machine, alive)) != "running"
            and (where == "gone" or not beating(row, now))]
    for pid in gone:
        forget_daemon(txn, host, pid)
    return gone


def _where(row: dict[str, Any], host: str, machine: str | None,
           alive: Callable[[int], bool]) -> str:
    """Of a daemon's record, seen from `host` on `machine`: `running` (its process runs
    here), `gone` (its process is gone: it ran here, or on an earlier boot of this
    machine) or `unknown` (another host, or another machine under this host name: only
    its beats tell)."""
    if row["host"] != host:
        return "unknown"
    where = where_started(row.get("machine"), machine)
    if where == "here":
        return "running" if alive(int(row["pid"])) else "gone"
    return "gone" if where == "rebooted" else "unknown"


def pid_alive(pid: int) -> bool:
    """Whether a process exists and has not exited (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: trust kill()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


MISSED_BEATS = 3  # a daemon that has not ticked for this many intervals is not alive


def daemon_state(rows: Sequence[dict[str, Any]], now: datetime, host: str,
                 alive: Callable[[int], bool], machine: str | None) -> dict[str, Any]:
    """Whether a daemon is alive, from the records daemons keep (latest beat first): one
    whose last tick is within `MISSED_BEATS` of its intervals (and, where its pid means
    something, on this host and `machine`, whose process exists). When none is,
    `last_seen` is the last beat of one that stopped without recording a stop
    (killed), and `last_host`, `last_pid` say which; `last_running`, whether its
    process still runs here (its ticks fail)."""
    for row in rows:
        if beating(row, now) and _where(row, host, machine, alive) != "gone":
            return {"alive": True, "host": row["host"], "pid": row["pid"], "since": row["started_at"],
                    "beat_at": row["beat_at"], "interval": row["interval_seconds"]}
    last = rows[0] if rows else None
    return {"alive": False, "host": None, "pid": None, "since": None,
            "last_seen": last["beat_at"] if last else None,
            "last_host": last["host"] if last else None, "last_pid": last["pid"] if last else None,
            # its process still runs here: not killed, but its ticks fail (its writes do)
            "last_running": last is not None and _where(last, host, machine, alive) == "running"}


def beating(row: dict[str, Any], now: datetime) -> bool:
    """Whether the daemon of this record ticked within `MISSED_BEATS` of its intervals."""
    return (now - from_text(row["beat_at"])).total_seconds() <= MISSED_BEATS * row["interval_seconds"]


def last_tick(txn: Transaction) -> dict[str, object] | None:
    """The latest tick of any host: {at, host, pid, duration_ms} (None: never)."""
    rows = txn.rows("tick_runs", _TICK_RUN, order=("-at",), limit=1)
    return dict(zip(_TICK_RUN, rows[0], strict=True)) if rows else None


def daemons(txn: Transaction) -> list[dict[str, object]]:
    """Every daemon that has not stopped cleanly, latest beat first."""
    return [dict(zip(_DAEMON, row, strict=True)) for row in txn.rows("daemons", _DAEMON, order=("-beat_at",))]
