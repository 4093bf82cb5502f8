"""Where a simulation's workload comes from: the recorded log, a JSONL file, or a
seeded generator. Each is read as a stream: memory follows the tasks open at once,
not the length of the window."""

from __future__ import annotations

import heapq
import json
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventlog.errors import BadInput
from eventlog.events import UNCOUNTED_FAILURES
from eventlog.store import Recorded
from eventlog.timeutil import from_text
from eventlog.values import INT64_MAX
from projections.fold import command_ran
from scheduler.decisions.fit import capability_list
from scheduler.decisions.policy import MAX_ATTEMPTS
from scheduler.durations import UNITS, parse_duration
from scheduler.whatif.facts import Arrival, Attempt, Fact, carried_attempt
from scheduler.whatif.sketch import Sketch

# failures that are not the task's doing: an operator's (evicted, cancelled), its
# runner's stop (interrupted), or nothing ran (undelivered)
NOT_THE_TASKS = frozenset({"cancelled", *UNCOUNTED_FAILURES})
# the records that shape a workload; everything else in the log is skipped unread
_TASK_TYPES = frozenset({"TaskSubmitted", "TaskAssigned", "TaskStarted", "TaskSucceeded", "TaskFailed",
                         "LeaseExpired", "TaskRequeued", "TaskDeadLettered", "TaskApproved",
                         "TaskRejected", "TaskCancelled"})
_ENDS = frozenset({"TaskSucceeded", "TaskDeadLettered", "TaskCancelled", "TaskRejected"})


@dataclass(slots=True)
class _History:
    queue: str
    ran: list[Attempt] = field(default_factory=list)
    assigned_at: float | None = None
    started_at: float | None = None
    closed: bool = False  # ended in the log (or in the simulation): no attempt is wanted
    forgotten: bool = False  # ended in the simulation first: dropped once the log ends it too


class LogWorkload:
    """The tasks submitted in [since, until] (epoch seconds; None: open) as the log
    recorded them: arrivals, approvals, rejections and cancels as facts, and each
    task's attempts that ran (attempts that never started, and those an operator's
    eviction stopped, are the fleet's doing, not the task's: left out). It also keeps
    the recorded waits (`AssignmentDecision.waited_seconds`) per queue, the other side
    of the fidelity figure."""

    def __init__(self, records: Iterator[Recorded], since: float | None, until: float | None,
                 default_attempts: Callable[[str], int]) -> None:
        self._records, self._since, self._until = records, since, until
        self._default_attempts = default_attempts
        self._histories: dict[int, _History] = {}
        self._ahead: deque[Fact] = deque()  # facts read while looking ahead for an attempt
        self._done = False
        self._run_totals: dict[str, tuple[float, int]] = {}  # queue -> (seconds, count) of successes
        self.recorded_waits: dict[str, Sketch] = {}
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._first_assigned: float | None = None
        # the control files recorded: the last one before the window's first arrival, then
        # each one after it, as (when, its agents)
        self._fleets: list[tuple[float, tuple[Any, ...]]] = []

    def facts(self) -> Iterator[Fact]:
        while True:
            if self._ahead:
                yield self._ahead.popleft()
            elif not self._read_one():
                return

    def first_tick(self) -> float | None:
        """The time of the window's first assignment: ticks before it (a daemon not yet
        started, or stopped) assigned nothing, so the simulation ticks from then on."""
        while self._first_assigned is None and self._read_one():
            pass
        return self._first_assigned

    def attempt(self, task_id: int, number: int) -> Attempt:
        history = self._histories[task_id]
        while len(history.ran) < number and not history.closed and self._read_one():
            pass
        seconds, runs = self._run_totals.get(history.queue, (0.0, 0))
        stand_in = Attempt(0.0, seconds / runs if runs else 0.0, "succeeded")
        if len(history.ran) < number and not history.closed:
            # the log ended with the task still open (its next attempt running, or
            # waiting its backoff): how that attempt ends is not known, so it is taken
            # as a task that never ran, not as its last failure once more
            return stand_in
        return carried_attempt(history.ran, number, stand_in)

    def forget(self, task_id: int) -> None:
        history = self._histories.get(task_id)
        if history is not None and history.closed:
            del self._histories[task_id]
        elif history is not None:  # still open in the log: dropped when the log ends it
            history.ran, history.closed, history.forgotten = [], True, True

    def _read_one(self) -> bool:
        """Read the next record; False at the end of the log."""
        if self._done:
            return False
        for rec in self._records:
            if rec.type in _TASK_TYPES:
                self._take(rec)
                return True
            if rec.type == "AgentsConfigured":  # (rare: its agents are read as they were recorded)
                recorded = (from_text(rec.recorded_at).timestamp(), rec.event.agents)  # type: ignore[attr-defined]
                self._fleets = [*self._fleets, recorded] if self.first_at is not None else [recorded]
        self._done = True
        return False

    def fleets_in_force(self) -> list[tuple[float, tuple[Any, ...]]]:
        """The control files in force while the window's tasks were in the log (from
        the first arrival to the last fact read): the one recorded before it, and each
        one recorded during it, as (when, its agents: `AgentRecord`s)."""
        if self.first_at is None:
            return []
        last = self.last_at if self.last_at is not None else self.first_at
        return [fleet for fleet in self._fleets if fleet[0] <= last]

    def _take(self, rec: Recorded) -> None:
        task_id = int(rec.stream_id[5:])  # "task-N"
        at = from_text(rec.recorded_at).timestamp()
        if rec.type == "TaskSubmitted":
            if not (-math.inf if self._since is None else self._since) <= at <= (
                    math.inf if self._until is None else self._until):
                return
            self._arrive(task_id, at, rec.fields())
            return
        history = self._histories.get(task_id)
        if history is None:
            return  # a task outside the window
        data = rec.fields()
        kind = rec.type
        if kind == "TaskAssigned":
            history.assigned_at, history.started_at = at, None
            if self._first_assigned is None:
                self._first_assigned = at
            decision = data.get("decision")
            if decision is not None:
                self.recorded_waits.setdefault(history.queue, Sketch()).add(decision["waited_seconds"])
        elif kind == "TaskStarted":
            history.started_at = at
        elif kind in ("TaskSucceeded", "TaskFailed", "LeaseExpired"):
            self._ended(history, kind, data, at)
        elif kind == "TaskRequeued":
            history.assigned_at = history.started_at = None
        if kind in ("TaskApproved", "TaskRejected", "TaskCancelled"):
            self._ahead.append(Fact(at, kind.removeprefix("Task").lower(), task_id))  # type: ignore[arg-type]
        if kind in _ENDS:
            history.closed = True
            if history.forgotten:
                del self._histories[task_id]
        self.last_at = at

    def _arrive(self, task_id: int, at: float, data: dict) -> None:
        queue = data["queue"]
        not_before = data.get("not_before")
        attempts = data.get("max_attempts", 3)
        arrival = Arrival(
            task_id=task_id, at=at, queue=queue, priority=data.get("priority", 0),
            assignee=data.get("assignee"), task_type=data.get("task_type"),
            max_attempts=None if attempts == self._default_attempts(queue) else attempts,
            delay=max(0.0, from_text(not_before).timestamp() - at) if not_before else 0.0,
            after=tuple(data.get("after", ())), needs_approval=data.get("requires_approval", False),
            requires=tuple(data.get("requires", ())),
            due=from_text(data["due"]).timestamp() if data.get("due") else None)
        self._histories[task_id] = _History(queue)
        self._ahead.append(Fact(at, "arrived", task_id, arrival))
        if self.first_at is None:
            self.first_at = at
        self.last_at = at

    def _ended(self, history: _History, kind: str, data: dict, at: float) -> None:
        assigned, started = history.assigned_at, history.started_at
        history.assigned_at = history.started_at = None
        if assigned is None or started is None:
            return  # not an attempt that ran (or assigned before the window was read)
        started = command_ran(started, data.get("start_delay_seconds"), at)
        run = max(0.0, at - started)
        if kind == "TaskFailed" and data.get("reason") == "cancelled":
            # stopped by an operator's cancel: it runs until the cancel (a fact of its own,
            # at its time) stops it, not the task's own run time, nor a stand-in that ends first
            attempt = Attempt(started - assigned, run, "cancelled")
        elif kind == "TaskFailed" and data.get("reason") in NOT_THE_TASKS:
            return  # not the task's doing (an eviction, a runner's stop), or nothing ran
        elif kind == "TaskSucceeded":
            attempt = Attempt(started - assigned, run, "succeeded")
            seconds, runs = self._run_totals.get(history.queue, (0.0, 0))
            self._run_totals[history.queue] = (seconds + run, runs + 1)
        elif kind == "LeaseExpired":
            attempt = Attempt(started - assigned, run, "expired")
        else:
            attempt = Attempt(started - assigned, run, "failed", bool(data.get("retryable", True)),
                              str(data.get("reason", "exit_code")))
        if not history.closed:
            history.ran.append(attempt)


# -- JSONL ----------------------------------------------------------------------------

_ATTEMPT_KEYS = frozenset({"run_seconds", "start_delay_seconds", "outcome", "retryable"})
_JSONL_KEYS = frozenset({"task_id", "at", "queue", "priority", "assignee", "task_type", "max_attempts",
                         "delay_seconds", "after", "attempts", "requires", "due", *_ATTEMPT_KEYS})


class ListedWorkload:
    """Arrivals given with their attempts up front (a JSONL file, the generator)."""

    def __init__(self, items: Iterable[tuple[Arrival, list[Attempt]]]) -> None:
        self._items = iter(items)
        self._attempts: dict[int, list[Attempt]] = {}
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.recorded_waits: dict[str, Sketch] = {}  # (none: nothing was recorded)

    def facts(self) -> Iterator[Fact]:
        for arrival, attempts in self._items:
            self._attempts[arrival.task_id] = attempts
            if self.first_at is None:
                self.first_at = arrival.at
            self.last_at = arrival.at
            yield Fact(arrival.at, "arrived", arrival.task_id, arrival)

    def first_tick(self) -> float | None:
        return None  # the scheduler ticks from the first arrival

    def attempt(self, task_id: int, number: int) -> Attempt:
        return carried_attempt(self._attempts[task_id], number, Attempt(0.0, 0.0, "succeeded"))

    def forget(self, task_id: int) -> None:
        self._attempts.pop(task_id, None)


def read_jsonl(path: Path) -> Iterator[tuple[Arrival, list[Attempt]]]:
    """The arrivals of a JSONL workload file, one task per line, in time order:
    `{"at": 0, "queue": "dev", "run_seconds": 30}` (see docs/operations.md for every
    key). Bad lines raise BadInput naming the file and line."""
    try:
        handle = path.open("rb")  # (each line decoded on its own: a bad one is named exactly)
    except OSError as e:
        raise BadInput(f"--workload {path}: {e.strerror or e}") from e
    with handle:
        last = -math.inf
        seen: dict[int, int] = {}  # task id -> the line that gave it
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"--workload {path}:{number}"
            try:
                item = _jsonl_item(json.loads(line.decode("utf-8")), number)
            except UnicodeDecodeError:
                raise BadInput(f"{where}: not UTF-8 text") from None
            except RecursionError:
                raise BadInput(f"{where}: nested too deeply to read") from None
            except (ValueError, TypeError, KeyError) as e:
                raise BadInput(f"{where}: {e}") from None
            if item[0].at < last:
                raise BadInput(f"{where}: 'at' goes back in time (lines must be in arrival order)")
            if item[0].task_id in seen:  # (a line's id is its number unless it says one)
                raise BadInput(f"{where}: task_id {item[0].task_id} is line {seen[item[0].task_id]}'s too "
                               "(one task per id)")
            unknown = next((parent for parent in item[0].after if parent not in seen), None)
            if unknown is not None:  # (the engine would let it run as if it waited on nothing)
                raise BadInput(f"{where}: 'after' names task {unknown}, which no line before this one "
                               "gives (a task runs after tasks that arrived before it)")
            seen[item[0].task_id] = number
            last = item[0].at
            yield item


# the longest a simulated run, delay or generated load may last, and the latest moment
# (9999-12-31, as seconds since 1970) an arrival or a due time may name: a simulation
# runs through every second up to its last end
LONGEST_SECONDS = 366 * 86400.0
LATEST_SECONDS = 253_402_300_799.0
MAX_GENERATED = 10_000_000  # tasks `--generate` may be expected to make


def _number(item: dict, key: str, default: float | None = None, low: float = 0.0,
            high: float = LONGEST_SECONDS, high_is: str = "366 days") -> float:
    value = item.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key!r} must be a number")
    if value < low:
        raise ValueError(f"{key!r} must be at least {low:g}")
    if value > high:
        raise ValueError(f"{key!r} must be at most {high:.0f} ({high_is})")
    return float(value)


def _moment(item: dict, key: str) -> float:
    """An ISO time with its offset, or seconds (since 1970, or of the workload's own clock),
    from 1970 to the year 9999."""
    value = item.get(key)
    if isinstance(value, str):
        try:
            seconds = from_text(value).timestamp()
        except ValueError:  # (from_text's own message is about a damaged database)
            raise ValueError(f"{key!r} must be seconds or an ISO time with its offset (e.g. "
                             f"2026-12-05T09:00:00Z), not {value!r}") from None
        if not 0 <= seconds <= LATEST_SECONDS:
            raise ValueError(f"{key!r} must lie between 1970 and the year 9999, not {value!r}")
        return seconds
    return _number(item, key, low=0.0, high=LATEST_SECONDS, high_is="the year 9999")


def _name(item: dict, key: str) -> str | None:
    value = item.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{key!r} must be a non-empty string")
    return value


def _jsonl_item(item: object, number: int) -> tuple[Arrival, list[Attempt]]:
    if not isinstance(item, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(item) - _JSONL_KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    queue = item.get("queue")
    if not isinstance(queue, str) or not queue:
        raise ValueError("'queue' must be a non-empty string")
    at_seconds = _moment(item, "at")
    priority = item.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError("'priority' must be an integer")
    raw = item.get("attempts")
    if raw is None:
        raw = [{k: item[k] for k in _ATTEMPT_KEYS if k in item}]
    elif given := sorted(_ATTEMPT_KEYS & set(item)):
        raise ValueError(f"{given[0]!r} goes in each of 'attempts' when they are given, not beside them")
    if not isinstance(raw, list) or not raw or not all(isinstance(a, dict) for a in raw):
        raise ValueError("'attempts' must be a non-empty list of objects")
    attempts = []
    for one in raw:
        if unknown := sorted(set(one) - _ATTEMPT_KEYS):
            raise ValueError(f"unknown key {unknown[0]!r} in an attempt")
        outcome = one.get("outcome", "succeeded")
        if outcome not in ("succeeded", "failed", "expired"):
            raise ValueError("'outcome' must be succeeded, failed or expired")
        retryable = one.get("retryable", True)
        if not isinstance(retryable, bool):
            raise ValueError("'retryable' must be true or false")
        attempts.append(Attempt(_number(one, "start_delay_seconds", 0.0), _number(one, "run_seconds"),
                                outcome, retryable))
    after = item.get("after", [])
    if not isinstance(after, list) or not all(isinstance(a, int) and not isinstance(a, bool) for a in after):
        raise ValueError("'after' must be a list of task ids")
    max_attempts = item.get("max_attempts")
    if max_attempts is not None and (isinstance(max_attempts, bool) or not isinstance(max_attempts, int)
                                     or not 1 <= max_attempts <= MAX_ATTEMPTS):
        raise ValueError(f"'max_attempts' must be an integer from 1 to {MAX_ATTEMPTS:,}")
    task_id = item.get("task_id", number)
    if isinstance(task_id, bool) or not isinstance(task_id, int) or not 1 <= task_id <= INT64_MAX:
        raise ValueError("'task_id' must be a positive integer")
    if task_id in after:
        raise ValueError(f"'after' names the task itself ({task_id}): it could never run")
    requires = item.get("requires", [])
    if not isinstance(requires, list):
        raise ValueError("'requires' must be a list of capability names")
    requires = capability_list(requires)  # (checked and sorted, as `submit --requires`)
    due_seconds = None if item.get("due") is None else _moment(item, "due")
    return Arrival(task_id=task_id, at=at_seconds, queue=queue, priority=priority,
                   assignee=_name(item, "assignee"), task_type=_name(item, "task_type"),
                   max_attempts=max_attempts, delay=_number(item, "delay_seconds", 0.0),
                   after=tuple(after), requires=requires, due=due_seconds), attempts


# -- the generator --------------------------------------------------------------------

@dataclass(frozen=True)
class LoadSpec:
    """The synthetic load of one queue: Poisson arrivals at `per_hour`, run times drawn
    from an exponential distribution of mean `run_seconds`, each attempt failing
    (retryably) with probability `fail_share`."""

    queue: str
    per_hour: float
    run_seconds: float
    fail_share: float = 0.0
    priority: int = 0


def parse_load(text: str) -> LoadSpec:
    """`dev:rate=120/h,run=60s,fail=0.05,priority=0` (rate per s, m, h or d)."""
    queue, _, rest = text.partition(":")
    where = f"--generate {text!r}"
    if not queue or not rest:
        raise BadInput(f"{where}: expected QUEUE:rate=N/h,run=DURATION[,fail=SHARE][,priority=N]")
    keys: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, value = part.partition("=")
        if not eq or key.strip() not in ("rate", "run", "fail", "priority"):
            raise BadInput(f"{where}: unknown part {part!r} (rate, run, fail, priority)")
        keys[key.strip()] = value.strip()
    if "rate" not in keys or "run" not in keys:
        raise BadInput(f"{where}: rate= and run= are required")
    count_text, _, unit = keys["rate"].partition("/")
    try:
        per = UNITS[unit or "h"]
        rate = float(count_text)
        fail = float(keys.get("fail", "0"))
        priority = int(keys.get("priority", "0"))
    except (KeyError, ValueError):
        raise BadInput(f"{where}: rate is N/s, N/m, N/h or N/d; fail a share from 0 to 1; "
                       "priority an integer") from None
    per_hour = rate * 3600.0 / per
    if not (math.isfinite(rate) and per_hour / 3600.0 > 0) or not 0 <= fail < 1:  # (none, so small)
        raise BadInput(f"{where}: rate must be above 0 and fail from 0 to below 1")
    run = parse_duration(keys["run"], where).total_seconds()
    if run > LONGEST_SECONDS:
        raise BadInput(f"{where}: run must be at most 366 days")
    return LoadSpec(queue, per_hour, run, fail, priority)


def check_generated(loads: list[LoadSpec], duration: float) -> None:
    """A generated load a simulation can run: at most 366 days of it, and at most
    `MAX_GENERATED` tasks expected."""
    if duration > LONGEST_SECONDS:
        raise BadInput("--duration must be at most 366 days")
    if duration <= 0:  # (no time for any task to arrive: an empty answer)
        raise BadInput("--duration must be longer than 0")
    expected = sum(load.per_hour for load in loads) * duration / 3600.0
    if expected > MAX_GENERATED:
        raise BadInput(f"--generate: about {expected:,.0f} tasks over --duration; at most "
                       f"{MAX_GENERATED:,} can be simulated (a lower rate or a shorter --duration)")


def generate(loads: list[LoadSpec], duration: float, seed: int,
             start: float = 0.0) -> Iterator[tuple[Arrival, list[Attempt]]]:
    """Arrivals of every queue merged in time order over `duration` seconds; the same
    seed gives the same workload. Each task's attempts are drawn until one succeeds
    (at most 10)."""
    draws = random.Random(seed)
    clocks = [(start + draws.expovariate(load.per_hour / 3600.0), index) for index, load in enumerate(loads)]
    heapq.heapify(clocks)
    task_id = 0
    while clocks:
        at, index = heapq.heappop(clocks)
        if at > start + duration:
            continue
        load = loads[index]
        task_id += 1
        attempts = []
        for _ in range(10):
            failed = draws.random() < load.fail_share
            run = draws.expovariate(1.0 / load.run_seconds) if load.run_seconds else 0.0
            attempts.append(Attempt(0.0, run, "failed" if failed else "succeeded"))
            if not failed:
                break
        yield Arrival(task_id=task_id, at=at, queue=load.queue, priority=load.priority), attempts
        heapq.heappush(clocks, (at + draws.expovariate(load.per_hour / 3600.0), index))
