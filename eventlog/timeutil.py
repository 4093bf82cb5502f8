"""UTC timestamps as fixed-width text, so that SQL compares them in time order."""

from __future__ import annotations

from datetime import UTC, datetime


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
    """Parse text written by `to_text` (or any ISO 8601 with an offset) as UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {text!r}")
    return moment.astimezone(UTC)
