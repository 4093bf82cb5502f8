"""The failure policy as pure functions: backoff bounds, jitter, retry or dead letter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from eventlog.events import LeaseExpired, TaskCancelled, TaskDeadLettered, TaskFailed, TaskRequeued
from scheduler.decisions.policy import QueuePolicy, backoff_cap, backoff_delay, settle_failure
from tests.unit.decisions.test_plan import task

NOW = datetime(2026, 3, 1, tzinfo=UTC)
policies = st.builds(QueuePolicy, backoff_base_seconds=st.floats(0, 600),
                     backoff_factor=st.floats(1, 4), backoff_max_seconds=st.floats(0, 7200))


def test_the_default_backoff_doubles_from_30_s_up_to_an_hour():
    policy = QueuePolicy()
    assert [backoff_cap(n, policy) for n in (1, 2, 3, 4, 8, 20)] == [30, 60, 120, 240, 3600, 3600]


@given(attempts=st.integers(1, 50), policy=policies, draw=st.floats(0, 1, exclude_max=True))
def test_each_backoff_lies_within_its_bounds(attempts, policy, draw):
    delay = backoff_delay(attempts, policy, draw)
    cap = min(policy.backoff_max_seconds,
              policy.backoff_base_seconds * policy.backoff_factor ** (attempts - 1))
    assert 0 <= delay <= cap <= policy.backoff_max_seconds


def failed(agent="a", retryable=True):
    return TaskFailed(task_id=1, agent=agent, attempt=1, reason="reported", error="boom",
                      retryable=retryable)


def running(attempt: int, max_attempts: int = 3, **kw):
    from dataclasses import replace
    return replace(task(1), status="running", agent="a", attempt=attempt, max_attempts=max_attempts, **kw)


def test_a_failure_with_attempts_left_is_requeued_after_the_drawn_delay():
    events = settle_failure(running(1), failed(), NOW, QueuePolicy(), draw=0.5)
    assert events[1] == TaskRequeued(task_id=1, reason="failed", not_before=NOW + timedelta(seconds=15))


def test_the_last_attempt_dead_letters_with_the_error_history():
    events = settle_failure(running(3), failed(), NOW, QueuePolicy(), 0.0, earlier_errors=("e1", "e2"))
    assert isinstance(events[1], TaskDeadLettered)
    assert events[1].errors == ("e1", "e2", "boom") and "3 of 3" in events[1].reason


def test_the_last_attempt_lost_with_its_wrapper_dead_letters_with_why():
    """The error history says what the task's own stream says (`takeback.earlier_errors`)."""
    why = "the sched exec wrapper (pid 7 on h1) is gone"
    gone = LeaseExpired(task_id=1, agent="a", attempt=3, detail=why)
    events = settle_failure(running(3), gone, NOW, QueuePolicy(), 0.0, earlier_errors=("e1", "lease expired"))
    assert isinstance(events[1], TaskDeadLettered) and events[1].errors == ("e1", "lease expired", why)


def test_a_non_retryable_failure_dead_letters_at_once():
    events = settle_failure(running(1), failed(retryable=False), NOW, QueuePolicy(), 0.0)
    assert isinstance(events[1], TaskDeadLettered) and "not retryable" in events[1].reason


def test_attempts_count_from_the_last_operator_requeue():
    events = settle_failure(running(5, attempt_floor=3), failed(), NOW, QueuePolicy(), 0.0)
    assert isinstance(events[1], TaskRequeued)  # 2 of 3 used since the requeue


def test_an_expired_lease_of_a_cancelling_task_completes_the_cancel():
    expiry = LeaseExpired(task_id=1, agent="a", attempt=1)
    events = settle_failure(running(1, cancelling=True), expiry, NOW, QueuePolicy(), 0.0)
    assert events[0] == expiry and isinstance(events[1], TaskCancelled)


@given(data=st.data(), max_attempts=st.integers(1, 10), draw=st.floats(0, 1, exclude_max=True))
def test_attempts_never_exceed_the_maximum(data, max_attempts, draw):
    # a running attempt is always within the maximum: every example is a real case
    attempt = data.draw(st.integers(1, max_attempts), label="attempt")
    outcome = settle_failure(running(attempt, max_attempts), failed(), NOW, QueuePolicy(), draw)[1]
    assert isinstance(outcome, TaskRequeued) == (attempt < max_attempts)
