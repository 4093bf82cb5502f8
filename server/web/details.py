"""What the task pages show, worked out from use-case results: a task's attempts (from
its events), its timeline, the tail of its agent's log, and the metrics page's charts
as inline SVG (drawn here, server-side: the CSP allows no script and no inline style,
so the SVG uses presentation attributes and classes of dashboard.css only).

Everything here returns plain values; the templates escape every string of them."""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventlog.store import Recorded
from eventlog.timeutil import from_text, to_text

LOG_LINES = 200  # the tail of an agent's log the task page shows
LOG_BYTES = 256 * 1024  # read at most this much from the log's end
SUMMARY_CHARS = 300  # an event's data, cut to this many characters
LOG_NAME = "agent.log"  # what `sched exec` writes under SCHED_HOME/work/TASK/ATTEMPT/

ATTEMPT_ENDS = {"TaskSucceeded": "succeeded", "TaskFailed": "failed", "LeaseExpired": "lease expired"}


@dataclass
class Attempt:
    number: int
    agent: str | None = None
    assigned_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    outcome: str | None = None  # None: not ended (or given back before it started)
    reason: str | None = None  # a failure's machine-readable reason
    error: str | None = None  # a failure's message (agent output: untrusted)
    exit_code: int | None = None
    log_path: str | None = None
    progress: list[str] = field(default_factory=list)


def attempts(events: list[Recorded]) -> list[Attempt]:
    """The task's attempts in order, each with its agent, times, outcome and error."""
    found: dict[int, Attempt] = {}
    for rec in events:
        data = rec.fields()
        number = data.get("attempt")
        if not isinstance(number, int):
            continue
        a = found.setdefault(number, Attempt(number))
        a.agent = data.get("agent") or a.agent
        if rec.type == "TaskAssigned":
            a.assigned_at = rec.recorded_at
        elif rec.type == "TaskStarted":
            a.started_at = rec.recorded_at
            a.log_path = data.get("log_path") or a.log_path
        elif rec.type == "TaskProgressed":
            percent = data.get("percent")
            words = f"{percent:g}%" if isinstance(percent, int | float) else ""
            a.progress.append(" ".join(w for w in (words, data.get("message") or "") if w))
        elif rec.type in ATTEMPT_ENDS:
            a.ended_at = rec.recorded_at
            a.outcome = ATTEMPT_ENDS[rec.type]
            a.reason = data.get("reason")
            a.error = data.get("error") or data.get("detail")
            a.exit_code = data.get("exit_code")
            a.log_path = data.get("log_path") or a.log_path
    return [found[n] for n in sorted(found)]


def summary(rec: Recorded) -> str:
    """An event's data in one line (without the task id it repeats), cut short."""
    data = rec.fields()
    data.pop("task_id", None)
    text = json.dumps(data, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS - 1] + "…"


@dataclass(frozen=True)
class LogTail:
    path: str | None
    lines: list[str]
    unavailable: str | None  # why no lines are shown, in words (None: `lines` are the tail)


def log_tail(log_path: str | None, home: Path) -> LogTail:
    """The last `LOG_LINES` lines of an agent's log, if the file is readable here. Only
    a log `sched exec` writes (an `agent.log` under this home's `work/` directory) is
    read: the path comes from the log, and a path elsewhere is not opened."""
    if not log_path:
        return LogTail(None, [], "no log recorded: the task's attempts ran no command "
                                 "through sched exec (a pull worker keeps its own logs)")
    work = (home / "work").resolve()
    try:
        path = Path(log_path).resolve()
        if path.name != LOG_NAME or not path.is_relative_to(work):
            return LogTail(log_path, [], f"not shown: this server reads agent logs under {work} only")
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                return LogTail(log_path, [], "not shown: the log is not a regular file")
            f.seek(max(0, info.st_size - LOG_BYTES))
            raw = f.read(LOG_BYTES)
    except OSError as e:
        why = e.strerror or type(e).__name__
        return LogTail(log_path, [], f"the log is not readable on this machine ({why}): "
                                     "it may be on the host that ran the attempt")
    lines = raw.decode("utf-8", errors="replace").splitlines()
    if len(raw) == LOG_BYTES and info.st_size > LOG_BYTES:
        lines = lines[1:]  # the first may be cut
    return LogTail(log_path, lines[-LOG_LINES:], None)


# charts --------------------------------------------------------------------------

@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str  # the class giving its colour
    label: str  # its <title>: the figure it shows


@dataclass(frozen=True)
class Chart:
    """A bar chart laid out for an inline <svg> (the template draws it)."""

    width: int
    height: int
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # y and label of the value axis
    labels: list[tuple[float, str]]  # x and label under the bars
    top: float  # the value at the top of the axis
    base: float  # the y of zero


CHART_W, CHART_H, LEFT, BOTTOM, TOP = 640, 200, 44, 22, 8


def nice_top(value: float) -> float:
    """A round value at or above `value` for the top of an axis (1, 2, 5 times 10^n)."""
    if value <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(value))
    return next(m * step for m in (1, 2, 5, 10) if m * step >= value * (1 - 1e-9))


def bars(series: list[tuple[str, list[tuple[float, str, str]]]], top: float | None = None) -> Chart:
    """Groups of bars: each group a label and its (value, class, title) bars; the axis
    goes up to `top`, else to a round value above the largest."""
    top = top or nice_top(max((v for _, group in series for v, _, _ in group), default=0.0))
    plot_w, plot_h = CHART_W - LEFT - 4, CHART_H - BOTTOM - TOP
    base = TOP + plot_h
    slot = plot_w / max(len(series), 1)
    drawn, labels = [], []
    every = max(1, len(series) // 12)  # at most about twelve labels under the bars
    for i, (label, group) in enumerate(series):
        width = slot * 0.8 / max(len(group), 1)
        for j, (value, css, title) in enumerate(group):
            if value <= 0:
                continue  # (its place stays empty)
            h = plot_h * min(value, top) / top
            drawn.append(Bar(round(LEFT + i * slot + slot * 0.1 + j * width, 2), round(base - h, 2),
                             round(max(width - 1, 1), 2), round(h, 2), css, title))
        if i % every == 0:
            labels.append((round(LEFT + (i + 0.5) * slot, 2), label))
    ticks = [(round(base - plot_h * k / 4, 2), f"{top * k / 4:g}") for k in range(5)]
    return Chart(CHART_W, CHART_H, drawn, ticks, labels, top, base)


def hours_of(document: dict[str, Any]) -> list[str]:
    """Every hour the metrics window touches (as `hourly` names them), so an hour with
    no outcome shows as a gap; and any hour `hourly` has besides."""
    start = int(from_text(document["window"]["start"]).timestamp()) // 3600 * 3600
    end = from_text(document["window"]["end"]).timestamp()
    hours = [to_text(datetime.fromtimestamp(h, UTC)) for h in range(start, int(end) + 1, 3600)]
    return sorted(set(hours) | set(document["hourly"]))


def latency(seconds: float) -> str:
    """A start latency for people: milliseconds below a second (`85 ms`), else `2.5 s`."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def charts(document: dict[str, Any]) -> dict[str, Chart]:
    """The metrics page's charts from `sched metrics --json`: throughput per hour
    (completed, failed, dead-lettered), waits and run times per queue (p50, p95), and
    utilization per agent."""
    none = {"completed": 0, "failed": 0, "dead_lettered": 0}
    hourly = [(hour[11:16], [(float(c[key]), css, f"{hour}: {c[key]} {words}")
                             for key, css, words in (("completed", "completed", "completed"),
                                                     ("failed", "failed", "failed"),
                                                     ("dead_lettered", "dead", "dead-lettered"))])
              for hour, c in ((h, document["hourly"].get(h, none)) for h in hours_of(document))]
    durations = []
    for name, q in document["queues"].items():
        group = []
        for key, words in (("queue_wait_seconds", "waited"), ("run_seconds", "ran")):
            for p in ("p50", "p95"):
                value = q[key][p]
                group.append((float(value or 0.0), f"{key.split('_')[0]}-{p}",
                              f"{name}: {words} {p} {value:g} s" if value is not None
                              else f"{name}: {words} {p}: none ended"))
        durations.append((name, group))
    utilization = []
    for name, a in document["agents"].items():
        percent = 100.0 * (a["utilization"] or 0.0)
        words = f"{name}: {percent:.1f}% of its offered slot time busy"
        utilization.append((name, [(percent, "busy", words)]))
    return {"throughput": bars(hourly), "durations": bars(durations),
            "utilization": bars(utilization, 100.0)}
