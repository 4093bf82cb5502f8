"""The daemon's supervisor process, with real processes: it runs the attempts the
daemon's ticks start, is never stopped with one of them, and its attempts outlive the
daemon exactly as `sched exec` processes do."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import scheduler.tick
from eventlog.errors import DatabaseFault
from scheduler.clock import ManualClock, SystemClock
from scheduler.config.settings import load_settings
from scheduler.reads import queries
from scheduler.runner import containment
from scheduler.runner.launcher import SUPERVISOR_NAME, Launcher
from scheduler.submit import TaskSpec, submit
from scheduler.tick import pid_alive, tick
from scheduler.workspace import Workspace
from tests.conftest import new_workspace, wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process names and /proc")

# waits for the file its payload names, then succeeds
AGENT = """
import json, os, pathlib, time
workdir = pathlib.Path(os.environ["SCHED_WORKDIR"])
(workdir / "agent.pid").write_text(str(os.getpid()))
release = pathlib.Path(json.load(open(os.environ["SCHED_PAYLOAD_FILE"]))["release"])
deadline = time.monotonic() + 120
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.02)
print(json.dumps({"released": release.exists()}))
"""


def started(ws: Workspace, task_id: int) -> dict | None:
    for rec in reversed(queries.show(ws, task_id)[1]):
        if rec.type == "TaskStarted":
            return json.loads(rec.data)
    return None


def agent_pid(workdir: str) -> int | None:
    path = Path(workdir) / "agent.pid"
    return int(path.read_text()) if path.exists() and path.read_text() else None


def start_daemon(home: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    return subprocess.Popen([sys.executable, "-m", "cli", "run", "--interval", "0.2", "--home", str(home),
                             "--host", "h1"], env=env, stderr=subprocess.PIPE, text=True)


def stop_daemon(daemon: subprocess.Popen[str]) -> str:
    daemon.send_signal(signal.SIGTERM)
    _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    return err


@pytest.fixture
def running(tmp_path):
    """A daemon that started one waiting push agent: (workspace, task id, its
    TaskStarted, the agent's pid, the release file, the daemon)."""
    script = tmp_path / "wait.py"
    script.write_text(AGENT)
    agents = [{"agentName": "w1", "agentType": "dev", "maxConcurrency": 1,
               "command": [sys.executable, str(script)]}]
    ws = new_workspace(tmp_path / "home", agents)
    release = tmp_path / "release"
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="wait", payload={"release": str(release)})])
    ws.close()
    daemon = start_daemon(ws.settings.home)
    try:
        ws = Workspace(load_settings({}, {"home": ws.settings.home, "host": "h1"}).settings)
        event = wait_for("the attempt to start", lambda: started(ws, sub.task_id))
        pid = wait_for("the agent to run", lambda: agent_pid(event["workdir"]))
        yield ws, sub.task_id, event, pid, release, daemon
    finally:
        release.touch()
        if daemon.poll() is None:
            daemon.kill()
        daemon.communicate()
        ws.close()


def test_the_supervisor_runs_the_attempt_and_outlives_the_daemon_until_its_end(running):
    ws, task_id, event, agent, release, daemon = running
    supervisor = event["pid"]
    # forked from the daemon, not a new interpreter; named for what it does
    cmdline = Path(f"/proc/{supervisor}/cmdline").read_bytes().split(b"\0")
    assert b"run" in cmdline and b"exec" not in cmdline
    assert Path(f"/proc/{supervisor}/comm").read_text().strip() == SUPERVISOR_NAME
    # it supervises every attempt of the host: stopping one attempt never stops it
    ref = containment.AttemptRef.of(task_id, event["attempt"], ws.settings.database_label, supervisor,
                                    workdir=event["workdir"])
    assert not containment.is_wrapper_of(supervisor, ref)
    assert containment.members(ref) == [agent]

    # no other process has the database open when the daemon stops: its last close must
    # not take the write-ahead log from under the supervisor's connection
    ws.close()
    err = stop_daemon(daemon)
    assert "Traceback" not in err
    assert pid_alive(supervisor) and pid_alive(agent)  # the attempt goes on without the daemon
    release.touch()
    wait_for("the supervisor to record the success",
             lambda: queries.show(ws, task_id)[0].status == "succeeded")
    done = [json.loads(rec.data) for rec in queries.show(ws, task_id)[1] if rec.type == "TaskSucceeded"]
    assert done[0]["result"] == {"released": True}
    wait_for("the supervisor to exit after its last attempt", lambda: not pid_alive(supervisor))
    log = (ws.settings.home / "logs" / "exec.log").read_text()
    assert f"task {task_id}: succeeded (exit 0)" in log


def test_a_tick_taking_back_an_expired_attempt_stops_its_agent_and_the_supervisor_lets_it_go(running):
    ws, task_id, event, agent, _release, daemon = running
    stop_daemon(daemon)
    supervisor = event["pid"]
    # a tick on the supervisor's host, at a time past the lease: the attempt is taken back
    # and its processes stopped
    clock = ManualClock(ws.clock.now() + timedelta(seconds=ws.settings.lease_seconds * 3))
    later = Workspace(ws.settings, clock=clock)
    try:
        dry = tick(later, dry_run=True)  # says it would take the attempt back, stops nothing
        assert {"task_id": task_id, "agent": "w1", "reason": "lease_expired"} in dry.expired
        assert pid_alive(agent) and queries.show(ws, task_id)[0].status == "running"
        report = tick(later)
    finally:
        later.close()
    assert {"task_id": task_id, "agent": "w1", "reason": "lease_expired"} in report.expired
    assert not pid_alive(agent)
    assert queries.show(ws, task_id)[0].status in {"queued", "assigned"}
    # the supervisor finds its attempt no longer current: nothing recorded, and it exits
    wait_for("the supervisor to exit", lambda: not pid_alive(supervisor))
    log = (ws.settings.home / "logs" / "exec.log").read_text()
    assert f"task {task_id}: lost" in log
    assert [r.type for r in queries.show(ws, task_id)[1]].count("TaskFailed") == 0


@contextlib.contextmanager
def supervising(ws: Workspace) -> Iterator[Launcher]:
    """`ws` made to start its ticks' push attempts through a launcher of this process, as
    a daemon's ticks do (on the system's clock), until the block ends."""
    ws.clock = SystemClock()
    launcher = Launcher(ws.settings, ws.clock)
    launcher.start()
    ws.starter = launcher
    try:
        yield launcher
    finally:
        launcher.close()
        ws.close()


@pytest.fixture
def launched(tmp_path):
    """A workspace whose ticks start push attempts through a launcher of this process
    (as a daemon's do), and the launcher."""
    agents = [{"agentName": f"q{i}", "agentType": "dev", "maxConcurrency": 1,
               "command": [sys.executable, "-c", "print('[1, 2]')"]} for i in range(3)]
    ws = new_workspace(tmp_path / "home", agents)
    with supervising(ws) as launcher:
        yield ws, launcher


def test_a_tick_assigns_and_starts_in_one_commit_and_the_wrappers_finish_the_work(launched):
    ws, _launcher = launched
    subs = submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(3)])
    report = tick(ws)
    assert sorted(report.spawned) == [s.task_id for s in subs]
    for sub in subs:
        events = [rec.type for rec in queries.show(ws, sub.task_id)[1]]
        assert events[:3] == ["TaskSubmitted", "TaskAssigned", "TaskStarted"]
    for sub in subs:
        wait_for("the wrapper to record the result",
                 lambda sub=sub: queries.show(ws, sub.task_id)[0].status == "succeeded")
        done = [json.loads(r.data) for r in queries.show(ws, sub.task_id)[1] if r.type == "TaskSucceeded"]
        assert done[0]["result"] == [1, 2]


def test_the_start_delay_counts_from_the_time_the_start_records(launched, monkeypatch):
    # the tick's planning takes 0.3 s after it read the time its TaskStarted records:
    # the command ran at least that long after the recorded start, and the delay says so
    import scheduler.tick

    ws, _launcher = launched
    slow = 0.3
    real_plan = scheduler.tick.gather_and_plan

    def slow_plan(*args, **kwargs):
        decisions = real_plan(*args, **kwargs)
        time.sleep(slow)  # (the planning of a big tick, not a wait for anything)
        return decisions

    monkeypatch.setattr(scheduler.tick, "gather_and_plan", slow_plan)
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    assert tick(ws).spawned == [sub.task_id]
    wait_for("the attempt to succeed", lambda: queries.show(ws, sub.task_id)[0].status == "succeeded")
    (done,) = [json.loads(r.data) for r in queries.show(ws, sub.task_id)[1] if r.type == "TaskSucceeded"]
    assert slow <= done["start_delay_seconds"] < slow + 5


def test_a_tick_that_fails_before_its_commit_hands_nothing_over(launched, monkeypatch):
    ws, _launcher = launched
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    handed: list[object] = []

    def note_tick(*_args):
        raise RuntimeError("the disk is gone")  # after the starts, before the commit

    monkeypatch.setattr(Launcher, "go", lambda self, handover: handed.append(handover))
    monkeypatch.setattr("scheduler.tick.note_tick", note_tick)
    with pytest.raises(RuntimeError):
        tick(ws)
    assert handed == []
    assert queries.show(ws, sub.task_id)[0].status == "queued"  # nothing was committed


def test_attempts_never_handed_over_are_taken_back_by_the_next_tick(launched, monkeypatch):
    ws, launcher = launched
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    monkeypatch.setattr(Launcher, "go", lambda self, handover: launcher.close())  # the daemon dies
    tick(ws)
    started = [json.loads(rec.data) for rec in queries.show(ws, sub.task_id)[1] if rec.type == "TaskStarted"]
    wait_for("the idle supervisor to exit", lambda: not pid_alive(started[0]["pid"]))
    ws.starter = None
    report = tick(ws)
    assert {"task_id": sub.task_id, "agent": started[0]["agent"], "reason": "wrapper_gone"} in report.expired


def test_attempts_whose_commit_was_lost_in_the_answer_are_handed_over_by_the_next_tick(launched, monkeypatch):
    """The connection fails during COMMIT, after the server committed: the tick cannot
    know its attempts were started. The next tick reads the log and hands over those it
    finds started (before, they waited out their lease, their supervisor alive and
    never told)."""
    ws, _launcher = launched
    subs = submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(2)])
    real_write = ws.write

    @contextlib.contextmanager
    def answer_lost(*, commit=True, prefetch=()):
        with real_write(commit=commit, prefetch=prefetch) as recorder:
            yield recorder  # committed ...
        raise DatabaseFault("the connection failed while committing")  # ... and not told

    with monkeypatch.context() as patched:
        patched.setattr(ws, "write", answer_lost)
        with pytest.raises(DatabaseFault):
            tick(ws)
    assert {queries.show(ws, s.task_id)[0].status for s in subs} == {"running"}
    report = tick(ws)
    assert sorted(report.spawned) == sorted(s.task_id for s in subs)
    for sub in subs:
        wait_for("the attempt to succeed",
                 lambda sub=sub: queries.show(ws, sub.task_id)[0].status == "succeeded")
        events = [rec.type for rec in queries.show(ws, sub.task_id)[1]]
        assert events == ["TaskSubmitted", "TaskAssigned", "TaskStarted", "TaskSucceeded"]
    assert tick(ws).spawned == []  # handed over once


def test_attempts_whose_commit_failed_are_not_handed_over_later(launched, monkeypatch):
    """A transaction that failed before its COMMIT started nothing: its attempts are
    forgotten, and the next tick starts the task afresh, once."""
    ws, _launcher = launched
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])

    def note_tick(*_args):
        raise DatabaseFault("the connection failed while committing")  # and nothing was committed

    with monkeypatch.context() as patched:
        patched.setattr(scheduler.tick, "note_tick", note_tick)
        with pytest.raises(DatabaseFault):
            tick(ws)
    handed: list[int] = []
    real_go = Launcher.go

    def go(self, handover):
        handed.extend(attempt.task_id for _, attempt in handover)
        real_go(self, handover)

    monkeypatch.setattr(Launcher, "go", go)
    report = tick(ws)  # assigns and starts the task afresh: one attempt, handed over once
    assert report.spawned == handed == [sub.task_id]
    wait_for("the attempt to succeed", lambda: queries.show(ws, sub.task_id)[0].status == "succeeded")
    assert queries.show(ws, sub.task_id)[0].attempt == 1


def test_a_supervisor_found_gone_is_collected_not_left_a_zombie(tmp_path, monkeypatch):
    """Its connection closed while it still ended: the daemon went on with `sched exec`
    wrappers and left it a zombie (`<defunct>`) until the daemon stopped."""
    from scheduler.runner.spawn import LauncherGone

    ws = new_workspace(tmp_path / "home")
    launcher = Launcher(ws.settings, ws.clock)
    launcher.start()
    pid = launcher.pid
    try:
        os.kill(pid, signal.SIGTERM)
        wait_for("the supervisor to close its connection", lambda: launcher._conn.poll())
        with monkeypatch.context() as patch:
            patch.setattr(containment, "alive", lambda _pid: True)  # seen while it still ends
            with pytest.raises(LauncherGone, match=f"the sched supervisor \\(pid {pid}\\) is gone"):
                launcher._check_alive()
        wait_for("the supervisor to be collected", lambda: not Path(f"/proc/{pid}").exists())
    finally:
        launcher.close()
        ws.close()


def test_a_stopping_supervisor_is_handed_no_new_attempt(tmp_path):
    """SIGTERM to the supervisor alone: while it stops its attempts (an agent that
    ignores SIGTERM holds it for the kill grace), the daemon's ticks start the next
    attempts in `sched exec` wrappers; before, they were handed to the stopping
    supervisor, never started, and taken back later as their wrapper gone."""
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(
        "import os, pathlib, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path(os.environ['SCHED_WORKDIR'], 'agent.pid').write_text(str(os.getpid()))\n"
        "time.sleep(120)\n")
    agents = [{"agentName": "s1", "agentType": "slow", "maxConcurrency": 1,
               "command": [sys.executable, str(stubborn)]},
              {"agentName": "q1", "agentType": "dev", "maxConcurrency": 1,
               "command": [sys.executable, "-c", "print('[1, 2]')"]}]
    ws = new_workspace(tmp_path / "home", agents, kill_grace_seconds=10)
    with supervising(ws) as launcher:
        (slow,) = submit(ws, [TaskSpec(queue="slow", title="holds the supervisor")])
        assert tick(ws).spawned == [slow.task_id]
        wait_for("the slow agent to run", lambda: agent_pid(started(ws, slow.task_id)["workdir"]))
        os.kill(launcher.pid, signal.SIGTERM)
        # (its end closed: the connection reads as ready, at EOF)
        wait_for("the supervisor to close its connection", lambda: launcher._conn.poll())
        (quick,) = submit(ws, [TaskSpec(queue="dev", title="next")])
        assert tick(ws).spawned == [quick.task_id]
        wait_for("the next task to succeed", lambda: queries.show(ws, quick.task_id)[0].status == "succeeded")
        assert started(ws, quick.task_id)["pid"] != launcher.pid  # a `sched exec` wrapper ran it


def test_a_log_that_cannot_be_opened_is_said_once_and_the_attempts_run_all_the_same(tmp_path, capfd):
    """On a read-only home the supervisor died making `logs/`, with a traceback on the
    daemon's stderr (a QA drill): it says so in one line and supervises without a log."""
    ws = new_workspace(tmp_path / "home", [{"agentName": "q1", "agentType": "dev", "maxConcurrency": 1,
                                            "command": [sys.executable, "-c", "print('[1, 2]')"]}])
    (ws.settings.home / "logs").write_text("a file where the folder of logs would be\n")
    with supervising(ws):
        (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
        assert tick(ws).spawned == [sub.task_id]
        wait_for("the supervisor to record the result",
                 lambda: queries.show(ws, sub.task_id)[0].status == "succeeded")
    err = capfd.readouterr().err
    assert err.splitlines() == [f"sched supervisor: cannot write {ws.settings.home.resolve()}/logs/exec.log "
                                "(File exists): its lines are dropped"], err
