"""The cyclic collector is held off while a write of this process holds the writers' lock
(`eventlog.storage.collector`), and runs again after the last one, whatever the threads."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from eventlog.storage.collector import collector_paused


@pytest.fixture(autouse=True)
def collector_running() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    gc.enable() if was else gc.disable()


def test_it_runs_again_after_a_write_even_one_that_raised():
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the write failed")
    assert gc.isenabled()


def test_it_runs_again_only_when_the_last_of_two_threads_writing_at_once_has_ended():
    entered, leave_first = threading.Event(), threading.Event()
    seen: list[bool] = []

    def first_writer() -> None:
        with collector_paused():
            entered.set()
            leave_first.wait()
        seen.append(gc.isenabled())  # the other thread still writes

    thread = threading.Thread(target=first_writer)
    thread.start()
    entered.wait()
    with collector_paused():
        leave_first.set()
        thread.join()
        assert not gc.isenabled()
    assert seen == [False]
    assert gc.isenabled()


def test_a_collector_the_program_switched_off_stays_off():
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()
