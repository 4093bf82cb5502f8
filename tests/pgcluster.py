"""A throwaway PostgreSQL cluster for the test suite.

`PgCluster` runs initdb and pg_ctl from the server binaries on this machine (Debian's
/usr/lib/postgresql/<version>/bin, or whatever initdb is on PATH) into temporary
directories, with durability off (fsync, synchronous_commit, full_page_writes; on with
`durable=True`, for a benchmark of durable commits) and no TCP listener: clients connect
over a unix socket in a private directory, so the port number only names the socket file.
As root the server runs as the `postgres` user (initdb refuses root).

The fixtures `pg_cluster` (one cluster per session), `pg_url` (a fresh database per test)
and `pg_bouncer_url` (that database through a `PgBouncer` in transaction mode, Debian's
`pgbouncer` package) are meant to be imported into tests/conftest.py. Without server binaries or psycopg they
skip, or fail when SCHED_REQUIRE_POSTGRES=1 (CI sets it, so CI cannot skip them silently).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REQUIRE_ENV = "SCHED_REQUIRE_POSTGRES"
SERVER_USER = "postgres"  # the OS user the server runs as when the tests run as root
TIMEOUT = 120.0  # seconds, for every subprocess (initdb, pg_ctl); pg_ctl -w itself waits 60
SERVER_OPTIONS = "-c listen_addresses=''"
NOT_DURABLE = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl, else the directory of
    the initdb on PATH, else None."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)

    found = [
        d
        for d in Path("/usr/lib/postgresql").glob("*/bin")
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file()
    ]
    if found:
        return max(found, key=version)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable_reason() -> str | None:
    """None when a cluster can be started here, else one line saying how to enable it."""
    if find_bin_dir() is None:
        return (
            "PostgreSQL tests skipped: no PostgreSQL server binaries "
            "(install Debian's `postgresql` package: apt-get install -y postgresql)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "PostgreSQL tests skipped: psycopg is not installed (pip install 'psycopg[binary]>=3')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return (
                f"PostgreSQL tests skipped: running as root and there is no `{SERVER_USER}` user for the "
                f"server (useradd --system {SERVER_USER}, or run the tests as a non-root user)"
            )
    return None


def _short_tmp() -> str:
    """/tmp when usable: socket paths must stay under ~100 bytes, and $TMPDIR may be long."""
    return "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else tempfile.gettempdir()


class PgCluster:
    """One PostgreSQL server in temporary directories; `start` it, `stop` it when done."""

    def __init__(self, *, listen: str = "", clients: str | None = None, durable: bool = False) -> None:
        """`listen`: the addresses the server takes TCP connections on (none: only its
        unix socket); `clients`: the network (CIDR) trusted over TCP; `durable`: the
        server's defaults (every commit waits for its fsync), not durability off."""
        self.listen = listen
        self.clients = clients
        self.durable = durable
        self.bin_dir: Path | None = None
        self.data_dir: Path | None = None
        self.socket_dir: Path | None = None
        self.log_file: Path | None = None
        self.port: int | None = None
        self.server_version: int | None = None  # e.g. 150014
        self._owned: list[Path] = []  # directories removed by stop()
        self._as_root = os.geteuid() == 0

    # -- running the binaries ------------------------------------------------------------------

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a server binary (as the postgres user when we are root); never raises on exit code."""
        assert self.bin_dir is not None
        kwargs: dict[str, object] = {}
        if self._as_root:
            user = pwd.getpwnam(SERVER_USER)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.socket_dir,  # somewhere the server user can enter (the cwd may be root's)
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_file is None or not self.log_file.exists():
            return "(no server log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def _check(self, what: str, done: subprocess.CompletedProcess[str]) -> None:
        if done.returncode != 0:
            raise RuntimeError(
                f"{what} failed (exit {done.returncode}): {' '.join(map(str, done.args))}\n"
                f"--- output ---\n{(done.stdout + done.stderr).strip()}\n"
                f"--- tail of the server log ---\n{self._log_tail()}"
            )

    def _pg_ctl(self, what: str, *args: str) -> None:
        assert self.data_dir is not None and self.log_file is not None
        options = f"-k {self.socket_dir} -p {self.port} {SERVER_OPTIONS}"
        if not self.durable:
            options += f" {NOT_DURABLE}"
        if self.listen:
            options += f" -c listen_addresses='{self.listen}'"  # (the later setting wins)
        try:
            done = self._run(
                "pg_ctl", *args, "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log_file),
                "-o", options,
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"{what} timed out after {TIMEOUT} s\n{self._log_tail()}") from e
        self._check(what, done)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, base: Path) -> PgCluster:
        """initdb a new cluster and start it. The data directory goes under `base`; the socket
        directory is a short one under /tmp. As root both live in one /tmp directory owned by
        the postgres user, who could not enter `base` (pytest's tmp directories are 0700 root)."""
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self.bin_dir = find_bin_dir()
        top = Path(tempfile.mkdtemp(prefix="schedpg", dir=_short_tmp()))
        self._owned.append(top)
        self.socket_dir = top
        if self._as_root:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(top, user.pw_uid, user.pw_gid)
            self.data_dir = top / "data"  # initdb creates it, owned by the server user
        else:
            base.mkdir(parents=True, exist_ok=True)
            self.data_dir = Path(tempfile.mkdtemp(prefix="pgdata", dir=base))
            self._owned.append(self.data_dir)
        self.log_file = top / "server.log"
        # The socket directory is private and no TCP listener is opened (unless asked for, on
        # an address of the caller's), so any port is free.
        self.port = random.randint(20000, 60000)
        try:
            done = self._run(
                "initdb", "-D", str(self.data_dir), "-A", "trust", "--no-sync", "-U", "postgres",
                "-E", "UTF8", "--locale=C",
            )
        except subprocess.TimeoutExpired as e:
            self._remove_dirs()
            raise RuntimeError(f"initdb timed out after {TIMEOUT} s") from e
        if done.returncode != 0:
            self._remove_dirs()
            self._check("initdb", done)
        if self.clients:
            with (self.data_dir / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.clients} trust\n")
        try:
            self._pg_ctl("starting PostgreSQL", "start")
            with self._admin() as conn:
                self.server_version = conn.info.server_version
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self) -> None:
        """Restart the server (fast shutdown: sessions are disconnected), same socket and port."""
        self._pg_ctl("restarting PostgreSQL", "restart", "-m", "fast")

    def stop(self) -> None:
        """Stop the server at once (no shutdown checkpoint: its data is thrown away) and remove
        its directories. Safe to call twice, or after a failed start."""
        pid_file = self.data_dir / "postmaster.pid" if self.data_dir else None
        if pid_file is not None and pid_file.exists():
            try:
                done = self._run(
                    "pg_ctl", "stop", "-m", "immediate", "-w", "-t", "60", "-D", str(self.data_dir)
                )
                stopped = done.returncode == 0
            except subprocess.TimeoutExpired:
                stopped = False
            if not stopped and pid_file.exists():  # do not leave a server behind
                with contextlib.suppress(OSError, ValueError, IndexError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        self._remove_dirs()

    def _remove_dirs(self) -> None:
        for path in self._owned:
            shutil.rmtree(path, ignore_errors=True)
        self._owned.clear()

    # -- databases -------------------------------------------------------------------------------

    def url(self, dbname: str) -> str:
        """A libpq/psycopg URL for `dbname` over the unix socket, with no password. For
        SQLAlchemy use `sqlalchemy_url` (a bare postgresql:// there means psycopg2)."""
        assert self.socket_dir is not None, "the cluster is not started"
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}&port={self.port}"

    def sqlalchemy_url(self, dbname: str) -> str:
        return self.url(dbname).replace("postgresql://", "postgresql+psycopg://", 1)

    def _admin(self):  # -> psycopg.Connection; typed loosely so psycopg is imported only when used
        import psycopg

        return psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=30)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create an empty database `name` (or a copy of the database `template`, which
        nobody may be connected to) and return its url."""
        from psycopg import sql

        if not _NAME.fullmatch(name) or (template is not None and not _NAME.fullmatch(template)):
            raise ValueError(f"not a plain database name: {name!r} / {template!r}")
        with self._admin() as conn:
            if template is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            else:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting anyone still connected to it."""
        from psycopg import sql

        with self._admin() as conn:
            if (self.server_version or 0) >= 130000:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            else:  # WITH (FORCE) is PostgreSQL 13+
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


# -- PgBouncer in front of the cluster -----------------------------------------------------------

PGBOUNCER_BINARIES = (Path("/usr/sbin/pgbouncer"), Path("/usr/bin/pgbouncer"))


def find_pgbouncer() -> Path | None:
    found = shutil.which("pgbouncer")
    return Path(found) if found else next((p for p in PGBOUNCER_BINARIES if p.is_file()), None)


class PgBouncer:
    """PgBouncer in transaction mode in front of a `PgCluster`, on a unix socket of its own,
    with `pool_size` server connections per database (fewer than its clients, so their
    transactions share server connections). `stop` it when done."""

    def __init__(self, cluster: PgCluster, pool_size: int = 2) -> None:
        self.cluster, self.pool_size = cluster, pool_size
        self.dir: Path | None = None
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> PgBouncer:
        binary = find_pgbouncer()
        if binary is None:
            raise RuntimeError("no pgbouncer binary (apt-get install -y pgbouncer)")
        self.dir = Path(tempfile.mkdtemp(prefix="schedbouncer", dir=_short_tmp()))
        self.port = random.randint(20000, 60000)
        (self.dir / "users.txt").write_text(f'"{SERVER_USER}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={self.cluster.socket_dir} port={self.cluster.port} user={SERVER_USER}\n"
            f"[pgbouncer]\nlisten_addr =\nunix_socket_dir = {self.dir}\nlisten_port = {self.port}\n"
            f"auth_type = trust\nauth_file = {self.dir / 'users.txt'}\npool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\nignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n")
        argv = [str(binary), str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            argv = ["runuser", "-u", SERVER_USER, "--", *argv]
        self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        socket = self.dir / f".s.PGSQL.{self.port}"
        deadline = time.monotonic() + TIMEOUT
        while not socket.exists():  # it listens once the socket file is there
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = self.dir / "pgbouncer.log"
                self.stop()
                raise RuntimeError(f"pgbouncer did not start: {log.read_text() if log.exists() else ''}")
            time.sleep(0.02)
        return self

    def url(self, dbname: str) -> str:
        assert self.dir is not None, "pgbouncer is not started"
        return f"postgresql://{SERVER_USER}@/{dbname}?host={self.dir}&port={self.port}"

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


# -- pytest fixtures (import them into conftest.py) ---------------------------------------------

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """One PostgreSQL cluster for the whole session. Skips when PostgreSQL cannot run here,
    or fails when SCHED_REQUIRE_POSTGRES=1."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = PgCluster().start(tmp_path_factory.mktemp("pg"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a fresh, empty database for this test, dropped afterwards."""
    name = f"t_{next(_db_counter)}"
    url = pg_cluster.create_database(name)
    try:
        yield url
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_bouncer_url(pg_cluster: PgCluster, pg_url: str) -> Iterator[str]:
    """`pg_url`'s database through PgBouncer in transaction mode (two server connections).
    Skips without a pgbouncer binary, or fails when SCHED_REQUIRE_POSTGRES=1."""
    if find_pgbouncer() is None:
        reason = "PgBouncer test skipped: no pgbouncer binary (apt-get install -y pgbouncer)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    bouncer = PgBouncer(pg_cluster).start()
    try:
        yield bouncer.url(urlsplit(pg_url).path.lstrip("/"))
    finally:
        bouncer.stop()
