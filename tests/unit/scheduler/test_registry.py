"""The agent control file: found, parsed, validated, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventlog.errors import ControlFileError
from scheduler.config.registry import (
    AgentRegistry,
    candidate_paths,
    find_control_file,
    load_control_file,
    read_registry,
    settled,
    write_default_control_file,
)


def write(tmp_path: Path, content: object, name: str = "agents.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_a_valid_file_with_several_types(tmp_path):
    path = write(tmp_path, [
        {"agentName": "vaela", "agentType": "dev", "maxConcurrency": 3},
        {"agentName": "damien", "agentType": "dev"},
        {"agentName": "oscar", "agentType": "qa", "enabled": False, "command": ["run", "{task_id}"]},
    ])
    registry = AgentRegistry(path)
    assert [(a.name, a.type) for a in registry.agents] == [("vaela", "dev"), ("damien", "dev"),
                                                           ("oscar", "qa")]
    assert registry.get("nobody") is None
    assert registry.get_all_types() == ["dev", "qa"]
    damien = registry.get("damien")
    assert damien is not None and damien.capacity == 1 and damien.enabled
    oscar = registry.get("oscar")
    assert oscar is not None and oscar.command == ["run", "{task_id}"] and not oscar.enabled


def test_one_agent_and_an_empty_array_are_valid(tmp_path):
    assert len(load_control_file(write(tmp_path, [{"agentName": "a", "agentType": "dev"}])).agents) == 1
    empty = load_control_file(write(tmp_path, [], "empty.json"))
    assert empty.agents == () and empty.warnings == ()


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ControlFileError, match="no such agent control file"):
        load_control_file(tmp_path / "nope.json")


@pytest.mark.parametrize(("content", "problem"), [
    ("[{", "not valid JSON"),
    ({"agentName": "a"}, "expected a JSON array"),
    ([{"agentName": "a"}], "agentType: Field required"),
    ([{"agentType": "dev"}], "agentName: Field required"),
    ([{"agentName": "a", "agentType": "dev", "maxConcurrency": -1}], "maxConcurrency"),
    ([{"agentName": "a", "agentType": "dev", "command": []}], "command"),
    ([{"agentName": "a", "agentType": "dev", "command": [" ", "x"]}], "the program to run, is empty"),
    ([{"agentName": " ", "agentType": "dev"}], "agentName: must not be blank"),
    ([{"agentName": "a", "agentType": "\t"}], "agentType: must not be blank"),
    ([{"agentName": "a", "agentType": "dev", "command": ["x", "a\u0000b"]}], "contains a NUL"),
    ([{"agentName": "a", "agentType": "dev", "maxConcurrency": "2"}], "maxConcurrency"),
    ([{"agentName": "a", "agentType": "dev", "enabled": "yes"}], "enabled"),
    ([{"name": "a", "agentType": "dev"}], "agentName: Field required"),
    (["a"], "expected an object"),
    ([{"agentName": "a", "agentType": "dev", "capabilities": "gpu"}], "must be a list"),
    ([{"agentName": "a", "agentType": "dev", "capabilities": ["g pu"]}], "'g pu' is not a capability name"),
    ([{"agentName": "a", "agentType": "dev", "capabilities": [""]}], "'' is not a capability name"),
    ([{"agentName": "a", "agentType": "dev", "weight": "2"}], "weight: Input should be a valid number"),
    ([{"agentName": "a", "agentType": "dev", "weight": -1}], "weight: Input should be greater than"),
    ('[{"agentName": "a", "agentType": "dev", "weight": 1e400}]', "weight"),
    ([{"agentName": "a", "agentType": "dev", "hours": "Mon-Fry 09:00-17:00"}], "hours: .*unknown day 'Fry'"),
    ([{"agentName": "a", "agentType": "dev", "hours": ["09:00-17:00 Nowhere/Town"]}], "unknown time zone"),
    ([{"agentName": "a", "agentType": "dev", "hours": 9}], "hours: hours must be a string"),
    ([{"agentName": "a", "agentType": "dev", "command": ["x"], "host": " "}], "host: must name a host, not "),
    ([{"agentName": "a", "agentType": "dev", "command": ["x"], "host": " gpu-1"}], "without spaces around"),
    ([{"agentName": "a", "agentType": "dev"}, {"agentName": "a", "agentType": "qa"}],
     "duplicate agentName 'a'"),
])
def test_invalid_files_name_the_problem(tmp_path, content, problem):
    with pytest.raises(ControlFileError, match=problem):
        load_control_file(write(tmp_path, content))


def test_unknown_fields_are_warnings_not_errors(tmp_path):
    control = load_control_file(write(tmp_path, [{"agentName": "a", "agentType": "dev", "colour": "red"}]))
    assert len(control.agents) == 1
    assert control.warnings == (f"{tmp_path / 'agents.json'}: agent #1 (a): unknown field 'colour' ignored",)


def test_capabilities_are_sorted_without_duplicates_and_hours_may_be_one_string(tmp_path):
    control = load_control_file(write(tmp_path, [
        {"agentName": "a", "agentType": "dev", "capabilities": ["python3.12", "gpu", "gpu"],
         "weight": 0.5, "hours": "Mon-Fri 08:00-18:00 Europe/Berlin"},
        {"agentName": "b", "agentType": "dev"}]))
    a, b = control.agents
    assert (a.capabilities, a.weight, a.hours) == (("gpu", "python3.12"), 0.5,
                                                   ("Mon-Fri 08:00-18:00 Europe/Berlin",))
    assert (b.capabilities, b.weight, b.hours) == ((), 1.0, ())
    assert not control.warnings


def test_the_hash_ignores_formatting_but_not_content(tmp_path):
    agents = [{"agentName": "a", "agentType": "dev", "maxConcurrency": 2}]
    compact = load_control_file(write(tmp_path, json.dumps(agents), "a.json"))
    pretty = load_control_file(write(tmp_path, json.dumps(agents, indent=4), "b.json"))
    changed = load_control_file(write(tmp_path, [{**agents[0], "maxConcurrency": 3}], "c.json"))
    assert compact.content_hash == pretty.content_hash != changed.content_hash


def test_resolution_order(tmp_path):
    explicit = tmp_path / "x.json"
    assert candidate_paths(tmp_path, explicit) == [explicit]
    assert candidate_paths(tmp_path, None) == [tmp_path / "config" / "agent-control.json",
                                                tmp_path / "agent-control.json"]
    write(tmp_path, [], "agent-control.json")
    assert find_control_file(candidate_paths(tmp_path, None)) == tmp_path / "agent-control.json"
    (tmp_path / "config").mkdir()
    write(tmp_path, [], "config/agent-control.json")
    assert find_control_file(candidate_paths(tmp_path, None)) == tmp_path / "config/agent-control.json"


def fleet_of(capacity: int) -> list[dict[str, object]]:
    return [{"agentName": "a", "agentType": "dev", "maxConcurrency": capacity}]


LATER = 10**30  # a clock far ahead: every file looked at has settled (no waiting in a test)


def test_a_settled_file_is_read_once_and_again_when_it_changes(tmp_path):
    write(tmp_path, fleet_of(2), "agent-control.json")
    candidates = candidate_paths(tmp_path, None)
    first = read_registry(candidates, clock_ns=lambda: LATER)
    assert read_registry(candidates, first, clock_ns=lambda: LATER) is first
    write(tmp_path, fleet_of(30), "agent-control.json")  # another size: another key, whatever the clock
    changed = read_registry(candidates, first, clock_ns=lambda: LATER)
    assert changed is not first and changed.get("a").capacity == 30
    (tmp_path / "config").mkdir()
    write(tmp_path, fleet_of(4), "config/agent-control.json")  # a file found before it now
    moved = read_registry(candidates, changed, clock_ns=lambda: LATER)
    assert moved.path == tmp_path / "config/agent-control.json" and moved.get("a").capacity == 4
    (tmp_path / "config/agent-control.json").write_text("[")  # broken: refused, not the old fleet
    with pytest.raises(ControlFileError):
        read_registry(candidates, moved, clock_ns=lambda: LATER)


def test_a_file_is_trusted_only_if_it_had_settled_when_it_was_looked_at(tmp_path):
    path = write(tmp_path, fleet_of(2), "agent-control.json")
    changed = max(path.stat().st_mtime_ns, path.stat().st_ctime_ns)
    candidates = candidate_paths(tmp_path, None)
    assert read_registry(candidates, clock_ns=lambda: changed + 10**9).key is None
    assert read_registry(candidates, clock_ns=lambda: changed + 3 * 10**9).key is not None


def test_a_file_just_written_is_read_every_time(tmp_path):
    """A write in the same tick of the file system's clock can keep the file's times
    and size: until it settles, each call reads it again, and sees such a write."""
    write(tmp_path, fleet_of(2), "agent-control.json")
    candidates = candidate_paths(tmp_path, None)
    first = read_registry(candidates)
    assert first.key is None
    write(tmp_path, fleet_of(3), "agent-control.json")  # the same size
    assert read_registry(candidates, first).get("a").capacity == 3


def test_a_file_settles_two_seconds_after_its_last_change():
    now = 10**19
    assert not settled((1, 2, 3, now - 10**9, now - 10**9), now)
    assert not settled((1, 2, 3, now - 5 * 10**9, now - 10**9), now)  # its inode changed a second ago
    assert settled((1, 2, 3, now - 3 * 10**9, now - 3 * 10**9), now)


def test_nothing_found_says_where_it_looked_and_how_to_fix(tmp_path):
    with pytest.raises(ControlFileError, match="validate --fix"):
        find_control_file(candidate_paths(tmp_path, None))


def test_a_directory_where_the_file_should_be_is_named_not_fixed(tmp_path):
    (tmp_path / "fleet").mkdir()  # `sched agents validate --fix` would write nothing there
    with pytest.raises(ControlFileError, match=r"^/.*/fleet: not a file; the agent control file is a JSON "
                                               r"file \(give the file's own path\)$"):
        find_control_file(candidate_paths(tmp_path, tmp_path / "fleet"))


def test_the_default_file_is_valid_and_never_overwrites(tmp_path):
    path = write_default_control_file(tmp_path / "config" / "agent-control.json")
    assert load_control_file(path).agents
    with pytest.raises(FileExistsError):
        write_default_control_file(path)


def test_reload_sees_changes(tmp_path):
    path = write(tmp_path, [{"agentName": "a", "agentType": "dev"}])
    registry = AgentRegistry(path)
    write(tmp_path, [{"agentName": "a", "agentType": "dev"}, {"agentName": "b", "agentType": "qa"}])
    registry.reload()
    assert registry.get_all_types() == ["dev", "qa"]


@pytest.mark.parametrize("entry", [
    {"agentName": "a", "agentType": "dev"},
    {"agentName": "b", "agentType": "dev", "maxConcurrency": 3, "enabled": False, "host": "h1"},
    {"agentName": "c", "agentType": "qa", "command": ["run", "{task_id}", "é"], "timeoutSeconds": 30,
     "nonRetryableExitCodes": [2, 3]},
    {"agentName": "d\u2603", "agentType": "qa", "timeoutSeconds": 1.5, "maxConcurrency": 0},
    {"agentName": "e", "agentType": "qa", "capabilities": ["gpu", "browser", "gpu"], "weight": 2,
     "hours": ["Mon-Fri  09:00-17:00 Europe/Berlin", "Sat 10:00-12:00"]},
])
def test_the_content_hash_is_that_of_the_recorded_agents(tmp_path, entry):
    """The hash is computed without the event models (so `status` does not load them),
    from the same values the AgentsConfigured event records."""
    from scheduler.config.registry import AgentSpec

    spec = AgentSpec.model_validate(entry)
    assert spec.record_json() == spec.record().model_dump(mode="json")
    control = load_control_file(write(tmp_path, [entry]))
    assert control.configured_event().agents == (spec.record(),)
