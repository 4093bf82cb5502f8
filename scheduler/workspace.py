"""The imperative shell around the core: one database, settings, a clock and the
agent control file, with the read and write transactions every command uses."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from eventlog.db import Database
from eventlog.errors import DatabaseFault
from eventlog.sqlite_store import SqliteStore
from projections.rebuild import ensure_current, stored_schema
from projections.recorder import Recorder
from projections.sql import SqlProjection
from projections.tables import PROJECTION_SCHEMA
from scheduler.clock import Clock, SystemClock
from scheduler.registry import AgentRegistry, candidate_paths, find_control_file
from scheduler.settings import Settings
from scheduler.spawn import spawn_exec


@dataclass
class Workspace:
    """Everything a command needs, passed in rather than read from globals."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    # draws retry jitter; tests pass a seeded random.Random, the result is recorded
    rng: random.Random = field(default_factory=random.SystemRandom)
    # starts `sched exec TASK_ID` for a push agent's assignment (tests pass their own)
    launcher: Callable[[Settings, int], object] = spawn_exec
    _db: Database | None = None

    # -- the database ------------------------------------------------------------------
    def _options(self) -> dict[str, object]:
        return {"synchronous": self.settings.synchronous,
                "busy_timeout_ms": self.settings.busy_timeout_ms}

    @property
    def db(self) -> Database:
        """The existing database (a missing or foreign file is an error)."""
        if self._db is None:
            db = Database.open(self.settings.db_path, **self._options())
            with db.read() as session:
                current = stored_schema(session) == PROJECTION_SCHEMA
            if not current:  # tables of another sched version: replay the log into new ones
                if db.read_only:
                    raise DatabaseFault(f"{db.path}: its projections were made by another version of "
                                        "sched and must be rebuilt, which needs write access; the "
                                        "database is read-only")
                with db.write() as session:
                    ensure_current(session)
            self._db = db
        return self._db

    def init_db(self) -> Database:
        """Create the database and its tables if missing (idempotent)."""
        db = Database.create(self.settings.db_path, **self._options())
        with db.write() as session:
            ensure_current(session)
        self._db = db
        return db

    @contextmanager
    def write(self, *, commit: bool = True) -> Iterator[Recorder]:
        """One write transaction; projections caught up before the caller decides, and
        `recorder.now` read from the clock only then, under the write lock, and never
        earlier than the last event: so event time never runs backwards, however the
        writers interleave."""
        with self.db.write(commit=commit) as session:
            recorder = Recorder(SqliteStore(session), SqlProjection(session))
            recorder.catch_up()  # its first read takes the write lock (BEGIN IMMEDIATE)
            last = recorder.log.last()
            now = self.clock.now()
            recorder.now = max(now, last.at) if last is not None else now
            yield recorder

    @contextmanager
    def read(self) -> Iterator[tuple[SqliteStore, SqlProjection]]:
        with self.db.read() as session:
            yield SqliteStore(session), SqlProjection(session)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- the agent control file -------------------------------------------------------
    def control_paths(self) -> list[Path]:
        return candidate_paths(self.settings.home, self.settings.agent_control_file)

    @property
    def stop_file(self) -> Path:
        """While this file exists, ticks assign nothing (like `sched pause`)."""
        return self.settings.home / "STOP"

    def registry(self) -> AgentRegistry:
        """The agents of the control file, found and validated (raises `ControlFileError`)."""
        return AgentRegistry(find_control_file(self.control_paths()))


def describe_pause(recorded: str | None, stop_file: Path | None) -> dict[str, object] | None:
    """Who paused assignment, why and when (from the `paused` projection value), or the
    stop file while it exists (None: do not look); None while assignment runs."""
    if recorded:
        return json.loads(recorded)
    if stop_file is not None and stop_file.exists():
        return {"by": "stop file", "reason": str(stop_file), "at": None}
    return None
