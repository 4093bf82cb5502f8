"""Which agents fit a task: the capabilities it requires, the agents' working hours,
and the rule that skips the agents it failed on.

Pure: `why_not` is the one rule saying why an agent of a task's type cannot take it
now (`plan()` ranks with it and records its answers; `sched explain` shows them for a
waiting task); `skips_failed` says when the agents a task failed on are passed over
(also for the estimated starts of `sched tasks`); `tasks`, `health` and `explain` ask
`never_fits` whether any agent of the control file could ever take it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from projections.views import AgentView, TaskView

CAPABILITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
MAX_CAPABILITIES = 64


def capability_list(values: Iterable[object]) -> tuple[str, ...]:
    """Capability names as recorded: each checked (a letter or digit, then letters,
    digits, `.`, `_`, `+` or `-`, at most 64 characters), duplicates dropped, sorted.
    Raises ValueError naming the first bad one."""
    names = set()
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"a capability must be a string, not {value!r}")
        if not CAPABILITY.fullmatch(value):
            raise ValueError(f"{value!r} is not a capability name (a letter or digit, then "
                             "letters, digits, '.', '_', '+' or '-'; at most 64 characters)")
        names.add(value)
    if len(names) > MAX_CAPABILITIES:
        raise ValueError(f"at most {MAX_CAPABILITIES} capabilities")
    return tuple(sorted(names))


def missing(has: Sequence[str], requires: Sequence[str]) -> list[str]:
    """The required capabilities an agent lacks, in the order they are required."""
    return [c for c in requires if c not in has]


def hours_text(hours: Sequence[str]) -> str:
    return "; ".join(hours)


def takes_work(out_of_service: str | None, capacity: int, available: bool) -> bool:
    """Whether an agent could take any work now, busy or not: in service (not drained or
    evicted), with some capacity, within its working hours. Only such agents count as
    another that a task which failed on an agent waits for (`skips_failed`): a task must
    not wait for one that takes nothing."""
    return out_of_service is None and capacity > 0 and available


def skips_failed(task: TaskView, agents: Iterable[tuple[str, Sequence[str]]]) -> bool:
    """Whether the agents an earlier attempt of the task failed on are passed over: while
    another agent of its type that `takes_work` (`agents`: their names and capabilities)
    has every capability it requires, unless the task is directed at one agent."""
    return task.assignee is None and bool(task.excluded) and any(
        name not in task.excluded and not missing(capabilities, task.requires)
        for name, capabilities in agents)


class Candidate(Protocol):
    """What `why_not` reads of an agent (an `AgentView`, or the plan's own slot)."""

    @property
    def name(self) -> str: ...
    @property
    def capabilities(self) -> tuple[str, ...]: ...
    @property
    def hours(self) -> tuple[str, ...]: ...
    @property
    def free(self) -> int: ...
    @property
    def load(self) -> int: ...
    @property
    def out_of_service(self) -> str | None: ...


def why_not(agent: Candidate, available: bool, task: TaskView, skip_failed: bool,
            claimant: str | None = None) -> str | None:
    """Why `agent`, enabled in the control file and of the task's type, cannot take the
    task now, or None if it can (`available`: now is within its working hours;
    `skip_failed`: `skips_failed` of the task; `claimant`: the pull worker claiming work
    for itself, if this is a claim). A tick asks it of every agent for every task it
    places: it stays a few comparisons."""
    if claimant is not None and agent.name != claimant:
        return f"not asking: {claimant} claimed work for itself"
    if task.assignee is not None and agent.name != task.assignee:
        return f"the task is directed at {task.assignee}"
    if agent.out_of_service is not None:
        return f"{agent.out_of_service} by an operator"
    if task.requires and (lacks := missing(agent.capabilities, task.requires)):
        return f"lacks capability {', '.join(lacks)}"
    if not available:
        return f"outside its working hours ({hours_text(agent.hours)})"
    if skip_failed and agent.name in task.excluded:
        return "it failed or did not start an earlier attempt of the task"
    if agent.free <= 0:
        return f"no free slot (load {agent.load})"
    return None


def never_fits(agents: Iterable[AgentView], task: TaskView) -> str | None:
    """Why no agent of the control file can ever take the task, or None: there is no
    agent of its type (or its assignee is not one), or none of them has every
    capability it requires. Disabled agents count (they may come back)."""
    able = [a for a in agents if a.configured and a.type == task.queue
            and (task.assignee is None or a.name == task.assignee)]
    if not able:
        if task.assignee is not None:
            return f"its assignee {task.assignee} is not one of the {task.queue} agents of the control file"
        return f"no {task.queue} agent in the control file"
    if any(not missing(a.capabilities, task.requires) for a in able):
        return None
    needs = " and ".join(task.requires)
    if task.assignee is not None:
        lacks = ", ".join(missing(able[0].capabilities, task.requires))
        return f"its assignee {task.assignee} lacks capability {lacks}"
    return f"no {task.queue} agent in the control file has {needs}"
