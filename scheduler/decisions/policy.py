"""What happens after an attempt ends badly: back to the queue after a backoff, or to
the dead letters. Pure: the random draw for the jitter is an argument."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from projections.views import TaskView

if TYPE_CHECKING:  # (the settings use QueuePolicy: loading them loads no event model)
    from eventlog.events import Event, LeaseExpired, TaskFailed

MAX_SECONDS = 10 * 365 * 86400.0  # the longest duration a policy may name: ten years
MAX_ATTEMPTS = 1_000_000  # the most attempts a queue or a task may allow


class QueuePolicy(BaseModel):
    """Retry and flow-control policy of one queue: `[queues.NAME]` in sched.toml. The
    retry and depth keys default to the top-level setting of the same name; the gate
    keys exist per queue only."""

    # (built on first use: a command that never reads a queue's policy does not build it)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False, defer_build=True)

    max_attempts: int = Field(default=3, ge=1, le=MAX_ATTEMPTS)
    backoff_base_seconds: float = Field(default=30.0, ge=0, le=MAX_SECONDS)
    backoff_factor: float = Field(default=2.0, ge=1, le=1000)
    backoff_max_seconds: float = Field(default=3600.0, ge=0, le=MAX_SECONDS)
    max_queue_depth: int = Field(default=10_000, ge=1, le=2**63 - 1)
    age_boost_seconds: float = Field(default=600.0, ge=0, le=MAX_SECONDS)  # 0: no ageing
    age_boost_max: int = Field(default=10, ge=0, le=100)  # each point is a band the tick reads
    due_boost_seconds: float = Field(default=3600.0, ge=0, le=MAX_SECONDS)  # 0: no due boost
    due_boost_max: int = Field(default=10, ge=0, le=100)  # each point is a band the tick reads
    # a command (argv) that exits 0 while what the queue's work needs is available;
    # while it fails, ticks assign nothing from the queue
    gate: list[str] | None = None  # (checked as a command is by the settings: `argv_problem`)
    gate_timeout_seconds: float = Field(default=10.0, gt=0, le=MAX_SECONDS)
    gate_cache_seconds: float = Field(default=60.0, ge=0, le=MAX_SECONDS)
    # an agent program that is missing or not executable will not get better by itself:
    # such a spawn error dead-letters the task at once unless this is true
    retry_spawn_errors: bool = False


def backoff_cap(attempts_used: int, policy: QueuePolicy) -> float:
    """The largest delay before the next attempt: exponential in the attempts used."""
    return min(policy.backoff_max_seconds,
               policy.backoff_base_seconds * policy.backoff_factor ** max(attempts_used - 1, 0))


def backoff_delay(attempts_used: int, policy: QueuePolicy, draw: float) -> float:
    """Full jitter: a delay uniform in [0, cap), from `draw` uniform in [0, 1)."""
    return draw * backoff_cap(attempts_used, policy)


def settle_failure(task: TaskView, failure: TaskFailed | LeaseExpired, now: datetime,
                   policy: QueuePolicy, draw: float,
                   earlier_errors: Sequence[str] = ()) -> list[Event]:
    """The events that record `failure` of the running attempt of `task` and its
    consequence: requeued after a jittered backoff while attempts remain and the failure
    may be retried, dead-lettered otherwise (with the history of errors). The delay is
    stored in the event, so replaying never draws again."""
    from eventlog.events import (
        UNCOUNTED_FAILURES,
        LeaseExpired,
        TaskCancelled,
        TaskDeadLettered,
        TaskFailed,
        TaskRequeued,
    )

    if task.cancelling:  # the attempt ended one way or another: the cancel completes
        return [failure, TaskCancelled(task_id=task.task_id, by="sched",
                                       reason="cancel requested while it ran")]
    if isinstance(failure, TaskFailed) and failure.reason in UNCOUNTED_FAILURES:
        # not the task's doing (an operator evicted its agent, a claim never reached its
        # worker): back to the queue at once, and the attempt does not count
        return [failure, TaskRequeued(task_id=task.task_id, reason=failure.reason,  # type: ignore[arg-type]
                                      detail=failure.error)]
    if isinstance(failure, LeaseExpired):  # its detail says why, when it is known (a wrapper gone)
        error, retryable, requeue_reason = failure.detail or "lease expired", True, "lease_expired"
    else:
        error, retryable, requeue_reason = failure.error, failure.retryable, "failed"
    used = task.attempt - task.attempt_floor
    if retryable and used < task.max_attempts:
        delay = backoff_delay(used, policy, draw)
        return [failure, TaskRequeued(task_id=task.task_id, reason=requeue_reason,
                                      not_before=now + timedelta(seconds=delay))]
    why = (f"attempts used up ({used} of {task.max_attempts})" if retryable
           else "failure marked not retryable")
    return [failure, TaskDeadLettered(task_id=task.task_id, reason=why,
                                      errors=(*earlier_errors, error))]
