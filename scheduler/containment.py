"""Containing an attempt's processes, and stopping every one of them.

An agent may fork, daemonize, call `setsid()` or ignore SIGTERM; none of that may let
a process of an attempt outlive it (the task would then run twice: once in the
leftover, once in its retry). Two mechanisms, the first that works on this host:

- a control group per attempt (cgroup v2, where a writable hierarchy is mounted): the
  exec wrapper creates it and moves the agent into it before exec, so every
  descendant stays in it whatever it does; stopping the attempt kills the group
  (`cgroup.kill`, or each member) and removes it;
- otherwise the processes are found by the variables every process of the attempt
  inherits (`SCHED_DB`, `SCHED_TASK_ID`, `SCHED_ATTEMPT`), read from /proc; the exec
  wrapper is also the subreaper of its agent's descendants, so orphans stay its
  children while it lives.

`stop_attempt` is called by whoever ends or takes back an attempt on the host where it
runs: the wrapper when its agent ended, a tick that finds the wrapper gone or the lease
expired, an eviction. It returns only once nothing of the attempt is left (or after
`STOP_WAIT_SECONDS`, naming what survived).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

STOP_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.02
CGROUP_PARENT = "sched"  # attempts' groups live under <our own group>/sched/


@dataclass(frozen=True)
class AttemptRef:
    """What identifies one attempt's processes on this host."""

    task_id: int
    attempt: int
    db: str  # the resolved database path, as the agent sees it in SCHED_DB
    wrapper_pid: int | None = None
    cgroup: str | None = None  # the attempt's control group directory, if it has one

    @classmethod
    def of(cls, task_id: int, attempt: int, db: Path, wrapper_pid: int | None = None,
           cgroup: str | None = None) -> AttemptRef:
        return cls(task_id, attempt, str(Path(db).resolve()), wrapper_pid, cgroup)

    def marks(self) -> dict[str, str]:
        """The environment variables that mark a process as one of this attempt's."""
        return {"SCHED_DB": self.db, "SCHED_TASK_ID": str(self.task_id),
                "SCHED_ATTEMPT": str(self.attempt)}


# -- control groups --------------------------------------------------------------------

def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (None if it is not)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            return Path(fields[0].split()[4])
    return None


def own_cgroup() -> str | None:
    """This process's cgroup v2 path (relative to the mount), from /proc/self/cgroup."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].strip()
    return None


def create_cgroup(ref: AttemptRef) -> Path | None:
    """Make a control group for the attempt (None where cgroup v2 cannot be written:
    not mounted, not delegated to us, read-only)."""
    mount, own = cgroup2_mount(), own_cgroup()
    if mount is None or own is None:
        return None
    parent = mount / own.lstrip("/") / CGROUP_PARENT
    group = parent / f"task-{ref.task_id}-attempt-{ref.attempt}-{os.getpid()}"
    try:
        parent.mkdir(exist_ok=True)
        group.mkdir()
        if not (group / "cgroup.procs").exists():
            raise OSError("not a cgroup v2 directory")
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return group


def join_cgroup(group: str) -> None:
    """Move the calling process into `group` (run in the agent's child before exec)."""
    with open(os.path.join(group, "cgroup.procs"), "w") as f:
        f.write("0")


def cgroup_members(group: Path) -> list[int]:
    try:
        text = (group / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


# -- processes marked by their environment ----------------------------------------------

def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                yield int(entry.name)


def marked_processes(ref: AttemptRef) -> list[int]:
    """Live processes whose environment marks them as the attempt's."""
    marks = ref.marks()
    me = os.getpid()
    return [pid for pid in _pids() if pid != me and alive(pid)
            and all(_environ(pid).get(k) == v for k, v in marks.items())]


def is_wrapper_of(pid: int, ref: AttemptRef) -> bool:
    """Whether `pid` is the `sched exec` wrapper of this attempt's task (not some other
    process that got its pid since)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    words = [w.decode(errors="replace") for w in argv]
    return "exec" in words and str(ref.task_id) in words and alive(pid)


# -- stopping ---------------------------------------------------------------------------

def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def members(ref: AttemptRef) -> list[int]:
    """Every live process of the attempt on this host (the wrapper included)."""
    found: set[int] = set()
    if ref.cgroup is not None:
        found.update(p for p in cgroup_members(Path(ref.cgroup)) if alive(p))
    found.update(marked_processes(ref))
    if ref.wrapper_pid is not None and is_wrapper_of(ref.wrapper_pid, ref):
        found.add(ref.wrapper_pid)
    found.discard(os.getpid())
    return sorted(found)


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_attempt(ref: AttemptRef, grace: float = 0.0) -> list[int]:
    """Stop every process of the attempt on this host: SIGTERM, up to `grace` seconds,
    then SIGKILL until none is left; remove its control group. Returns the processes
    that were still alive after `STOP_WAIT_SECONDS` (normally none)."""
    group = Path(ref.cgroup) if ref.cgroup is not None else None
    if grace > 0:
        _signal(members(ref), signal.SIGTERM)
        deadline = time.monotonic() + grace
        while members(ref) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while left := members(ref):
        if group is not None:
            with contextlib.suppress(OSError):
                (group / "cgroup.kill").write_text("1")
        _signal(left, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return left
        time.sleep(POLL_SECONDS)
    if group is not None:
        with contextlib.suppress(OSError):
            group.rmdir()
    return []
