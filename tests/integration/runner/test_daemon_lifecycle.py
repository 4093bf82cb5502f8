"""A daemon's start and stop in the open: `DaemonStarted` / `DaemonStopped` in the log,
their webhooks queued, and `health` saying whether a daemon is alive, also after one is
killed with SIGKILL (which records no stop)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from eventlog.errors import BadInput
from eventlog.timeutil import to_text
from scheduler.config.settings import load_settings
from scheduler.daemon.lifecycle import record_start, record_stop
from scheduler.machine import this_machine
from scheduler.reads import queries
from scheduler.reads.dashboard import snapshot
from scheduler.reads.health import health
from scheduler.reads.outbox import outbox
from scheduler.tick_runs import daemons
from scheduler.workspace import Workspace
from tests.conftest import new_workspace, wait_for, write_fleet

HOOKS = '[[webhooks]]\nurl = "http://127.0.0.1:9/hook"\nevents = ["daemon.started", "daemon.stopped"]\n'


def daemon_check(ws: Workspace, alive=None, machine=this_machine) -> dict:
    report = health(ws, machine=machine) if alive is None else health(ws, alive=alive, machine=machine)
    (check,) = [c for c in report["checks"] if c["name"] == "daemon"]
    return check


def lifecycle_events(ws: Workspace) -> list[tuple[str, dict]]:
    return [(r.type, json.loads(r.data)) for r in queries.replay(ws)
            if r.type in ("DaemonStarted", "DaemonStopped")]


def start_daemon(home: Path) -> subprocess.Popen[str]:
    """A daemon ticking every 2 s: these tests look at its start and stop, not at its
    ticks (a stop in the middle of a tick is tested in this process, below)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    return subprocess.Popen([sys.executable, "-m", "cli", "run", "--interval", "2", "--home", str(home),
                             "--host", "box-1"], env=env, stderr=subprocess.PIPE, text=True, cwd=Path.cwd())


def test_start_and_stop_are_recorded_with_host_pid_and_version_and_health_follows(make_workspace):
    ws = make_workspace(host="box-1", webhooks=[{"url": "http://127.0.0.1:9/hook",
                                                 "events": ["daemon.started", "daemon.stopped"]}])
    assert daemon_check(ws)["status"] == "healthy"  # no daemon ever: cron may tick instead
    started = record_start(ws, 5.0, pid=4242, alive=lambda pid: True)
    saw = daemon_check(ws, alive=lambda pid: pid == 4242)["saw"]
    assert saw.startswith("alive on box-1 (pid 4242) since ")
    record_stop(ws, "SIGTERM", pid=4242)
    (first, second) = lifecycle_events(ws)
    assert first == ("DaemonStarted", {"host": "box-1", "pid": 4242, "version": started.version,
                                       "interval_seconds": 5.0, "machine": this_machine()})
    assert second == ("DaemonStopped", {"host": "box-1", "pid": 4242, "version": started.version,
                                        "reason": "SIGTERM"})
    check = daemon_check(ws)
    assert check["status"] == "healthy" and "no daemon alive" in check["saw"]
    # both queued once for the webhook (the start's own collection placed the cursor first)
    assert [row["event"] for row in outbox(ws)] == ["daemon.started", "daemon.stopped"]
    assert outbox(ws)[0]["body"]["data"]["pid"] == 4242


def test_a_daemon_gone_without_a_stop_is_not_alive_and_degrades_health_until_replaced(make_workspace):
    ws = make_workspace(host="box-1")
    record_start(ws, 5.0, pid=4242, alive=lambda pid: True)
    # its process is gone (killed): not alive at once on its own host, though its beat is fresh
    check = daemon_check(ws, alive=lambda pid: False)
    assert check["status"] == "degraded"
    assert "pid 4242" in check["saw"] and "recorded no stop" in check["saw"]
    shown = snapshot(ws, alive=lambda pid: False)["daemon"]  # the dashboard says so too
    assert shown["alive"] is False and (shown["last_host"], shown["last_pid"]) == ("box-1", 4242)
    assert snapshot(ws, alive=lambda pid: True)["daemon"]["since"] == to_text(ws.clock.now())
    # on another host only the beats tell: alive while fresh, not after 3 missed intervals
    ws.clock.advance(14)
    assert daemon_check(ws, alive=lambda pid: True)["status"] == "healthy"
    ws.clock.advance(2)
    assert daemon_check(ws, alive=lambda pid: True)["status"] == "degraded"
    # past the health window it is history, not a problem
    ws.clock.advance(ws.settings.health_window_seconds)
    assert daemon_check(ws, alive=lambda pid: False)["status"] == "healthy"
    # a new daemon on the host replaces the dead one's record
    record_start(ws, 5.0, pid=5151, alive=lambda pid: pid == 5151)
    record_stop(ws, None, pid=5151)
    assert "no daemon alive (none running" in daemon_check(ws, alive=lambda pid: False)["saw"]


def test_a_daemon_running_here_without_beating_is_said_to_fail_not_to_be_gone(make_workspace):
    """A daemon whose writes fail (an I/O error, a full disk) was reported as `no daemon
    alive ... recorded no stop`, inviting a second one, while its process ran on."""
    ws = make_workspace(host="box-1")
    record_start(ws, 5.0, pid=4242, alive=lambda pid: True)
    ws.clock.advance(16)  # three intervals missed: its ticks could not record their beats
    check = daemon_check(ws, alive=lambda pid: pid == 4242)
    assert check["status"] == "degraded"
    assert check["saw"].startswith("the daemon on box-1 (pid 4242) runs, but last ticked 16 s ago")
    assert check["saw"].endswith(": its ticks fail (see its log)")
    ws.clock.advance(ws.settings.health_window_seconds)  # still a problem while it runs
    assert daemon_check(ws, alive=lambda pid: pid == 4242)["status"] == "degraded"


def test_a_daemon_is_refused_a_host_name_that_a_live_daemon_of_another_machine_uses(make_workspace):
    """Two machines given one host name: the second daemon would start the first's
    pinned agents and forget its record. The other's pid is not looked at: it may name
    a process here (a container's daemon is pid 1 of its own namespace). The check and
    the start are one transaction, so two daemons starting at once cannot both pass."""
    ws = make_workspace(host="box-1")
    record_start(ws, 5.0, pid=4242, alive=lambda pid: True, machine=lambda: "m2/b2/4026531836")
    before = lifecycle_events(ws)
    with pytest.raises(BadInput) as refused:  # (the same pid here: alive, but not that daemon)
        record_start(ws, 5.0, pid=4242, alive=lambda pid: True, machine=lambda: "m1/b1/4026531836")
    assert refused.value.message == (
        "host name 'box-1' is in use by a daemon of another machine (pid 4242 there, last tick 0 s ago): "
        "give this machine a host name of its own (--host, SCHED_HOST or `host` in sched.toml)")
    assert lifecycle_events(ws) == before  # nothing recorded
    # a daemon of that machine that died is replaced, also after a restart of the machine
    record_start(ws, 5.0, pid=5151, alive=lambda pid: False, machine=lambda: "m2/b2/4026531836")
    record_start(ws, 5.0, pid=6161, alive=lambda pid: False, machine=lambda: "m2/b3/4026531836")
    ws.clock.advance(16)  # three intervals without a beat: that daemon is gone
    record_start(ws, 5.0, pid=7171, alive=lambda pid: False, machine=lambda: "m1/b1/4026531836")
    assert [data["pid"] for kind, data in lifecycle_events(ws)] == [4242, 5151, 6161, 7171]


def test_health_on_another_machine_under_a_daemons_host_name_does_not_call_it_killed(make_workspace):
    """The daemon's pid is looked at only on its own machine, boot and pid namespace (a
    cloned VM, or a container, under the same host name sees other processes)."""
    ws = make_workspace(host="box-1")
    record_start(ws, 5.0, pid=4242, alive=lambda pid: True, machine=lambda: "m1/b1/7")
    for elsewhere in ("m2/b1/7", "m1/b1/8"):  # another machine; another pid namespace
        check = daemon_check(ws, alive=lambda pid: False, machine=lambda m=elsewhere: m)
        assert check["status"] == "healthy" and check["saw"].startswith("alive on box-1 (pid 4242)"), check
    assert daemon_check(ws, alive=lambda pid: False, machine=lambda: "m1/b1/7")["status"] == "degraded"
    # its machine restarted since: gone, whatever process that pid names now
    assert daemon_check(ws, alive=lambda pid: True, machine=lambda: "m1/b2/7")["status"] == "degraded"
    snap = snapshot(ws, alive=lambda pid: False, machine=lambda: "m2/b1/7")
    assert snap["daemon"]["alive"] and snap["daemon"]["pid"] == 4242


def test_a_daemon_starting_replaces_the_record_of_one_of_another_machine_that_stopped_beating(
        make_workspace):
    """Not while it beats (refused, above); once its beats stopped (its machine went
    away without a stop), the host name's new daemon replaces its record."""
    ws = make_workspace(host="box-1")
    record_start(ws, 5.0, pid=4242, alive=lambda pid: True, machine=lambda: "m1/b1/7")
    ws.clock.advance(16)  # more than three missed beats of 5 s
    record_start(ws, 5.0, pid=77, alive=lambda pid: True, machine=lambda: "m2/b1/7")
    with ws.read() as (_log, views):
        assert [(row["pid"], row["machine"]) for row in daemons(views.txn)] == [(77, "m2/b1/7")]


def test_a_database_of_an_older_sched_gets_the_machine_column_and_its_daemon_is_judged_by_pid(tmp_path):
    """Made before `daemons.machine` (table version 2) with a daemon's row in it: the
    first command that opens it adds the column, and that row, of no known machine, is
    judged by its pid on its host, as before."""
    import sqlite3

    home = tmp_path / "home"
    ws = new_workspace(home, host="box-1")
    record_start(ws, 5.0, pid=4242, alive=lambda pid: True)
    ws.close()
    with sqlite3.connect(home / "sched.db") as conn:
        conn.execute("ALTER TABLE daemons DROP COLUMN machine")
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    ws = Workspace(load_settings({}, {"home": home, "host": "box-1"}).settings, clock=ws.clock)
    assert daemon_check(ws, alive=lambda pid: pid == 4242, machine=lambda: "m9/b9/9")["status"] == "healthy"
    assert daemon_check(ws, alive=lambda pid: False, machine=lambda: "m9/b9/9")["status"] == "degraded"
    assert ws.db.schema_version() == 3
    ws.close()


def test_sched_run_under_a_host_name_in_use_elsewhere_exits_2_with_one_line(tmp_path):
    home = tmp_path / "home"
    new_workspace(home, host="box-1").close()
    ws = Workspace(load_settings({}, {"home": home, "host": "box-1"}).settings)  # (the daemon's clock)
    record_start(ws, 60.0, pid=2**22 + 7, machine=lambda: "elsewhere/b9/4026531836")
    ws.close()
    proc = start_daemon(home)
    try:
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # (it did not refuse: stop it)
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, err
    (line,) = err.splitlines()  # (its last tick: as long ago as the daemon took to start)
    assert re.fullmatch(r"sched: host name 'box-1' is in use by a daemon of another machine \(pid "
                        rf"{2**22 + 7} there, last tick \d+ s ago\): give this machine a host name of "
                        r"its own \(--host, SCHED_HOST or `host` in sched.toml\)", line), line


def test_a_daemon_whose_supervisor_cannot_be_forked_records_its_stop(make_workspace, monkeypatch):
    """Its start is recorded before the fork: a fork that fails (no memory, the process
    limit) must not leave a start without a stop, which health would call killed."""
    import errno

    from scheduler.daemon.log import DaemonLog
    from scheduler.daemon.run import run_daemon

    ws = make_workspace(host="box-1")
    lines: list[str] = []

    def no_fork() -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(OSError):
        run_daemon(ws, 60.0, DaemonLog(lines.append))
    kinds = [(kind, data["pid"]) for kind, data in lifecycle_events(ws)]
    assert kinds == [("DaemonStarted", os.getpid()), ("DaemonStopped", os.getpid())]
    assert daemon_check(ws)["status"] == "healthy"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # its handlers were put back


def test_a_daemon_logs_what_each_new_control_file_holds_that_configures_nothing(make_workspace):
    """A misspelt field gives the agent its default silently: only `agents validate`
    said so. The daemon logs each new control file's warnings once."""
    from scheduler.daemon.log import DaemonLog
    from scheduler.daemon.run import log_config_warnings

    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "maxConcurency": 3}])
    lines: list[str] = []
    log = DaemonLog(lines.append)
    seen = log_config_warnings(ws, log, "")
    (line,) = lines
    assert line.endswith(f"warning: {ws.settings.home / 'agent-control.json'}: agent #1 (ann): "
                         "unknown field 'maxConcurency' ignored")
    assert log_config_warnings(ws, log, seen) == seen and len(lines) == 1  # once
    write_fleet(ws.settings.home, [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 3}])
    assert log_config_warnings(ws, log, seen) != seen and len(lines) == 1  # a fixed file: nothing


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc")
def test_a_real_daemon_records_its_start_and_stop_and_a_sigkilled_one_only_its_start(tmp_path):
    home = tmp_path / "home"
    new_workspace(home, [{"agentName": "ann", "agentType": "dev"}]).close()
    (home / "sched.toml").write_text(HOOKS)
    # as the daemon's host: health then also asks whether the daemon's process exists
    ws = Workspace(load_settings({}, {"home": home, "host": "box-1"}).settings)
    daemon = start_daemon(home)
    try:
        wait_for("the daemon's start", lambda: lifecycle_events(ws))
        wait_for("the daemon alive", lambda: daemon_check(ws)["saw"].startswith("alive on box-1"))
        wait_for("its first tick", lambda: "AgentsConfigured" in [r.type for r in queries.replay(ws)])
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()  # reaped, its pipe closed: nothing leaks into the next test
    assert daemon.returncode == 0 and "Traceback" not in err, err
    kinds = [(kind, data["pid"], data.get("reason")) for kind, data in lifecycle_events(ws)]
    assert kinds == [("DaemonStarted", daemon.pid, None), ("DaemonStopped", daemon.pid, "SIGTERM")]
    assert [row["event"] for row in outbox(ws)] == ["daemon.started", "daemon.stopped"]
    assert daemon_check(ws)["status"] == "healthy"

    killed = start_daemon(home)
    try:
        wait_for("the second daemon's start", lambda: len(lifecycle_events(ws)) == 3)
        wait_for("the second daemon alive", lambda: f"pid {killed.pid}" in daemon_check(ws)["saw"])
        killed.kill()  # SIGKILL: no stop recorded
        killed.communicate(timeout=60)
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.communicate()
    check = daemon_check(ws)
    assert check["status"] == "degraded" and f"pid {killed.pid}" in check["saw"], check
    assert [kind for kind, _ in lifecycle_events(ws)][-1] == "DaemonStarted"
    assert queries.verify_log(ws).ok
    ws.close()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc")
def test_a_daemon_that_cannot_record_its_stop_says_so(tmp_path):
    """Its writes failing (here: the database held by another writer past the busy
    timeout), it said `stopped`, exit 0, and health later called it killed."""
    home = tmp_path / "home"
    new_workspace(home, [{"agentName": "ann", "agentType": "dev"}]).close()
    (home / "sched.toml").write_text("busy_timeout_ms = 300\n")
    ws = Workspace(load_settings({}, {"home": home, "host": "box-1"}).settings)
    daemon = start_daemon(home)
    holder = sqlite3.connect(ws.settings.db_path, isolation_level=None)
    try:
        wait_for("the daemon's start", lambda: lifecycle_events(ws))
        # (its start is recorded before its supervisor is forked: wait until it ticks)
        wait_for("its first tick", lambda: "AgentsConfigured" in [r.type for r in queries.replay(ws)])
        holder.execute("BEGIN IMMEDIATE")  # every write waits 300 ms, then gives up
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    finally:
        holder.close()
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0 and "Traceback" not in err, err
    lines = err.splitlines()
    said = "could not record the stop (health will say it recorded no stop)"
    assert any(said in line for line in lines), err
    assert lines[-1].endswith("sched daemon: stopped")
    assert [kind for kind, _ in lifecycle_events(ws)] == ["DaemonStarted"]
    ws.close()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc")
@pytest.mark.parametrize("change", ["tables rebuilt", "newer event"])
def test_a_daemon_stops_exit_1_once_another_version_of_sched_changed_the_database(tmp_path, change):
    """A daemon left running while a newer sched rebuilt the projection tables (or wrote
    an event of a newer version) failed at every tick, `retrying every tick`, for as long
    as it ran: no retry could mend it, and under systemd nothing started the installed
    version in its place. It says why and exits 1."""
    from eventlog.store import chain_hash
    from projections.views import PROJECTION_SCHEMA, SHAPE_KEY

    home = tmp_path / "home"
    new_workspace(home, [{"agentName": "ann", "agentType": "dev"}]).close()
    ws = Workspace(load_settings({}, {"home": home, "host": "box-1"}).settings)
    daemon = start_daemon(home)
    try:
        wait_for("its first tick", lambda: "AgentsConfigured" in [r.type for r in queries.replay(ws)])
        ws.close()
        with closing(sqlite3.connect(ws.settings.db_path)) as conn, conn:
            if change == "tables rebuilt":  # (the shape a newer sched's refold writes)
                conn.execute("UPDATE projection_meta SET value = ? WHERE key = ?",
                             (str(PROJECTION_SCHEMA + 1), SHAPE_KEY))
            else:  # appended, chain and all, by a sched whose TaskSubmitted is of version 99
                seq, prev = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
                at, data = "2026-01-01T00:00:00.000000Z", "{}"
                conn.execute("INSERT INTO events VALUES (?, 'task-1', 'TaskSubmitted', 99, ?, ?, ?, ?)",
                             (seq + 1, at, data, prev,
                              chain_hash(prev, seq + 1, "task-1", "TaskSubmitted", 99, at, data)))
        _, err = daemon.communicate(timeout=60)  # (no signal: it stops by itself)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 1 and "Traceback" not in err, err
    lines = err.splitlines()
    said = ("its projection tables are not of this sched's shape" if change == "tables rebuilt"
            else "has schema_version 99, newer than this sched understands")
    (failed,) = [line for line in lines if line.startswith("tick failed: ")]
    assert said in failed and failed.endswith("(stopping: this daemon can record nothing more)"), err
    assert lines[-1] == "sched daemon: stopped (exit 1)", err


def test_a_daemon_started_on_projections_of_a_newer_sched_exits_1_with_one_line(tmp_path):
    """Before it records anything (the command opens the database first), with the line
    of any command."""
    from projections.views import PROJECTION_SCHEMA

    home = tmp_path / "home"
    new_workspace(home, [{"agentName": "ann", "agentType": "dev"}]).close()
    with closing(sqlite3.connect(home / "sched.db")) as conn, conn:
        conn.execute("UPDATE projection_schema SET version = ?", (PROJECTION_SCHEMA + 1,))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    done = subprocess.run([sys.executable, "-m", "cli", "run", "--home", str(home), "--host", "box-1"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"sched: {home / 'sched.db'}: its projections were made by a newer sched (projection schema "
        f"{PROJECTION_SCHEMA + 1}; this one knows {PROJECTION_SCHEMA}): upgrade sched; to go back to this "
        "version on purpose, stop every process of the newer one and run `sched rebuild`"]


def test_a_daemon_whose_start_meets_another_versions_tables_stops_at_once(make_workspace, monkeypatch):
    """Other failures to record the start are retried before a later tick (a full disk);
    tables another version changed between the command's open and the record are not."""
    from eventlog.errors import ProjectionsChanged
    from scheduler.daemon import run
    from scheduler.daemon.log import DaemonLog

    def changed(_ws: Workspace, _interval: float) -> None:
        raise ProjectionsChanged("its projection tables are not of this sched's shape")

    monkeypatch.setattr(run, "record_start", changed)
    lines: list[str] = []
    with pytest.raises(ProjectionsChanged):
        run.run_daemon(make_workspace(host="box-1"), 0.2, DaemonLog(lines.append))
    assert lines == []  # (the command prints its one line, exit 1)


def daemon_in_this_process(ws: Workspace, operator: Callable[[Workspace, list[str]], None]) -> list[str]:
    """Run `sched run`'s daemon over `ws` (its clock the system's, ticking every 0.2 s) in
    this process's main thread, where it takes its signals, while `operator(other,
    lines)` acts in a thread of its own, through a workspace of its own (`other`),
    reading the daemon's log as it grows (`lines`); then stop it with SIGTERM. The lines."""
    from scheduler.clock import SystemClock
    from scheduler.daemon import run
    from scheduler.daemon.log import DaemonLog

    ws.clock = SystemClock()  # (the jobs' first run is the daemon's start, by its clock)
    other, lines = Workspace(ws.settings), []

    def acting() -> None:
        try:
            operator(other, lines)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=acting)
    helper.start()
    try:
        assert run.run_daemon(ws, 0.2, DaemonLog(lines.append)) == 0
    finally:
        helper.join()
        other.close()
    return lines


def test_a_sigterm_in_the_middle_of_a_tick_lets_the_tick_finish_then_stops(make_workspace, monkeypatch):
    """The signal handler only notes the signal, and the main thread stops the scheduler,
    which waits for the tick under way (a shutdown inside the handler could wait for a
    lock the interrupted thread held, and hang). The signal comes here while the first
    tick is held inside, after its start; the tick then goes on, and records its work
    before the daemon records its stop."""
    from scheduler.daemon import run
    from scheduler.submit import TaskSpec, submit

    ws = make_workspace(host="box-1")
    (task,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    log: list[list[str]] = []
    in_tick = threading.Event()
    real_tick = run.tick

    def held(ws: Workspace, **kwargs: object) -> object:
        if not in_tick.is_set():
            in_tick.set()
            wait_for("the signal to be taken", lambda: log and any(
                line.startswith("received SIGTERM") for line in log[0]))
        return real_tick(ws, **kwargs)

    monkeypatch.setattr(run, "tick", held)

    def operator(other: Workspace, lines: list[str]) -> None:
        log.append(lines)
        wait_for("the first tick", in_tick.is_set)  # (then SIGTERM, in the middle of it)

    lines = daemon_in_this_process(ws, operator)
    said = [line.split(":")[0] for line in lines]
    assert said == ["sched daemon", "received SIGTERM", "tick", "sched daemon"], lines
    assert lines[2].startswith("tick: assigned 1,") and lines[3] == "sched daemon: stopped", lines
    with ws.read() as (store, _views):
        kinds = [r.type for r in store.read()]
    assert kinds.index("TaskAssigned") < kinds.index("DaemonStopped"), kinds
    assert queries.show(ws, task.task_id)[0].status == "assigned"


def test_a_daemon_goes_on_ticking_when_the_system_clock_goes_back(make_workspace, monkeypatch):
    """APScheduler waits for each job's next time by the system clock: after the clock
    went back an hour, the daemon ticked again only an hour later, and said nothing (a
    QA drill with libfaketime). It notices the step within a second, says so, and ticks."""
    from datetime import datetime, timedelta

    from apscheduler.executors import base as executors
    from apscheduler.schedulers import base

    from scheduler.daemon import run
    from scheduler.submit import TaskSpec, submit

    shift = [timedelta(0)]

    class Shifted(datetime):  # the system clock as APScheduler and the daemon read it
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime.now(tz) + shift[0]

    monkeypatch.setattr(base, "datetime", Shifted)
    monkeypatch.setattr(executors, "datetime", Shifted)  # (its check of a late run)
    monkeypatch.setattr(run, "datetime", Shifted)
    assigned: list[bool] = []

    def operator(other: Workspace, lines: list[str]) -> None:
        wait_for("the daemon to start", lambda: any("ticking every" in line for line in lines))
        shift[0] = timedelta(hours=-1)
        (task,) = submit(other, [TaskSpec(queue="dev", title="after the step")])
        deadline = time.monotonic() + 10  # (an hour, before: no tick came)
        while queries.show(other, task.task_id)[0].status != "assigned" and time.monotonic() < deadline:
            time.sleep(0.05)
        assigned.append(queries.show(other, task.task_id)[0].status == "assigned")

    lines = daemon_in_this_process(make_workspace(host="box-1"), operator)
    assert assigned == [True], lines
    assert any(re.fullmatch(r"the system clock went back 36\d\d s: the ticks go on now .*", line)
               for line in lines), lines


def test_a_start_that_could_not_be_recorded_is_recorded_before_a_later_tick(make_workspace, monkeypatch):
    """A daemon started on a full disk logged `could not record the start`, and health
    said `no daemon alive (none running ...)` for as long as it ran, even once the disk
    had room (a QA drill): the start is recorded before the first tick that can."""
    from eventlog.errors import DatabaseFault
    from scheduler.daemon import run

    real = run.record_start
    calls: list[int] = []

    def full_disk_at_first(ws: Workspace, interval: float) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise DatabaseFault("the disk is full")
        return real(ws, interval)

    monkeypatch.setattr(run, "record_start", full_disk_at_first)
    seen: list[str] = []

    def operator(other: Workspace, lines: list[str]) -> None:
        wait_for("the start to be recorded", lambda: any("recorded the daemon's start" in line
                                                         for line in lines))
        (daemon,) = [c for c in health(other)["checks"] if c["name"] == "daemon"]
        seen.append(daemon["saw"])

    ws = make_workspace(host="box-1")
    lines = daemon_in_this_process(ws, operator)
    assert lines[0] == "could not record the start: the disk is full (recorded before a later tick)"
    assert lines[2] == "recorded the daemon's start (it could not be recorded when it started)", lines
    assert len(seen) == 1 and seen[0].startswith(f"alive on box-1 (pid {os.getpid()}) since "), seen
    with ws.read() as (log, _views):
        recorded = [r.type for r in log.read() if r.type.startswith("Daemon")]
    assert recorded == ["DaemonStarted", "DaemonStopped"]


def test_the_daemon_says_when_assignment_stops_and_starts_again(make_workspace):
    """A pause and a closed gate left the daemon's log silent (a soak run): nothing was
    assigned, and nothing said why. It says so once when each begins and when it ends."""
    from scheduler import operator
    from scheduler.config.settings import load_settings
    from scheduler.daemon.log import DaemonLog
    from scheduler.daemon.run import tick_job

    ws = make_workspace()
    up = ws.settings.home / "database-is-up"
    (ws.settings.home / "sched.toml").write_text(f'[queues.dev]\ngate = ["test", "-e", "{up}"]\n'
                                                  "gate_cache_seconds = 1\n")
    ws.settings = load_settings({}, {"home": ws.settings.home}).settings
    lines: list[str] = []
    one_tick = tick_job(ws, DaemonLog(lines.append), 10.0)

    def said(step: Callable[[], object] = lambda: None) -> list[str]:
        step()
        ws.clock.advance(2)  # (past the gate's cache)
        before = len(lines)
        one_tick()
        return [line for line in lines[before:] if not line.startswith("tick: ")]

    assert said() == ["gate dev closed: assigning nothing from it"]
    assert said() == []  # once
    assert said(lambda: operator.pause(ws, "kim", "deploy")) == ["paused by kim (deploy): assigning nothing"]
    assert said(up.touch) == ["gate dev open again: assigning from it"]
    assert said(lambda: operator.resume(ws, "kim")) == ["resumed: assigning again"]
    assert said() == []


class DyingStarter:
    """A supervisor found gone by a tick (as `Launcher._check_alive` finds it), in a
    tick whose write then fails (`fail`: a full disk at its commit)."""

    def __init__(self, fail: bool) -> None:
        self.alive, self.fail = True, fail

    def landed(self, views):
        return []

    def unsure(self, handover):
        pass

    def start_in(self, ws, recorder, task_ids, granted_at):
        from eventlog.errors import DatabaseFault
        from scheduler.runner.spawn import LauncherGone

        self.alive = False
        if self.fail:
            raise DatabaseFault("database or disk is full")
        raise LauncherGone("the sched supervisor (pid 4242) is gone")


@pytest.mark.parametrize("fail", [True, False])
def test_a_supervisor_found_gone_by_a_failed_tick_is_still_said(make_workspace, fail):
    """A supervisor that died was named only in the report of the tick that found it: when
    that tick failed, no line ever said it, and later ticks started `sched exec`
    wrappers silently (a recovery drill with a full disk)."""
    from scheduler.daemon.log import DaemonLog
    from scheduler.daemon.run import SUPERVISOR_GONE, tick_job
    from scheduler.submit import TaskSpec, submit

    ws = make_workspace([{"agentName": "p", "agentType": "dev", "maxConcurrency": 1, "command": ["true"]}])
    submit(ws, [TaskSpec(queue="dev", title="t")])
    ws.starter = DyingStarter(fail)
    wrappers: list[int] = []
    ws.launcher = lambda _settings, task_id: wrappers.append(task_id)  # `sched exec`, not started here
    lines: list[str] = []
    tick_job(ws, DaemonLog(lines.append), 10.0)()
    if fail:
        assert lines == ["tick failed: database or disk is full (retrying every tick)", SUPERVISOR_GONE]
    else:  # the tick's own line says it, once, and its wrapper starts the attempt
        (line,) = lines
        assert re.fullmatch(r"tick: assigned 1, started 1, recorded a new control file, the sched "
                            r"supervisor \(pid 4242\) is gone \(\d+ ms\)", line), line
        assert wrappers == [1]


def test_leases_a_tick_grants_hold_from_after_its_gates(make_workspace, monkeypatch):
    """The tick read the lease clock before running the queue gates: gates that took long
    (each up to gate_timeout_seconds) left the supervisor counting a lease that was over,
    in its eyes, before its attempt started (a review)."""
    from scheduler import tick as tick_module
    from scheduler.submit import TaskSpec, submit
    from scheduler.tick import tick

    clock = [1000.0]
    monkeypatch.setattr(tick_module, "lease_clock", lambda: clock[0])

    def slow_gates(ws, now):  # two gates that each ran into a 20 s timeout
        clock[0] += 40.0
        return {}

    monkeypatch.setattr(tick_module, "run_due_gates", slow_gates)

    class Recording:
        alive = True

        def __init__(self) -> None:
            self.granted: list[float] = []

        def landed(self, views):
            return []

        def start_in(self, ws, recorder, task_ids, granted_at):
            self.granted.append(granted_at)
            return []

        def go(self, handover):
            pass

    ws = make_workspace([{"agentName": "p", "agentType": "dev", "maxConcurrency": 1, "command": ["true"]}])
    submit(ws, [TaskSpec(queue="dev", title="t")])
    ws.starter = starter = Recording()
    tick(ws)
    assert starter.granted == [1040.0]
