"""`--dry-run` on cancel, requeue, agents evict and submit: it says what would change
and appends nothing; the real run then appends exactly the events it announced; bad
input is refused as without it (exit 2, one line)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.clock import ManualClock
from tests.cli.conftest import FLEET, InProcess, ok, one_error_line, one_json, write_control


def doc(result: Any) -> Any:
    return one_json(ok(result))


NOW_DEPENDENT = {"waited_seconds", "estimated_start"}  # move on with the clock, not the log


def state(cli: InProcess) -> dict[str, Any]:
    """The log's head and what the projections show."""
    tasks = [{k: v for k, v in task.items() if k not in NOW_DEPENDENT}
             for task in doc(cli("tasks", "--json"))["tasks"]]
    return {"head": doc(cli("replay", "--head", "--json")),
            "status": doc(cli("status", "--json")), "tasks": tasks,
            "agents": doc(cli("agents", "list", "--json"))}


def appended_since(cli: InProcess, seq: int) -> list[dict[str, Any]]:
    out = ok(cli("replay", "--since", str(seq + 1), "--json")).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def fleet(seeded: Path, cli: InProcess) -> InProcess:
    """The seeded home with task 1 (dev) and: 2 and 3 (dev), 4 (qa, one attempt) dead
    after qin failed it, 5 (qa) queued. ann holds two dev tasks (one running, one
    assigned), bob one assigned."""
    for args in (["-q", "dev", "-t", "two"], ["-q", "dev", "-t", "three"],
                 ["-q", "qa", "-t", "doomed", "--max-attempts", "1"]):
        ok(cli("submit", *args))
    ok(cli("tick"))
    claimed = doc(cli("worker", "claim", "--agent", "qin", "--json"))["task"]
    ok(cli("worker", "fail", str(claimed["task_id"]), "--token", claimed["token"], "--error", "boom"))
    ok(cli("worker", "claim", "--agent", "ann", "--json"))
    ok(cli("submit", "-q", "qa", "-t", "waiting"))
    return cli


def check_dry_then_real(cli: InProcess, args: list[str], *, same_data: bool = True) -> dict[str, Any]:
    """Run `args` with --dry-run: nothing changes; then for real: it appends what the
    dry run said and answers the same. Returns the dry run's document."""
    before = state(cli)
    dry = doc(cli(*args, "--dry-run", "--json"))
    assert state(cli) == before  # head (seq and hash) and projections as they were
    assert dry["dry_run"] is True and dry["changes"]
    real = doc(cli(*args, "--json"))
    assert "dry_run" not in real and "changes" not in real  # a real run's document as ever
    announced = dry.pop("changes")
    dry.pop("dry_run")
    assert dry == real
    appended = appended_since(cli, before["head"]["seq"])
    key = ("seq", "type", "stream_id", "data") if same_data else ("seq", "type", "stream_id")
    assert [{k: e[k] for k in key} for e in appended] == [{k: c[k] for k in key} for c in announced]
    return {**dry, "changes": announced}


def test_cancel_dry_run(fleet: InProcess):
    dry = check_dry_then_real(fleet, ["cancel", "5", "--by", "op", "--reason", "not needed"])
    assert dry["status"] == "cancelled"
    assert [c["type"] for c in dry["changes"]] == ["TaskCancelled"]
    assert dry["changes"][0]["data"]["reason"] == "not needed"


def test_cancel_of_a_running_task_dry_run(fleet: InProcess):
    running = [t["task_id"] for t in doc(fleet("tasks", "--status", "running", "--json"))["tasks"]]
    dry = check_dry_then_real(fleet, ["cancel", str(running[0]), "--by", "op"])
    assert dry["cancelling"] is True
    assert [c["type"] for c in dry["changes"]] == ["TaskCancelRequested"]


def test_requeue_dry_run(fleet: InProcess):
    dry = check_dry_then_real(fleet, ["requeue", "4"])
    assert dry["requeued"] == [4]
    assert [(c["type"], c["data"]["task_id"]) for c in dry["changes"]] == [("TaskRequeued", 4)]


def test_requeue_all_of_a_queue_dry_run(fleet: InProcess):
    assert check_dry_then_real(fleet, ["requeue", "--all", "--queue", "qa"])["requeued"] == [4]


def test_evict_dry_run_stops_nothing_and_announces_what_eviction_does(fleet: InProcess):
    # retry times are drawn at each run: the events and their order are compared, not data
    dry = check_dry_then_real(fleet, ["agents", "evict", "ann", "--by", "op"], same_data=False)
    assert dry["changed"] is True and dry["released"] and dry["taken_back"]
    types = [c["type"] for c in dry["changes"]]
    assert types[0] == "AgentEvicted" and "TaskFailed" in types
    again = doc(fleet("agents", "evict", "ann", "--dry-run", "--json"))
    assert (again["changed"], again["changes"]) == (False, [])  # already evicted: nothing to do


def test_evict_tells_a_pull_workers_attempt_from_one_stopped_here(fleet: InProcess):
    """ann's running attempt is a pull worker's: nothing of it runs on this host, so the
    eviction says its worker stops it, not that it was stopped."""
    running = [t["task_id"] for t in doc(fleet("tasks", "--json"))["tasks"]
               if t["agent"] == "ann" and t["status"] == "running"]
    for args, would in ((("--dry-run",), "would be "), ((), "")):
        lines = ok(fleet("agents", "evict", "ann", "--by", "op", *args)).stderr.splitlines()
        assert f"  {would}requeued, stopped by their runners at the next heartbeat: {running[0]}" in lines
        assert not any("stopped here" in line for line in lines)


def test_batch_submit_dry_run(fleet: InProcess, tmp_path: Path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"queue": "dev", "title": "b1", "idempotency_key": "k1"}\n'
                     '{"queue": "qa", "title": "b2", "payload": {"n": 2}}\n'
                     '{"queue": "dev", "title": "b1 again", "idempotency_key": "k1"}\n')
    dry = check_dry_then_real(fleet, ["submit", "--file", str(batch)])
    assert dry["task_ids"] == [6, 7, 6] and dry["created"] == 2
    assert [(c["type"], c["data"]["title"]) for c in dry["changes"]] == [
        ("TaskSubmitted", "b1"), ("TaskSubmitted", "b2")]


def test_single_submit_dry_run(fleet: InProcess):
    dry = check_dry_then_real(fleet, ["submit", "-q", "qa", "-t", "one", "--priority", "3"])
    assert dry["task_id"] == 6 and dry["changes"][0]["data"]["priority"] == 3


def test_dry_run_text_output_names_the_events(fleet: InProcess):
    before = state(fleet)
    result = ok(fleet("requeue", "4", "--dry-run"))
    assert "would append TaskRequeued (task-4)" in result.stdout
    assert "would requeue 1 task(s): 4" in result.stderr and "nothing appended" in result.stderr
    assert state(fleet) == before


@pytest.mark.parametrize(("args", "code"), [
    (["cancel", "99"], 2),
    (["cancel", "4"], 1),  # already final: refused, as without --dry-run
    (["requeue", "5"], 1),
    (["requeue", "4", "--all", "--queue", "qa"], 2),
    (["agents", "evict", "nobody"], 2),
    (["submit", "-q", "nope", "-t", "x"], 2),
    (["submit", "--file", "bad.jsonl"], 2),
    (["submit", "--file", "missing.jsonl"], 2),
])
def test_bad_input_is_refused_in_a_dry_run_too(fleet: InProcess, tmp_path: Path, args, code):
    (tmp_path / "bad.jsonl").write_text('{"queue": "dev", "title": "fine"}\n{"queue": "dev"}\n')
    before = state(fleet)
    without = fleet(*args)
    with_dry_run = fleet(*args, "--dry-run")
    assert one_error_line(with_dry_run, code) == one_error_line(without, code)
    assert state(fleet) == before


def test_tick_dry_run_text_says_what_it_would_do(seeded: Path, cli: InProcess):
    """Every line of `tick --dry-run` is in the conditional: nothing was taken back or
    dead-lettered, so its text must not say so."""
    ok(cli("submit", "-q", "qa", "-t", "parent", "--requires-approval"))  # 2
    ok(cli("submit", "-q", "qa", "-t", "child", "--after", "2"))  # 3
    ok(cli("tick", env={"SCHED_START_DEADLINE_SECONDS": "0.001"}))  # 1 -> ann, due to start at once
    ok(cli("cancel", "2"))  # so the next tick dead-letters 3
    later = ManualClock(datetime.now(UTC) + timedelta(seconds=1))  # task 1's start deadline passed
    head = doc(cli("replay", "--head", "--json"))
    dry = ok(cli("tick", "--dry-run", clock=later))
    assert dry.stdout.splitlines() == ["would take back task 1 from ann (not_started)",  # the pass's order
                                       "would dead-letter task 3",
                                       "would assign task 1 -> bob"]  # ann did not start it
    assert dry.stderr.startswith("tick: would assign 1, take back 1, dead-letter 1 (")
    assert dry.stderr.rstrip().endswith("; dry run: nothing appended)")
    assert doc(cli("replay", "--head", "--json")) == head
    real = ok(cli("tick", clock=later)).stdout.splitlines()
    assert real[:3] == ["took back task 1 from ann (not_started)", "dead-lettered task 3",
                        "assigned task 1 -> bob"]


def test_tick_says_which_assignments_it_released_and_why(seeded: Path, cli: InProcess):
    """An agent taken out of the control file gives back what it had not started: the
    text said nothing of it (only `tick --json` had `released`)."""
    ok(cli("tick"))  # the seed task (1) -> ann
    write_control(seeded, [a for a in FLEET if a["agentName"] != "ann"])
    dry = ok(cli("tick", "--dry-run")).stdout.splitlines()
    assert dry[:2] == ["would release task 1 from ann (it left the control file)",
                       "would assign task 1 -> bob"]
    real = ok(cli("tick")).stdout.splitlines()
    assert real[:2] == ["released task 1 from ann (it left the control file)", "assigned task 1 -> bob"]


def test_tick_says_which_cancels_its_take_backs_completed(seeded: Path, cli: InProcess):
    """A running task whose cancel was asked for ends cancelled when the tick takes its
    expired attempt back: only `tick --json` said so (`cancelled`)."""
    claimed = doc(cli("worker", "claim", "--agent", "ann", "--json"))["task"]  # the seed task (1)
    ok(cli("cancel", str(claimed["task_id"])))  # running: cancelling, until its runner stops
    later = ManualClock(datetime.now(UTC) + timedelta(hours=1))  # its lease ran out meanwhile
    dry = ok(cli("tick", "--dry-run", clock=later)).stdout.splitlines()
    assert dry[1:2] == [f"would cancel task {claimed['task_id']}"], dry
    real = ok(cli("tick", clock=later)).stdout.splitlines()
    assert real[:2] == [f"took back task {claimed['task_id']} from ann (lease_expired)",
                        f"cancelled task {claimed['task_id']}"], real
