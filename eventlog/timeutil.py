"""UTC timestamps as fixed-width text, so that SQL compares them in time order."""

from __future__ import annotations

from datetime import UTC, datetime

_FORMAT = "-%m-%dT%H:%M:%S.%fZ"  # the year is formatted apart: strftime does not pad it


def to_text(moment: datetime) -> str:
    """Render a timezone-aware moment as fixed-width UTC text (sorts like time)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: sched uses timezone-aware UTC only")
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}" + utc.strftime(_FORMAT)


def from_text(text: str) -> datetime:
    """Parse text written by `to_text` (or any ISO 8601 with an offset) as UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {text!r}")
    return moment.astimezone(UTC)
