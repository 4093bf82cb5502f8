"""The one error hierarchy of sched.

Every error a user can cause is a `SchedError`; the CLI turns it into one line on
stderr and its `exit_code` (2 for bad input, 1 for a request that could not be met).
The docstring of each class is its default message.
"""

from __future__ import annotations

import re


class SchedError(Exception):
    """sched failed."""

    exit_code = 2

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadInput(SchedError, ValueError):
    """The input is not valid."""


class OffSchema(BadInput):
    """The input does not have the shape asked for (a wrong type, an unknown or missing
    field), as opposed to a value refused by a check (a blank title): HTTP 422."""


def off_schema(error_type: str) -> bool:
    """Whether a validation error of this type (pydantic's) is one of shape: `OffSchema`."""
    return error_type in ("extra_forbidden", "missing", "model_type") or error_type.endswith("_type")


class TokenRefused(BadInput):
    """The server refused the API token (HTTP 401 or 403): asking again will not help."""


class DatabaseError(SchedError):
    """The database cannot be used."""


class ForeignDatabase(DatabaseError):
    """The file is not a sched database; sched leaves it as it is."""


class DatabaseFault(DatabaseError):
    """The database could not be used just now (disk full, I/O error, read-only,
    damaged): the request could not be met; the message says whether a retry helps."""

    exit_code = 1


class DamagedProjection(DatabaseFault):
    """A projection row cannot be read: rebuild the projections from the log."""


# how every line about a damaged value of the database ends: where to look, how to mend
MEND_DAMAGE = ("`sched replay --verify` shows what differs; `sched rebuild` rebuilds the projections "
               "from the log")


def missing_table(location: str, table: str) -> DatabaseFault:
    """A table of sched gone from the database (dropped by hand, a damaged file): the
    log's own can only come back from a backup; any other `sched rebuild` makes again."""
    if table == "events":
        return DatabaseFault(f"{location}: the event log's table is missing (no table events): restore "
                             "the database from a backup (docs/operations.md, Restoring a backup)")
    return DamagedProjection(f"{location}: the table {table} is missing: `sched rebuild` makes it "
                             "again and folds the log into it")


class DamagedTime(DatabaseFault, ValueError):
    """A time read from the database is not one sched writes: its row was damaged. (A
    ValueError too, as the parse it replaces raised: a caller that reads text which may
    not be a time, such as a flag, still catches it and says so its own way.)"""


class DatabaseBusy(DatabaseError):
    """Another writer held the database longer than the busy timeout; try again."""

    exit_code = 1


class CorruptLog(DatabaseError):
    """The event log holds an event this version of sched cannot read (damaged, or
    written by a newer sched): not bad input, so exit 1."""

    exit_code = 1


class OutOfDate(DatabaseError):
    """This process can no longer use the database: another version of sched changed it
    (or it was damaged) since the process opened it. Retrying will not help; a new
    process of the version the database is in now will (a daemon stops, exit 1)."""

    exit_code = 1


class NewerProjections(OutOfDate):
    """The projection tables were made by a newer sched: this one would refold them to
    its own shape (and the newer one back, at its next start), so it refuses."""


class ProjectionsChanged(OutOfDate):
    """The projection tables are no longer of the shape this process opened them in
    (another version of sched rebuilt them while it ran): it writes nothing more."""


class NewerEvent(CorruptLog, OutOfDate):
    """The event log holds an event of a version newer than this sched knows: a newer
    sched wrote it."""


class LogTampered(DatabaseError):
    """The log was altered: a check failed, and nothing is appended after it."""

    exit_code = 1


class ConcurrencyConflict(SchedError):
    """The log moved on since it was read; nothing was appended."""

    exit_code = 1


class ControlFileError(BadInput):
    """The agent control file is not valid."""


class NotFound(SchedError, LookupError):
    """No such thing."""


class Refused(SchedError):
    """The request could not be met."""

    exit_code = 1


class TokenRejected(Refused):
    """The lease token is wrong, stale or expired."""


class OutputLost(SchedError):
    """The command's output could not be written (a full disk, a closed file): what the
    command did stands, a write it made is recorded."""

    exit_code = 1


class ServerUnreachable(SchedError):
    """The sched server could not be reached, or failed: the request may not have been
    met (a retry may help)."""

    exit_code = 1


def problem_kind(message: str) -> str:
    """An error line with its numbers blanked: two lines of one kind tell of the same
    problem (a writer idle for 5 s, then for 6 s), so a loop that retries says it once."""
    return re.sub(r"\d+", "#", message)
