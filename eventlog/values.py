"""What the log can carry: text that UTF-8 can encode and JSON values that survive the
round trip through the log and the projections unchanged.

Input is checked here before any write transaction, so a value the log could not
store (a lone surrogate from a command line or a `\\ud800` escape, NaN, a number that
overflows to infinity, nesting thousands deep, more bytes than the configured limit)
is refused with one line naming where it came from, and nothing is appended.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from eventlog.errors import BadInput

MAX_DEPTH = 64  # nesting of arrays and objects in a payload or result
MAX_INT_DIGITS = 4_300  # digits of an integer in a payload or result (Python's own limit for parsing one)
INT64_MAX = 2**63 - 1  # SQLite's integer range: larger numbers are refused as ids and counts


def digits_value(text: str) -> int:
    """The number ASCII digits `text` write, or INT64_MAX + 1 for any past the int64
    range: Python refuses to read 4,300 digits or more (an internal error, where the
    caller's range check should speak)."""
    significant = text.lstrip("0")
    return int(significant or "0") if len(significant) <= len(str(INT64_MAX)) else INT64_MAX + 1


def task_id_problem(text: str) -> str | None:
    """Why `text`, given on a command line or in a URL, is not a task id, or None. Digits
    only: `1.0`, `+1` or `1_0`, which int() or pydantic would read as 1 or 10, name no
    task."""
    if not (text.isascii() and text.isdigit()):
        return f"{text[:40]!r} is not a task id (a whole number)"
    if not 1 <= digits_value(text) <= INT64_MAX:
        return f"{text[:40]} is not a task id (1 to 2**63 - 1)"
    return None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON (only finite numbers are)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range (it would be stored as infinity)")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"a number of {digits} digits is too long (at most {MAX_INT_DIGITS})")
    return int(text)


class DuplicateKey(ValueError):
    """A JSON object names a key twice: which value was meant cannot be told."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The object of `pairs` (json's `object_pairs_hook`); DuplicateKey when a key is
    given twice (plain `json.loads` keeps the last one, without a word)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(f"the key {key[:40]!r} is given twice")
            seen.add(key)
    return value


def strict_json_loads(text: str | bytes) -> Any:
    """`json.loads` that refuses what the log could not carry the same way: NaN and
    Infinity, numbers that overflow to infinity, nesting deeper than `MAX_DEPTH` (and
    deep enough to exhaust the parser's recursion), and an object that names a key
    twice. Raises ValueError."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                           parse_int=_bounded_int, object_pairs_hook=unique_keys)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def text_problem(text: str, *, nul_ok: bool = False) -> str | None:
    """Why `text` cannot be stored (None if it can): a lone surrogate, which UTF-8
    cannot encode (an undecodable byte on a command line arrives as one), or a NUL
    character, which PostgreSQL's text cannot hold (`nul_ok`: a string inside JSON,
    stored escaped as \\u0000)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"contains {text[e.start]!r}, which is not valid Unicode text (a lone "
                "surrogate, or a byte that is not UTF-8)")
    if not nul_ok and "\x00" in text:
        return "contains a NUL character (\\x00), which sched does not store in text"
    return None


def argv_problem(argv: Sequence[str], what: str) -> str | None:
    """Why `argv` cannot be a command to run (its program first) named `what` in the
    line, or None: empty, a blank program (every start fails), or an argument that
    cannot be passed (a NUL byte) or stored."""
    if not argv:
        return f"{what} must be a non-empty argv list"
    if not argv[0].strip():
        return f"{what}'s first argument, the program to run, is empty"
    for arg in argv:
        if (problem := text_problem(arg)) is not None:
            return f"{what} argument {arg!r}: {problem}"
    return None


def checked_host_name(name: str | None) -> str | None:
    """`name` if it can be a host name (a field validator's check: ValueError if not):
    blank, or with spaces around it, it would never match the name a host acts under,
    and the agents pinned to it would wait."""
    if name is not None and not name.strip():
        raise ValueError("must name a host, not be blank")
    if name is not None and name != name.strip():
        raise ValueError(f"must name a host without spaces around it: {name!r}")
    if name is not None and any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"must name a host without control characters: {name[:40]!r}")
    return name


def json_problem(value: Any, depth: int = 0) -> str | None:
    """Why a JSON value cannot be stored unchanged (None if it can)."""
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        return text_problem(value, nul_ok=True)
    if isinstance(value, float) and not math.isfinite(value):
        return "holds NaN or Infinity, which JSON cannot carry"
    if isinstance(value, list | tuple):
        for item in value:
            if (problem := json_problem(item, depth + 1)) is not None:
                return problem
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"has a key that is not text: {key!r}"
            if (problem := text_problem(key) or json_problem(item, depth + 1)) is not None:
                return problem
    elif not (value is None or isinstance(value, bool | int | float)):
        return f"holds a {type(value).__name__}, which is not JSON"
    return None


def encoded_size(value: Any) -> int:
    """Bytes of the value's JSON as the log stores it: an event's fields are dumped by
    pydantic's serializer (`dump_event`), whose JSON this is (UTF-8, compact; a float's
    exponent written `1e-7`, where `json` writes `1e-07`). A value `json_problem` passes."""
    import pydantic_core  # (loaded already wherever a payload is checked; a plain import is
    # a lookup in sys.modules, where `from ... import` also walks the names)

    return len(pydantic_core.to_json(value))


def check_json(value: Any, where: str, max_bytes: int | None = None) -> Any:
    """`value` if the log can store it unchanged (within `max_bytes`), else BadInput."""
    problem = json_problem(value)
    if problem is None and max_bytes is not None and (size := encoded_size(value)) > max_bytes:
        problem = f"is {size} bytes, over the limit of {max_bytes}"
    if problem is not None:
        raise BadInput(f"{where}: {problem}")
    return value


def check_actor(name: str | None, where: str, max_bytes: int | None = None) -> str | None:
    """Who acts (`--by`), as `check_text`, and not blank: an audit trail must name
    someone (None: not known, where the caller allows it)."""
    if name is not None and not name.strip():
        raise BadInput(f"{where}: must name who acts, not be blank")
    return check_text(name, where, max_bytes)


def check_text(text: str | None, where: str, max_bytes: int | None = None) -> str | None:
    """`text` if the log can store it (within `max_bytes` of UTF-8), else BadInput."""
    if text is None:
        return None
    problem = text_problem(text)
    if problem is None and max_bytes is not None and (size := len(text.encode("utf-8"))) > max_bytes:
        problem = f"is {size} bytes, over the limit of {max_bytes}"
    if problem is not None:
        raise BadInput(f"{where}: {problem}")
    return text


def fit_text(text: str, max_bytes: int) -> str:
    """`text` made storable: what UTF-8 cannot encode (a lone surrogate) replaced by
    `?`, a NUL written as `\\x00`, and cut at a character boundary to at most
    `max_bytes` of UTF-8, ending with `...` when it was cut (for text sched writes
    itself, such as an agent's last output line in an error message, where refusing
    is not an option)."""
    data = text.replace("\x00", "\\x00").encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return data.decode("utf-8")
    marker = "..."
    room = max(max_bytes - len(marker), 0)
    return data[:room].decode("utf-8", "ignore") + marker[: max_bytes - room]


def parse_json(text: str, where: str, max_bytes: int | None = None) -> Any:
    """Parse JSON input strictly (see `strict_json_loads`) within `max_bytes`; BadInput
    naming `where` otherwise."""
    problem = text_problem(text)
    if problem is not None:
        raise BadInput(f"{where}: {problem}")
    try:
        value = strict_json_loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{where}: not valid JSON: {e.msg} (at char {e.pos})") from e
    except ValueError as e:
        raise BadInput(f"{where}: {e}") from e
    return check_json(value, where, max_bytes)
