"""The CLI contract of due times: `submit --due`, JSONL `due`, the overdue flag of
`tasks`, the `due` check of `health`, `TaskDueMissed` recorded by a tick."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cli.conftest import InProcess, Run, event_count, json_lines, ok, one_error_line, one_json


@pytest.fixture
def run(cli: InProcess) -> InProcess:
    """`sched` in this process (no interpreter start-up per call): what these tests
    check is the command's documents and exit codes, not a real process's start."""
    return cli


PAST = "2020-01-01T00:00:00+00:00"


def task_doc(run: Run, task_id: int) -> dict:
    (doc,) = [t for t in one_json(ok(run("tasks", "--json")))["tasks"] if t["task_id"] == task_id]
    return doc


def test_due_takes_an_iso_time_or_a_duration_from_now(seeded: Path, run: Run):
    before = datetime.now(UTC)
    later = one_json(ok(run("submit", "-q", "dev", "-t", "in two hours", "--due", "2h", "--json")))
    fixed = one_json(ok(run("submit", "-q", "dev", "-t", "fixed", "--due", "2030-01-02T03:04:05+01:00",
                            "--json")))
    due = datetime.fromisoformat(task_doc(run, later["task_id"])["due"].replace("Z", "+00:00"))
    assert before + timedelta(hours=2) <= due <= datetime.now(UTC) + timedelta(hours=2)
    assert task_doc(run, fixed["task_id"])["due"].startswith("2030-01-02T02:04:05")
    assert task_doc(run, fixed["task_id"])["overdue"] is False
    plain = one_json(ok(run("submit", "-q", "dev", "-t", "no due", "--json")))
    assert task_doc(run, plain["task_id"])["due"] is None


@pytest.mark.parametrize("value", ["soon", "2026-01-01T00:00:00", "-5m", "99999d"])
def test_a_bad_due_time_is_refused_and_appends_nothing(seeded: Path, run: Run, value: str):
    before = event_count(seeded / "sched.db")
    line = one_error_line(run("submit", "-q", "dev", "-t", "x", "--due", value), 2)
    assert "due" in line or "duration" in line
    assert event_count(seeded / "sched.db") == before
    if value == "soon":  # neither form: both are named
        assert line == ("sched: submit: due: 'soon' is neither an ISO time with its offset (e.g. "
                        "2026-12-05T09:00:00Z) nor a duration from now (90s, 10m, 2h, 1d)")


def test_due_in_a_jsonl_file_and_not_beside_file(seeded: Path, run: Run):
    batch = seeded / "batch.jsonl"
    batch.write_text(json.dumps({"queue": "dev", "title": "a", "due": "2030-01-01T00:00:00Z"}) + "\n")
    (task_id,) = one_json(ok(run("submit", "--file", str(batch), "--json")))["task_ids"]
    assert task_doc(run, task_id)["due"].startswith("2030-01-01T00:00:00")
    one_error_line(run("submit", "--file", str(batch), "--due", "2h"), 2)


def test_an_overdue_task_is_flagged_by_tasks_and_health_and_its_miss_recorded_once(seeded: Path, run: Run):
    # the seeded dev task and ann's and bob's slots: fill them so the late task waits
    for i in range(3):
        ok(run("submit", "-q", "dev", "-t", f"busy {i}", "--priority", "20"))
    late = one_json(ok(run("submit", "-q", "dev", "-t", "late", "--due", PAST, "--json")))["task_id"]
    assert task_doc(run, late)["overdue"] is True
    ok(run("tick"))
    ok(run("tick"))
    missed = [e for e in json_lines(ok(run("replay", "--json"))) if e["type"] == "TaskDueMissed"]
    assert [e["data"]["task_id"] for e in missed] == [late]
    doc = task_doc(run, late)
    assert doc["status"] == "queued" and doc["due_missed_at"] is not None
    assert "OVERDUE by" in ok(run("tasks", env={"COLUMNS": "250"})).stdout
    report = json.loads(run("health", "--json").stdout)
    (check,) = [c for c in report["checks"] if c["name"] == "due"]
    assert check["status"] == "degraded" and "1 open task" in check["saw"]
