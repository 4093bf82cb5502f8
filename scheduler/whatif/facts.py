"""The plain values a workload is made of: arrivals, the attempts tasks made, and the
operator's acts on them. Times are epoch seconds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

Ended = Literal["succeeded", "failed", "expired", "cancelled"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt as it ran: assigned, then started `start_delay` seconds later, then
    ended `run_seconds` after its start; or, `cancelled`, it runs until the operator's
    cancel (a fact at its own time) stops it."""

    start_delay: float
    run_seconds: float
    outcome: Ended
    retryable: bool = True  # (failed attempts) whether the failure may be retried
    reason: str = "exit_code"  # (failed attempts) the recorded TaskFailed reason


@dataclass(frozen=True, slots=True)
class Arrival:
    """A task as it was submitted."""

    task_id: int
    at: float
    queue: str
    priority: int = 0
    assignee: str | None = None
    task_type: str | None = None
    max_attempts: int | None = None  # None: its queue's policy decides (so a what-if can change it)
    delay: float = 0.0  # not_before - at
    after: tuple[int, ...] = ()
    needs_approval: bool = False
    requires: tuple[str, ...] = ()  # capabilities the agent must have
    due: float | None = None  # when it should be done by (its priority rises as that nears)


@dataclass(frozen=True, slots=True)
class Fact:
    """Something that happened to the workload at `at`: a task arrived, or an operator
    approved, rejected or cancelled one."""

    at: float
    kind: Literal["arrived", "approved", "rejected", "cancelled"]
    task_id: int
    arrival: Arrival | None = None


class Workload(Protocol):
    """A time-ordered stream of facts, and the attempts of its tasks. `attempt` may read
    ahead in its source; `forget` says a task has ended in the simulation."""

    def facts(self) -> Iterator[Fact]: ...

    def first_tick(self) -> float | None:
        """When the scheduler first ticked for this workload (None: at its first fact)."""
        ...

    def attempt(self, task_id: int, number: int) -> Attempt: ...

    def forget(self, task_id: int) -> None: ...


def carried_attempt(recorded: list[Attempt], number: int, stand_in: Attempt) -> Attempt:
    """The rule for attempt `number` (from 1) of a task in a simulation: the task's own
    recorded attempt of that number, whichever agent runs it; past the attempts it
    made, its last one again; a task that never ran takes `stand_in`."""
    if not recorded:
        return stand_in
    return recorded[min(number, len(recorded)) - 1]
