"""Containing an attempt's processes, and stopping every one of them.

An agent may fork, daemonize, call `setsid()` or ignore SIGTERM; none of that may let
a process of an attempt outlive it (the task would then run twice: once in the
leftover, once in its retry). An attempt's processes are found by every means this
host allows, together:

- a control group per attempt (cgroup v2, where a writable hierarchy is mounted): the
  exec wrapper creates it and moves the agent into it before exec, so every
  descendant stays in it whatever it does; stopping the attempt kills the group
  (`cgroup.kill`, or each member) and removes it;
- the variables every process of the attempt inherits (`SCHED_DB`, `SCHED_TASK_ID`,
  `SCHED_ATTEMPT`), read from /proc;
- the descendants of the live exec wrapper, which is the subreaper of its agent's
  descendants, so orphans (even those that called `setsid()`) stay below it (this
  also covers a process that cleared its environment);
- the agent's process group (known to the wrapper), and the groups of what was found,
  which a signal reaches whole, even a process that forks and exits faster than a
  scan of /proc can see it.

`stop_attempt` is called by whoever ends or takes back an attempt on the host where it
runs: the wrapper when its agent ended, a tick that finds the wrapper gone or the lease
expired, an eviction. It returns only once nothing of the attempt is left (or after
`STOP_WAIT_SECONDS`, naming what survived).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

STOP_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.02
CGROUP_PARENT = "sched"  # attempts' groups live under <our own group>/sched/
WRAPPER_NAME = "sched-exec"  # the process name (comm) of every attempt's wrapper


@dataclass(frozen=True)
class AttemptRef:
    """What identifies one attempt's processes on this host."""

    task_id: int
    attempt: int
    db: str  # where the agent reports: the database as it sees it in SCHED_DB (`Settings.database_label`)
    wrapper_pid: int | None = None
    cgroup: str | None = None  # the attempt's control group directory, if it has one
    # the agent's process group, where the caller knows it (the wrapper: its child's pid)
    process_group: int | None = None
    workdir: str | None = None  # the attempt's working directory: its wrapper works in it
    db_variable: str = "SCHED_DB"  # the variable holding `db` (SCHED_SERVER on a host with no database)

    @classmethod
    def of(cls, task_id: int, attempt: int, db: str, wrapper_pid: int | None = None,
           cgroup: str | None = None, process_group: int | None = None,
           workdir: str | None = None) -> AttemptRef:
        return cls(task_id, attempt, db, wrapper_pid, cgroup, process_group, workdir)

    def marks(self) -> dict[str, str]:
        """The environment variables that mark a process as one of this attempt's."""
        return {self.db_variable: self.db, "SCHED_TASK_ID": str(self.task_id),
                "SCHED_ATTEMPT": str(self.attempt)}


# -- control groups --------------------------------------------------------------------

@functools.cache
def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (None if it is not); read once per
    process (a daemon asks for each attempt it starts)."""
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


@functools.cache
def _cgroup_parent() -> Path | None:
    """Where this process makes its attempts' groups (None without cgroup v2); worked
    out once per process."""
    mount, own = cgroup2_mount(), own_cgroup()
    if mount is None or own is None:
        return None
    return mount / own.lstrip("/") / CGROUP_PARENT


def cgroup_for(ref: AttemptRef) -> Path | None:
    """The control group the attempt is to have, named by its wrapper's pid (None
    where this process cannot make groups): recorded with its start, made by
    `make_cgroup` just before its command starts."""
    parent = _usable_cgroup_parent()
    if parent is None:
        return None
    return parent / f"task-{ref.task_id}-attempt-{ref.attempt}-{ref.wrapper_pid or os.getpid()}"


@functools.cache
def _usable_cgroup_parent() -> Path | None:
    """`_cgroup_parent`, made if need be, where groups can be made in it (cgroup v2
    mounted and delegated to us, writable); None otherwise. Looked at once per process."""
    parent = _cgroup_parent()
    if parent is None:
        return None
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return None
    return parent if (parent / "cgroup.procs").exists() and os.access(parent, os.W_OK) else None


def create_cgroup(ref: AttemptRef) -> Path | None:
    """Make the attempt's control group (`cgroup_for`) now; None where there is none."""
    group = cgroup_for(ref)
    return group if group is not None and make_cgroup(group) else None


def make_cgroup(group: Path) -> bool:
    """Make the control group `group`; False where cgroup v2 cannot be written: not
    mounted, not delegated to us, read-only. `sweep_cgroups` removes it once the
    wrapper whose pid ends its name is gone, if it is empty."""
    try:
        try:
            group.mkdir()
        except FileNotFoundError:  # the first group of this parent
            group.parent.mkdir(exist_ok=True)
            group.mkdir()
        if not (group / "cgroup.procs").exists():
            raise OSError("not a cgroup v2 directory")
    except OSError:
        with contextlib.suppress(OSError):
            group.rmdir()
        return False
    return True


def sweep_cgroups() -> None:
    """Remove the empty groups left by wrappers that died before they removed their
    own (the pid that ends a group's name is gone); called before attempts start, once
    per batch. The kernel refuses to remove one that still holds a process."""
    parent = _cgroup_parent()
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent) if parent is not None else ():
            pid = entry.name.rsplit("-", 1)[-1]
            if entry.is_dir() and pid.isdigit() and not alive(int(pid)):
                remove_cgroup(Path(entry.path))


def join_cgroup(group: str, pid: int = 0) -> None:
    """Move the process `pid` (0: the calling one) into `group`."""
    with open(os.path.join(group, "cgroup.procs"), "w") as f:
        f.write(str(pid))


def _subgroups(group: Path) -> list[Path]:
    """`group` and every group below it (an agent may create its own), deepest first."""
    found = [Path(root) for root, _dirs, _files in os.walk(group)]
    return sorted(found, key=lambda g: len(g.parts), reverse=True)


def cgroup_members(group: Path) -> list[int]:
    """The processes in `group` and the groups below it."""
    pids = []
    for sub in _subgroups(group):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(pid) for pid in (sub / "cgroup.procs").read_text().split()]
    return pids


def remove_cgroup(group: Path) -> bool:
    """Remove an emptied group and the groups below it; False if one still holds a process."""
    for sub in _subgroups(group):
        try:
            sub.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return True


# -- processes marked by their environment, and the wrapper's descendants ----------------

def _read(path: str) -> bytes | None:
    """A small /proc file's content (None if the process is gone or unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if it is gone."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    try:
        fields = raw.rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1])
    except (IndexError, ValueError):
        return None


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                yield int(entry.name)


def _scan(refs: Sequence[AttemptRef], roots: Sequence[int | None]) -> list[set[int]]:
    """One pass over /proc for several attempts: of each, the live processes that carry
    its marks, and the descendants of its `root` (its wrapper, whose orphans it collects
    as their subreaper)."""
    needles = [[b"\0" + f"{k}={v}".encode(errors="surrogateescape") + b"\0" for k, v in ref.marks().items()]
               for ref in refs]
    found: list[set[int]] = [set() for _ in refs]
    children: dict[int, list[int]] = {}
    tree = any(root is not None for root in roots)  # else a process's parent is not needed
    for pid in _pids():
        if tree:
            stat = _stat(pid)
            if stat is None or stat[0] in ("Z", "X"):
                continue
            children.setdefault(stat[1], []).append(pid)
        raw = _read(f"/proc/{pid}/environ")  # a zombie's, or a kernel thread's, is empty
        if not raw:
            continue
        env = b"\0" + raw + b"\0"
        for i, wanted in enumerate(needles):
            if all(needle in env for needle in wanted) and (tree or alive(pid)):
                found[i].add(pid)
    for i, root in enumerate(roots):
        todo = list(children.get(root, ())) if root is not None else []
        while todo:
            pid = todo.pop()
            found[i].add(pid)
            todo += children.get(pid, ())
    return found


def left_by_the_dead(db: str, db_variable: str, home: str, owner: str) -> list[AttemptRef]:
    """The attempts of which processes run on, marked as reporting to `db` (in
    `db_variable`) from `home`, that no live process named `owner` runs: a runner of
    that home that died (SIGKILL) left them, and nothing can renew their leases now.
    (A live runner's are its descendants: it is their subreaper.) Also those whose
    control group, made by a wrapper that is gone, still holds processes, for an
    attempt with its directory in `home` (`work/TASK/ATTEMPT`): a process that cleared
    its environment carries no marks, but cannot leave its group."""
    found = {(ref.task_id, ref.attempt): ref for ref in _marked_by_the_dead(db, db_variable, home, owner)}
    for key, group in _groups_of_the_dead(Path(home, "work")).items():
        ref = found.get(key) or replace(AttemptRef.of(*key, db), db_variable=db_variable)
        found[key] = replace(ref, cgroup=str(group))
    return [found[key] for key in sorted(found)]


_GROUP_NAME = re.compile(r"task-(\d+)-attempt-(\d+)-(\d+)")  # (as `cgroup_for` names them)


def _groups_of_the_dead(work: Path) -> dict[tuple[int, int], Path]:
    """The control groups in this process's parent group made by a wrapper that is gone
    (the pid ending the name), still holding processes, of attempts with a directory
    under `work`."""
    parent = _cgroup_parent()
    found: dict[tuple[int, int], Path] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent) if parent is not None else ():
            name = _GROUP_NAME.fullmatch(entry.name)
            if name is None or not entry.is_dir() or alive(int(name[3])):
                continue
            key = (int(name[1]), int(name[2]))
            group = Path(entry.path)
            if (work / str(key[0]) / str(key[1])).is_dir() and any(map(alive, cgroup_members(group))):
                found[key] = group
    return found


def _marked_by_the_dead(db: str, db_variable: str, home: str, owner: str) -> list[AttemptRef]:
    """The attempts of the processes marked as `home`'s, reporting to `db`, that no live
    `owner` runs."""
    needles = [b"\0" + f"{db_variable}={db}".encode(errors="surrogateescape") + b"\0",
               b"\0" + f"SCHED_HOME={home}".encode(errors="surrogateescape") + b"\0"]
    found: dict[tuple[int, int], AttemptRef] = {}
    for pid in _pids():
        raw = _read(f"/proc/{pid}/environ")
        if not raw or pid == os.getpid():
            continue
        env = b"\0" + raw + b"\0"
        if not all(needle in env for needle in needles) or not alive(pid) or _owned(pid, owner):
            continue
        marks = dict(part.split(b"=", 1) for part in raw.split(b"\0") if b"=" in part)
        try:
            key = (int(marks[b"SCHED_TASK_ID"]), int(marks[b"SCHED_ATTEMPT"]))
        except (KeyError, ValueError):
            continue
        found[key] = replace(AttemptRef.of(*key, db), db_variable=db_variable)
    return [found[key] for key in sorted(found)]


def _owned(pid: int, owner: str) -> bool:
    """Whether a live process named `owner` is `pid`'s ancestor."""
    name = owner.encode() + b"\n"
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        stat = _stat(pid)
        if stat is None:
            return False
        pid = stat[1]
        if _read(f"/proc/{pid}/comm") == name and alive(pid):
            return True
    return False


def is_wrapper_of(pid: int, ref: AttemptRef) -> bool:
    """Whether `pid` is the wrapper of this attempt (not some other process that got
    its pid since): a `sched exec` whose command line names the task, or a process
    named `WRAPPER_NAME` working in the attempt's directory. A daemon's supervisor,
    which runs many attempts, is never one attempt's wrapper."""
    words = (_read(f"/proc/{pid}/cmdline") or b"").split(b"\0")
    if b"exec" in words and str(ref.task_id).encode() in words:
        return alive(pid)
    if ref.workdir is None or _read(f"/proc/{pid}/comm") != WRAPPER_NAME.encode() + b"\n":
        return False
    try:
        return os.readlink(f"/proc/{pid}/cwd") == ref.workdir and alive(pid)
    except OSError:
        return False


# -- stopping ---------------------------------------------------------------------------

def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def members(ref: AttemptRef) -> list[int]:
    """Every live process of the attempt on this host: the members of its control
    group, the processes that carry its marks, and its wrapper with all the wrapper's
    descendants (only when `wrapper_pid` really is the attempt's `sched exec`). The
    calling process is never one of them."""
    return members_of([ref])[0]


def members_of(refs: Sequence[AttemptRef]) -> list[list[int]]:
    """`members` of several attempts, found in one pass over /proc."""
    wrappers = [ref.wrapper_pid if ref.wrapper_pid is not None and is_wrapper_of(ref.wrapper_pid, ref)
                else None for ref in refs]
    result = []
    for ref, wrapper, found in zip(refs, wrappers, _scan(refs, wrappers), strict=True):
        if ref.cgroup is not None:
            found.update(p for p in cgroup_members(Path(ref.cgroup)) if alive(p))
        if wrapper is not None:
            found.add(wrapper)
        found.discard(os.getpid())
        result.append(sorted(found))
    return result


def left_nothing(refs: Sequence[AttemptRef]) -> list[bool]:
    """Of attempts whose agent has exited: whether nothing of each is left on this host
    (then its control group is removed, and it needs no `stop_attempt`). One pass over
    /proc for all of them: the common case of many attempts ending together costs one
    scan, not one each."""
    result = []
    for ref, left in zip(refs, members_of(refs), strict=True):
        group = Path(ref.cgroup) if ref.cgroup is not None else None
        quiet = not left and not _populated(group) and not _group_exists(ref.process_group)
        if quiet and group is not None:
            remove_cgroup(group)
        result.append(quiet)
    return result


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _kill_group(group: Path | None) -> None:
    """SIGKILL every process of the group at once, forks in flight included (Linux 5.14
    and later; elsewhere the caller's SIGKILL rounds do it)."""
    if group is not None:
        with contextlib.suppress(OSError):
            (group / "cgroup.kill").write_text("1")


def _signal_process_groups(pids: Iterable[int], ref: AttemptRef, sig: int) -> None:
    """Signal the agent's process group and those of the attempt's processes: a process
    that forks and exits over and over (a new pid each time, too fast for a scan to
    catch) stays in its group, which one signal reaches whole. Never the group of the
    wrapper or of the caller (a shell pipeline the wrapper was started in is not the
    attempt's)."""
    spared = {os.getpgrp()}
    if ref.wrapper_pid is not None:
        with contextlib.suppress(OSError):
            spared.add(os.getpgid(ref.wrapper_pid))
    for pgid in ({ref.process_group} | {_pgid(pid) for pid in pids}) - spared - {None, 0}:
        with contextlib.suppress(OSError):
            os.killpg(pgid, sig)  # type: ignore[arg-type]


def _populated(group: Path | None) -> bool:
    """Whether the control group (or one below it) holds a process."""
    if group is None:
        return False
    try:
        return "populated 0" not in (group / "cgroup.events").read_text()
    except OSError:
        return False


def _group_exists(pgid: int | None) -> bool:
    """Whether a process (a zombie too) is left in the process group."""
    if pgid is None:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def stop_attempt(ref: AttemptRef, grace: float = 0.0) -> list[int]:
    """Stop every process of the attempt on this host: SIGTERM (to each one, to their
    process groups, and to each one that appears meanwhile), up to `grace` seconds for
    them to end, then SIGKILL rounds until none is left: the control group at once
    (forks in flight included), the agent's process group and those of what is found
    (a process that forks and exits faster than a scan can see it stays in its group),
    each process found; then remove the control group. Returns the processes still
    alive after `STOP_WAIT_SECONDS` of SIGKILL (normally none)."""
    group = Path(ref.cgroup) if ref.cgroup is not None else None
    left = members(ref)
    if not left and not _populated(group) and not _group_exists(ref.process_group):
        if group is not None:
            remove_cgroup(group)
        return []  # the common case, an agent that left nothing: one scan
    if left and grace > 0:
        _signal_process_groups(left, ref, signal.SIGTERM)
        asked: set[int] = set()
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            _signal((p for p in left if p not in asked), signal.SIGTERM)
            asked.update(left)
            time.sleep(POLL_SECONDS)
            left = members(ref)
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while True:
        _kill_group(group)
        _signal_process_groups(left, ref, signal.SIGKILL)
        _signal(left, signal.SIGKILL)
        left = members(ref)
        if not left:
            break
        if time.monotonic() >= deadline:
            return left
        time.sleep(POLL_SECONDS)
    if group is not None:
        remove_cgroup(group)
    return []
