"""The CLI contract of capabilities, weights and working hours: `submit --requires`,
`agents list`, `tasks`, `explain`, `health`, and bad control-file values. Run in this
process with a manual clock (2026-03-02, a Monday, 12:00 UTC), so hours are exact."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.clock import ManualClock
from tests.cli.conftest import event_count, ok, one_error_line, one_json, write_control

MONDAY_NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
FLEET = [
    {"agentName": "ann", "agentType": "dev", "maxConcurrency": 2, "capabilities": ["browser"]},
    {"agentName": "bob", "agentType": "dev", "capabilities": ["gpu", "browser"], "weight": 3},
    {"agentName": "nox", "agentType": "dev", "hours": ["Sat-Sun 00:00-24:00 Europe/Berlin"]},
    {"agentName": "qin", "agentType": "qa"},
]
Sched = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MONDAY_NOON)


@pytest.fixture
def sched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          clock: ManualClock) -> Sched:
    """`sched(*args)`: run in this process in tmp_path (SCHED_HOME) with the manual clock."""
    from cli.main import main

    write_control(tmp_path, FLEET)

    def runner(*args: str) -> subprocess.CompletedProcess[str]:
        with monkeypatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("SCHED_")]:
                patch.delenv(key)
            patch.setenv("SCHED_HOME", str(tmp_path))
            patch.setenv("COLUMNS", "300")  # tables unwrapped, so their text can be read
            patch.chdir(tmp_path)
            capsys.readouterr()
            code = main(list(args), clock=clock)
            out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["sched", *args], code, out, err)

    ok(runner("init"))
    return runner


def tasks_by_id(sched: Sched) -> dict[int, dict[str, object]]:
    return {t["task_id"]: t for t in one_json(ok(sched("tasks", "--json")))["tasks"]}


def test_submit_requires_is_recorded_sorted_and_only_a_capable_agent_takes_it(sched: Sched):
    assert one_json(ok(sched("submit", "-q", "dev", "-t", "render", "--requires", "gpu, browser",
                             "--json")))["task_id"] == 1
    ok(sched("submit", "-q", "dev", "-t", "plain"))
    task = tasks_by_id(sched)[1]
    assert task["requires"] == ["browser", "gpu"] and task["unplaceable"] is None
    assigned = one_json(ok(sched("tick", "--json")))["assigned"]
    # bob alone has the gpu; the plain task goes to ann (nox is off on a Monday)
    assert assigned == [{"task_id": 1, "agent": "bob"}, {"task_id": 2, "agent": "ann"}]
    show = one_json(ok(sched("show", "1", "--json")))
    submitted = show["events"][0]
    # (recorded since version 2 of TaskSubmitted)
    assert submitted["schema_version"] >= 2 and submitted["data"]["requires"] == ["browser", "gpu"]


def test_a_batch_line_may_require_capabilities(sched: Sched, tmp_path: Path):
    batch = tmp_path / "tasks.jsonl"
    batch.write_text(json.dumps({"queue": "dev", "title": "a", "requires": ["browser"]}) + "\n"
                     + json.dumps({"queue": "dev", "title": "b"}) + "\n")
    assert one_json(ok(sched("submit", "--file", str(batch), "--json")))["task_ids"] == [1, 2]
    assert [t["requires"] for t in tasks_by_id(sched).values()] == [["browser"], []]


@pytest.mark.parametrize(("args", "problem"), [
    (["--requires", "g pu"], "submit: requires: 'g pu' is not a capability name"),
    (["--requires", "gpu,"], "submit: requires: '' is not a capability name"),
])
def test_a_bad_capability_is_refused_in_one_line_and_appends_nothing(sched: Sched, tmp_path: Path,
                                                                     args: list[str], problem: str):
    before = event_count(tmp_path / "sched.db")
    line = one_error_line(sched("submit", "-q", "dev", "-t", "t", *args), 2)
    assert problem in line
    assert event_count(tmp_path / "sched.db") == before


def test_a_bad_requires_in_a_batch_names_its_line(sched: Sched, tmp_path: Path):
    batch = tmp_path / "tasks.jsonl"
    batch.write_text('{"queue": "dev", "title": "a"}\n{"queue": "dev", "title": "b", "requires": "gpu"}\n')
    line = one_error_line(sched("submit", "--file", str(batch)), 2)
    assert f"{batch}:2: requires: must be a list of capability names" in line
    line = one_error_line(sched("submit", "--file", str(batch), "--requires", "gpu"), 2)
    assert "--requires" in line
    assert event_count(tmp_path / "sched.db") == 0


def test_agents_list_shows_capabilities_weight_hours_and_availability(sched: Sched, clock: ManualClock):
    agents = one_json(ok(sched("agents", "list", "--json")))["agents"]
    assert {name: (a["capabilities"], a["weight"], a["hours"], a["available"])
            for name, a in agents.items()} == {
        "ann": (["browser"], 1.0, [], True),
        "bob": (["browser", "gpu"], 3.0, [], True),
        "nox": ([], 1.0, ["Sat-Sun 00:00-24:00 Europe/Berlin"], False),
        "qin": ([], 1.0, [], True),
    }
    text = ok(sched("agents", "list")).stdout
    assert "(off now)" in text
    clock.advance(5 * 86400)  # Saturday noon
    assert one_json(ok(sched("agents", "list", "--json")))["agents"]["nox"]["available"] is True
    assert "(off now)" not in ok(sched("agents", "list")).stdout


def test_a_task_no_agent_can_ever_take_is_flagged_by_tasks_explain_and_health(sched: Sched):
    ok(sched("submit", "-q", "dev", "-t", "train", "--requires", "tpu"))
    ok(sched("tick"))
    why = "no dev agent in the control file has tpu"
    assert tasks_by_id(sched)[1]["unplaceable"] == why
    assert "never taken" in ok(sched("tasks")).stdout
    explained = one_json(ok(sched("explain", "1", "--json")))["now"]
    assert explained["unplaceable"] == why
    assert {a["agent"]: a["why_not"] for a in explained["agents"]} == {
        "ann": "lacks capability tpu", "bob": "lacks capability tpu", "nox": "lacks capability tpu"}
    text = ok(sched("explain", "1")).stdout
    assert f"can never be taken: {why}" in text
    assert "bob (weight 3): lacks capability tpu" in text
    report = sched("health", "--json")
    assert report.returncode == 1
    check = {c["name"]: c for c in one_json(report)["checks"]}["unplaceable"]
    assert check["status"] == "degraded" and why in check["saw"] and "task 1" in check["saw"]


def test_explain_names_an_agent_outside_its_hours_and_a_win_on_weight(sched: Sched, tmp_path: Path):
    write_control(tmp_path, [
        {"agentName": "cheap", "agentType": "dev", "weight": 2},
        {"agentName": "dear", "agentType": "dev"},
        {"agentName": "nox", "agentType": "dev", "hours": "Sat-Sun 00:00-24:00 Europe/Berlin"},
    ])
    ok(sched("submit", "-q", "dev", "-t", "t"))
    text = ok(sched("explain", "1")).stdout
    assert "nox (weight 1; hours Sat-Sun 00:00-24:00 Europe/Berlin): outside its working hours" in text
    assert "cheap (weight 2): could take it" in text
    assert one_json(ok(sched("tick", "--json")))["assigned"] == [{"task_id": 1, "agent": "cheap"}]
    doc = one_json(ok(sched("explain", "1", "--json")))
    assert doc["now"] is None
    (assignment,) = doc["assignments"]
    assert assignment["why_this_agent"] == (
        "tied on free slots (1) with dear; cheap has the higher weight (2 vs 1)")
    assert {"agent": "nox", "why": "outside its working hours (Sat-Sun 00:00-24:00 Europe/Berlin)"} in (
        assignment["decision"]["passed_over"])
    assert "candidates: cheap (1 free, load 0, weight 2, record 0.50)" in ok(sched("explain", "1")).stdout


@pytest.mark.parametrize(("entry", "problem"), [
    ({"capabilities": "gpu"}, "agent #1: capabilities: capabilities must be a list of strings"),
    ({"capabilities": ["gpu", "a b"]}, "agent #1: capabilities: 'a b' is not a capability name"),
    ({"weight": "2"}, "agent #1: weight: Input should be a valid number"),
    ({"weight": -0.5}, "agent #1: weight: Input should be greater than or equal to 0"),
    ({"hours": "Mon-Fri 9:00-17:00"}, "agent #1: hours: 'Mon-Fri 9:00-17:00': expected [DAYS] HH:MM-HH:MM"),
    ({"hours": ["Mon-Fri 09:00-17:00 Moon/Base"]}, "unknown time zone 'Moon/Base'"),
])
def test_bad_values_in_the_control_file_exit_2_in_one_line_and_append_nothing(
        sched: Sched, tmp_path: Path, entry: dict[str, object], problem: str):
    ok(sched("submit", "-q", "dev", "-t", "t"))
    before = event_count(tmp_path / "sched.db")
    write_control(tmp_path, [{"agentName": "ann", "agentType": "dev", **entry}])
    assert problem in one_error_line(sched("tick"), 2)
    assert problem in one_error_line(sched("submit", "-q", "dev", "-t", "t2"), 2)
    assert event_count(tmp_path / "sched.db") == before
    checked = sched("agents", "validate", "--json")
    assert checked.returncode == 1 and problem in one_json(checked)["error"]
