"""Which agents fit a task: the capabilities it requires and the agents' working hours.

Pure: `plan()` asks `unfit` about each agent of a task's type; `tasks`, `health` and
`explain` ask `never_fits` whether any agent of the control file could ever take it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from projections.views import AgentView, TaskView
from scheduler.decisions.hours import is_available

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


def unfit(capabilities: Sequence[str], hours: Sequence[str], task: TaskView,
          now: datetime) -> str | None:
    """Why an agent of the task's type cannot take it now for what it is (capabilities,
    working hours), or None if it can."""
    lacks = missing(capabilities, task.requires)
    if lacks:
        return f"lacks capability {', '.join(lacks)}"
    if not is_available(hours, now):
        return f"outside its working hours ({hours_text(hours)})"
    return None


def never_fits(agents: Iterable[AgentView], task: TaskView) -> str | None:
    """Why no agent of the control file can ever take the task (no agent of its type,
    or its assignee, has every capability it requires), or None. Only a task that
    requires capabilities is judged here; disabled agents count (they may come back)."""
    if not task.requires:
        return None
    able = [a for a in agents if a.configured and a.type == task.queue
            and (task.assignee is None or a.name == task.assignee)]
    if any(not missing(a.capabilities, task.requires) for a in able):
        return None
    needs = " and ".join(task.requires)
    if task.assignee is not None:
        if not able:
            return f"its assignee {task.assignee} is not a {task.queue} agent in the control file"
        lacks = ", ".join(missing(able[0].capabilities, task.requires))
        return f"its assignee {task.assignee} lacks capability {lacks}"
    return f"no {task.queue} agent in the control file has {needs}"
