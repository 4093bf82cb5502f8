"""The throwaway PostgreSQL cluster of tests/pgcluster.py: databases are real, separate,
non-durable, reachable without a password, and survive a server restart."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests import pgcluster
from tests.pgcluster import PgCluster

if os.environ.get(pgcluster.REQUIRE_ENV) == "1":  # CI: a missing psycopg fails, not skips
    import psycopg
else:
    psycopg = pytest.importorskip("psycopg")


def test_database_is_reachable_and_not_durable(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        settings = {
            name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
            for name in ("fsync", "synchronous_commit", "full_page_writes", "listen_addresses")
        }
        assert conn.execute("SELECT current_database()").fetchone()[0] == urlsplit(pg_url).path.lstrip("/")
    assert settings == {
        "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "listen_addresses": ""
    }


@pytest.fixture
def other_pg_url(pg_url: str, pg_cluster: PgCluster) -> Iterator[str]:
    """A second fresh database, made the way pg_url makes one."""
    url = pg_cluster.create_database("t_other")
    yield url
    pg_cluster.drop_database("t_other")


def test_each_test_database_is_separate(pg_url: str, other_pg_url: str) -> None:
    assert pg_url != other_pg_url
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
    with psycopg.connect(other_pg_url) as conn:
        assert conn.execute("SELECT to_regclass('only_here')").fetchone()[0] is None
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('only_here')").fetchone()[0] == "only_here"


def test_drop_database_removes_it_even_with_a_session_open(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_database("t_dropped")
    with psycopg.connect(url) as held:
        pg_cluster.drop_database("t_dropped")  # WITH (FORCE): the open session does not block it
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    with psycopg.connect(pg_cluster.url("postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 't_dropped'").fetchone()[0] == 0


def test_restart_keeps_data_and_accepts_new_connections(pg_cluster: PgCluster, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
        before = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    with psycopg.connect(pg_url) as held:
        pg_cluster.restart()
        with pytest.raises(psycopg.OperationalError):  # the old session is gone
            held.execute("SELECT 1")
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] > before
        assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]


def test_url_has_no_password_and_uses_the_private_socket(pg_cluster: PgCluster, pg_url: str) -> None:
    parts = urlsplit(pg_url)
    assert parts.scheme == "postgresql"
    assert parts.username == "postgres" and parts.password is None and ":" not in parts.netloc
    assert f"host={pg_cluster.socket_dir}" in parts.query and f"port={pg_cluster.port}" in parts.query
    assert (pg_cluster.socket_dir / f".s.PGSQL.{pg_cluster.port}").is_socket()
    assert len(str(pg_cluster.socket_dir / f".s.PGSQL.{pg_cluster.port}")) < 100


def test_sqlalchemy_connects_with_the_psycopg_url(pg_cluster: PgCluster, pg_url: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    name = urlsplit(pg_url).path.lstrip("/")
    engine = sqlalchemy.create_engine(pg_cluster.sqlalchemy_url(name))
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_database()")).scalar_one() == name
    finally:
        engine.dispose()


def test_a_failed_start_reports_the_server_log_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgcluster, "SERVER_OPTIONS", pgcluster.SERVER_OPTIONS + " -c shared_buffers=bogus")
    cluster = PgCluster()
    with pytest.raises(RuntimeError, match=r'(?s)starting PostgreSQL failed.*parameter "shared_buffers"'):
        cluster.start(tmp_path)
    assert cluster.socket_dir is not None and not cluster.socket_dir.exists()
    assert cluster.data_dir is not None and not cluster.data_dir.exists()


INNER_TEST = """
import tests.pgcluster
from tests.pgcluster import pg_cluster, pg_url  # noqa: F401


tests.pgcluster.find_bin_dir = lambda: None  # as on a machine without PostgreSQL

def test_needs_postgres(pg_url):
    pass
"""


@pytest.mark.parametrize("required", [False, True])
def test_without_postgres_the_fixture_skips_unless_it_is_required(tmp_path: Path, required: bool) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    env.pop(pgcluster.REQUIRE_ENV, None)
    if required:
        env[pgcluster.REQUIRE_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-c", "pytest.ini", "."],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    out = done.stdout + done.stderr
    assert "no PostgreSQL server binaries (install Debian's `postgresql` package" in out, out
    if required:
        assert done.returncode == 1 and "1 error" in out and "SCHED_REQUIRE_POSTGRES=1 but" in out, out
    else:
        assert done.returncode == 0 and "1 skipped" in out, out
