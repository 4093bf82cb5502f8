"""Who can ever take a task (`never_fits`), and old events read with the new fields'
defaults."""

from __future__ import annotations

import json
from dataclasses import replace

from eventlog.events import AgentsConfigured, TaskAssigned, TaskSubmitted, parse_event
from projections.fold import evolve_fleet
from projections.views import AgentView
from scheduler.decisions.fit import capability_list, never_fits
from tests.unit.decisions.test_plan import needing


def agent(name: str, capabilities: tuple[str, ...] = (), type_: str = "dev", enabled: bool = True,
          configured: bool = True) -> AgentView:
    return AgentView(name=name, type=type_, capacity=1, enabled=enabled, configured=configured,
                     command=None, capabilities=capabilities)


def test_a_task_that_no_agent_of_its_type_can_take_is_named():
    fleet = [agent("a", ("browser",)), agent("b", ("gpu",)), agent("q", ("browser", "gpu"), type_="qa")]
    assert never_fits(fleet, needing(1, "browser")) is None
    assert never_fits(fleet, needing(1)) is None  # requires nothing: any dev agent takes it
    assert never_fits(fleet, needing(1, "browser", "gpu")) == (
        "no dev agent in the control file has browser and gpu")
    assert never_fits(fleet, needing(1, "gpu", assignee="a")) == "its assignee a lacks capability gpu"
    assert never_fits(fleet, needing(1, "gpu", assignee="q")) == (
        "its assignee q is not one of the dev agents of the control file")


def test_a_task_of_a_type_no_agent_has_or_directed_at_no_agent_is_named_too():
    """A queue whose agents all left the control file (or never were in it) held its
    tasks silently: `tasks`, `explain` and health said every waiting task had an agent."""
    fleet = [agent("a"), agent("gone", type_="ops", configured=False)]
    assert never_fits(fleet, needing(1, queue="ops")) == "no ops agent in the control file"
    assert never_fits(fleet, needing(1, assignee="nobody")) == (
        "its assignee nobody is not one of the dev agents of the control file")
    assert never_fits([], needing(1)) == "no dev agent in the control file"


def test_a_disabled_agent_counts_one_gone_from_the_control_file_does_not():
    assert never_fits([agent("a", ("gpu",), enabled=False)], needing(1, "gpu")) is None
    assert never_fits([agent("a", ("gpu",), configured=False)], needing(1, "gpu")) is not None


def test_capability_names_are_checked_sorted_and_deduplicated():
    assert capability_list(["gpu", "browser", "gpu", "python3.12", "c++"]) == (
        "browser", "c++", "gpu", "python3.12")
    for bad in ("", "-gpu", "g pu", "x" * 65, "gpu\n"):
        try:
            capability_list([bad])
        except ValueError as e:
            assert repr(bad) in str(e)
        else:
            raise AssertionError(f"{bad!r} accepted")


def test_old_events_read_with_the_defaults_of_the_new_fields():
    submitted = parse_event("TaskSubmitted", 1, json.dumps({"task_id": 1, "queue": "dev", "title": "t"}))
    assert isinstance(submitted, TaskSubmitted) and submitted.requires == ()
    configured = parse_event("AgentsConfigured", 2, json.dumps({
        "agents": [{"name": "a", "type": "dev", "capacity": 2, "host": "h1"}],
        "content_hash": "x", "source": "f"}))
    assert isinstance(configured, AgentsConfigured)
    (record,) = configured.agents
    assert (record.capabilities, record.weight, record.hours) == ((), 1.0, ())
    (view,) = evolve_fleet([], configured)
    assert (view.capabilities, view.weight, view.hours) == ((), 1.0, ())
    assigned = parse_event("TaskAssigned", 2, json.dumps({
        "task_id": 1, "agent": "a", "attempt": 1, "start_by": "2026-01-01T00:00:00Z",
        "decision": {"priority": 0, "effective_priority": 0, "waited_seconds": 1.0,
                     "candidates": [{"agent": "a", "free": 1, "load": 0, "success_rate": 0.5}],
                     "candidates_total": 1}}))
    assert isinstance(assigned, TaskAssigned) and assigned.decision is not None
    assert assigned.decision.candidates[0].weight == 1.0


def test_a_new_control_file_gives_agents_their_capabilities_weight_and_hours_and_keeps_load():
    from eventlog.events import AgentRecord

    before = [replace(agent("a"), assigned=1)]
    event = AgentsConfigured(agents=(AgentRecord(name="a", type="dev", capacity=2, capabilities=("gpu",),
                                                 weight=3.0, hours=("Mon 09:00-10:00",)),),
                             content_hash="h", source="f")
    (after,) = evolve_fleet(before, event)
    assert (after.capabilities, after.weight, after.hours, after.assigned) == (
        ("gpu",), 3.0, ("Mon 09:00-10:00",), 1)
