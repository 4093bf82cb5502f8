"""`sched simulate`: the baseline (the control file and settings in force) and the
what-if (another control file, changed settings) run over the same workload, side by
side, as one document. Reads the database only."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from eventlog.errors import BadInput
from eventlog.storage import is_url
from eventlog.timeutil import from_text, to_text
from scheduler.config.registry import load_control_file
from scheduler.config.settings import Settings, boolean_for_number
from scheduler.decisions.policy import MAX_SECONDS, QueuePolicy
from scheduler.durations import parse_duration
from scheduler.planning import ordering_policy
from scheduler.whatif import capacity, figures
from scheduler.whatif.engine import FleetAgent, Run, Scenario, fleet_of, simulate, with_capacity
from scheduler.whatif.workload import (
    ListedWorkload,
    LogWorkload,
    check_generated,
    generate,
    parse_load,
    read_jsonl,
)
from scheduler.workspace import Workspace

DEPTH_SAMPLES = 240  # queue depth samples over the window (the chart squeezes them to 60)


@dataclass(frozen=True)
class Request:
    since: str | None = None  # ISO times bounding the arrivals taken from the log
    until: str | None = None
    agents_file: Path | None = None  # the what-if's control file
    settings: Sequence[str] = ()  # the what-if's KEY=VALUE changes
    workload_file: Path | None = None  # JSONL arrivals instead of the log
    generate: Sequence[str] = ()  # QUEUE:rate=..,run=.. loads instead of the log
    duration: str | None = None  # of the generated load
    seed: int = 0
    interval: float | None = None  # the daemon's tick interval, both sides (default: the setting)
    find: str | None = None  # "capacity"
    queue: str | None = None
    target: str | None = None
    charts: bool = field(default=True)


def changed_settings(settings: Settings, changes: Sequence[str]) -> Settings:
    """`settings` with `KEY=VALUE` changes (`age_boost_seconds=300`,
    `queues.dev.max_attempts=5`); a value is read as JSON when it is JSON, else as text."""
    data = settings.model_dump()
    for change in changes:
        key, eq, text = change.partition("=")
        key = key.strip()
        if not eq or not key:
            raise BadInput(f"--set {change!r}: expected KEY=VALUE")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        path = key.split(".")
        if boolean_for_number(QueuePolicy if len(path) == 3 else Settings, path[-1], value):
            raise BadInput(f"--set {change!r}: {str(value).lower()} is a boolean, not a number")
        if path[0] == "queues" and len(path) == 3:
            if path[2] not in QueuePolicy.model_fields:
                raise BadInput(f"--set {change!r}: a queue has no setting {path[2]!r}")
            data["queues"] = {**data["queues"], path[1]: {**data["queues"].get(path[1], {}), path[2]: value}}
        elif len(path) == 1 and path[0] in Settings.model_fields and path[0] not in ("home", "db", "queues"):
            data[path[0]] = value
        else:
            raise BadInput(f"--set {change!r}: no setting {key!r} (a top-level setting, or "
                           "queues.NAME.SETTING)")
    try:
        return Settings(**data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "settings"
        raise BadInput(f"--set: {where}: {err['msg'].removeprefix('Value error, ')}") from None


# what a simulation runs with of the settings (`scenario`: the ticks, the ordering, and
# the retry policy that settles a failure); any other is not modelled (docs/operations.md,
# What-if): a what-if of one answers as the baseline does
MODELLED = frozenset({"tick_interval_seconds", "database_url", "max_attempts", "backoff_base_seconds",
                      "backoff_factor", "backoff_max_seconds", "age_boost_seconds", "age_boost_max",
                      "due_boost_seconds", "due_boost_max"})


def idle_changes(changes: Sequence[str], before: Settings, after: Settings,
                 queues: Collection[str]) -> list[str]:
    """The `--set` changes that change nothing in this run, each with why: a setting
    the simulation does not model, a setting of a queue no task of the workload is in,
    or a value the setting already has (a what-if that answers like the baseline for a
    reason the user did not mean)."""
    notes = []
    for change in changes:
        path = change.partition("=")[0].strip().split(".")
        if path[-1] not in MODELLED:
            notes.append(f"--set {change}: the simulation does not model {path[-1]} (docs/operations.md, "
                         "What-if); it changes nothing")
        elif path[0] == "queues":
            queue, name = path[1], path[2]
            if queue not in queues:
                notes.append(f"--set {change}: no task of the workload is in queue {queue!r}; "
                             "it changes nothing")
            elif (was := getattr(before.queue_policy(queue), name)) == getattr(
                    after.queue_policy(queue), name):
                notes.append(f"--set {change}: queue {queue!r} already has {name} {was!r}; "
                             "it changes nothing")
        elif (was := getattr(before, path[0])) == getattr(after, path[0]):
            notes.append(f"--set {change}: {path[0]} already is {was!r}; it changes nothing")
    return notes


def other_fleets(fleets: Sequence[tuple[float, Sequence[object]]],
                 current: Sequence[FleetAgent]) -> list[str]:
    """A note when the workload from the log ran under another fleet than the one of
    the control file in force now, which the baseline runs (it does not replay the
    fleet's changes): its figures, and the fidelity, are then of a fleet that did not
    run this work. Only what the simulation models counts (not a command or a timeout)."""
    others = [at for at, agents in fleets if set(fleet_of(agents)) != set(current)]
    if not others:
        return []
    when = ", ".join(to_text_or_none(at) or "" for at in others[:3]) + (" ..." if len(others) > 3 else "")
    return [f"the workload ran, in part or all, under another control file than the one in force now "
            f"(recorded at {when}); the baseline runs the one in force now, so its figures and the fidelity "
            "are of a fleet that did not run this work: give that fleet's file with --agents to ask about it"]


def scenario(settings: Settings, fleet: tuple[FleetAgent, ...], seed: int, sample_seconds: float) -> Scenario:
    return Scenario(agents=fleet, plan_policy=ordering_policy(settings), queue_policy=settings.queue_policy,
                    tick_seconds=settings.tick_interval_seconds,
                    wake_on_arrival=is_url(settings.database), seed=seed, sample_seconds=sample_seconds)


def _seconds(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        return from_text(text).timestamp()
    except ValueError:
        raise BadInput(f"{flag}: expected an ISO time with its offset, in the years 1 to 9999 in UTC (e.g. "
                       f"2026-12-05T09:00:00Z), got {text!r}") from None


class _Source:
    """Makes a fresh workload for each run (the log is read again each time)."""

    def __init__(self, ws: Workspace, request: Request, default_attempts: Callable[[str], int]) -> None:
        self.ws, self.request, self.default_attempts = ws, request, default_attempts
        self.since = _seconds(request.since, "--since")
        self.until = _seconds(request.until, "--until")
        if self.since is not None and self.until is not None and self.until < self.since:
            raise BadInput("--until is before --since")
        chosen = [name for name, given in (("--workload", request.workload_file is not None),
                                           ("--generate", bool(request.generate))) if given]
        if len(chosen) > 1:
            raise BadInput("give --workload or --generate, not both")
        if chosen and (request.since or request.until):
            raise BadInput(f"--since and --until select from the log; they do not go with {chosen[0]}")
        if request.duration is not None and not request.generate:
            raise BadInput("--duration goes with --generate")
        self.loads = [parse_load(text) for text in request.generate]
        self.duration = parse_duration(request.duration or "1d", "--duration").total_seconds()
        if self.loads:
            check_generated(self.loads, self.duration)
        self.kind = "log" if not chosen else chosen[0].removeprefix("--")
        self.span = self._span()
        # the control files in force while the work ran (of the last run from the log: see `LogWorkload`)
        self.fleets: list[tuple[float, tuple[Any, ...]]] = []

    def _span(self) -> float:
        if self.kind == "generate":
            return self.duration
        if self.kind == "workload":  # read through once: bad input is refused before anything runs
            first = last = None
            for arrival, _ in read_jsonl(self.request.workload_file):  # type: ignore[arg-type]
                first = arrival.at if first is None else first
                last = arrival.at
        else:
            with self.ws.read() as (log, _views):
                head = log.last()
                first_rec = next(iter(log.read(limit=1)), None)
            first = from_text(first_rec.recorded_at).timestamp() if first_rec else None
            last = from_text(head.recorded_at).timestamp() if head else None
            first = max(first, self.since) if first is not None and self.since is not None else first
            last = min(last, self.until) if last is not None and self.until is not None else last
        return max((last or 0.0) - (first or 0.0), 0.0)

    def run(self, scenario_: Scenario,
            progress: Callable[[int], None] | None = None) -> tuple[Run, dict[str, Any]]:
        """One simulation, and the recorded waits of the workload it read."""
        if self.kind == "generate":
            listed = ListedWorkload(generate(self.loads, self.duration, self.request.seed))
            return simulate(listed, scenario_, progress=progress), {}
        if self.kind == "workload":
            listed = ListedWorkload(read_jsonl(self.request.workload_file))  # type: ignore[arg-type]
            return simulate(listed, scenario_, progress=progress), {}
        with self.ws.read() as (log, _views):
            workload = LogWorkload(log.read(), self.since, self.until, self.default_attempts)
            result = simulate(workload, scenario_, progress=progress)
        self.fleets = workload.fleets_in_force()
        return result, dict(workload.recorded_waits)


def run_simulation(ws: Workspace, request: Request,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The document `sched simulate` prints (see docs/operations.md, "What-if")."""
    say = progress or (lambda _text: None)

    def arrived(count: int) -> None:
        say(f"  {count:,} tasks arrived...")
    base_settings = ws.settings
    if request.interval is not None:
        if math.isnan(request.interval) or request.interval <= 0:  # (infinity: past the bound below)
            raise BadInput("--interval must be a number greater than 0")
        if request.interval > MAX_SECONDS:  # the bound of tick_interval_seconds, which it stands for
            raise BadInput(f"--interval must be at most {MAX_SECONDS:.0f} seconds (ten years), "
                           f"not {request.interval:g}")
        base_settings = base_settings.model_copy(update={"tick_interval_seconds": request.interval})
    fleet = fleet_of(ws.registry().agents)
    if request.agents_file is not None:
        other_fleet = fleet_of(load_control_file(request.agents_file).agents)
    else:
        other_fleet = fleet
    other_settings = changed_settings(base_settings, request.settings) if request.settings else base_settings
    changed = request.agents_file is not None or bool(request.settings)
    if request.find is not None:
        if request.find != "capacity":
            raise BadInput(f"--find {request.find!r}: only 'capacity' can be found")
        if request.queue is None or request.target is None:
            raise BadInput("--find capacity needs --queue and --target")
        if not any(a.type == request.queue and a.enabled for a in other_fleet):
            raise BadInput(f"--queue {request.queue!r}: no enabled agent of that type to size")
    elif request.queue is not None or request.target is not None:
        raise BadInput("--queue and --target go with --find capacity")
    target = capacity.parse_target(request.target) if request.find else None
    # a task submitted with its queue's max_attempts follows the what-if's policy
    source = _Source(ws, request, lambda q: base_settings.queue_policy(q).max_attempts)
    every = max(source.span / DEPTH_SAMPLES, 1.0)

    say("simulating the baseline...")
    base_run, recorded = source.run(scenario(base_settings, fleet, request.seed, every), arrived)
    document: dict[str, Any] = {
        "source": source.kind, "since": request.since, "until": request.until, "seed": request.seed,
        "tasks": sum(q.arrived for q in base_run.queues.values()),
        "window_start": to_text_or_none(base_run.started_at),
        "fidelity": figures.fidelity(recorded, base_run) if source.kind == "log" else None,
        "baseline": figures.summary(base_run), "whatif": None, "difference": None,
        "notes": [*other_fleets(source.fleets, fleet),
                  *idle_changes(request.settings, base_settings, other_settings,
                                [name for name, q in base_run.queues.items() if q.arrived])],
    }
    for note in document["notes"]:
        say(note)
    runs = [base_run]
    if changed:
        say("simulating the what-if...")
        other_run, _ = source.run(scenario(other_settings, other_fleet, request.seed, every), arrived)
        document["whatif"] = figures.summary(other_run)
        document["difference"] = figures.difference(document["baseline"], document["whatif"])
        runs.append(other_run)
    document["depth"] = _depth(runs, every)
    if target is not None:
        assert request.queue is not None
        queue = request.queue

        def evaluate(total: int) -> dict[str, object]:
            say(f"  trying {total} slots for {queue}...")
            sized = with_capacity(other_fleet, queue, total)
            return figures.summary(source.run(scenario(other_settings, sized, request.seed, every))[0])

        start = sum(a.capacity for a in other_fleet if a.type == queue and a.enabled) or 1
        ceiling = max(1, min(capacity.MAX_CAPACITY, base_run.queue(queue).arrived))
        found, curve = capacity.search(evaluate, queue, target, start, ceiling)
        document["search"] = {"queue": queue, "target": target.text, "metric": target.metric,
                              "threshold": target.value, "capacity": found, "curve": curve}
    return document


def to_text_or_none(moment: float | None) -> str | None:
    from datetime import UTC, datetime

    return None if moment is None else to_text(datetime.fromtimestamp(moment, UTC))


def _depth(runs: list[Run], every: float) -> dict[str, Any]:
    """Each queue's depth (tasks waiting to be assigned or blocked) over time, per run,
    squeezed alike so the charts share a time axis (a long run samples less often:
    the others are first squeezed to its interval)."""
    queues = sorted({q for run in runs for q in run.queues})
    every = max([every, *(run.sample_seconds for run in runs)])
    series = {q: [_bin(figures.depth_series(run, q), round(every / (run.sample_seconds or every)))
                  for run in runs] for q in queues}
    longest = max((len(values) for per_run in series.values() for values in per_run), default=0)
    bins = max(1, math.ceil(longest / figures.CHART_COLUMNS))
    shown = {queue: [_bin(values, bins) for values in per_run] for queue, per_run in series.items()}
    return {"every_seconds": round(every * bins, 3), "queues": shown}


def _bin(values: list[int], size: int) -> list[int]:
    return [max(values[i:i + size]) for i in range(0, len(values), size)]
