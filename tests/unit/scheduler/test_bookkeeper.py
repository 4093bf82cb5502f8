"""The supervisor's bookkeeper: an outcome waits out a database or a server that is
away (or busy) while the attempt's lease holds, and is given up once it ran out."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from eventlog.errors import DatabaseBusy, DatabaseFault, ServerUnreachable
from scheduler.runner import containment
from scheduler.runner.exec import Attempt, Ending
from scheduler.runner.spawn import lease_clock
from scheduler.runner.supervisor import Bookkeeper, Running


class FlakyLedger:
    """Fails `failures` turns with `error`, then records every ending as succeeded."""

    lease_seconds = 60.0

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.turns = failures, error, 0

    def turn(self, renew, record):
        self.turns += 1
        if self.turns <= self.failures:
            raise self.error
        return [], ["succeeded" for _ in record]


def ended_run(lease_left: float) -> Running:
    where = Path("/nonexistent")
    attempt = Attempt(7, 1, "dev", "lease", ["true"], where, {}, 10.0, where / "agent.log",
                      containment.AttemptRef.of(7, 1, "db"), lease_clock())
    return Running(attempt, expires=lease_clock() + lease_left, next_beat=float("inf"))


def outcome_after(ledger: FlakyLedger, lease_left: float = 60.0, **named: str) -> str:
    woken = threading.Condition()

    def wake() -> None:  # after each turn (the outcome, if known, is set before)
        with woken:
            woken.notify_all()

    book = Bookkeeper(ledger, wake, retry_seconds=0.001, **named)
    run = ended_run(lease_left)
    try:
        with woken:
            book.record(run, Ending("exit 0", succeeded=True))
            assert woken.wait_for(lambda: run.outcome is not None, 10)
    finally:
        book.close()
    assert run.outcome is not None
    return run.outcome.status


def test_an_outcome_outlasts_a_server_that_is_away_while_the_lease_holds():
    ledger = FlakyLedger(5, ServerUnreachable("cannot reach the server"))
    assert outcome_after(ledger) == "succeeded"
    assert ledger.turns == 6


def test_an_outcome_outlasts_a_database_restart_while_the_lease_holds():
    """A PostgreSQL restart of a few seconds fails every turn at once (the connection is
    refused): the outcome was given up after three quick turns, and the attempt, which
    had succeeded, ran again once its lease ran out (seen in a two-host drill)."""
    ledger = FlakyLedger(20, DatabaseFault("cannot use the PostgreSQL server (connection refused)"))
    assert outcome_after(ledger) == "succeeded"
    assert ledger.turns == 21


class StalledLedger(FlakyLedger):
    """Fails as a stalled writer keeps the lock: the same problem, a second longer each turn."""

    def turn(self, renew, record):
        if self.turns < self.failures:
            self.error = DatabaseBusy(f"a writer is idle in its transaction for {self.turns + 1} s")
        return super().turn(renew, record)


def test_an_outage_is_said_once_and_its_end_once(capsys):
    """Not a line a second for as long as the database is away (exec.log gained 45
    identical lines in a 20 s PostgreSQL outage, and had no line when it came back)."""
    ledger = StalledLedger(20, DatabaseBusy(""))
    assert outcome_after(ledger) == "succeeded"
    assert capsys.readouterr().err.splitlines() == [
        "sched supervisor: a writer is idle in its transaction for 1 s (retrying every 0.001 s)",
        "sched supervisor: recording works again"]


def test_a_sched_exec_says_its_own_name(capsys, monkeypatch):
    """A cron tick's `sched exec` wrote `sched supervisor: ...` into exec.log, where no
    supervisor runs: its lines name it and its task."""
    from scheduler.runner import exec as runner
    from scheduler.runner import supervisor

    asked: dict[str, object] = {}
    monkeypatch.setattr(supervisor, "run_all", lambda ws, attempts, stop, **kw: asked.update(kw) or ["done"])
    assert runner.run(None, ended_run(60).attempt) == "done"  # type: ignore[arg-type]
    assert outcome_after(StalledLedger(1, DatabaseBusy("")), name=asked["name"]) == "succeeded"  # type: ignore[arg-type]
    assert capsys.readouterr().err.splitlines() == [
        "sched exec 7: a writer is idle in its transaction for 1 s (retrying every 0.001 s)",
        "sched exec 7: recording works again"]


def test_an_outcome_is_given_up_once_its_lease_ran_out():
    """Then the task is taken back anyway, and an outcome recorded late would be refused."""
    ledger = FlakyLedger(100, DatabaseBusy("the write lock was not obtained in time"))
    assert outcome_after(ledger, lease_left=-1.0) == "lost"
    assert ledger.turns == 1


def test_an_answer_that_makes_no_sense_is_a_failed_turn_retried_not_a_lost_outcome():
    """A proxy's page where JSON was expected, an answer cut short: the turn failed like
    any other and is tried again; it was given up at once (and the loop spun)."""
    ledger = FlakyLedger(1, ValueError("Expecting value: line 1 column 1 (char 0)"))
    assert outcome_after(ledger) == "succeeded"
    assert ledger.turns == 2


class FullDisk:
    """A log file on a full disk: every write fails."""

    def write(self, _text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        raise OSError(28, "No space left on device")


def test_a_log_that_cannot_be_written_stops_no_recording(monkeypatch):
    """The supervisor's stderr is `logs/exec.log`: on a full disk the line of a failed
    turn raised, the bookkeeper's thread ended, and no outcome was recorded nor lease
    renewed again (succeeded tasks ran again, then were dead-lettered; a QA drill)."""
    monkeypatch.setattr("sys.stderr", FullDisk())
    ledger = StalledLedger(3, DatabaseBusy(""))
    assert outcome_after(ledger) == "succeeded"
    assert ledger.turns == 4


@pytest.mark.parametrize(("code", "retried"), [
    (errno.ENOENT, False), (errno.EACCES, False), (errno.ENOEXEC, False),  # the program's: dead at once
    (errno.EMFILE, True), (errno.ENFILE, True), (errno.EAGAIN, True), (errno.ENOMEM, True)])
def test_a_start_that_failed_for_the_machines_limits_is_retried(code, retried):
    """A supervisor out of descriptors, or a fork refused for the process limit, was the
    program's spawn error: dead-lettered at once, with the program fine (a review)."""
    from scheduler.config.settings import Settings
    from scheduler.runner.exec import spawn_error_ending

    ending = spawn_error_ending(Settings(), ended_run(60.0).attempt, OSError(code, os.strerror(code)))
    assert (ending.reason, ending.retry) == ("spawn_error", retried)
    assert ending.error.startswith("cannot start 'true': ")
    assert ending.error.endswith("(this machine's limits)") is retried


def test_leases_of_attempts_started_apart_come_to_be_renewed_in_one_turn():
    """Each attempt kept a beat of its own: four attempts started a quarter second apart
    cost four write transactions every renewal interval (a review)."""
    from scheduler.runner.supervisor import renewed_together

    every = 10.0
    runs = [ended_run(60.0) for _ in range(4)]
    for i, run in enumerate(runs):
        run.next_beat = every + 0.25 * i
    turns = []
    while (now := min(r.next_beat for r in runs)) < 100.0:  # (the lease clock, stepped turn by turn)
        due = renewed_together(runs, now, every)
        assert due and all(r.next_beat <= now + every / 2 for r in due)
        turns.append(len(due))
        for run in due:
            run.next_beat = now + every
    assert turns == [4] * 9  # one turn an interval, every lease in it


def test_a_stop_that_gets_no_thread_runs_in_the_caller(monkeypatch):
    """An agent that forked up to the process limit left no thread to start: the error
    ended the supervising loop, and every attempt it ran with it (a review)."""
    from scheduler.runner import supervisor

    def no_thread(_self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    stopped: list[Running] = []
    run = ended_run(60.0)
    supervisor._thread(stopped.append, run)
    assert stopped == [run]
