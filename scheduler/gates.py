"""Queue gates: a queue may name a command that says whether what its work depends on
is available. While the gate fails, ticks assign nothing from that queue; other
queues go on. A change of state is an event (`QueueGateClosed` / `QueueGateOpened`);
when each gate was last run is an operational cache (`gate_checks`), not part of the
log, so a gate runs at most once per `gate_cache_seconds` whichever process ticks.

Gate commands run before the tick's write transaction, so a slow gate never holds the
write lock.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from eventlog.storage.port import Transaction
from eventlog.timeutil import from_text, to_text
from projections.sql import SqlProjection, meta_json
from scheduler.config.settings import Settings

if TYPE_CHECKING:
    from eventlog.events import Event


GATE_LINE_CHARS = 500  # of a failing gate's last line, kept in its event


@dataclass(frozen=True)
class GateResult:
    passed: bool
    detail: str


def run_gate(argv: list[str], timeout: float, env: Mapping[str, str]) -> GateResult:
    """Run a gate command (no shell): exit 0 passes; anything else fails, with why."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              encoding="utf-8", errors="replace",  # any bytes: its last line is told
                              timeout=timeout, env=dict(env))
    except subprocess.TimeoutExpired:
        return GateResult(False, f"gate {argv[0]!r} timed out after {timeout:g} s")
    except OSError as e:
        return GateResult(False, f"gate {argv[0]!r} cannot start: {e.strerror or e}")
    if done.returncode == 0:
        return GateResult(True, "passed")
    lines = [line for line in (done.stdout + done.stderr).replace("\x00", "").splitlines() if line.strip()]
    return GateResult(False, f"gate {argv[0]!r} exited {done.returncode}"
                      + (f": {lines[-1].strip()[:GATE_LINE_CHARS]}" if lines else ""))


def gated_queues(settings: Settings) -> dict[str, list[str]]:
    return {queue: policy.gate for queue in settings.queues
            if (policy := settings.queue_policy(queue)).gate}


def due_checks(txn: Transaction, settings: Settings, now: datetime) -> list[str]:
    """Gated queues whose last check is older than their cache interval."""
    # (the table of scheduler.operational_tables.GateCheckRow)
    last = dict(txn.rows("gate_checks", ("queue", "checked_at")))
    due = []
    for queue in gated_queues(settings):
        cache = timedelta(seconds=settings.queue_policy(queue).gate_cache_seconds)
        if queue not in last or from_text(last[queue]) + cache <= now:
            due.append(queue)
    return due


def check_gates(settings: Settings, queues: list[str], env: Mapping[str, str]) -> dict[str, GateResult]:
    """Run the gates of `queues` (outside any transaction)."""
    results = {}
    for queue in queues:
        policy = settings.queue_policy(queue)
        assert policy.gate is not None
        results[queue] = run_gate(policy.gate, policy.gate_timeout_seconds, env)
    return results


def record_gates(txn: Transaction, views: SqlProjection, results: Mapping[str, GateResult],
                 now: datetime) -> list[Event]:
    """Inside the write transaction: remember the checks, and return the events for
    gates whose state changed."""
    from eventlog.events import QueueGateClosed, QueueGateOpened

    events: list[Event] = []
    meta = views.meta()
    for queue, result in results.items():
        txn.upsert("gate_checks", ("queue", "checked_at", "passed", "detail"), ("queue",),
                   [(queue, to_text(now), result.passed, result.detail)])
        closed = bool(meta.get(f"gate:{queue}"))
        if result.passed and closed:
            events.append(QueueGateOpened(queue=queue))
        elif not result.passed and not closed:
            events.append(QueueGateClosed(queue=queue, detail=result.detail))
    return events


def reopen_removed(settings: Settings, meta: Mapping[str, str]) -> list[Event]:
    """`QueueGateOpened` for each queue whose gate is closed but no longer in the
    settings: nothing would ever run it again to open it."""
    from eventlog.events import QueueGateOpened

    gated = gated_queues(settings)
    return [QueueGateOpened(queue=queue, detail="its gate was taken out of the settings")
            for queue in sorted(closed_gates(meta)) if queue not in gated]


def closed_gates(meta: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Queue -> {detail, since} for every gate that is closed now (from the projection)."""
    return {key.removeprefix("gate:"): meta_json(key, value) for key, value in meta.items()
            if key.startswith("gate:") and value}


def gates_now(views: SqlProjection) -> dict[str, dict[str, str]]:
    """`closed_gates` of the projection, each saying why its last check failed, which may
    have changed since it closed (another command, another exit code): one more read,
    made only while some gate is closed."""
    closed = closed_gates(views.meta())
    if closed:
        failing = failing_checks(views.txn)
        for queue, gate in closed.items():
            gate["detail"] = failing.get(queue, gate["detail"])
    return closed


def failing_checks(txn: Transaction) -> dict[str, str]:
    """Queue -> why its gate's last check failed, for the gates whose last check did
    (a row per gated queue, read only while some gate is closed)."""
    return {queue: detail for queue, passed, detail in txn.rows("gate_checks", ("queue", "passed", "detail"))
            if not passed}

