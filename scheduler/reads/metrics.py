"""`sched metrics`: the figures of a time window, read from the outcome and capacity
projections (never by scanning the log), and their Prometheus exposition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from eventlog.errors import BadInput
from eventlog.timeutil import from_text, to_text
from projections.figures import Held, window_figures
from scheduler.durations import parse_duration
from scheduler.reads.queries import status
from scheduler.workspace import Workspace


def parse_window(text: str) -> timedelta:
    """`--since`: 1h, 24h, 7d or any duration `parse_duration` takes, above zero."""
    window = parse_duration(text)
    if window.total_seconds() <= 0:
        raise BadInput(f"--since: the window must be longer than 0, got {text!r}")
    return window


def metrics(ws: Workspace, window: timedelta) -> dict[str, Any]:
    """The figures of the window that ends now (see `projections.figures`)."""
    end = ws.clock.now()
    lo, hi = (end - window).timestamp(), end.timestamp()
    with ws.read() as (_log, views):
        ended = views.outcomes(since_ts=lo)
        history = views.capacity_history()
        running = [Held(t.agent, t.queue, from_text(t.started_at).timestamp())
                   for t in views.holding() if t.status == "running" and t.agent and t.started_at]
    # what ended after the window's end (a window as of a moment past, another host's clock
    # ahead) is not the window's outcome; it was running at the end, busy until then
    outcomes = [o for o in ended if o.ended_ts <= hi]
    running += [Held(o.agent, o.queue, o.started_ts) for o in ended
                if o.ended_ts > hi and o.agent is not None and o.started_ts is not None and o.started_ts < hi]
    figures = window_figures(outcomes, history, running, lo, hi)
    figures["hourly"] = {to_text(datetime.fromtimestamp(hour, UTC)): counts
                         for hour, counts in figures["hourly"].items()}
    return {"window": {"seconds": window.total_seconds(), "start": to_text(end - window),
                       "end": to_text(end)}, **figures}


# Prometheus wants base units: the throughput goes out per second, not per hour.
_PER_HOUR = 1 / 3600
_WINDOW_GAUGES = (
    # (figure, metric name, help[, scale])
    ("completed", "completed", "attempts that succeeded in the window"),
    ("failed", "failed", "attempts that failed or whose lease expired in the window"),
    ("lease_expired", "lease_expired", "attempts whose lease expired in the window"),
    ("dead_lettered", "dead_lettered", "tasks dead-lettered in the window"),
    ("throughput_per_hour", "throughput_per_second", "succeeded attempts per second over the window",
     _PER_HOUR),
    ("error_rate", "error_rate", "failed / (succeeded + failed) attempts in the window"),
    ("utilization", "utilization", "busy slot-seconds / offered slot-seconds in the window"),
    ("busy_slot_seconds", "busy_slot_seconds", "slot-seconds of attempts running in the window"),
    ("offered_slot_seconds", "offered_slot_seconds", "slot-seconds agents offered in the window"),
    ("cpu_seconds", "cpu_seconds", "CPU seconds of agent runs measured by sched exec"),
    ("peak_rss_bytes", "peak_rss_bytes", "largest resident memory of one agent run"),
)
_DURATIONS = (("queue_wait_seconds", "from ready to started"),
              ("run_seconds", "from started to ended"),
              ("start_latency_seconds", "from assigned to started"))


def prometheus_text(ws: Workspace, report: dict[str, Any]) -> str:
    """The window's figures and the current queue depths and agent load in the
    Prometheus text exposition format (built with prometheus_client)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    now = status(ws)
    window = f"{report['window']['seconds']:g}s"

    class Snapshot:  # a collector over one computed report (prometheus_client's API)
        def collect(self):  # type: ignore[no-untyped-def]
            depth = GaugeMetricFamily("sched_queue_tasks", "tasks per queue and status now",
                                      labels=["queue", "status"])
            for queue, counts in now["queues"].items():
                for state, count in counts.items():
                    depth.add_metric([queue, state], count)
            yield depth
            for name, help_text, key in (("sched_agent_capacity", "slots declared", "capacity"),
                                         ("sched_agent_load", "slots held now (assigned + running)",
                                          None),
                                         ("sched_agent_free_slots", "slots free now", "free")):
                family = GaugeMetricFamily(name, help_text, labels=["agent", "type"])
                for agent, a in now["agents"].items():
                    value = a["assigned"] + a["running"] if key is None else a[key]
                    family.add_metric([agent, a["type"]], value)
                yield family
            yield GaugeMetricFamily("sched_paused", "1 while assignment is paused",
                                    value=1 if now["paused"] else 0)
            yield CounterMetricFamily("sched_events", "events appended to the log",
                                      value=now["last_seq"])
            for figure, metric, help_text, *scale in _WINDOW_GAUGES:
                family = GaugeMetricFamily(f"sched_window_{metric}", help_text,
                                           labels=["window", "scope", "name"])
                _add_scopes(family, report, figure, window, scale=scale[0] if scale else 1)
                yield family
            for figure, help_text in _DURATIONS:
                for stat in ("mean", "p50", "p95"):
                    family = GaugeMetricFamily(f"sched_window_{figure}_{stat}",
                                               f"{stat} of attempts' time {help_text}",
                                               labels=["window", "scope", "name"])
                    _add_scopes(family, report, figure, window, stat)
                    yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())
    return generate_latest(registry).decode()


def _add_scopes(family: Any, report: dict[str, Any], figure: str, window: str,
                stat: str | None = None, scale: float = 1) -> None:
    scopes = [("all", "", report["overall"])]
    scopes += [("queue", q, f) for q, f in report["queues"].items()]
    scopes += [("agent", a, f) for a, f in report["agents"].items()]
    for scope, name, figures in scopes:
        value = figures[figure] if stat is None else figures[figure][stat]
        if value is not None:  # no figure (no attempts, no slots): no sample
            family.add_metric([window, scope, name], value * scale)
