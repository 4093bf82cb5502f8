"""sched on PostgreSQL, what only a server can do: it goes away and comes back, its
clock decides event time, a URL may hold a password that must never be shown, and the
CLI selects the engine by the URL it is given."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from eventlog.errors import DatabaseFault
from eventlog.storage.postgres import PostgresStorage
from scheduler import access, worker
from scheduler.clock import ManualClock, SystemClock
from scheduler.config.settings import load_settings
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.tick_runs import last_tick
from scheduler.workspace import Workspace
from tests.cli.conftest import CONTROL_NAME, FLEET, sched
from tests.conftest import new_workspace, wait_for


def test_a_restarted_server_is_reconnected_to_and_work_goes_on(tmp_path, pg_cluster, pg_url):
    """A pooled connection is not pinged before use (a round trip saved at every read
    and write): a dead one fails at the transaction's first round trip (a reader's
    BEGIN, a writer's lock) and the transaction tries again on a pinged one: after a
    restart, the first read and the first write each just work."""
    ws = new_workspace(tmp_path / "home", database=pg_url)
    submit(ws, [TaskSpec(queue="dev", title="before")])
    pg_cluster.restart()  # every pooled connection of ws is now dead
    assert [t.title for t in queries.list_tasks(ws)] == ["before"]
    pg_cluster.restart()
    submit(ws, [TaskSpec(queue="dev", title="after")])
    assert [t.title for t in queries.list_tasks(ws)] == ["before", "after"]
    assert queries.verify_log(ws).ok
    ws.close()


def test_a_connection_the_server_refuses_says_what_to_check_not_to_retry(tmp_path, pg_url):
    """A role that does not exist is the server's answer, not its absence: one line
    naming it (exit 1), and no hint that asking again will help."""
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    wrong = parts._replace(netloc="no_such_role" + parts.netloc[parts.netloc.find("@"):]).geturl()
    with pytest.raises(DatabaseFault) as caught:
        Workspace(load_settings({}, {"home": tmp_path, "database_url": wrong}).settings).db  # noqa: B018
    assert caught.value.exit_code == 1 and "\n" not in caught.value.message
    assert "refused the connection" in caught.value.message and "does not exist" in caught.value.message
    assert "retry" not in caught.value.message


def test_a_database_the_server_does_not_have_is_no_database_exit_2(tmp_path, pg_url):
    """As a missing SQLite file; `sched init` cannot make a PostgreSQL database, so the
    line says to create it first (`init` and `migrate --to` too); nothing is made."""
    from urllib.parse import urlsplit

    wrong = urlsplit(pg_url)._replace(path="/no_such_db").geturl()
    empty, laptop = tmp_path / "empty", tmp_path / "laptop"
    empty.mkdir(), laptop.mkdir()
    assert sched(laptop, "init").returncode == 0
    made = sorted(laptop.iterdir())
    for home, command in ((empty, ["status", "--db", wrong]), (empty, ["init", "--db", wrong]),
                          (laptop, ["migrate", "--to", wrong])):
        result = sched(home, *command)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            f"sched: no database at {wrong}: the server has no database 'no_such_db'; create it first "
            "(docs/operations.md, Running on PostgreSQL)"]
    assert list(empty.iterdir()) == [] and sorted(laptop.iterdir()) == made


def test_a_connection_lost_mid_write_is_one_line_and_nothing_is_half_written(tmp_path, pg_url):
    ws = new_workspace(tmp_path / "home", database=pg_url)
    submit(ws, [TaskSpec(queue="dev", title="kept")])
    with pytest.raises(DatabaseFault) as caught, ws.write() as recorder:
        pid = recorder.views.session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        recorder.views.get_task(1)  # the next statement finds the connection gone
    assert caught.value.exit_code == 1
    assert "\n" not in caught.value.message and "cannot use the PostgreSQL server" in caught.value.message
    assert "nothing was written" in caught.value.message
    assert [t.title for t in queries.list_tasks(ws)] == ["kept"]
    assert queries.verify_log(ws).ok
    ws.close()


def test_a_connection_lost_mid_read_says_to_retry_and_nothing_of_writing(tmp_path, pg_url):
    """A read (`status`, `tasks`) had nothing to write: its line does not say that
    nothing was written, only that a retry helps."""
    ws = new_workspace(tmp_path / "home", database=pg_url)
    submit(ws, [TaskSpec(queue="dev", title="kept")])
    with pytest.raises(DatabaseFault) as caught, ws.read() as (_log, views):
        pid = views.session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        views.get_task(1)
    line = caught.value.message
    assert caught.value.exit_code == 1 and "\n" not in line
    assert "cannot use the PostgreSQL server" in line and "a retry helps once the server is reachable" in line
    assert "written" not in line
    ws.close()


def test_every_transaction_gives_its_connection_back_however_it_ends(tmp_path, pg_url):
    """Committed, rolled back by an error, read, with a SQLAlchemy session or without,
    or its connection killed: each transaction's connection is back in the pool, and
    none is left inside a transaction on the server (it would hold the writers' lock)."""
    ws = new_workspace(tmp_path / "home", database=pg_url)
    pool = ws.db.engine.pool

    def left_open() -> list[tuple[str, int]]:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            return admin.execute(
                "SELECT state, count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%' GROUP BY state").fetchall()

    def ended() -> None:
        assert pool.checkedout() == 0 and left_open() == []

    submit(ws, [TaskSpec(queue="dev", title="committed")])
    ended()
    with pytest.raises(RuntimeError), ws.write() as recorder:
        recorder.views.get_task(1)
        raise RuntimeError("the caller fails mid-way")
    ended()
    with ws.write() as recorder:  # a statement written with SQLAlchemy: a session joins
        assert recorder.views.session.connection().exec_driver_sql("SELECT 1").scalar() == 1
    ended()
    with pytest.raises(RuntimeError), ws.write() as recorder:
        recorder.views.session.connection().exec_driver_sql("SELECT 1")
        raise RuntimeError("the caller fails with a session open")
    ended()
    assert [t.title for t in queries.list_tasks(ws)] == ["committed"]  # (a read)
    ended()
    with pytest.raises(DatabaseFault), ws.write() as recorder:
        pid = recorder.views.session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        recorder.views.get_task(1)
    ended()
    submit(ws, [TaskSpec(queue="dev", title="after")])  # the pool replaced what died
    ended()
    assert [t.title for t in queries.list_tasks(ws)] == ["committed", "after"]
    ws.close()


def test_a_connection_lost_as_it_commits_says_the_outcome_is_unknown(tmp_path, pg_url, monkeypatch):
    """Lost while its COMMIT is on the way, a transaction may have been written or not:
    the line says to look before trying again (it said a retry helps, and a retried
    submit made the task twice), and it is one line (psycopg's own warning stays off
    stderr)."""
    from eventlog.storage.postgres import PostgresTransaction

    ws = new_workspace(tmp_path / "home", database=pg_url)
    real_send = PostgresTransaction.send_writes

    def send_after_losing_the_connection(txn: PostgresTransaction, *then, commit: bool = False) -> None:
        if commit:  # the last round trip: the writes and the COMMIT
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (txn._driver().info.backend_pid,))
        real_send(txn, *then, commit=commit)

    monkeypatch.setattr(PostgresTransaction, "send_writes", send_after_losing_the_connection)
    with pytest.raises(DatabaseFault) as caught:
        submit(ws, [TaskSpec(queue="dev", title="maybe")])
    monkeypatch.setattr(PostgresTransaction, "send_writes", real_send)
    line = caught.value.message
    assert caught.value.exit_code == 1 and "\n" not in line
    assert "failed while committing" in line and "may or may not have been written" in line
    assert "a retry helps" not in line
    assert queries.list_tasks(ws) == [] and queries.verify_log(ws).ok  # (here: not written)
    ws.close()


PULLERS = [{"agentName": f"w{i}", "agentType": "dev", "maxConcurrency": 100} for i in range(3)]


def test_a_writer_that_waited_too_long_is_told_who_holds_the_lock(tmp_path, pg_url):
    """The busy line names the session holding the writers' lock, where it connects
    from and how long it has been idle in its transaction, with how to end it: a writer
    stopped (kill -STOP) while it held the lock otherwise keeps the fleet busy
    without a trace of why."""
    from eventlog.errors import DatabaseBusy
    from eventlog.storage.postgres import WRITER_LOCK

    ws = new_workspace(tmp_path / "home", database=pg_url, busy_timeout_ms=50)
    with psycopg.connect(pg_url, application_name="the stalled one") as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
        pid = holder.info.backend_pid
        with pytest.raises(DatabaseBusy) as caught:
            submit(ws, [TaskSpec(queue="dev", title="waits")])
    line = caught.value.message
    assert "\n" not in line and "; try again" in line
    who = f"server process {pid} (the stalled one, from a unix socket)"
    assert f": {who}, idle in its transaction for " in line
    assert line.endswith(f"; try again (if it stays idle, SELECT pg_terminate_backend({pid}) ends it)")
    assert queries.list_tasks(ws) == []
    ws.close()


# a sched writer that stops itself (SIGSTOP) inside its transaction, holding the
# writers' lock; continued, it prints how its write ended
_STOPPED_WRITER = """
import os, signal, sys
from eventlog.errors import DatabaseError
from eventlog.events import SchedulerPaused
from scheduler.config.settings import load_settings
from scheduler.workspace import Workspace
ws = Workspace(load_settings({}, {"home": sys.argv[1]}).settings)
try:
    with ws.write() as recorder:
        recorder.record([SchedulerPaused(by="the stopped writer")])
        os.kill(os.getpid(), signal.SIGSTOP)
except DatabaseError as e:
    sys.exit(e.message)
print("committed")
"""


def test_a_sched_writer_stalled_in_its_transaction_is_ended_by_the_next_writer(tmp_path, pg_url, capsys):
    """A writer stopped while it holds the writers' lock (kill -STOP, a paused VM)
    answers the server's probes, so nothing else frees the lock. A writer whose wait
    runs out finds it idle in its transaction past `stalled_writer_seconds` (60 s; 0.5
    here), ends it, says so in one line, and takes its turn. The stopped one, when it
    goes on, gets one line, and nothing of it is in the log."""
    ws = new_workspace(tmp_path / "home", database=pg_url, busy_timeout_ms=1000)
    ws.db.stalled_writer_seconds = 0.5
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    stopped = subprocess.Popen([sys.executable, "-c", _STOPPED_WRITER, str(ws.settings.home)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(stopped.pid, os.WUNTRACED)  # back once it stopped, lock held
        assert os.WIFSTOPPED(status)
        submit(ws, [TaskSpec(queue="dev", title="after")])  # busy after 1 s, before
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
        out, err = stopped.communicate(timeout=60)
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "ended server process " in said
    assert "(sched, from a unix socket), idle in its transaction for " in said
    assert said.rstrip().endswith("which held the writers' lock")
    # (its next round trip was its COMMIT: it cannot tell that none of it was done)
    assert stopped.returncode == 1 and out == "" and err.count("\n") == 1, err
    assert "it may or may not have been written; look before you try again" in err
    assert [t.title for t in queries.list_tasks(ws)] == ["after"]
    assert [rec.type for rec in queries.replay(ws)] == ["TaskSubmitted"]
    ws.close()


def test_connections_give_up_on_a_silent_server_unless_the_url_says_otherwise(pg_url):
    """Every connection of sched's asks libpq for TCP keepalives and a user timeout (a
    server gone silent is given up in about 30 s, not hours); a value the URL gives
    itself is kept. (The vanished host, the other way round: test_vanished_host.py.)"""
    db = PostgresStorage(f"{pg_url}&keepalives_idle=30&connect_timeout=3")
    try:
        with db.engine.connect() as conn:
            params = conn.connection.driver_connection.info.get_parameters()
    finally:
        db.close()
    assert params["keepalives_idle"] == "30" and params["connect_timeout"] == "3"
    assert params["keepalives_interval"] == "5" and params["keepalives_count"] == "3"
    assert params["tcp_user_timeout"] == "30000" and params["application_name"] == "sched"
    listener = db.wakeups()
    try:
        assert listener._connection().info.get_parameters()["tcp_user_timeout"] == "30000"
    finally:
        listener.close()


def test_transaction_pooling_through_pgbouncer(tmp_path, pg_bouncer_url):
    """Behind PgBouncer in transaction mode (Debian's 1.18 keeps no prepared statement
    across server connections) with `postgres_prepared_statements = false`: three
    writers whose transactions share two server connections submit and claim, and every
    write lands (with prepared statements each of them fails within its first hundred:
    "prepared statement _pg3_0 does not exist")."""
    home = tmp_path / "home"
    new_workspace(home, PULLERS, database=pg_bouncer_url, postgres_prepared_statements=False).close()
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        settings = load_settings({}, {"home": home, "postgres_prepared_statements": False}).settings
        ws = Workspace(settings, clock=ManualClock())
        try:
            for n in range(40):
                submit(ws, [TaskSpec(queue="dev", title=f"{index}-{n}")])
                if n % 2:
                    assert worker.claim(ws, f"w{index}") is not None
        except BaseException as e:  # the thread ends; the test reports it
            errors.append(e)
        finally:
            ws.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ws = Workspace(load_settings({}, {"home": home, "postgres_prepared_statements": False}).settings)
    dev = queries.status(ws)["queues"]["dev"]
    assert (dev["queued"], dev["running"]) == (60, 60)
    assert queries.verify_log(ws).ok
    ws.close()


def test_wake_ups_behind_pgbouncer_come_through_the_listen_url(tmp_path, pg_url, pg_bouncer_url):
    """LISTEN needs a session, which PgBouncer's transaction mode does not keep: a
    listener through it hears nothing, while one on `database_listen_url` (the server
    itself) hears a commit made through PgBouncer."""
    ws = new_workspace(tmp_path / "home", database=pg_bouncer_url, postgres_prepared_statements=False,
                       database_listen_url=pg_url)
    direct = ws.db.wakeups()
    pooled = PostgresStorage(pg_bouncer_url, prepared_statements=False).wakeups()
    try:
        assert direct.wait(0.01) is None and pooled.wait(0.01) is None  # both listening, nothing yet
        submit(ws, [TaskSpec(queue="dev", title="wake")])
        assert direct.wait(10) == queries.status(ws)["last_seq"]
        assert pooled.wait(1.0) is None
    finally:
        direct.close(), pooled.close()
        ws.close()


def test_only_a_commit_that_leaves_work_wakes_the_listeners(tmp_path, pg_url):
    """A submit and a completion (a slot freed) wake daemons and waiting claims; an
    attempt under way (a pull worker's claim, its heartbeats, its progress) wakes none.
    Notifications arrive in commit order, so the first one heard after those is the
    next submit's, and nothing has to be waited for to see that none came."""
    ws = new_workspace(tmp_path / "home", database=pg_url)
    submit(ws, [TaskSpec(queue="dev", title="first"), TaskSpec(queue="dev", title="second")])
    assert worker.claim(ws, "ann") is not None  # the fleet's first record (a change: it wakes)
    listener = ws.db.wakeups()
    try:
        assert listener.wait(0.01) is None  # listening, nothing yet
        claimed = worker.claim(ws, "ann")
        assert claimed is not None
        task_id = claimed.task.task_id
        worker.heartbeat(ws, task_id, claimed.token, worker.Progress(percent=50, message="half"))
        submit(ws, [TaskSpec(queue="dev", title="third")])
        assert listener.wait(10) == queries.status(ws)["last_seq"]  # the submit's, not the claim's
        worker.complete(ws, task_id, claimed.token)
        assert listener.wait(10) == queries.status(ws)["last_seq"]
    finally:
        listener.close()
        ws.close()


class SkewedClock(SystemClock):
    """A host whose clock is an hour fast."""

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(hours=1)


def test_event_time_is_the_servers_not_the_hosts(tmp_path, pg_url):
    made = new_workspace(tmp_path / "home", database=pg_url)
    made.close()
    skewed = Workspace(made.settings, clock=SkewedClock())
    before = datetime.now(UTC)
    submit(skewed, [TaskSpec(queue="dev", title="t")])
    (rec,) = [r for r in queries.replay(skewed) if r.type == "TaskSubmitted"]
    assert before - timedelta(seconds=30) <= rec.at <= datetime.now(UTC) + timedelta(seconds=30)
    skewed.close()


def test_a_claim_takes_the_best_task_that_may_start_by_the_servers_time(tmp_path, pg_url):
    """A claim asks for its best candidate with the lock, as of the time it reads under
    it (`WRITE_TIME`): a task held back until later is passed over for one that may
    start now, whatever their priorities."""
    made = new_workspace(tmp_path / "home", database=pg_url)
    made.close()
    ws = Workspace(made.settings)  # the system clock: the time is the server's
    soon = datetime.now(UTC) + timedelta(minutes=5)
    submit(ws, [TaskSpec(queue="dev", title="later", priority=9, not_before=soon),
                TaskSpec(queue="dev", title="now", priority=1),
                TaskSpec(queue="dev", title="already", priority=5,
                         not_before=datetime.now(UTC) - timedelta(seconds=1))])
    titles = [worker.claim(ws, name).task.title for name in ("ann", "ann")]
    assert titles == ["already", "now"]
    assert worker.claim(ws, "bob") is None
    ws.close()


def test_a_connection_keeps_a_cursor_per_statement_but_not_a_long_answer(tmp_path, pg_url, request):
    """The cursors a connection keeps for the next run of a statement hold their last
    answer: a long one is let go with its cursor, so a big listing is not held in memory
    until the statement runs again on that connection."""
    from eventlog.storage.postgres import KEPT_ANSWER_ROWS

    ws = new_workspace(tmp_path / "home", database=pg_url)
    request.addfinalizer(ws.close)
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(KEPT_ANSWER_ROWS + 1)])
    with ws.db.read() as txn:
        short = txn.select("tasks", ("task_id",), (), ("task_id",), KEPT_ANSWER_ROWS)
        long = txn.select("tasks", ("task_id",), (), ("task_id",))
        assert len(txn.rows("tasks", ("task_id",), (), ("task_id",), KEPT_ANSWER_ROWS)) == KEPT_ANSWER_ROWS
        assert len(txn.rows("tasks", ("task_id",), (), ("task_id",))) == KEPT_ANSWER_ROWS + 1
        kept = txn.pooled.info["sched_cursors"]
        assert short[0] in kept and long[0] not in kept


def with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")


def test_the_cli_selects_postgresql_by_url_and_never_shows_a_password(tmp_path, pg_url):
    home = tmp_path / "home"
    home.mkdir()
    (home / CONTROL_NAME).write_text(json.dumps(FLEET))
    url = with_password(pg_url, "s3cret-pw")  # trust auth: the server ignores it
    assert sched(home, "init", "--db", url).returncode == 0
    assert sched(home, "submit", "--queue", "dev", "--title", "hello", "--db", url).returncode == 0
    status = sched(home, "status", "--json", "--db", url)
    assert status.returncode == 0 and json.loads(status.stdout)["queues"]["dev"]["queued"] == 1
    assert not (home / "sched.db").exists()  # the URL, not a file in home
    # the password in the user part, or in the query (libpq takes both)
    for given in (url, f"{pg_url}&password=s3cret-pw"):
        shown = sched(home, "config", "show", "--json", "--db", given)
        assert "s3cret-pw" not in shown.stdout + shown.stderr and "***" in shown.stdout
        gone = re.sub(r"port=\d+", "port=1", given)  # no server there (a port, still: 1 + NNNNN was not)
        failed = sched(home, "status", "--db", gone)
        assert failed.returncode == 1 and "s3cret-pw" not in failed.stdout + failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr


def test_sched_database_url_in_the_environment_selects_it(tmp_path, pg_url):
    home = tmp_path / "home"
    home.mkdir()
    (home / CONTROL_NAME).write_text(json.dumps(FLEET))
    env_url = {"SCHED_DATABASE_URL": pg_url}
    assert sched(home, "init", env=env_url).returncode == 0
    assert sched(home, "submit", "--queue", "qa", "--title", "x", env=env_url).returncode == 0
    listed = sched(home, "tasks", "--json", env=env_url)
    assert [t["title"] for t in json.loads(listed.stdout)["tasks"]] == ["x"]
    assert not (home / "sched.db").exists()


def test_a_commit_wakes_the_daemon_long_before_its_interval(tmp_path, pg_url):
    ws = new_workspace(tmp_path / "home", database=pg_url)  # pull agents: ticks assign only
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    daemon = subprocess.Popen([sys.executable, "-m", "cli", "run", "--interval", "120",
                               "--home", str(ws.settings.home)], env=env, stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_for("the daemon's first tick", lambda: last_tick_of(ws), timeout=30)
        first = last_tick_of(ws)
        submitted = time.monotonic()
        (result,) = submit(ws, [TaskSpec(queue="dev", title="wake up")])
        wait_for("the woken tick to assign it",
                 lambda: queries.show(ws, result.task_id)[0].status == "assigned", timeout=20)
        assert time.monotonic() - submitted < 20 and last_tick_of(ws) != first  # not the 120 s interval
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0 and "Traceback" not in err, err
    ws.close()


def last_tick_of(ws: Workspace) -> object:
    with ws.read() as (_log, views):
        return last_tick(views.txn)


class RoundTripCounter:
    """A proxy between sched and the server's unix socket that counts the round trips
    on the wire: each time the server answers after the client spoke. (Counting the
    driver's calls misses what it sends on its own: an implicit BEGIN, the Sync that
    ends a pipeline.) Point a URL at `url(pg_url)`; `take()` returns the count so far
    and starts again from zero."""

    def __init__(self, server_socket: Path, proxy_dir: Path) -> None:
        self.server_socket = str(server_socket)
        self.path = proxy_dir / server_socket.name  # the same port number: the same file name
        self.proxy_dir = proxy_dir
        self.trips = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, pg_url: str) -> str:
        return re.sub(r"host=[^&]+", f"host={self.proxy_dir}", pg_url)

    def take(self) -> int:
        with self._lock:
            trips, self.trips = self.trips, 0
        return trips

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.server_socket)
            self._open += [client, server]
            spoke = [False]  # the client sent something the server has not answered yet
            threading.Thread(target=self._pump, args=(client, server, spoke, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, spoke, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, spoke: list[bool], answers: bool) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    if answers and spoke[0]:
                        self.trips += 1
                    spoke[0] = not answers
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


# the rows of the round-trip table in docs/operations.md ("Keep the database near the hosts")
DOCUMENTED_OPERATIONS = {"submit": "`sched submit` (one task)", "heartbeat": "`sched worker heartbeat`",
                         "complete": "`sched worker complete`", "fail": "`sched worker fail`",
                         "claim": "a claim that assigns", "tick": "a tick that assigns",
                         "status": "`sched status` (a read)",
                         "token": "a request's token check (`sched serve`, every request)"}
READS = ("status", "token")


def documented_round_trips() -> dict[str, tuple[int, int]]:
    """Each operation's round trips and those of them under the lock, as the table gives them."""
    table: dict[str, tuple[int, int]] = {}
    for line in (Path(__file__).parents[3] / "docs" / "operations.md").read_text().splitlines():
        for key, label in DOCUMENTED_OPERATIONS.items():
            if line.startswith(f"| {label}"):
                trips, locked = (int(cell) for cell in line.split("|")[2:4])
                table[key] = (trips, locked)
    return table


@pytest.fixture
def round_trips(pg_cluster) -> Iterator[RoundTripCounter]:
    proxy_dir = Path(tempfile.mkdtemp(prefix="sched-proxy-", dir="/tmp"))  # (a socket's path is short)
    counter = RoundTripCounter(Path(pg_cluster.socket_dir) / f".s.PGSQL.{pg_cluster.port}", proxy_dir)
    yield counter
    counter.close()
    shutil.rmtree(proxy_dir, ignore_errors=True)


def test_an_attempt_over_http_reads_its_token_and_its_holder_in_one_read(tmp_path, pg_url, round_trips):
    """`sched serve` on PostgreSQL checks an attempt's request with one read: the token
    and who holds the task come back with its BEGIN (2 round trips with its end), then
    the use case's write (2). A check that read them apart would show 2 more; a read
    ended by the driver's rollback, 1 more (its DEALLOCATE ALL, on a connection whose
    statements the writes had prepared). A claim: the token's read, then the claim."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    made = new_workspace(tmp_path / "home", [{"agentName": "w1", "agentType": "dev", "maxConcurrency": 3}],
                         database=round_trips.url(pg_url))
    made.close()
    ws = Workspace(made.settings)
    secret = access.create_token(ws, "w1-box", "kim", agent="w1").token
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(3)])
    claims = [worker.claim(ws, "w1") for _ in range(2)]
    ws.close()
    with TestClient(create_app(ws.settings)) as client:
        def beat(claimed: worker.Claim) -> int:
            answer = client.post(f"/api/v1/tasks/{claimed.task.task_id}/heartbeat",
                                 json={"token": claimed.token}, headers={"Authorization": f"Bearer {secret}"})
            assert answer.status_code == 200, answer.json()
            return answer.status_code

        beat(claims[0])  # (the server's connections opened, its statements prepared)
        round_trips.take()
        beat(claims[1])
        trips = {"heartbeat": round_trips.take()}
        answer = client.post("/api/v1/agents/w1/claim", headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 200 and answer.json()["task"]["title"] == "t2", answer.json()
        trips["claim"] = round_trips.take()
    assert trips == {"heartbeat": 4, "claim": 4}


def test_the_round_trips_of_each_write_are_the_ones_operations_md_gives(tmp_path, pg_url, round_trips):
    """Across a network every round trip of a write is spent holding the one writers'
    lock (all but the lock's own): docs/operations.md gives these counts to plan a
    fleet's capacity with, read here from its table, as counted on the wire (and a
    status's, which holds no lock). A read added to a hot path shows."""
    made = new_workspace(tmp_path / "home", [{"agentName": "w1", "agentType": "dev", "maxConcurrency": 3}],
                         database=round_trips.url(pg_url))
    made.close()
    ws = Workspace(made.settings)  # the system clock: a writer's time is the server's, as in production
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(4)])
    warm = worker.claim(ws, "w1")  # the statements prepared, the control file recorded
    worker.complete(ws, warm.task.task_id, warm.token)
    costs: dict[str, int] = {}
    round_trips.take()
    submit(ws, [TaskSpec(queue="dev", title="one more")])
    costs["submit"] = round_trips.take()
    claimed = worker.claim(ws, "w1")  # nothing assigned to it yet: it assigns one itself
    costs["claim"] = round_trips.take()
    worker.heartbeat(ws, claimed.task.task_id, claimed.token)
    costs["heartbeat"] = round_trips.take()
    worker.complete(ws, claimed.task.task_id, claimed.token)
    costs["complete"] = round_trips.take()
    assigned = tick(ws).assigned
    costs["tick"] = round_trips.take()
    queries.status(ws)  # (the pool may open a connection for it: not counted)
    round_trips.take()
    queries.status(ws)
    costs["status"] = round_trips.take()
    secret = access.create_token(ws, "w1-token", "kim", agent="w1").token
    assert access.authenticate(ws, secret) is not None
    round_trips.take()
    assert access.authenticate(ws, secret) is not None
    costs["token"] = round_trips.take()
    started = worker.claim(ws, "w1")  # one the tick assigned
    round_trips.take()
    worker.fail(ws, started.task.task_id, started.token, "it broke")
    costs["fail"] = round_trips.take()
    ws.close()
    assert len(assigned) == 3  # the tick's work: the agent's three free slots filled
    assert costs == {"submit": 2, "claim": 2, "heartbeat": 2, "complete": 2, "fail": 2, "tick": 5,
                     "status": 2, "token": 2}
    # a writer holds the lock from its first round trip's answer on; a reader never does
    assert documented_round_trips() == {key: (trips, trips - 1 if key not in READS else 0)
                                        for key, trips in costs.items()}


def test_a_dropped_projection_table_is_named_and_rebuild_makes_it_again(tmp_path, pg_url):
    from eventlog.errors import DamagedProjection, DatabaseFault
    from scheduler.rebuild import rebuild_projections

    ws = new_workspace(tmp_path / "home", database=pg_url)
    submit(ws, [TaskSpec(queue="dev", title="kept")])
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("DROP TABLE queue_counts")
    with pytest.raises(DamagedProjection) as caught:
        queries.status(ws)
    assert caught.value.message.endswith(
        ": the table queue_counts is missing: `sched rebuild` makes it again and folds the log into it")
    assert rebuild_projections(ws) == 1  # the submit
    assert queries.verify_log(ws).ok and queries.status(ws)["queues"]["dev"]["queued"] == 1
    ws.close()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("DROP TABLE events")
    with pytest.raises(DatabaseFault, match=r"the event log's table is missing .* restore the database from"):
        new_workspace(tmp_path / "home", database=pg_url)  # its `sched init`: a backup's job
    with psycopg.connect(pg_url, autocommit=True) as admin:
        assert admin.execute("SELECT to_regclass('events')").fetchone() == (None,)
