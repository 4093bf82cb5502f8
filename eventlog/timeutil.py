"""UTC timestamps as fixed-width text, so that SQL compares them in time order."""

from __future__ import annotations

from datetime import UTC, datetime

from eventlog.errors import MEND_DAMAGE, DamagedTime


def to_text(moment: datetime) -> str:
    """Render a timezone-aware moment as fixed-width UTC text (sorts like time):
    `YYYY-MM-DDTHH:MM:SS.ffffffZ`."""
    if moment.tzinfo is not UTC:
        if moment.tzinfo is None:
            raise ValueError("naive datetime: sched uses timezone-aware UTC only")
        moment = moment.astimezone(UTC)
    # isoformat pads the year and always writes the microseconds with this timespec;
    # it is twice as quick as strftime (a claim writes seven times)
    return moment.isoformat(timespec="microseconds")[:-len("+00:00")] + "Z"


def from_text(text: str) -> datetime:
    """Parse text written by `to_text` (or any ISO 8601 with an offset) as UTC. Text
    that is no such time raises `DamagedTime`, a ValueError: a stored time that does
    not parse was damaged where it is stored, and the command ends in one line (exit 1)
    wherever it meets it; a caller parsing input (a flag) catches the ValueError and
    says so its own way."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError) as e:
        raise _damaged(text, "is not a time") from e
    if moment.tzinfo is None:
        raise _damaged(text, "has no timezone")
    try:
        return moment.astimezone(UTC)
    except OverflowError as e:  # (9999-12-31T23:59:59-14:00 is in the year 10000 in UTC)
        raise _damaged(text, "lies outside the years 1 to 9999 in UTC") from e


def _damaged(text: object, why: str) -> DamagedTime:
    return DamagedTime(f"a time in the database is damaged ({text!r} {why}): {MEND_DAMAGE}")
