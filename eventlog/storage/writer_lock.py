"""The SQLite writers' turn: an exclusive `flock` on a file beside the database, taken
before `BEGIN IMMEDIATE` and given back after the commit.

SQLite lets one writer in at a time and makes the others wait in its busy handler,
which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 and then 100 ms between tries:
when many short transactions of several processes collide (wrappers recording their
outcome while the daemon ticks, workers claiming), a waiter sleeps long after the lock
was given back. Among sched's own writers this lock decides the turn instead: the
holder keeps it only for its transaction, and a waiter looks again within a millisecond
(a blocking `flock` cannot be given a timeout). SQLite's own locking still guards the
file against every other writer (the `sqlite3` shell, an older sched).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FIRST_PAUSE = 0.0001  # seconds between tries, doubling up to LONGEST_PAUSE
LONGEST_PAUSE = 0.001


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + "-lock")


class TurnNotGiven(TimeoutError):
    """Another writer kept the turn for longer than the caller would wait."""


@contextmanager
def writer_turn(database: Path, timeout: float) -> Iterator[None]:
    """Hold the writers' turn of `database` for the block: one holder at a time across
    threads and processes (each turn opens the file anew: flock excludes between open
    files). Raises `TurnNotGiven` after `timeout` seconds of waiting."""
    fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
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
        yield
    finally:
        os.close(fd)  # gives the turn back
