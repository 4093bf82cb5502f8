"""The log checker the concurrency suites rely on (`tests.invariants.check_log`) must
refuse each way one task could be given out twice or to the wrong agent: a checker that
tracked only the current holder let a second start of one attempt, a finished task
assigned again, and a task given to an agent of another type all pass (a review)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from tests.invariants import check_log

LATER = "2026-01-01T00:10:00Z"


@dataclass(frozen=True)
class Rec:
    seq: int
    type: str
    data: str


def log(*events: tuple[str, dict[str, Any]]) -> list[Rec]:
    return [Rec(seq, kind, json.dumps(data)) for seq, (kind, data) in enumerate(events, start=1)]


FLEET = ("AgentsConfigured", {"agents": [
    {"name": "ann", "type": "dev", "capacity": 1, "enabled": True},
    {"name": "bob", "type": "dev", "capacity": 1, "enabled": True},
    {"name": "qin", "type": "qa", "capacity": 1, "enabled": True}]})


def submitted(task: int = 1, assignee: str | None = None) -> tuple[str, dict[str, Any]]:
    return ("TaskSubmitted", {"task_id": task, "queue": "dev", "max_attempts": 3, "assignee": assignee})


def assigned(agent: str, task: int = 1) -> tuple[str, dict[str, Any]]:
    return ("TaskAssigned", {"task_id": task, "agent": agent})


def started(agent: str, attempt: int, task: int = 1) -> tuple[str, dict[str, Any]]:
    return ("TaskStarted", {"task_id": task, "agent": agent, "attempt": attempt})


def ended(kind: str, agent: str, attempt: int, task: int = 1, **more: object) -> tuple[str, dict[str, Any]]:
    return (kind, {"task_id": task, "agent": agent, "attempt": attempt, **more})


RUN_ONCE = [FLEET, submitted(), assigned("ann"), started("ann", 1), ended("TaskSucceeded", "ann", 1)]


def test_a_lawful_history_passes():
    check_log(log(
        FLEET, submitted(), assigned("ann"), started("ann", 1),
        ended("TaskFailed", "ann", 1, reason="exit_code"),
        ("TaskRequeued", {"task_id": 1, "reason": "failed"}), assigned("bob"), started("bob", 2),
        ended("LeaseExpired", "bob", 2),
        ("TaskDeadLettered", {"task_id": 1, "reason": "expired"}),
        ("TaskRequeued", {"task_id": 1, "reason": "operator"}),  # an operator's requeue of a dead task
        assigned("ann"), started("ann", 3), ended("TaskSucceeded", "ann", 3),
        submitted(2), assigned("ann", 2), ("TaskRequeued", {"task_id": 2, "reason": "not_started"}),
        assigned("bob", 2), started("bob", 1, 2), ended("TaskFailed", "bob", 1, 2, reason="undelivered"),
        ("TaskRequeued", {"task_id": 2, "reason": "undelivered"}),
        assigned("bob", 2)))  # an undelivered claim does not pass its agent over


@pytest.mark.parametrize(("history", "says"), [
    ([*RUN_ONCE[:4], started("ann", 1)], "TaskStarted): task 1 is running"),
    ([*RUN_ONCE[:4], ended("TaskFailed", "ann", 1, reason="exit_code"),
      ("TaskRequeued", {"task_id": 1, "reason": "failed"}), assigned("bob"), started("bob", 1)],
     "attempt 1 again"),
    ([*RUN_ONCE, ended("TaskSucceeded", "ann", 1)], "task 1 is succeeded"),
    ([*RUN_ONCE, assigned("bob")], "task 1 is succeeded"),
    ([FLEET, submitted(), ("TaskCancelled", {"task_id": 1, "by": "op"}), assigned("ann")], "is cancelled"),
    ([FLEET, submitted(), assigned("qin")], "qin (qa) given a task of queue dev"),
    ([FLEET, submitted(assignee="ann"), assigned("bob")], "directed at ann"),
    ([FLEET, ("AgentDrained", {"agent": "ann", "by": "op"}), submitted(), assigned("ann")], "out of service"),
    ([FLEET, submitted(), submitted(2), assigned("ann"), assigned("ann", 2)], "ann over capacity"),
    ([*RUN_ONCE[:4], ended("TaskFailed", "ann", 1, reason="exit_code"),
      ("TaskRequeued", {"task_id": 1, "reason": "failed"}), assigned("ann")], "which failed it"),
    ([FLEET, submitted(), assigned("ann"), started("bob", 1)], "started by a non-holder"),
], ids=["started twice", "attempt number again", "succeeded twice", "assigned after success",
        "assigned after cancel", "another type", "another's directed task", "drained agent",
        "over capacity", "no failover", "not the holder"])
def test_each_way_of_giving_a_task_out_wrongly_is_refused(history, says):
    with pytest.raises(AssertionError, match=re.escape(says)):
        check_log(log(*history))
