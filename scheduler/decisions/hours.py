"""Working hours: when an agent may take new work, as availability windows.

Pure: a window is parsed from text once and checked against a moment the caller
gives (the injected clock's `now`); nothing here reads the clock.

The grammar of one window (spaces separate its parts; names are case-insensitive):

    window := [days] times [zone]
    days   := span ("," span)*          span := day | day "-" day
    day    := Mon | Tue | Wed | Thu | Fri | Sat | Sun
    times  := HH:MM "-" HH:MM           (00:00 to 24:00; the end may be 24:00)
    zone   := an IANA time zone name (Europe/Berlin, UTC, ...)

`days` absent means every day; `zone` absent means UTC. A day span wraps around the
week (`Sat-Mon` is Saturday, Sunday and Monday). The window is open from the start
time, inclusive, to the end time, exclusive, in the zone's wall-clock time; an end
earlier than the start runs past midnight into the next day (`Mon-Fri 22:00-06:00`
opens Monday 22:00 and closes Tuesday 06:00, and the last one closes Saturday
06:00). A start equal to the end is refused (an empty window; say `00:00-24:00` for
the whole day). An agent may have several windows: it is available while any one of
them is open.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_WINDOWS = 32
MAX_WINDOW_TEXT = 100
_TIMES = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


class HoursError(ValueError):
    """A window that does not follow the grammar (the message names the problem)."""


@dataclass(frozen=True)
class Window:
    """One availability window: the weekdays it opens on (0 = Monday), its start and
    end in minutes of the day (end may be 1440; end <= start: it ends the next day),
    and its time zone."""

    days: frozenset[int]
    start: int
    end: int
    zone: str

    def is_open(self, moment: datetime) -> bool:
        local = moment.astimezone(ZoneInfo(self.zone))
        minute = local.hour * 60 + local.minute
        today = local.weekday()
        if self.start < self.end:
            return today in self.days and self.start <= minute < self.end
        # past midnight: the part from the start until midnight, then the next day's
        return ((today in self.days and minute >= self.start)
                or ((today - 1) % 7 in self.days and minute < self.end))


def _day(text: str, window: str) -> int:
    try:
        return DAYS.index(text.lower())
    except ValueError:
        raise HoursError(f"{window!r}: unknown day {text!r} (one of Mon, Tue, Wed, Thu, Fri, "
                         "Sat, Sun)") from None


def _days(text: str, window: str) -> frozenset[int]:
    days: set[int] = set()
    for span in text.split(","):
        first, dash, last = span.partition("-")
        start = _day(first, window)
        end = _day(last, window) if dash else start
        days.update((start + i) % 7 for i in range((end - start) % 7 + 1))
    return frozenset(days)


def _minutes(hours: str, minutes: str, window: str) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m):
        raise HoursError(f"{window!r}: {hours}:{minutes} is not a time of day (00:00 to 24:00)")
    return h * 60 + m


@functools.lru_cache(maxsize=1024)
def parse_window(text: str) -> Window:
    """One window from its text; raises `HoursError` naming the problem."""
    if len(text) > MAX_WINDOW_TEXT:
        raise HoursError(f"a window is at most {MAX_WINDOW_TEXT} characters")
    parts = text.split()
    at = next((i for i, part in enumerate(parts) if _TIMES.match(part)), None)
    if at is None or at > 1 or len(parts) > at + 2:
        raise HoursError(f"{text!r}: expected [DAYS] HH:MM-HH:MM [ZONE], "
                         "e.g. 'Mon-Fri 08:00-18:00 Europe/Berlin'")
    days = _days(parts[0], text) if at == 1 else frozenset(range(7))
    match = _TIMES.match(parts[at])
    assert match is not None
    start = _minutes(match[1], match[2], text)
    end = _minutes(match[3], match[4], text)
    if start == 1440:
        raise HoursError(f"{text!r}: a window cannot start at 24:00")
    if start == end:
        raise HoursError(f"{text!r}: the window is empty (start equals end; "
                         "00:00-24:00 is the whole day)")
    zone = parts[at + 1] if len(parts) > at + 1 else "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise HoursError(f"{text!r}: unknown time zone {zone!r} (an IANA name such as "
                         "Europe/Berlin or UTC)") from None
    return Window(days, start, end, zone)


def parse_hours(windows: Sequence[str]) -> tuple[Window, ...]:
    """Every window of an agent (raises `HoursError` on the first bad one)."""
    if len(windows) > MAX_WINDOWS:
        raise HoursError(f"at most {MAX_WINDOWS} windows")
    return tuple(parse_window(w) for w in windows)


def is_available(windows: Sequence[str], moment: datetime) -> bool:
    """Whether an agent with these windows (none: always) may take work at `moment`."""
    return not windows or any(parse_window(w).is_open(moment) for w in windows)
