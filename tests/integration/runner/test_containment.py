"""Nothing of an attempt outlives it, with real processes: an agent whose grandchildren
ignore SIGTERM, or leave with `setsid()` and a double fork, leaves nothing behind
when its wrapper is stopped (SIGTERM), killed (SIGKILL) or its agent simply exits;
and the retry starts only once every process of the old attempt is gone. Each case
runs with the attempt's processes in a control group (where cgroup v2 is writable) and
without one (found by their environment marks and the wrapper's subreaper).

The grandchildren append "PID TIME" to a file every few milliseconds until they are
killed: a line written after the attempt was recorded as ended would be a leftover at
work beside the retry."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from scheduler.reads import queries
from scheduler.runner import containment
from scheduler.runner.spawn import exec_argv
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from tests.conftest import wait_for
from tests.integration.runner.test_exec import agent_script, finished, push_workspace, status_of

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc")


def cgroups_work() -> bool:
    group = containment.create_cgroup(containment.AttemptRef.of(1, 1, Path("probe.db")))
    if group is None:
        return False
    group.rmdir()
    return True


CONTAINMENT = [
    pytest.param("cgroup", marks=pytest.mark.skipif(not cgroups_work(), reason="no writable cgroup v2")),
    "fallback",
]

# Attempt 1 starts two grandchildren that ignore SIGTERM and write beats until killed:
# one stays in the agent's process group, the other calls setsid() between two forks
# (it is nobody's child once the middle process exits). Then the agent waits for both
# to have written, and either exits 0 ("exit" mode) or sleeps on. Later attempts print
# their attempt number as the result.
LEFTOVERS = """
import os, signal, sys, time
beats, mode, contained = sys.argv[1], sys.argv[2], sys.argv[3]

def beat_forever():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        stamp = time.time()
        with open(beats, "a") as f:
            f.write(f"{os.getpid()} {stamp!r}\\n")
        time.sleep(0.005)

if os.environ["SCHED_ATTEMPT"] != "1":
    print('{"attempt": %s}' % os.environ["SCHED_ATTEMPT"])
    sys.exit(0)
# the wrapper moves the agent into its control group just after starting it: on a busy
# machine that can come after a quick agent forked (whose children the marks and the
# process group still find); this test is about the group, so it forks once inside
while contained == "cgroup" and "/task-" not in open("/proc/self/cgroup").read():
    time.sleep(0.001)
if os.fork() == 0:
    beat_forever()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        beat_forever()
    os._exit(0)
os.wait()  # the middle process of the double fork
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while len({line.split()[0] for line in open(beats)} if os.path.exists(beats) else ()) < 2:
    time.sleep(0.01)
open("both-beating", "w").close()
if mode == "exit":
    print('{"left": "two grandchildren"}')
    sys.exit(0)
time.sleep(600)
"""


def beats_of(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [(int(p), float(t)) for p, t in lines if p and t]  # a line cut by SIGKILL is skipped


def attempt_processes(db: Path, task_id: int, attempt: int) -> list[int]:
    """Live processes whose environment marks them as this attempt's (scanned here,
    independently of the code under test)."""
    marks = {b"SCHED_DB=" + str(db.resolve()).encode(), f"SCHED_TASK_ID={task_id}".encode(),
             f"SCHED_ATTEMPT={attempt}".encode()}
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = set((proc / "environ").read_bytes().split(b"\0"))
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marks <= env and state not in ("Z", "X"):
            found.append(int(proc.name))
    return found


def events(ws, task_id: int, kind: str) -> list:
    return [r for r in queries.show(ws, task_id)[1] if r.type == kind]


def started(ws, task_id: int, attempt: int) -> dict | None:
    return next((json.loads(r.data) for r in events(ws, task_id, "TaskStarted")
                 if json.loads(r.data)["attempt"] == attempt), None)


def ending_of_attempt(ws, task_id: int, attempt: int) -> datetime:
    """When the end of the attempt (TaskFailed, LeaseExpired, TaskSucceeded) was recorded."""
    for rec in queries.show(ws, task_id)[1]:
        ends = rec.type in ("TaskFailed", "LeaseExpired", "TaskSucceeded")
        if ends and json.loads(rec.data)["attempt"] == attempt:
            return rec.at
    raise AssertionError(f"attempt {attempt} of task {task_id} has not ended")


def leftover_workspace(tmp_path: Path, contained: str, mode: str, **settings):
    argv = agent_script(tmp_path, "leftovers", LEFTOVERS)
    beats = tmp_path / "beats"
    if contained == "fallback":
        settings["exec_cgroups"] = False
    ws = push_workspace(tmp_path, {"ann": [*argv, str(beats), mode, contained]}, backoff_base_seconds=0,
                        kill_grace_seconds=0.3, **settings)
    return ws, beats


def check_contained_start(ws, task_id: int, contained: str) -> dict:
    first = started(ws, task_id, 1)
    assert first is not None
    if contained == "cgroup":
        assert first["cgroup"] and Path(first["cgroup"]).is_dir()
        members = containment.cgroup_members(Path(first["cgroup"]))
        assert len([p for p in members if containment.alive(p)]) >= 3  # the agent, two grandchildren
    else:
        assert first["cgroup"] is None
    return first


def check_nothing_left(ws, task_id: int, first: dict, beats: Path) -> None:
    """Every process of attempt 1 is gone, its control group too, and none of them
    wrote after attempt 1 was recorded as ended."""
    db = ws.settings.db_path
    old = {pid for pid, _ in beats_of(beats)}
    assert len(old) == 2
    assert attempt_processes(db, task_id, 1) == []
    assert not [p for p in old if p in attempt_processes(db, task_id, 1)]
    if first["cgroup"]:
        assert not Path(first["cgroup"]).exists()
    ended = ending_of_attempt(ws, task_id, 1).timestamp()
    last_write = max(t for _, t in beats_of(beats))
    assert last_write < ended, f"attempt 1 wrote {last_write - ended:.3f} s after it was recorded as ended"


@pytest.mark.parametrize("contained", CONTAINMENT)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_nothing_of_an_attempt_outlives_its_wrapper(tmp_path, contained, sig):
    ws, beats = leftover_workspace(tmp_path, contained, "stay")
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    tick(ws)
    workdir = ws.settings.home / "work" / str(sub.task_id) / "1"
    wait_for("both grandchildren to beat", lambda: (workdir / "both-beating").exists())
    first = check_contained_start(ws, sub.task_id, contained)
    os.kill(first["pid"], sig)
    if sig == signal.SIGTERM:  # the wrapper stops everything and records the failure itself
        wait_for("the wrapper to record attempt 1", lambda: events(ws, sub.task_id, "TaskFailed"))
        failed = json.loads(events(ws, sub.task_id, "TaskFailed")[0].data)
        assert (failed["reason"], failed["signal"]) == ("interrupted", 15)  # not counted
        assert failed["error"] == "stopped: its runner received SIGTERM"
    else:  # it cannot: the next tick on this host does it
        report = wait_for("a tick to notice the dead wrapper", lambda: tick(ws).expired)
        assert report == [{"task_id": sub.task_id, "agent": "ann", "reason": "wrapper_gone"}]
    wait_for("attempt 2 to start", lambda: tick(ws) and started(ws, sub.task_id, 2))
    check_nothing_left(ws, sub.task_id, first, beats)
    wait_for("attempt 2 to finish", finished(ws, sub.task_id))
    assert status_of(ws, sub.task_id) == "succeeded"
    assert json.loads(events(ws, sub.task_id, "TaskSucceeded")[0].data)["result"] == {"attempt": 2}
    assert attempt_processes(ws.settings.db_path, sub.task_id, 2) == []


@pytest.mark.parametrize("contained", CONTAINMENT)
def test_an_agent_that_exits_leaves_no_grandchild_behind(tmp_path, contained):
    ws, beats = leftover_workspace(tmp_path, contained, "exit")
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    tick(ws)
    wait_for("the task to finish", finished(ws, sub.task_id))
    assert status_of(ws, sub.task_id) == "succeeded"
    first = started(ws, sub.task_id, 1)
    assert first is not None and (first["cgroup"] is not None) == (contained == "cgroup")
    assert json.loads(events(ws, sub.task_id, "TaskSucceeded")[0].data)["result"] == {
        "left": "two grandchildren"}
    check_nothing_left(ws, sub.task_id, first, beats)


@pytest.mark.parametrize("contained", CONTAINMENT)
def test_a_wrapper_that_cannot_renew_its_lease_stops_its_agent_before_it_expires(tmp_path, contained):
    # the database is held by another writer for longer than the lease: the wrapper
    # cannot renew it, so it stops its agent by the expiry (a tick on another host
    # could take the task back then, and no stop of ours would reach this host)
    ws, beats = leftover_workspace(tmp_path, contained, "stay", lease_seconds=3)
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    ws.launcher = lambda settings, task_id: None  # the test starts the wrapper itself
    tick(ws)
    wrapper = subprocess.Popen(exec_argv(ws.settings, sub.task_id), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        workdir = ws.settings.home / "work" / str(sub.task_id) / "1"
        wait_for("both grandchildren to beat", lambda: (workdir / "both-beating").exists())
        first = check_contained_start(ws, sub.task_id, contained)
        holder = sqlite3.connect(ws.settings.db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # no heartbeat gets through from now on
        try:
            _, err = wrapper.communicate(timeout=60)
            assert wrapper.returncode == 1, err
            assert attempt_processes(ws.settings.db_path, sub.task_id, 1) == []
            renewals = [json.loads(r.data)["lease_expires_at"]
                        for r in events(ws, sub.task_id, "LeaseRenewed")]
            expiry = datetime.fromisoformat(renewals[-1] if renewals else first["lease_expires_at"])
            last_write = max(t for _, t in beats_of(beats))
            assert last_write < expiry.timestamp(), "the agent outlived its lease"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
    report = wait_for("a tick to take the task back", lambda: tick(ws).expired)
    assert report[0]["task_id"] == sub.task_id
    if first["cgroup"]:
        assert not Path(first["cgroup"]).exists()
    assert "stopped at the lease's expiry" in err


# A process that forks and exits over and over: a new pid every few milliseconds, so a
# kill aimed at the pid just found misses its successor, and a scan of /proc hardly
# ever sees one alive. With "setsid", each one also leaves its process group (only a
# control group holds it then). (Each exited one is a zombie until init collects it:
# a few dozen here.)
EVADER = """
import os, sys, time
beats, setsid = sys.argv[1], sys.argv[2] == "setsid"
while True:
    if os.fork():
        os._exit(0)
    if setsid:
        os.setsid()
    with open(beats, "a") as f:
        f.write(f"{os.getpid()} {time.time()!r}\\n")
    time.sleep(0.003)
"""


@pytest.mark.parametrize("contained", CONTAINMENT)
def test_stop_attempt_catches_a_process_that_forks_while_it_is_killed(tmp_path, contained):
    db = tmp_path / "sched.db"
    ref = containment.AttemptRef.of(7, 1, db)
    group = containment.create_cgroup(ref) if contained == "cgroup" else None
    ref = containment.AttemptRef.of(7, 1, db, cgroup=str(group) if group else None)
    beats = tmp_path / "beats"
    script = tmp_path / "evader.py"
    script.write_text(EVADER)
    env = {**os.environ, **ref.marks()}

    def join() -> None:
        if group is not None:
            containment.join_cgroup(str(group))

    first = subprocess.Popen([sys.executable, str(script), str(beats),
                              "setsid" if group is not None else "stay"],
                             env=env, start_new_session=True, preexec_fn=join)
    first.wait()  # it forked and left at once
    if group is None:  # the wrapper knows its agent's process group (its child's pid)
        ref = containment.AttemptRef.of(7, 1, db, process_group=first.pid)
    try:
        wait_for("the evader to go through a few pids", lambda: len({p for p, _ in beats_of(beats)}) > 10)
        assert containment.stop_attempt(ref) == []
        stopped_at = time.time()
        assert attempt_processes(db, 7, 1) == []
        assert max(t for _, t in beats_of(beats)) < stopped_at
        if group is not None:
            assert not group.exists()
    finally:  # whatever failed above, no evader outlives the test
        if group is not None and group.exists():
            (group / "cgroup.kill").write_text("1")
        with contextlib.suppress(OSError):
            os.killpg(first.pid, signal.SIGKILL)


@pytest.mark.skipif(not cgroups_work(), reason="no writable cgroup v2")
def test_groups_of_gone_wrappers_are_swept_and_those_of_live_ones_kept():
    """A group is named by its wrapper's pid; the sweep before a batch of starts removes
    the empty groups whose wrapper is gone and keeps every other one."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid is no process now
    kept = containment.create_cgroup(containment.AttemptRef.of(7, 1, "probe.db", wrapper_pid=os.getpid()))
    left = containment.create_cgroup(containment.AttemptRef.of(7, 2, "probe.db", wrapper_pid=gone.pid))
    assert kept is not None and left is not None
    assert kept.name.endswith(f"-{os.getpid()}") and left.name.endswith(f"-{gone.pid}")
    try:
        containment.sweep_cgroups()
        assert kept.is_dir() and not left.exists()
    finally:
        for group in (kept, left):
            with contextlib.suppress(OSError):
                group.rmdir()
