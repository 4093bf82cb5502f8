"""The imperative shell around the core: one database, settings, a clock and the
agent control file, with the read and write transactions every command uses."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from eventlog.errors import (
    DatabaseFault,
    LogTampered,
    NewerProjections,
    OutOfDate,
    ProjectionsChanged,
    missing_table,
)
from eventlog.layout import SCHEMA_VERSION
from eventlog.sql_store import LAST_EVENT, SqlStore
from eventlog.storage import Storage, create_storage, open_storage
from eventlog.storage.port import Read
from projections.sql import META, SqlProjection, meta_json
from projections.views import PROJECTION_SCHEMA, SHAPE_KEY
from scheduler.clock import Clock, SystemClock
from scheduler.config.settings import Settings
from scheduler.runner.spawn import Starter, lease_clock, spawn_exec

if TYPE_CHECKING:
    from datetime import datetime

    from eventlog.store import Recorded
    from projections.recorder import Recorder
    from scheduler.config.registry import AgentRegistry


def all_tables() -> list[object]:
    """Every table of sched, made with the schema (`Storage.create_schema`): loads
    SQLAlchemy and the table definitions, which the quick commands never need."""
    from eventlog.schema import EventRow
    from projections.tables import PROJECTION_TABLES, ProjectionSchemaRow
    from scheduler.operational_tables import OPERATIONAL_TABLES

    return [EventRow.__table__, *PROJECTION_TABLES, ProjectionSchemaRow.__table__,  # type: ignore[attr-defined]
            *OPERATIONAL_TABLES]


def __getattr__(name: str) -> object:
    if name == "ALL_TABLES":  # as `all_tables()`, for `from scheduler.workspace import ALL_TABLES`
        return all_tables()
    raise AttributeError(name)


SHAPE_REMEDY = ("Another version of sched rebuilt them: stop the processes of one of the two and run one "
                "version (docs/operations.md, Upgrading sched); if no other version runs, they were damaged: "
                "`sched rebuild`")


def shape_refusal(location: object, shape: str | None) -> str | None:
    """Why a write into projection tables whose meta says `shape` is refused (None: it
    is this version's): another version rebuilt them, or they were damaged."""
    if shape == str(PROJECTION_SCHEMA):
        return None
    made = (f"made for projection schema {shape}" if shape is not None
            else "they no longer say which version of sched made them")
    return (f"{location}: its projection tables are not of this sched's shape ({made}; this sched writes "
            f"projection schema {PROJECTION_SCHEMA})")


@contextmanager
def closed_if_refused(db: Storage) -> Iterator[None]:
    """Let the storage's connections go if what is inside refuses it (an upgrade it
    cannot make, projections of a newer sched, a log table gone), rather than leave
    them to the collector."""
    try:
        yield
    except BaseException:
        db.close()
        raise


@dataclass
class Workspace:
    """Everything a command needs, passed in rather than read from globals."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    # draws retry jitter; tests pass a seeded random.Random, the result is recorded
    rng: random.Random = field(default_factory=random.SystemRandom)
    # starts `sched exec TASK_ID` for a push agent's assignment (tests pass their own)
    launcher: Callable[[Settings, int], object] = spawn_exec
    # the daemon's launcher: its ticks start push attempts with wrappers it forks
    starter: Starter | None = None
    # tells a person of long work the workspace does on its own (a refold on upgrade)
    say: Callable[[str], None] | None = None
    # the database read as it is, never upgraded or refolded (`replay`, migrate's source:
    # a backup is audited or copied without being changed, and on read-only media too)
    as_found: bool = False
    # told of an `OutOfDate` met by a read or a write, before it is raised: a long-running
    # process whose callers may catch it (a server answering for many tasks) stops on it
    out_of_date: Callable[[OutOfDate], None] | None = None
    _db: Storage | None = None
    # the control file's candidates for these settings, and the fleet last read from it
    _control: tuple[Settings, list[Path]] | None = field(default=None, init=False, repr=False, compare=False)
    _registry: AgentRegistry | None = field(default=None, init=False, repr=False, compare=False)

    # -- the database ------------------------------------------------------------------
    def storage_options(self) -> dict[str, object]:
        return {"synchronous": self.settings.synchronous,
                "busy_timeout_ms": self.settings.busy_timeout_ms,
                "prepared_statements": self.settings.postgres_prepared_statements,
                "listen_url": self.settings.database_listen_url}

    @property
    def db(self) -> Storage:
        """The existing database (a missing or foreign one is an error), its schema
        upgraded and its projections of this version (`NewerProjections` when a newer
        sched made them)."""
        return self.opened()

    def opened(self, *, rebuilding: bool = False) -> Storage:
        """`db`; `rebuilding`: projection tables of any other shape are left as they are,
        for `sched rebuild`, which refolds them (once) whatever their shape."""
        if self._db is None:
            db = open_storage(self.settings.database, **self.storage_options())  # type: ignore[arg-type]
            with closed_if_refused(db):
                if db.schema_version() < SCHEMA_VERSION and not self.as_found:  # made by an older
                    self._needs_write(db, "its tables were made by an older version of sched and must "
                                          "be upgraded")  # sched: add its tables
                    db.create_schema(all_tables(), SCHEMA_VERSION)  # type: ignore[arg-type]
                if not rebuilding and not self.as_found:
                    self._make_current(db)
            self._db = db
        return self._db

    def _make_current(self, db: Storage) -> None:
        """Projection tables of this version's shape: made when there are none; the log
        folded into new ones when another sched made them, saying so (`say`: on a big log
        it takes a while, writers wait); `NewerProjections` when a newer sched made them
        (refolding them to this shape, and the newer sched back at its next start, would
        take turns rebuilding every table, writers waiting: `sched rebuild` does it on
        purpose)."""
        from projections.rebuild import ensure_current, stored_schema

        with db.read() as txn:
            stored = stored_schema(txn)
        if stored == PROJECTION_SCHEMA:
            return
        if stored is not None and stored > PROJECTION_SCHEMA:
            raise NewerProjections(
                f"{db.location}: its projections were made by a newer sched (projection schema {stored}; "
                f"this one knows {PROJECTION_SCHEMA}): upgrade sched; to go back to this version on "
                "purpose, stop every process of the newer one and run `sched rebuild`")
        self._needs_write(db, "its projections were made by another version of sched and must be rebuilt")
        say = self.say if stored is not None and self.say is not None else (lambda _text: None)
        say(f"rebuilding the projections for this version of sched (their shape {stored}, now "
            f"{PROJECTION_SCHEMA}): writers wait until it is done")
        with db.write() as txn:
            ensure_current(txn, progress=lambda n: say(f"  {n} events folded"))
            events = SqlStore(txn).last_position()
        say(f"rebuilt the projections from {events} events")

    @staticmethod
    def _needs_write(db: Storage, why: str) -> None:
        if db.read_only:
            raise DatabaseFault(f"{db.location}: {why}, which needs write access; the database is "
                                "read-only")

    def require_db(self) -> None:
        """Open the database now: a command that also reads the control file says a
        missing database first (`sched init` is the first step)."""
        self.db  # noqa: B018

    def init_db(self) -> bool:
        """Create the database and its tables if missing (idempotent); whether it did."""
        db = create_storage(self.settings.database, **self.storage_options())  # type: ignore[arg-type]
        with closed_if_refused(db):
            created = db.schema_version() == 0
            if not created:
                with db.read() as txn:
                    lost_log = not txn.has_table("events")
                if lost_log:  # a sched database without its log: making an empty one would let a
                    # rebuild fold nothing, emptying every table; only a backup has it
                    raise missing_table(str(db.location), "events")
            db.create_schema(all_tables(), SCHEMA_VERSION)  # type: ignore[arg-type]
            self._make_current(db)
        self._db = db
        return created

    @contextmanager
    def write(self, *, commit: bool = True, prefetch: Sequence[Read] = ()) -> Iterator[Recorder]:
        """One write transaction; projections caught up before the caller decides, and
        `recorder.now` read from the clock only then, under the write lock, and never
        earlier than the last event: so event time never runs backwards, however the
        writers interleave. `prefetch`: the reads the caller is about to make (see
        `Storage.write`); those of the catch-up are always asked for."""
        from projections.recorder import Recorder

        with self.telling_out_of_date(), \
                self.db.write(commit=commit, prefetch=(META, LAST_EVENT, *prefetch)) as txn:
            recorder = Recorder(SqlStore(txn), SqlProjection(txn))
            self._check_shape(recorder.views.meta().get(SHAPE_KEY))
            recorder.catch_up()  # on SQLite its first read takes the write lock (BEGIN IMMEDIATE)
            last = recorder.log.last()
            # the real time is the database server's where it has a clock (hosts' clocks
            # may skew); an injected clock (tests, benchmarks) is kept as it is
            now = (txn.server_time() if isinstance(self.clock, SystemClock) else None) or self.clock.now()
            recorder.now = max(now, last_time(last)) if last is not None else now
            recorder.now_mark = lease_clock()
            yield recorder

    def move_on(self, recorder: Recorder) -> None:
        """The transaction's time moved on by what passed since it was read (it waited for
        something: a stop of local processes), on the same clock: the database
        server's, where it has one, plus what this host's lease clock counted since (a
        host's own clock may run ahead of it: the events after a stop went to its time,
        and every later writer with them); an injected clock is read again."""
        assert recorder.now is not None and recorder.now_mark is not None
        mark = lease_clock()
        if isinstance(self.clock, SystemClock):
            recorder.now += timedelta(seconds=max(mark - recorder.now_mark, 0.0))
        else:
            recorder.now = max(recorder.now, self.clock.now())
        recorder.now_mark = mark

    def _check_shape(self, shape: str | None) -> None:
        """Refuse to write into projection tables that are no longer of this version's
        shape: another version of sched rebuilt them after this process opened them (or
        they were damaged). Folding this version's way into them would leave rows that
        neither version reads right. (The shape is in the meta every write reads first:
        the check costs no read.)"""
        refused = shape_refusal(self.db.location, shape)
        if refused is not None:
            raise ProjectionsChanged(f"{refused}: nothing recorded. {SHAPE_REMEDY}")

    @contextmanager
    def read(self, prefetch: Sequence[Read] = ()) -> Iterator[tuple[SqlStore, SqlProjection]]:
        """The log and the projections in one consistent snapshot (`prefetch`: see
        `Storage.read`)."""
        with self.telling_out_of_date(), self.db.read(prefetch=prefetch) as txn:
            yield SqlStore(txn), SqlProjection(txn)

    @contextmanager
    def telling_out_of_date(self) -> Iterator[None]:
        try:
            yield
        except OutOfDate as e:
            if self.out_of_date is not None:
                self.out_of_date(e)
            raise

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- the agent control file -------------------------------------------------------
    def control_paths(self) -> list[Path]:
        if self._control is None or self._control[0] is not self.settings:
            from scheduler.config.registry import candidate_paths

            self._control = (self.settings, candidate_paths(self.settings.home,
                                                            self.settings.agent_control_file))
        return list(self._control[1])

    @property
    def stop_file(self) -> Path:
        """While this file exists, ticks assign nothing (like `sched pause`)."""
        return self.settings.home / "STOP"

    def registry(self) -> AgentRegistry:
        """The agents of the control file, found and validated (raises `ControlFileError`);
        the last one read again while its file has not changed (`read_registry`)."""
        from scheduler.config.registry import read_registry

        self._registry = read_registry(self.control_paths(), self._registry)
        return self._registry


def last_time(last: Recorded) -> datetime:
    """The time of the log's last event, which a writer never records time before; a
    damaged one (its time no longer text sched wrote) refuses the write in one line, as
    an append after an altered event is refused."""
    try:
        return last.at
    except ValueError as e:
        raise LogTampered(f"refusing to write: the last event of the log (seq {last.seq}) has a time "
                          f"sched cannot read ({last.recorded_at!r}), so it was altered; run "
                          "`sched replay --verify`") from e


def describe_pause(recorded: str | None, stop_file: Path | None) -> dict[str, object] | None:
    """Who paused assignment, why and when (from the `paused` projection value), or the
    stop file while it exists (None: do not look); None while assignment runs."""
    if recorded:
        return meta_json("paused", recorded)  # type: ignore[no-any-return]
    if stop_file is not None and stop_file.exists():
        return {"by": "stop file", "reason": str(stop_file), "at": None}
    return None
