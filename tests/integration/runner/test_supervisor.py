"""One supervisor runs many attempts, with real processes: a slow stop of one holds up
no other, and the leases of all are renewed in one transaction per turn."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys

import pytest

from scheduler.reads import queries
from scheduler.runner.launcher import Launcher
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from tests.conftest import wait_for
from tests.integration.runner.test_exec import agent_script, push_workspace

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc")

# waits for the file its payload names (at most a minute), then succeeds
WAITS = """
    import json, os, pathlib, time
    release = pathlib.Path(json.load(open(os.environ["SCHED_PAYLOAD_FILE"]))["release"])
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    print('{"released": true}')
    """
# notes a SIGTERM in its directory and goes on: only SIGKILL, after the grace, ends it
STUBBORN = """
    import os, pathlib, signal, time
    def note(*_):
        pathlib.Path(os.environ["SCHED_WORKDIR"], "got-sigterm").touch()
    signal.signal(signal.SIGTERM, note)
    time.sleep(60)
    """


@pytest.fixture
def supervised(tmp_path):
    """`make(agents, **settings)`: a workspace whose ticks hand their push attempts to a
    supervisor forked by this process (as a daemon's are), and the supervisor's pid."""
    launchers: list[Launcher] = []

    def make(agents: list[dict], **settings):
        ws = push_workspace(tmp_path, {}, agents, **settings)
        launcher = Launcher(ws.settings, ws.clock)
        launcher.start()
        launchers.append(launcher)
        ws.starter = launcher
        return ws, launcher.pid

    yield make
    for launcher in launchers:
        pid = launcher.pid
        launcher.close()
        if pid is not None:  # its agents die with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def agent(name: str, argv: list[str], **fields) -> dict:
    return {"agentName": name, "agentType": "dev", "maxConcurrency": 1, "command": argv, **fields}


def recorded(ws, task_id: int, kind: str) -> list:
    return [rec for rec in queries.show(ws, task_id)[1] if rec.type == kind]


def test_an_attempt_slow_to_stop_holds_up_no_other(supervised, tmp_path):
    waits, stubborn = agent_script(tmp_path, "waits", WAITS), agent_script(tmp_path, "stubborn", STUBBORN)
    ws, supervisor = supervised([agent("slow", stubborn, timeoutSeconds=1), agent("fast", waits)],
                                kill_grace_seconds=60)
    release = tmp_path / "release"
    slow, fast = submit(ws, [TaskSpec(queue="dev", title="slow", assignee="slow"),
                             TaskSpec(queue="dev", title="fast", assignee="fast",
                                      payload={"release": str(release)})])
    tick(ws)
    started = [json.loads(recorded(ws, t.task_id, "TaskStarted")[0].data) for t in (slow, fast)]
    assert {s["pid"] for s in started} == {supervisor}  # one process supervises both
    # the slow one timed out: its stop sent SIGTERM and now waits out a 60 s grace
    wait_for("the timed-out agent to get its SIGTERM",
             lambda: os.path.exists(os.path.join(started[0]["workdir"], "got-sigterm")))
    release.touch()
    wait_for("the other attempt to be recorded meanwhile",
             lambda: queries.show(ws, fast.task_id)[0].status == "succeeded")
    assert queries.show(ws, slow.task_id)[0].status == "running"  # still in its grace period


def test_the_leases_of_all_attempts_are_renewed_in_one_transaction(supervised, tmp_path):
    waits = agent_script(tmp_path, "waits", WAITS)
    ws, _supervisor = supervised([agent(f"a{i}", waits) for i in range(3)], lease_seconds=1.5,
                                 kill_grace_seconds=0)
    release = tmp_path / "release"
    subs = submit(ws, [TaskSpec(queue="dev", title=f"t{i}", payload={"release": str(release)})
                       for i in range(3)])
    tick(ws)
    renewals = wait_for("each lease to be renewed once", lambda: [
        recorded(ws, s.task_id, "LeaseRenewed")[:1] for s in subs] if all(
            recorded(ws, s.task_id, "LeaseRenewed") for s in subs) else None)
    release.touch()
    firsts = [r[0] for r in renewals]
    # one transaction: consecutive sequence numbers and one recorded time
    assert sorted(r.seq for r in firsts) == list(range(min(r.seq for r in firsts),
                                                       min(r.seq for r in firsts) + 3))
    assert len({r.recorded_at for r in firsts}) == 1
    for sub in subs:
        wait_for("the attempts to succeed", lambda sub=sub: queries.show(ws, sub.task_id)[0].status
                 == "succeeded")


def test_attempts_are_watched_whatever_their_descriptors_numbers(supervised):
    """Hundreds of running attempts hold a pipe and a log each: the supervisor (which
    inherits the 1,100 descriptors held here when it is forked) watches descriptors past
    1023, where `select` refuses to (it died, and its agents with it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard limit on open files ({hard}) is below 2048")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        ws, _supervisor = supervised([agent("w1", [sys.executable, "-c", "print('{\"ok\": 1}')"])])
        (sub,) = submit(ws, [TaskSpec(queue="dev", title="past 1023")])
        tick(ws)
        wait_for("the attempt to succeed", lambda: queries.show(ws, sub.task_id)[0].status == "succeeded")
        (done,) = recorded(ws, sub.task_id, "TaskSucceeded")
        assert json.loads(done.data)["result"] == {"ok": 1}
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
