"""The SQLite writers' turn: one holder at a time across threads and processes, a
waiter gets it once it is given back, and one that waits too long is told so."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from eventlog.storage.writer_lock import TurnNotGiven, lock_path, writer_turn


def _hold(database: str, entered, leave) -> None:  # type: ignore[no-untyped-def]
    with writer_turn(Path(database), 5.0):
        entered.set()
        leave.wait(30)


def test_a_turn_held_by_another_process_is_waited_for_and_then_given(tmp_path):
    db = tmp_path / "sched.db"
    ctx = multiprocessing.get_context("spawn")
    entered, leave = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(db), entered, leave))
    holder.start()
    try:
        assert entered.wait(30)
        with pytest.raises(TurnNotGiven), writer_turn(db, 0.05):
            pass  # never reached: the other process holds the turn
        got = threading.Event()

        def wait_for_turn() -> None:
            with writer_turn(db, 30):
                got.set()

        waiter = threading.Thread(target=wait_for_turn)
        waiter.start()
        assert not got.wait(0.2)  # still held
        leave.set()
        waiter.join(30)
        assert got.is_set()
    finally:
        leave.set()
        holder.join(30)
    assert lock_path(db).exists()


def test_two_threads_of_one_process_never_hold_the_turn_together(tmp_path):
    db = tmp_path / "sched.db"
    inside = 0
    most = 0
    guard = threading.Lock()

    def writer() -> None:
        nonlocal inside, most
        for _ in range(50):
            with writer_turn(db, 30):
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)  # the other threads run meanwhile (they would enter)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert most == 1


def test_a_sqlite_write_waits_for_the_turn_and_says_so_in_one_line_when_it_is_not_given(tmp_path):
    from eventlog.errors import DatabaseBusy
    from eventlog.storage import create_storage

    db = tmp_path / "sched.db"
    storage = create_storage(db, busy_timeout_ms=50)
    try:
        with writer_turn(db, 5.0):  # another writer of sched is in its transaction
            with pytest.raises(DatabaseBusy) as refused, storage.write():
                pass  # never reached
            with storage.read():  # readers do not queue
                pass
        assert "\n" not in refused.value.message and "try again" in refused.value.message
        with storage.write():  # given back: the next writer goes in at once
            pass
    finally:
        storage.close()


def test_the_busy_line_names_the_process_that_holds_the_turn_and_how_to_let_it_go_on(tmp_path):
    """A writer stopped (kill -STOP) in its turn keeps every other writer busy; the
    line of each names it, from the kernel's table of file locks, and says how to let
    it go on."""
    from eventlog.errors import DatabaseBusy
    from eventlog.storage import create_storage

    db = tmp_path / "sched.db"
    storage = create_storage(db, busy_timeout_ms=50)
    holder = subprocess.Popen([sys.executable, "-c", _STOPS_IN_ITS_TURN, str(db)],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])})
    try:
        _, status = os.waitpid(holder.pid, os.WUNTRACED)  # back once it stopped in its turn
        assert os.WIFSTOPPED(status)
        with pytest.raises(DatabaseBusy) as refused, storage.write():
            pass  # never reached
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.wait(30)
        storage.close()
    line = refused.value.message
    assert "\n" not in line
    program = os.path.basename(sys.executable)
    assert f"longer than busy_timeout_ms: process {holder.pid} ({program} -c import os, signal, " in line
    assert line.endswith(f"), stopped: kill -CONT {holder.pid} lets it go on; try again)")


_STOPS_IN_ITS_TURN = """import os, signal, sys
from pathlib import Path
from eventlog.storage.writer_lock import writer_turn
with writer_turn(Path(sys.argv[1]), 5):
    os.kill(os.getpid(), signal.SIGSTOP)
"""


@contextmanager
def held_by_a_thread(db: Path) -> Iterator[None]:
    """The turn held by another thread of this process for the block."""
    entered, leave = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold, args=(str(db), entered, leave))
    holder.start()
    try:
        assert entered.wait(30)
        yield
    finally:
        leave.set()
        holder.join(30)


def test_a_thread_waits_for_the_turn_another_thread_holds_and_is_told_when_it_waited_too_long(tmp_path):
    db = tmp_path / "sched.db"
    with held_by_a_thread(db), pytest.raises(TurnNotGiven), writer_turn(db, 0.05):
        pass  # never reached
    with writer_turn(db, 5):  # given back
        pass


def test_a_process_forked_while_a_thread_holds_the_turn_gets_it_once_it_is_given_back(tmp_path):
    """The threads' own lock is made anew in a forked child (`sched run` forks its
    supervisor, `sched serve --workers` its workers): else the child would wait for a
    thread of its parent that does not exist there."""
    db = tmp_path / "sched.db"
    with held_by_a_thread(db):
        pid = os.fork()
        if pid == 0:  # the child: wait for the parent's thread to give the turn back
            code = 1
            try:
                with writer_turn(db, 20):
                    code = 0
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)  # (the block gave the turn back)
    assert os.waitstatus_to_exitcode(status) == 0
