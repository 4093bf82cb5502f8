"""The supervisor's bookkeeper: an outcome waits out a server that is away while the
attempt's lease holds, and is given up after a few turns when the database refuses."""

from __future__ import annotations

import threading
from pathlib import Path

from eventlog.errors import SchedError, ServerUnreachable
from scheduler.runner import containment
from scheduler.runner.exec import Attempt, Ending
from scheduler.runner.spawn import lease_clock
from scheduler.runner.supervisor import REPORT_TRIES, Bookkeeper, Running


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


def ended_run() -> Running:
    where = Path("/nonexistent")
    attempt = Attempt(7, 1, "dev", "lease", ["true"], where, {}, 10.0, where / "agent.log",
                      containment.AttemptRef.of(7, 1, "db"), lease_clock())
    return Running(attempt, expires=lease_clock() + 60, next_beat=float("inf"))


def outcome_after(ledger: FlakyLedger) -> str:
    woken = threading.Condition()

    def wake() -> None:  # after each turn (the outcome, if known, is set before)
        with woken:
            woken.notify_all()

    book = Bookkeeper(ledger, wake)
    run = ended_run()
    try:
        with woken:
            book.record(run, Ending("exit 0", succeeded=True))
            assert woken.wait_for(lambda: run.outcome is not None, 10)
    finally:
        book.close()
    assert run.outcome is not None
    return run.outcome.status


def test_an_outcome_outlasts_a_server_that_is_away_while_the_lease_holds():
    ledger = FlakyLedger(REPORT_TRIES + 2, ServerUnreachable("cannot reach the server"))
    assert outcome_after(ledger) == "succeeded"
    assert ledger.turns == REPORT_TRIES + 3


def test_an_outcome_the_database_keeps_refusing_is_given_up_after_a_few_turns():
    ledger = FlakyLedger(100, SchedError("the write lock was not obtained in time"))
    assert outcome_after(ledger) == "lost"
    assert ledger.turns == REPORT_TRIES


def test_an_answer_that_makes_no_sense_is_a_failed_turn_retried_not_a_lost_outcome():
    """A proxy's page where JSON was expected, an answer cut short: the turn failed like
    any other and is tried again; it was given up at once (and the loop spun)."""
    ledger = FlakyLedger(1, ValueError("Expecting value: line 1 column 1 (char 0)"))
    assert outcome_after(ledger) == "succeeded"
    assert ledger.turns == 2
