"""Durations as people type them: `90` (seconds), `90s`, `10m`, `1.5h`, `7d`. One
grammar for every flag and field that takes one (`submit --delay` and `--due`, `metrics
--since`, simulate's `--duration`, `run=` and `--target`): they had two parsers, one of
which took `1e3` and `1_0` (Python's float) where the other refused them."""

from __future__ import annotations

import re
from datetime import timedelta

from eventlog.errors import BadInput

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_SECONDS = 10 * 365 * 86400
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*")


def parse_duration(text: str, what: str = "") -> timedelta:
    """`text` as a duration, from 0 to 10 years; BadInput (prefixed with `what`, the flag
    or field, when given) otherwise."""
    prefix = f"{what}: " if what else ""
    found = _DURATION.fullmatch(text)
    if found is None:
        raise BadInput(f"{prefix}not a duration: {text!r} (try 90s, 10m, 2h, 1d)")
    seconds = float(found.group(1)) * UNITS[found.group(2) or "s"]
    if seconds > MAX_SECONDS:
        raise BadInput(f"{prefix}not a duration: {text!r} (between 0 and 10 years)")
    return timedelta(seconds=seconds)
