"""Shared factories: a workspace on a fresh database file with a manual clock."""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from eventlog.schema import SCHEMA_VERSION
from eventlog.storage import Storage, create_storage, open_storage
from scheduler.clock import ManualClock
from scheduler.config.settings import load_settings
from scheduler.workspace import ALL_TABLES, Workspace
from tests.pgcluster import PgCluster, pg_bouncer_url, pg_cluster, pg_url  # noqa: F401  (fixtures)

# Property tests draw from a seed each test fixes (derandomize): a run is the same on every
# machine and in CI, so a failure reproduces and a green main stays green.
# SCHED_HYPOTHESIS=explore draws afresh at each run, to look for new failing cases
# (docs/reliability.md); a case found becomes a named test beside its property.
settings.register_profile("fixed", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("SCHED_HYPOTHESIS") == "explore" else "fixed")

ENGINES = ["sqlite", "postgresql"]
_fresh = itertools.count(1)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Run the test once per storage engine (PostgreSQL: on the suite's own cluster)."""
    return request.param


class Databases:
    """Fresh, empty databases of one engine: files under `directory`, or databases on
    the suite's PostgreSQL cluster (dropped by `drop_all`)."""

    def __init__(self, engine: str, directory: Path, cluster: PgCluster | None) -> None:
        self.engine, self.directory, self.cluster = engine, directory, cluster
        self.made: list[str] = []

    def new(self) -> str:
        n = next(_fresh)
        if self.cluster is None:
            return str(self.directory / f"db{n}.db")
        self.made.append(f"c_{n}")
        return self.cluster.create_database(self.made[-1])

    def drop_all(self) -> None:
        for name in self.made:
            self.cluster.drop_database(name)  # type: ignore[union-attr]


def databases_for(engine: str, request: pytest.FixtureRequest, directory: Path) -> Databases:
    cluster = request.getfixturevalue("pg_cluster") if engine == "postgresql" else None
    made = Databases(engine, directory, cluster)
    request.addfinalizer(made.drop_all)
    return made


@pytest.fixture
def new_database(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """A factory of locations of fresh, empty databases of `engine`."""
    return databases_for(engine, request, tmp_path).new


_opened: list[Storage] = []


def fresh_storage(location: str, **options: object) -> Storage:
    """A new sched database at `location`, its schema made (as `sched init` makes it);
    closed after the test."""
    db = create_storage(location, **options)  # type: ignore[arg-type]
    _opened.append(db)
    db.create_schema(ALL_TABLES, SCHEMA_VERSION)
    return db


def opened_storage(location: str, **options: object) -> Storage:
    """The existing database at `location`, closed after the test."""
    db = open_storage(location, **options)  # type: ignore[arg-type]
    _opened.append(db)
    return db


@pytest.fixture(autouse=True)
def _close_storages() -> Iterator[None]:
    """Close what a test opened, before its databases are dropped (a connection left to
    the garbage collector is a ResourceWarning)."""
    yield
    while _opened:
        _opened.pop().close()

Agents = list[dict[str, object]]
DEFAULT_FLEET: Agents = [
    {"agentName": "ann", "agentType": "dev", "maxConcurrency": 2},
    {"agentName": "bob", "agentType": "dev", "maxConcurrency": 1},
    {"agentName": "qin", "agentType": "qa", "maxConcurrency": 1},
]


def write_fleet(home: Path, agents: Agents) -> Path:
    path = home / "agent-control.json"
    path.write_text(json.dumps(agents))
    return path


def new_workspace(home: Path, agents: Agents | None = None, database: str | None = None,
                  **settings: object) -> Workspace:
    """A workspace in `home` with its own control file, database and manual clock. With
    `database` (a file, or a PostgreSQL URL), home's sched.toml names it, so every
    process that opens `home` uses it."""
    home.mkdir(parents=True, exist_ok=True)
    write_fleet(home, DEFAULT_FLEET if agents is None else agents)
    if database is not None:  # in home's sched.toml, so every process that opens home finds it
        key = "database_url" if database.startswith("postgresql") else "db"
        (home / "sched.toml").write_text(f"{key} = {json.dumps(database)}\n")
    loaded = load_settings({}, {"home": home, **settings})
    ws = Workspace(loaded.settings, clock=ManualClock(), rng=random.Random(0))  # (retry jitter: seeded)
    ws.init_db()
    return ws


def wait_for(what: str, check: Callable[[], object], timeout: float = 30.0) -> object:
    """Poll `check` until it returns something truthy, failing after `timeout` seconds
    (for waiting on real processes; never a bare sleep for a race)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def make_workspace(tmp_path: Path) -> Callable[..., Workspace]:
    created: list[Workspace] = []
    counter = iter(range(1_000_000))

    def factory(agents: Agents | None = None, **settings: object) -> Workspace:
        ws = new_workspace(tmp_path / f"ws{next(counter)}", agents, **settings)
        created.append(ws)
        return ws

    yield factory
    for ws in created:
        ws.close()


@pytest.fixture
def engine_workspace(new_database: Callable[[], str], tmp_path: Path) -> Iterator[Callable[..., Workspace]]:
    """`make_workspace`, once per storage engine."""
    created: list[Workspace] = []
    counter = itertools.count()

    def factory(agents: Agents | None = None, **settings: object) -> Workspace:
        ws = new_workspace(tmp_path / f"ews{next(counter)}", agents, database=new_database(), **settings)
        created.append(ws)
        return ws

    yield factory
    for ws in created:
        ws.close()
