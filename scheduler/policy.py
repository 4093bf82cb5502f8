"""What happens after an attempt ends badly: back to the queue, or to the dead letters."""

from __future__ import annotations

from collections.abc import Sequence

from eventlog.events import Event, LeaseExpired, TaskDeadLettered, TaskFailed, TaskRequeued
from projections.views import TaskView


def settle_failure(task: TaskView, failure: TaskFailed | LeaseExpired,
                   earlier_errors: Sequence[str] = ()) -> list[Event]:
    """The events that record `failure` of the running attempt of `task` and its
    consequence: requeued while attempts remain and the failure may be retried,
    dead-lettered otherwise (with the history of errors)."""
    if isinstance(failure, LeaseExpired):
        error, retryable, requeue_reason = "lease expired", True, "lease_expired"
    else:
        error, retryable, requeue_reason = failure.error, failure.retryable, "failed"
    if retryable and task.attempt < task.max_attempts:
        return [failure, TaskRequeued(task_id=task.task_id, reason=requeue_reason)]
    why = (f"attempts used up ({task.attempt} of {task.max_attempts})" if retryable
           else "failure marked not retryable")
    return [failure, TaskDeadLettered(task_id=task.task_id, reason=why,
                                      errors=(*earlier_errors, error))]
