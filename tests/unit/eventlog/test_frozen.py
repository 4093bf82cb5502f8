"""The quick constructors of frozen values build what the class itself builds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import pytest

from eventlog.frozen import constructor
from eventlog.store import Recorded
from projections.views import AgentView, CapacityChange, Outcome, TaskView, TokenView, evolve

VIEWS = [TaskView, AgentView, Outcome, CapacityChange, TokenView, Recorded]


def _values(cls: type) -> list[object]:
    """A distinct value for each field (their types do not matter to a constructor)."""
    return [f"{cls.__name__}.{f.name}" for f in fields(cls)]


@pytest.mark.parametrize("cls", VIEWS, ids=lambda cls: cls.__name__)
def test_a_quick_constructor_builds_what_the_class_builds_and_as_frozen(cls):
    values = _values(cls)
    built = constructor(cls)(*values)
    assert type(built) is cls
    assert built == cls(*values)
    assert [getattr(built, f.name) for f in fields(cls)] == values
    assert constructor(cls)(**{f.name: v for f, v in zip(fields(cls), values, strict=True)}) == built
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, fields(cls)[0].name, "changed")


def test_fields_left_out_take_their_defaults():
    required = [f.name for f in fields(AgentView) if f.default is dataclasses.MISSING]
    given = {name: f"v-{name}" for name in required}
    assert constructor(AgentView)(**given) == AgentView(**given)
    with pytest.raises(TypeError):
        constructor(AgentView)()  # a field without a default must be given, as to the class


def test_evolve_changes_the_fields_named_and_keeps_the_rest():
    task = constructor(TaskView)(*_values(TaskView))
    moved = evolve(task, status="running", attempt=3)
    assert moved == dataclasses.replace(task, status="running", attempt=3)
    assert task.status == "TaskView.status"  # the view evolved from is unchanged
    with pytest.raises(TypeError):
        evolve(task, no_such_field=1)


def test_only_a_slotted_dataclass_without_post_init_gets_one():
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            raise ValueError("checked")

    for cls in (NoSlots, Checked):
        with pytest.raises(TypeError):
            constructor(cls)
