"""Events survive the trip through storage, and unreadable ones are named."""

from __future__ import annotations

import json
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, ValidationError

from eventlog.errors import CorruptLog
from eventlog.events import (
    EVENT_TYPES,
    AgentRecord,
    TaskAssigned,
    TaskFailed,
    TaskRequeued,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
    current_version,
    dump_event,
    parse_event,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                       timezones=st.just(UTC))


def values_of(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of a field of an event: JSON for `Any`, aware moments for a time, a nested
    model's fields, hypothesis's own for the rest (a value the model refuses is drawn
    again)."""
    if annotation is AwareDatetime:
        return moments
    if annotation is Any:
        return json_values
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(values_of(arg) for arg in args))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(values_of(args[0]), max_size=3).map(tuple)
        return st.tuples(*(values_of(arg) for arg in args))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return models(annotation)
    return st.from_type(annotation)


def models(cls: type[BaseModel]) -> st.SearchStrategy[Any]:
    fields = {name: values_of(field.annotation) for name, field in cls.model_fields.items()
              if name not in ("type", "schema_version")}

    def valid(data: dict[str, Any]) -> BaseModel:
        try:
            return cls.model_validate(data)
        except ValidationError:
            reject()

    return st.fixed_dictionaries(fields).map(valid)


# every kind of event (the four built by hand before left 23 of 27 kinds untried: a review)
events = st.sampled_from(list(EVENT_TYPES.values())).flatmap(models)


@settings(max_examples=400)
@given(events)
def test_an_event_survives_a_json_round_trip(event):
    stored = dump_event(event)
    assert parse_event(event.type, event.schema_version, stored) == event


def read_by_pythons_parser(kind: str, data: str):
    """The reference reading of a current event: Python's JSON parser, then validation."""
    return EVENT_TYPES[kind].model_validate(json.loads(data))


@settings(max_examples=400)
@given(events)
def test_a_current_event_reads_as_pythons_json_parser_reads_it(event):
    data = dump_event(event)
    read = parse_event(event.type, current_version(event.type), data)
    assert read == read_by_pythons_parser(event.type, data)


@pytest.mark.parametrize("data", [
    # numbers past 64 bits, the edges of floats, a negative zero, repeated keys (the last wins)
    '{"task_id": 1, "queue": "q", "title": "t", "title": "u", '
    '"payload": {"big": 100000000000000000000000000, "f": 1e308, "z": -0.0, "tiny": 5e-324, '
    '"x": 0.30000000000000004, "k": 1, "k": 2}}',
    # an escaped lone surrogate, which pydantic's own parser refuses (Python's reads it)
    '{"task_id": 1, "queue": "q", "title": "a\\ud800b"}',
    # a raw one, as a damaged row that is not UTF-8 reads
    '{"task_id": 1, "queue": "q", "title": "a\udcffb"}',
])
def test_stored_text_at_the_edges_reads_as_pythons_json_parser_reads_it(data):
    event = parse_event("TaskSubmitted", current_version("TaskSubmitted"), data)
    assert event == read_by_pythons_parser("TaskSubmitted", data)
    assert str(event.payload) == str(read_by_pythons_parser("TaskSubmitted", data).payload)  # -0.0 too


def test_every_event_is_frozen_past_tense_and_documented():
    for name, cls in EVENT_TYPES.items():
        assert name.endswith(("ed", "Configured")), name
        assert cls.__doc__ and cls.__doc__.strip()
        assert current_version(name) >= 1
        assert cls.model_config["frozen"] is True


def test_a_stored_version_2_submit_or_requeue_reads_as_current_by_nobody_known():
    submitted = parse_event("TaskSubmitted", 2, '{"task_id": 1, "queue": "dev", "title": "t", '
                                                '"requires": ["gpu"], "due": null}')
    assert isinstance(submitted, TaskSubmitted) and submitted.schema_version == 3
    assert submitted.by is None and submitted.requires == ("gpu",)
    requeued = parse_event("TaskRequeued", 2, '{"task_id": 1, "reason": "operator", "not_before": null, '
                                              '"detail": null}')
    assert isinstance(requeued, TaskRequeued) and requeued.schema_version == 6 and requeued.by is None
    for old in (1, 2, 3, 4, 5):  # every older version upgrades to the current one
        upgraded = parse_event("TaskRequeued", old, '{"task_id": 1, "reason": "operator"}')
        assert (upgraded.by, upgraded.to_approve) == (None, False)  # type: ignore[attr-defined]
    named = TaskRequeued(task_id=1, reason="operator", by="ops", to_approve=True)
    assert parse_event("TaskRequeued", 6, dump_event(named)) == named


@pytest.mark.parametrize(("reason", "failed_version", "requeued_version"), [
    ("undelivered", 6, 4), ("interrupted", 7, 5)])
def test_a_new_reason_is_a_version_older_sched_refuses_to_read(reason, failed_version, requeued_version):
    """Version 6 of TaskFailed and 4 of TaskRequeued add the reason `undelivered`, 7 and
    5 the reason `interrupted`: an older sched meets their version number first and
    says to upgrade, and a stored older event still reads as before."""
    failed = TaskFailed(task_id=1, agent="ann", attempt=1, reason=reason, error="gone")
    assert failed.schema_version >= failed_version
    assert TaskRequeued(task_id=1, reason=reason).schema_version >= requeued_version
    assert parse_event("TaskFailed", failed_version, dump_event(failed)) == failed
    old = parse_event("TaskFailed", failed_version - 1, '{"task_id": 1, "agent": "ann", "attempt": 1, '
                                                        '"reason": "reported", "error": "e"}')
    assert (old.schema_version, old.reason) == (failed.schema_version, "reported")  # type: ignore[attr-defined]
    with pytest.raises(CorruptLog, match="upgrade sched"):  # what a sched of the version before says
        parse_event("TaskFailed", failed.schema_version + 1, dump_event(failed))


@pytest.mark.parametrize(("kind", "stored", "data"), [
    ("TaskAssigned", 3, '{"task_id": 1, "agent": "ann", "attempt": 1, "start_by": "2026-01-01T00:00:00Z"}'),
    ("TaskStarted", 2, '{"task_id": 1, "agent": "ann", "attempt": 1, "token_hash": "h", '
                       '"lease_expires_at": "2026-01-01T00:00:00Z"}'),
    ("LeaseRenewed", 1, '{"task_id": 1, "attempt": 1, "lease_expires_at": "2026-01-01T00:00:00Z"}'),
    ("TaskProgressed", 1, '{"task_id": 1, "attempt": 1, "percent": 50}'),
    ("TaskSucceeded", 2, '{"task_id": 1, "agent": "ann", "attempt": 1}'),
    ("TaskFailed", 3, '{"task_id": 1, "agent": "ann", "attempt": 1, "reason": "reported", "error": "e"}'),
])
def test_a_runner_event_stored_before_by_reads_as_current_with_no_token_known(kind, stored, data):
    event = parse_event(kind, stored, data)
    assert event.schema_version == current_version(kind) > stored
    assert event.by is None  # type: ignore[attr-defined]
    named = event.model_copy(update={"by": "box"})
    assert parse_event(kind, current_version(kind), dump_event(named)).by == "box"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("kind", "stored", "data"), [
    ("TaskSucceeded", 3, '{"task_id": 1, "agent": "ann", "attempt": 1, "cpu_seconds": 0.5}'),
    ("TaskFailed", 4, '{"task_id": 1, "agent": "ann", "attempt": 1, "reason": "exit_code", "error": "e"}'),
])
def test_an_ending_stored_before_start_delays_reads_as_current_with_the_delay_unmeasured(kind, stored, data):
    event = parse_event(kind, stored, data)
    assert event.schema_version == current_version(kind) > stored
    assert event.start_delay_seconds is None  # type: ignore[attr-defined]
    measured = event.model_copy(update={"start_delay_seconds": 0.042})
    assert parse_event(kind, current_version(kind), dump_event(measured)) == measured


def test_a_start_stored_before_machines_reads_as_current_with_its_machine_unknown():
    data = ('{"task_id": 1, "agent": "ann", "attempt": 1, "token_hash": "h", "runner": "exec", "pid": 7, '
            '"host": "h1", "lease_expires_at": "2026-01-01T00:00:00Z"}')
    event = parse_event("TaskStarted", 3, data)
    assert isinstance(event, TaskStarted) and event.schema_version == 4 and event.machine is None
    placed = event.model_copy(update={"machine": "m1/b1/4026531836"})
    assert parse_event("TaskStarted", 4, dump_event(placed)) == placed


def test_an_unknown_type_is_named_with_its_seq():
    with pytest.raises(CorruptLog, match="seq 7 has unknown type 'TaskTeleported'"):
        parse_event("TaskTeleported", 1, "{}", seq=7)


def test_a_future_schema_version_is_refused_not_guessed():
    with pytest.raises(CorruptLog, match="schema_version 99"):
        parse_event("TaskAssigned", 99, "{}", seq=3)


def test_a_damaged_payload_is_named():
    with pytest.raises(CorruptLog, match=r"seq 4 \(TaskAssigned\) cannot be read"):
        parse_event("TaskAssigned", 1, '{"task_id": "x"', seq=4)


def test_an_event_of_the_wrong_shape_names_its_field_and_what_is_wrong():
    data = '{"task_id": 1, "agent": "a", "attempt": "x", "start_by": "2026-01-01T00:00:00Z"}'
    with pytest.raises(CorruptLog) as raised:
        parse_event("TaskAssigned", 1, data, seq=5)
    assert raised.value.message == ("event seq 5 (TaskAssigned) cannot be read: attempt: Input should be "
                                    "a valid integer, unable to parse string as an integer")


def test_events_reject_unknown_fields_and_mutation():
    with pytest.raises(ValueError):
        TaskAssigned(task_id=1, agent="a", attempt=1, start_by=datetime.now(UTC), bogus=1)
    event = TaskAssigned(task_id=1, agent="a", attempt=1, start_by=datetime.now(UTC))
    with pytest.raises(ValueError):
        event.agent = "b"  # type: ignore[misc]


def test_timestamps_are_fixed_width_for_every_year():
    from eventlog.timeutil import from_text, to_text

    early, late = datetime(999, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    assert to_text(early) == "0999-01-01T00:00:00.000000Z" < to_text(late)
    assert from_text(to_text(early)) == early


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_a_time_whose_utc_moment_is_off_the_calendar_is_a_value_error_not_an_overflow(text):
    """Python's calendar ends at the year 9999: such a time, written with an offset,
    has no UTC moment. A stored one is damaged; a flag's is bad input (a ValueError
    either way, never OverflowError, which the CLI would call a number too large)."""
    from eventlog.errors import DamagedTime
    from eventlog.timeutil import from_text

    with pytest.raises(DamagedTime, match="outside the years 1 to 9999 in UTC"):
        from_text(text)


# fixed offsets (a zone's clock skipped by summer time names no moment)
_MOMENTS = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.builds(
    timezone, st.timedeltas(min_value=-timedelta(hours=23), max_value=timedelta(hours=23))))


@given(_MOMENTS, _MOMENTS)
def test_timestamps_are_utc_text_that_sorts_as_time_sorts(a, b):
    from eventlog.timeutil import from_text, to_text

    assert len(to_text(a)) == len("2026-01-01T00:00:00.000000Z") and to_text(a).endswith("Z")
    assert from_text(to_text(a)) == a
    assert (to_text(a) < to_text(b)) == (a < b)


def test_a_decision_stored_before_via_says_nothing_of_how_it_was_made():
    """`decision.via` came without a new version: a decision stored before it may be a
    tick's or a claim's, so it reads as None (not recorded), not as a tick's; and
    `sched explain` does not explain it as a tick's."""
    import json

    from eventlog.events import AssignmentDecision, CandidateAgent, TaskAssigned, dump_event, parse_event
    from scheduler.reads.explain import why_this_agent

    decision = AssignmentDecision(priority=1, effective_priority=1, waited_seconds=0.0, candidates_total=1,
                                  candidates=(CandidateAgent(agent="a", free=1, load=0, success_rate=0.5),),
                                  via="claim")
    stored = json.loads(dump_event(TaskAssigned(task_id=1, agent="a", attempt=1, decision=decision,
                                                start_by=datetime(2026, 1, 1, tzinfo=UTC))))
    assert stored["decision"]["via"] == "claim"  # recorded on every decision now
    del stored["decision"]["via"]
    older = parse_event("TaskAssigned", 4, json.dumps(stored))
    assert isinstance(older, TaskAssigned) and older.decision is not None and older.decision.via is None
    assert why_this_agent(older) == ("a ranked first of 1 candidate(s) (this older record does not say "
                                     "whether a tick or the agent's own claim assigned it)")


def test_build_models_leaves_no_model_to_build_on_first_use() -> None:
    """The daemon builds the models before its first tick and before it forks its
    supervisor: a model of the log left to its first use (a decision's, say) would be
    built inside the first tick that assigns, under the write lock. A fresh interpreter,
    as the daemon's, where no other test built any."""
    import subprocess
    import sys

    script = ("from pydantic import BaseModel\n"
              "import eventlog.events as events\n"
              "events.build_models()\n"
              "models = [v for v in vars(events).values() if isinstance(v, type)\n"
              "          and issubclass(v, BaseModel) and v.__module__ == 'eventlog.events']\n"
              "print(len(models), sorted(m.__name__ for m in models if not m.__pydantic_complete__))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    count, unbuilt = out.split(" ", 1)
    assert int(count) >= len(EVENT_TYPES) + 4  # the events; a decision, its candidates, an agent
    assert unbuilt.strip() == "[]"


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_an_event_holding_a_number_json_cannot_carry_is_refused_when_made(bad):
    """Stored, it would read back as null: another fact than the one the projections folded."""
    with pytest.raises(ValueError, match="finite number"):
        TaskSucceeded(task_id=1, agent="a", attempt=1, cpu_seconds=bad)
    with pytest.raises(ValueError, match="finite number"):
        AgentRecord(name="a", type="dev", capacity=1, weight=bad)


def test_a_stored_number_too_large_for_a_float_is_a_corrupt_event_not_infinity():
    stored = dump_event(TaskSucceeded(task_id=1, agent="a", attempt=1, cpu_seconds=1.5))
    huge = stored.replace('"cpu_seconds":1.5', '"cpu_seconds":1' + "0" * 400)
    assert huge != stored
    with pytest.raises(CorruptLog, match="cannot be read"):
        parse_event("TaskSucceeded", current_version("TaskSucceeded"), huge, seq=7)
