"""The storage port (`port.py`) and its adapters: which engine a location selects.

A path selects SQLite, the embedded default; a `postgresql://` URL selects
PostgreSQL, for several hosts over one database.
"""

from __future__ import annotations

import re
from pathlib import Path

from eventlog.errors import BadInput
from eventlog.storage.port import Storage, Transaction

__all__ = ["DATABASE_URL_VARIABLE", "Storage", "Transaction", "create_storage", "is_url", "open_storage",
           "redact", "unusable_url"]

# how a URL (which may hold a password) reaches a process sched starts: its
# environment, never its argv; an agent's environment never has it
DATABASE_URL_VARIABLE = "SCHED_DATABASE_URL"

URL_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")


def is_url(location: str | Path) -> bool:
    """Whether `location` names a database server rather than a file."""
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


_ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def unusable_url(location: str | Path) -> str | None:
    """Why `location`, a URL of another kind (`mysql://`, `sqlite:///`, a misspelt
    `postgresql://`), names no database sched can use; None for a path or a
    PostgreSQL URL. Taken for a path, it would make a SQLite file in a folder named
    after its scheme."""
    if isinstance(location, str) and not is_url(location) and _ANY_URL.match(location):
        return (f"{redact(location)}: not a database sched can use (give a file path for SQLite, "
                "or a postgresql:// URL)")
    if is_url(location):
        from urllib.parse import urlsplit

        try:
            urlsplit(str(location))  # (a bracket left open: no server could be named by it)
        except ValueError as e:
            return f"{redact(location)}: not a valid URL ({e})"
        problem = _parameter_problem(str(location))
        if problem is not None:
            return f"{redact(location)}: {problem} (a fault of the URL: no retry helps)"
    return None


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _parameter_problem(url: str) -> str | None:
    """What libpq would refuse in a PostgreSQL URL only once it tries to connect (an
    error a caller takes for an outage: "a retry helps"), or that the driver's URL
    reader fails on: an unknown parameter, a port that is no port number, a timeout
    that is no number, an unknown `sslmode`."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:  # (libpq's own reader of the URL; it names no password)
        params = conninfo_to_dict(url.replace("postgresql+psycopg://", "postgresql://", 1))
    except ProgrammingError as e:
        return str(e).strip()
    port = str(params.get("port", ""))
    if any(not (part.isdigit() and 0 < int(part) < 65536) for part in port.split(",") if part):
        return f"port {port!r} is not a port number (1 to 65535)"
    timeout = str(params.get("connect_timeout", "0")).strip()
    if not timeout.lstrip("-").isdigit():
        return f"connect_timeout {timeout!r} is not a whole number of seconds"
    if params.get("sslmode", "prefer") not in SSL_MODES:
        return f"sslmode {params['sslmode']!r} is not one of {', '.join(SSL_MODES)}"
    return None


def _usable(location: str | Path) -> None:
    if (problem := unusable_url(location)) is not None:
        raise BadInput(problem)


# the connection parameters of a URL's query that hold a secret (libpq's keywords)
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def redact(location: str | Path) -> str:
    """`location` as messages, logs, `config show` and an agent's `SCHED_DB` may show
    it: a URL without its password, whether in its user part or in its query
    (`?password=...`, which libpq accepts as well); a URL of any other kind too."""
    if not isinstance(location, str) or not _ANY_URL.match(location):
        return str(location)
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
    try:
        parts = urlsplit(location)
    except ValueError:  # (one that does not parse: all of its user part hidden)
        scheme, _, rest = location.partition("://")
        return f"{scheme}://***@{rest.partition('@')[2]}" if "@" in rest else location
    query = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(key.lower() in SECRET_PARAMETERS for key, _ in query)
    if parts.password is None and not secret_query:
        return str(location)  # as given (urlunsplit would drop the // of an empty host)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if secret_query:
        parts = parts._replace(query=urlencode(
            [(key, "***" if key.lower() in SECRET_PARAMETERS else value) for key, value in query], safe="*/"))
    text = urlunsplit(parts)
    return text if parts.netloc else text.replace(":/", ":///", 1)


def open_storage(location: str | Path, *, synchronous: str = "NORMAL", busy_timeout_ms: int = 30_000,
                 prepared_statements: bool = True, listen_url: str | None = None) -> Storage:
    """An existing sched database at `location` (a missing, empty or foreign one is an
    error and is left as it was)."""
    _usable(location)
    if is_url(location):
        from eventlog.storage.postgres import PostgresStorage
        return PostgresStorage.open(str(location), busy_timeout_ms=busy_timeout_ms,
                                    prepared_statements=prepared_statements, listen_url=listen_url)
    from eventlog.storage.sqlite import SqliteStorage
    return SqliteStorage.open(Path(location), synchronous=synchronous,  # type: ignore[arg-type]
                              busy_timeout_ms=busy_timeout_ms)


def create_storage(location: str | Path, *, synchronous: str = "NORMAL", busy_timeout_ms: int = 30_000,
                   prepared_statements: bool = True, listen_url: str | None = None) -> Storage:
    """The database at `location` for `init` (created if missing; refused if it is
    another program's); the caller then creates the schema."""
    _usable(location)
    if is_url(location):
        from eventlog.storage.postgres import PostgresStorage
        return PostgresStorage.create(str(location), busy_timeout_ms=busy_timeout_ms,
                                      prepared_statements=prepared_statements, listen_url=listen_url)
    from eventlog.storage.sqlite import SqliteStorage
    return SqliteStorage.create(Path(location), synchronous=synchronous,  # type: ignore[arg-type]
                                busy_timeout_ms=busy_timeout_ms)
