"""Working hours: the window grammar, checked against fixed moments (no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.decisions.hours import HoursError, is_available, parse_window

# 2026-03-02 is a Monday
MON = datetime(2026, 3, 2, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """UTC moment: `day` days after Monday 2026-03-02 (0 = Monday), at hour:minute."""
    return MON + timedelta(days=day, hours=hour, minutes=minute)


def test_weekday_window_opens_at_its_start_and_closes_at_its_end():
    hours = ["Mon-Fri 08:00-18:00"]
    assert not is_available(hours, at(0, 7, 59))
    assert is_available(hours, at(0, 8))
    assert is_available(hours, at(4, 17, 59))
    assert not is_available(hours, at(4, 18))  # the end is exclusive
    assert not is_available(hours, at(5, 12))  # Saturday


def test_the_zone_moves_the_window_and_follows_daylight_saving():
    berlin = ["Mon-Fri 08:00-18:00 Europe/Berlin"]
    # winter: Berlin is UTC+1, so 08:00 there is 07:00 UTC
    assert is_available(berlin, at(0, 7))
    assert not is_available(berlin, at(0, 6, 59))
    # summer (2026-06-01 is a Monday): UTC+2, so 08:00 there is 06:00 UTC
    june = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    assert is_available(berlin, june)
    assert not is_available(berlin, june - timedelta(minutes=1))


def test_the_local_weekday_decides_not_the_utc_one():
    # Monday 23:30 UTC is already Tuesday 08:30 in Tokyo
    assert is_available(["Tue 08:00-09:00 Asia/Tokyo"], at(0, 23, 30))
    assert not is_available(["Mon 08:00-09:00 Asia/Tokyo"], at(0, 23, 30))


def test_a_window_past_midnight_belongs_to_the_day_it_opens():
    night = ["Mon-Fri 22:00-06:00"]
    assert is_available(night, at(0, 22))
    assert is_available(night, at(1, 5, 59))  # Tuesday morning: Monday's night
    assert not is_available(night, at(0, 5))  # Monday morning: Sunday did not open
    assert is_available(night, at(5, 3))  # Saturday morning: Friday's night
    assert not is_available(night, at(5, 22))  # Saturday evening


def test_days_lists_spans_that_wrap_and_no_days_means_every_day():
    assert [is_available(["Fri-Mon 10:00-11:00"], at(d, 10)) for d in range(7)] == [
        True, False, False, False, True, True, True]
    assert [is_available(["Mon,Wed-Thu 10:00-11:00"], at(d, 10)) for d in range(7)] == [
        True, False, True, True, False, False, False]
    assert all(is_available(["10:00-11:00"], at(d, 10, 30)) for d in range(7))
    assert all(is_available(["00:00-24:00"], at(d, 23, 59)) for d in range(7))


def test_several_windows_open_while_any_one_is_open_and_none_means_always():
    split = ["Mon-Fri 08:00-12:00", "mon-fri 13:00-17:00"]
    assert is_available(split, at(0, 9))
    assert not is_available(split, at(0, 12, 30))
    assert is_available(split, at(0, 13))
    assert is_available([], at(6, 3))


@pytest.mark.parametrize(("text", "problem"), [
    ("Mon-Fry 08:00-18:00", "unknown day 'Fry'"),
    ("Mon-Fri 08:00-25:00", "not a time of day"),
    ("Mon-Fri 08:60-18:00", "not a time of day"),
    ("Mon-Fri 08:00-08:00", "the window is empty"),
    ("24:00-08:00", "cannot start at 24:00"),
    ("Mon-Fri 08:00-18:00 Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ("Mon-Fri 8:00-18:00", "expected [DAYS] HH:MM-HH:MM [ZONE]"),
    ("Mon-Fri", "expected [DAYS] HH:MM-HH:MM [ZONE]"),
    ("Mon Tue 08:00-09:00", "expected [DAYS] HH:MM-HH:MM [ZONE]"),
    ("08:00-09:00 UTC extra", "expected [DAYS] HH:MM-HH:MM [ZONE]"),
    ("", "expected [DAYS] HH:MM-HH:MM [ZONE]"),
])
def test_a_bad_window_is_refused_naming_the_problem(text: str, problem: str):
    with pytest.raises(HoursError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_window(text)


@given(start=st.integers(0, 1439), length=st.integers(1, 1439),
       moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                           timezones=st.just(UTC)))
def test_an_every_day_window_is_open_exactly_within_its_minutes(start: int, length: int,
                                                                moment: datetime):
    end = (start + length) % 1440 or 1440
    text = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    minute = moment.hour * 60 + moment.minute
    assert is_available([text], moment) == ((minute - start) % 1440 < length)
