"""The SQLite writers' turn: an exclusive `flock` on a file beside the database, taken
before `BEGIN IMMEDIATE` and given back after the commit.

SQLite lets one writer in at a time and makes the others wait in its busy handler,
which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and then 100 ms between tries:
when many short transactions of several processes collide (wrappers recording their
outcome while the daemon ticks, workers claiming), a waiter sleeps long after the lock
was given back. Among sched's own writers this lock decides the turn instead: the
holder keeps it only for its transaction, and a waiter looks again within a millisecond
(a blocking `flock` cannot be given a timeout). The threads of one process first queue
on a lock of their own, so only one of them at a time looks at the file: the others
wait without waking (in `sched serve`, a claim and a complete in flight on each of a
worker's threads). A process forked while one of its threads held the turn does not
hold it (`_forget_turns`). SQLite's own locking still guards the file against every
other writer (the `sqlite3` shell, an older sched).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

FIRST_PAUSE = 0.0001  # seconds between tries, doubling up to LONGEST_PAUSE
LONGEST_PAUSE = 0.001


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + "-lock")


class TurnNotGiven(TimeoutError):
    """Another writer kept the turn for longer than the caller would wait."""


_local_turns: dict[Path, threading.Lock] = {}  # database -> the turn among this process's threads
_making = threading.Lock()
_held: set[int] = set()  # the lock files' descriptors of the turns held now


def _local_turn(database: Path) -> threading.Lock:
    with _making:
        return _local_turns.setdefault(database, threading.Lock())


def _forget_turns() -> None:
    """In a forked child, which holds no turn (the threads holding them are the
    parent's): a lock of the threads would never be given back there, and a copy of a
    held lock file's descriptor would keep the parent's flock until the child exits."""
    global _making
    _local_turns.clear()
    _making = threading.Lock()
    for fd in _held:
        with suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_turns)


_STATES = {"R": "running", "S": "waiting", "D": "waiting on the disk", "T": "stopped",
           "t": "stopped by a debugger", "Z": "exited"}


def turn_holder(database: Path) -> str | None:
    """Who holds the writers' turn of `database`, for a busy line: its process (from
    the kernel's table of file locks, /proc/locks on Linux), its command and its state,
    or None when that cannot be told (no holder now, another OS, another namespace)."""
    try:
        st = os.stat(lock_path(database))
        with open("/proc/locks") as locks:
            table = locks.read().splitlines()
    except OSError:
        return None
    file = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = {int(f[4]) for f in (line.split() for line in table)
            if len(f) >= 6 and f[1] == "FLOCK" and f[5] == file and f[4].isdigit()}
    if len(pids) != 1 or (pid := pids.pop()) <= 0:
        return None
    if pid == os.getpid():
        return f"another thread of this process ({pid})"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return f"process {pid}"
    words = [a.decode(errors="replace") for a in argv if a]
    if len(words) > 1 and os.path.basename(words[0]).startswith("python") and not words[1].startswith("-"):
        words = words[1:]  # a script run by its interpreter (`sched`, through its #! line)
    # (one line: an argument may hold newlines)
    command = " ".join(" ".join([os.path.basename(words[0]), *words[1:3]]).split())[:60] if words else "?"
    described = f"process {pid} ({command}), {_STATES.get(state, 'running')}"
    if state in ("T", "t"):
        described += f": kill -CONT {pid} lets it go on"
    return described


@contextmanager
def writer_turn(database: Path, timeout: float) -> Iterator[None]:
    """Hold the writers' turn of `database` for the block: one holder at a time across
    threads and processes (each turn opens the file anew: flock excludes between open
    files). Raises `TurnNotGiven` after `timeout` seconds of waiting."""
    deadline = time.monotonic() + timeout
    local = _local_turn(database)
    if not local.acquire(timeout=max(timeout, 0.0)):
        raise TurnNotGiven(f"no write turn within {timeout:g} s")
    holder = os.getpid()
    try:
        with _file_turn(database, deadline):
            yield
    finally:
        if os.getpid() == holder:  # (a child forked inside the block holds nothing)
            local.release()


@contextmanager
def _file_turn(database: Path, deadline: float) -> Iterator[None]:
    """The turn among processes: the lock file's flock, tried until `deadline`."""
    timeout = deadline - time.monotonic()
    holder = os.getpid()
    fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        pause = FIRST_PAUSE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TurnNotGiven(f"no write turn within {timeout:g} s") from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, LONGEST_PAUSE)
        _held.add(fd)
        yield
    finally:
        if os.getpid() == holder:
            _held.discard(fd)
            os.close(fd)  # gives the turn back
