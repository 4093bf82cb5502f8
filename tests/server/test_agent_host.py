"""Agent hosts over HTTP (issue 12 item 4): `sched run --server URL --host H` on a
machine with no database access runs the push agents pinned to H. A real `sched serve`
on 127.0.0.1, a daemon's tick assigning (as a `sched run` with the database would),
and the runner as its own process with only a host token and a home of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest

from eventlog.errors import BadInput
from scheduler import access, operator
from scheduler.reads import queries
from scheduler.reads.metrics import metrics
from scheduler.runner import containment
from scheduler.runner.agent_host import grant_time
from scheduler.runner.remote import Server
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.tokens import new_token
from scheduler.usecases import hosts
from scheduler.workspace import Workspace
from server.app import create_app
from tests.browser.live import serving
from tests.conftest import wait_for
from tests.integration.runner.test_containment import cgroups_work

# the agent reports what it was told: where it reports, and whether the runner's token reached it
REPORT = ('printf \'{"server": "%s", "token": "%s", "home": "%s", "payload": %s}\\n\' '
          '"$SCHED_SERVER" "${SCHED_TOKEN-unset}" "$SCHED_HOME" "$(cat "$SCHED_PAYLOAD_FILE")"')
FAR = [{"agentName": "far", "agentType": "dev", "maxConcurrency": 2, "command": ["sh", "-c", REPORT],
        "host": "far-1"},
       {"agentName": "near", "agentType": "qa", "maxConcurrency": 1, "command": ["sh", "-c", "exit 0"],
        "host": "near-1"}]

Served = tuple[Workspace, str, str]


@pytest.fixture
def make_served(make_workspace: Callable[..., Workspace]) -> Iterator[Callable[..., Served]]:
    """A workspace with `agents`, the base URL of a live server over it, and a host
    token for far-1."""
    with ExitStack() as stack:

        def make(agents: list[dict] = FAR, lease_seconds: float = 6) -> Served:
            ws = make_workspace(agents, lease_seconds=lease_seconds)
            token = access.create_token(ws, "far-runner", "kim", host="far-1").token
            return ws, stack.enter_context(serving(create_app(ws.settings, ws.clock))), token

        yield make


@pytest.fixture
def served(make_served: Callable[..., Served]) -> Served:
    return make_served()


def runner(base: str, token: str, home: Path, host: str = "far-1", *flags: str) -> subprocess.Popen[str]:
    """`sched run --server BASE --host HOST [FLAGS]` in a process of its own, with no
    database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    env.update({"SCHED_HOME": str(home), "SCHED_TOKEN": token, "SCHED_HOST": "elsewhere"})
    home.mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "cli", "run", "--server", base, "--host", host, *flags],
                            env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


LONG = [{"agentName": "far", "agentType": "dev", "maxConcurrency": 1,
         "command": ["sh", "-c", "echo started; exec sleep 60"], "host": "far-1"}]


def running_first_attempt(ws: Workspace, base: str, token: str, home: Path, task_id: int
                          ) -> subprocess.Popen[str]:
    """A runner (of `LONG`'s agent) started, a tick given it `task_id`, and its agent
    running the first attempt (it said so in its log)."""
    proc = runner(base, token, home)
    try:
        tick(ws)
        log = home / "work" / str(task_id) / "1" / "agent.log"
        wait_for("the agent to start", lambda: log.exists() and "started" in log.read_text())
    except BaseException:
        stopped(proc)
        raise
    return proc


def stopped(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    return proc.returncode, err


def status_of(ws: Workspace, task_id: int) -> str:
    return queries.show(ws, task_id)[0].status


def test_a_runner_with_no_database_runs_the_agents_pinned_to_its_host(served, tmp_path):
    ws, base, token = served
    ids = [r.task_id for r in submit(ws, [TaskSpec(queue="dev", title=f"t{i}", payload={"n": i})
                                          for i in range(3)])]
    home = tmp_path / "far-home"
    proc = runner(base, token, home)
    try:
        tick(ws)  # a daemon with the database assigns; it runs on another host, so starts nothing
        wait_for("the first two tasks to succeed",
                 lambda: all(status_of(ws, t) == "succeeded" for t in ids[:2]))
        tick(ws)  # the freed slot takes the third
        wait_for("the third task to succeed", lambda: status_of(ws, ids[2]) == "succeeded")
    finally:
        code, err = stopped(proc)
    assert code == 0, err
    for n, task_id in enumerate(ids):
        _task, records = queries.show(ws, task_id)
        started = next(r.event for r in records if r.type == "TaskStarted")
        succeeded = next(r.event for r in records if r.type == "TaskSucceeded")
        workdir = home.resolve() / "work" / str(task_id) / "1"
        assert (started.host, started.pid, started.workdir) == ("far-1", proc.pid, str(workdir))
        assert started.by == succeeded.by == "far-runner"  # the host token's name, as the actor
        # the agent ran here, in its directory, told to report to the server, never given the token
        assert succeeded.result == {"server": base, "token": "unset", "home": str(home.resolve()),
                                    "payload": {"n": n}}
        assert (workdir / "agent.log").read_text().startswith('{"server"')
        assert succeeded.cpu_seconds is not None
        assert succeeded.start_delay_seconds is not None  # measured on the host, carried by its turn
    assert "running the push agents of host far-1" in err


def test_a_runner_logs_json_lines_when_asked(served, tmp_path):
    """`--log-format json` was accepted with --server and ignored: the log stayed text."""
    ws, base, token = served
    (task,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    proc = runner(base, token, tmp_path / "far-home", "far-1", "--log-format", "json")
    try:
        tick(ws)
        wait_for("the task to succeed", lambda: status_of(ws, task.task_id) == "succeeded")
    finally:
        code, err = stopped(proc)
    assert code == 0, err
    lines = [json.loads(line) for line in err.splitlines()]
    assert {(line["event"], line["host"], line["level"]) for line in lines} == {("host", "far-1", "info")}
    messages = [line["message"] for line in lines]
    assert messages[0] == f"running the push agents of host far-1 for {base}"
    assert f"task {task.task_id} attempt 1: started for agent far" in messages
    assert messages[-1] == "stopped (SIGTERM)"


def test_an_agent_that_fails_is_recorded_as_failing(make_served, tmp_path):
    ws, base, token = make_served([{"agentName": "far", "agentType": "dev", "maxConcurrency": 1,
                                    "command": ["sh", "-c", "echo broken; exit 3"], "host": "far-1"}])
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="fails", max_attempts=1)])
    proc = runner(base, token, tmp_path / "far-home")
    try:
        tick(ws)
        wait_for("the task to be dead", lambda: status_of(ws, sub.task_id) == "dead")
    finally:
        stopped(proc)
    failed = next(r.event for r in queries.show(ws, sub.task_id)[1] if r.type == "TaskFailed")
    assert (failed.exit_code, failed.error) == (3, "exited with 3: broken")


def test_a_directory_that_cannot_be_made_fails_the_attempt_and_it_is_retried(served, tmp_path):
    ws, base, token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="no room")])
    home = tmp_path / "far-home"
    home.mkdir()
    (home / "work").write_text("a file where the directory should be")
    proc = runner(base, token, home)
    try:
        tick(ws)
        wait_for("the attempt to fail", lambda: any(
            r.type == "TaskFailed" for r in queries.show(ws, sub.task_id)[1]))
    finally:
        stopped(proc)
    records = queries.show(ws, sub.task_id)[1]
    failed = next(r.event for r in records if r.type == "TaskFailed")
    assert failed.reason == "spawn_error" and failed.retryable
    assert failed.error.startswith(f"cannot prepare the working directory {home.resolve()}/work/")
    assert queries.show(ws, sub.task_id)[0].status == "queued"  # tried again later


def test_sigterm_stops_the_running_attempts_and_queues_them_again_uncounted(make_served, tmp_path):
    """A runner stopped (a restart, an upgrade) records its attempts `interrupted`: not
    the task's failure, so a task on its last attempt is queued again, not dead, and
    its agent is not passed over for it."""
    ws, base, token = make_served(LONG)
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="long", max_attempts=1)])
    code, err = stopped(running_first_attempt(ws, base, token, tmp_path / "far-home", sub.task_id))
    assert code == 0 and err.splitlines()[-1] == "sched run: stopped (SIGTERM)"
    task, records = queries.show(ws, sub.task_id)
    failed = next(r.event for r in records if r.type == "TaskFailed")
    assert (failed.reason, failed.error) == ("interrupted", "stopped: its runner received SIGTERM")
    requeued = next(r.event for r in records if r.type == "TaskRequeued")
    assert (requeued.reason, requeued.not_before) == ("interrupted", None)
    assert (task.status, task.attempt, task.attempt_floor, task.excluded) == ("queued", 1, 1, ())
    figures = metrics(ws, timedelta(hours=1))["overall"]  # its own figure, not a failure
    assert (figures["interrupted"], figures["failed"]) == (1, 0)


def test_what_the_server_starts_for_a_stopping_runner_is_given_back_uncounted(make_served, tmp_path,
                                                                           monkeypatch):
    """The tasks a stopping runner sends back are given to its host again by the next
    tick, and its ask for work still out started them: their attempts were left to run
    out their leases, each counted (a task on its last attempt ended dead). The runner
    now ends that ask first (the server starts nothing for a client gone), and gives
    back, `interrupted`, what an answer that came all the same carries."""
    ws, base, token = make_served(LONG)
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="long", max_attempts=1)])
    record_turn = hosts.turn

    def turn_then_tick(served_ws: Workspace, request: hosts.TurnRequest) -> hosts.Turn:
        done = record_turn(served_ws, request)
        if any(ending.reason == "interrupted" for ending in request.record):
            tick(ws)  # a daemon elsewhere, woken by the write: the task goes to far again
        return done  # (and the doorbell rings for the runner's ask still waiting)

    monkeypatch.setattr(hosts, "turn", turn_then_tick)
    code, err = stopped(running_first_attempt(ws, base, token, tmp_path / "far-home", sub.task_id))
    assert code == 0 and err.splitlines()[-1] == "sched run: stopped (SIGTERM)", err
    task, records = queries.show(ws, sub.task_id)
    starts = [r.event.attempt for r in records if r.type == "TaskStarted"]
    failed = [(r.event.attempt, r.event.reason, r.event.error) for r in records if r.type == "TaskFailed"]
    # (an attempt started all the same, as the ask was cut, is given back: none runs out its lease)
    late = starts[1:]
    assert failed == [(1, "interrupted", "stopped: its runner received SIGTERM"),
                      *[(n, "interrupted", "not started: its runner was stopping") for n in late]], records
    assert all(f"task {sub.task_id} attempt {n}: given back, not started (stopping)" in err for n in late)
    assert task.status in ("queued", "assigned") and task.attempt == task.attempt_floor == len(starts)


def test_a_cancel_reaches_the_runner_at_once_not_at_its_next_turn(make_served, tmp_path):
    """A runner renews its leases every third of a lease (20 s here): a cancel waited
    for that turn. The server now ends the runner's long poll for work as soon as a
    cancel of an attempt running on its host is asked for, and the attempt is stopped
    within the supervisor's cancel check (2 s), well before the first turn."""
    ws, base, token = make_served([{"agentName": "far", "agentType": "dev", "maxConcurrency": 2,
                                    "command": ["sh", "-c", "echo started; exec sleep 60"], "host": "far-1"}],
                                   lease_seconds=60)
    kept, stopped_one = (s.task_id for s in submit(ws, [TaskSpec(queue="dev", title="kept"),
                                                        TaskSpec(queue="dev", title="cancelled")]))
    home = tmp_path / "far-home"
    proc = runner(base, token, home)
    try:
        tick(ws)
        logs = [home / "work" / str(task_id) / "1" / "agent.log" for task_id in (kept, stopped_one)]
        wait_for("both agents to start", lambda: all(log.exists() and "started" in log.read_text()
                                                     for log in logs))
        asked = time.monotonic()
        assert operator.cancel(ws, stopped_one, by="kim") == "running"  # cancelling
        wait_for("the cancelled attempt to end", lambda: status_of(ws, stopped_one) == "cancelled",
                 timeout=15)
        took = time.monotonic() - asked
        assert status_of(ws, kept) == "running"  # only that one
    finally:
        code, err = stopped(proc)
    assert code == 0, err
    assert took < 10, took  # (its first turn comes 20 s after the start)
    _task, records = queries.show(ws, stopped_one)
    failed = next(r.event for r in records if r.type == "TaskFailed")
    assert failed.reason == "cancelled"
    assert not [r for r in records if r.type == "LeaseRenewed"]  # it was not a turn that said so


@pytest.mark.parametrize("start", [
    "sleep 300",
    # no marks to find it by: only its control group holds it (it was left running); it
    # starts once the agent is in its group (the runner moves it there once it is started)
    pytest.param("until grep -q attempt /proc/self/cgroup; do sleep 0.01; done; setsid env -i sleep 300",
                 marks=pytest.mark.skipif(not cgroups_work(), reason="no writable cgroup v2")),
])
def test_a_runner_started_again_stops_what_a_sigkilled_one_left_running(make_served, tmp_path, start):
    """SIGKILL to the runner ends its agents (the parent-death signal), not what they
    started: a child ran on beside the task's retry. The next runner of that home
    stops it before it asks for work, also one that cleared its environment."""
    child = start + ' & echo $! > "$SCHED_WORKDIR/child.pid"; echo started; wait'
    ws, base, token = make_served([{"agentName": "far", "agentType": "dev", "maxConcurrency": 1,
                                    "command": ["sh", "-c", child], "host": "far-1"}])
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="leaves a child")])
    home = tmp_path / "far-home"
    first = runner(base, token, home)
    try:
        tick(ws)
        log = home / "work" / str(sub.task_id) / "1" / "agent.log"
        wait_for("the agent to start", lambda: log.exists() and "started" in log.read_text())
        left = int((log.parent / "child.pid").read_text())
    finally:
        first.kill()
        first.communicate()
    assert containment.alive(left)  # what its agent started outlived the runner
    second = runner(base, token, home)
    try:  # (it stops it with its stop signals taken: the SIGTERM below is a stop, not its death)
        wait_for("the leftover to be stopped", lambda: not containment.alive(left))
    finally:
        code, err = stopped(second)
    assert code == 0 and f"task {sub.task_id} attempt 1: stopped what a runner gone left running" in err


def test_an_outcome_reached_while_the_server_is_away_is_recorded_once_when_it_is_back(
        make_workspace, tmp_path):
    """The server goes away while an agent runs; the agent ends; the runner sends the
    outcome again, with backoff, until the server is back on its address: recorded once."""
    ended = tmp_path / "ended"
    release = tmp_path / "release"
    command = f'while [ ! -e {release} ]; do sleep 0.02; done; echo \'{{"ok": 1}}\'; touch {ended}'
    ws = make_workspace([{"agentName": "far", "agentType": "dev", "maxConcurrency": 1,
                          "command": ["sh", "-c", command], "host": "far-1"}], lease_seconds=60)
    token = access.create_token(ws, "far-runner", "kim", host="far-1").token
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="through an outage")])
    with serving(create_app(ws.settings, ws.clock)) as base:
        proc = runner(base, token, tmp_path / "far-home")
        tick(ws)
        wait_for("the attempt to start", lambda: status_of(ws, sub.task_id) == "running")
    try:
        release.touch()  # the server is away: the agent ends now
        wait_for("the agent to end", ended.exists)
        assert status_of(ws, sub.task_id) == "running"
        with serving(create_app(ws.settings, ws.clock), port=int(base.rsplit(":", 1)[1])):
            wait_for("the outcome", lambda: status_of(ws, sub.task_id) == "succeeded")
            code, _err = stopped(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    records = queries.show(ws, sub.task_id)[1]
    assert [r.type for r in records].count("TaskSucceeded") == 1
    assert next(r.event for r in records if r.type == "TaskSucceeded").result == {"ok": 1}


def test_a_start_sent_again_hands_over_what_it_started_and_records_nothing_twice(served):
    """The answer of a start is lost; the runner sends the same request again (its
    `request_id`): the attempts it started are in the answer again, with the same
    tokens, and were started once. Another request is not handed them."""
    ws, _base, _token = served
    subs = submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(2)])
    tick(ws)
    asked = hosts.StartRequest(host="far-1", pid=4242, home="/srv/sched", request_id=new_token())
    first = hosts.start(ws, asked)
    assert sorted(doc["task_id"] for doc in first.attempts) == [sub.task_id for sub in subs]
    assert hosts.start(ws, asked).attempts == first.attempts
    for other_id in (new_token(), None):
        assert hosts.start(ws, asked.model_copy(update={"request_id": other_id})).attempts == []
    for sub in subs:
        assert [r.type for r in queries.show(ws, sub.task_id)[1]].count("TaskStarted") == 1
    leases = [{"task_id": doc["task_id"], "token": doc["token"]} for doc in first.attempts]
    beats = hosts.turn(ws, hosts.TurnRequest(host="far-1", renew=leases)).beats
    assert all("lease_expires_at" in beat for beat in beats), beats  # the tokens are the attempts'


def test_a_start_whose_answer_was_lost_is_handed_over_when_it_is_sent_again(served, monkeypatch):
    """Through the client: the first start reaches the server, which records it; its
    answer does not reach the runner. The client's try again carries the same request
    and gets the attempt: run at once, not left to wait out its lease."""
    ws, base, token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="lost and found")])
    tick(ws)
    real = urllib.request.urlopen
    lost: list[bool] = []

    def lose_first_start(request, *args, **kwargs):
        answer = real(request, *args, **kwargs)
        if not lost and request.full_url.endswith("/start"):
            lost.append(True)
            answer.close()
            raise ConnectionResetError("connection reset by peer")
        return answer

    monkeypatch.setattr(urllib.request, "urlopen", lose_first_start)
    started = Server(base, token, sleep=lambda _s: None).host_start("far-1", 4242, "/srv/sched", new_token())
    assert lost and [doc["task_id"] for doc in started["attempts"]] == [sub.task_id]
    assert [r.type for r in queries.show(ws, sub.task_id)[1]].count("TaskStarted") == 1
    (doc,) = started["attempts"]
    (beat,) = hosts.turn(ws, hosts.TurnRequest(host="far-1", renew=[
        {"task_id": sub.task_id, "token": doc["token"]}])).beats
    assert "lease_expires_at" in beat, beat


def test_a_start_says_how_long_the_server_held_it_before_granting_the_leases(served):
    ws, base, token = served
    submit(ws, [TaskSpec(queue="dev", title="t")])
    tick(ws)
    sent = time.monotonic()
    answer = Server(base, token).host_start("far-1", 4242, "/srv/sched", new_token(), 0)
    took = time.monotonic() - sent
    assert len(answer["attempts"]) == 1 and 0 <= answer["held_seconds"] <= took


def test_a_waiting_start_ends_for_a_cancel_only_the_runner_has_not_heard_of(served):
    """The cancels pending on the host come with every answer; a long poll ends early
    for one only when the runner said which it heard of and this one is not among them
    (an older runner, which sends nothing, would otherwise ask again and again)."""
    ws, base, token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    tick(ws)
    server = Server(base, token)
    assert server.host_start("far-1", 4242, "/srv/sched", new_token(), 0, cancelling=[])["cancel"] == []
    operator.cancel(ws, sub.task_id, by="kim")
    # (wait_seconds, the cancels it heard of): a start that ends early asked for the longest
    # wait, so that its bound is half that wait, not a guess at how quick the machine is
    asks = {"new to it": (20, []), "heard of": (1, [sub.task_id]), "an older runner": (1, None)}
    took = {}
    for what, (wait, cancelling) in asks.items():
        sent = time.monotonic()
        answer = server.host_start("far-1", 4242, "/srv/sched", new_token(), wait, cancelling=cancelling)
        took[what] = time.monotonic() - sent
        assert (answer["attempts"], answer["cancel"]) == ([], [sub.task_id]), what
    # (the others waited out their second)
    assert took["new to it"] < 10 and min(took["heard of"], took["an older runner"]) >= 0.9, took


def test_a_start_records_the_runners_machine_and_a_tick_under_its_host_name_elsewhere_leaves_it(served):
    """A host runner named like the machine that ticks (one host name, two machines):
    its attempt records the runner's machine, so the tick does not judge it by a pid of
    its own machine."""
    ws, base, token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    tick(ws)
    Server(base, token).host_start("far-1", 4242, "/srv/sched", new_token(), 0, "m9/b9/4026531836")
    started = [r.event for r in queries.show(ws, sub.task_id)[1] if r.type == "TaskStarted"]
    assert [e.machine for e in started] == ["m9/b9/4026531836"]
    named_alike = Workspace(ws.settings.model_copy(update={"host": "far-1"}), clock=ws.clock)
    try:
        report = tick(named_alike, alive=lambda pid: False, machine=lambda: "m1/b1/4026531836")
    finally:
        named_alike.close()
    assert report.expired == [] and queries.show(ws, sub.task_id)[0].status == "running"


def test_a_start_refuses_a_machine_that_is_not_one(served):
    _ws, base, token = served
    for bad in ("no-slashes", "a/b/c", "a/b/1/2", "x" * 300 + "/b/1", "\x00/boot/1", "m/bo\not/1"):
        with pytest.raises(BadInput, match="machine"):
            Server(base, token).host_start("far-1", 4242, "/srv/sched", new_token(), 0, bad)


def test_the_runner_counts_a_lease_from_its_grant_not_from_the_long_polls_start():
    """A lease granted 19.5 s into a long poll was counted from the poll's start: with
    `lease_seconds = 20` the runner fenced the attempt before its first renewal."""
    assert grant_time(100.0, 120.0, {"held_seconds": 19.5}) == 119.5
    assert grant_time(100.0, 120.0, {"held_seconds": 25.0}) == 120.0  # never later than the answer
    for held in ({}, {"held_seconds": -1}, {"held_seconds": "x"}, {"held_seconds": True},
                 {"held_seconds": float("nan")}):
        assert grant_time(100.0, 120.0, held) == 100.0  # (an older server: from the send)


def post_json(url: str, bearer: str, body: dict) -> tuple[int, dict]:
    """POST `body` as JSON with the bearer token: the status and the answer's document."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {bearer}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_only_the_hosts_own_token_may_start_or_renew(served):
    ws, base, token = served

    others = {"ops": access.create_token(ws, "ops", "kim", role="operator").token,
              "near": access.create_token(ws, "near-runner", "kim", host="near-1").token}

    def post(path: str, bearer: str, body: dict) -> int | tuple[int, str]:
        code, said = post_json(base + path, bearer, body)
        return code if code != 422 else (code, said["error"])

    start = {"pid": 4242, "home": "/srv/sched"}
    assert post("/api/v1/hosts/far-1/start", others["ops"], start) == 403  # an operator runs nothing
    assert post("/api/v1/hosts/far-1/start", others["near"], start) == 403  # another host's token
    assert post("/api/v1/hosts/far-1/turn", others["near"], {"renew": []}) == 403
    assert post("/api/v1/hosts/far-1/start", token, {"pid": 4242, "home": "relative"}) == (
        422, "start: home: must be an absolute path, not 'relative'")
    assert post("/api/v1/hosts/far-1/start", token, {**start, "wait_seconds": 1.5}) == (
        422, "start: wait_seconds: Input should be a valid integer")  # (it said `claim:`)
    assert post("/api/v1/hosts/far-1/start", token, start) == 200


def test_a_host_token_revoked_while_its_start_waits_starts_nothing(make_workspace):
    """The long poll checked the token once: an assignment made up to 20 s after a revoke
    was started for the revoked host, its payload and lease token handed over."""
    import threading

    ws = make_workspace(FAR, lease_seconds=6)
    token = access.create_token(ws, "far-runner", "kim", host="far-1").token
    app = create_app(ws.settings, ws.clock)
    answers: list[tuple[int, dict]] = []
    start = {"pid": 4242, "home": "/srv/sched", "wait_seconds": 20}
    with serving(app) as base:
        waiting = threading.Thread(target=lambda: answers.append(post_json(
            base + "/api/v1/hosts/far-1/start", token, start)))
        waiting.start()
        wait_for("the start to wait", lambda: app.state.doorbell.waiting == 1)
        access.revoke_token(ws, "far-runner", "kim")
        (task,) = submit(ws, [TaskSpec(queue="dev", title="after the revoke")])
        tick(ws)  # assigned to `far`, pinned to far-1: the start looks again (the log's head moved)
        waiting.join(30)
    assert [code for code, _said in answers] == [401], answers
    assert status_of(ws, task.task_id) == "assigned"  # not started for a revoked host


def test_a_runner_reports_only_its_own_reasons_for_an_ending(served):
    """An eviction is an operator's, and does not count against the task's attempts: a
    runner that reported one could retry a task forever. It is refused in one line."""
    ws, base, token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="evicted?")])
    tick(ws)
    (doc,) = hosts.start(ws, hosts.StartRequest(host="far-1", pid=4242, home="/srv/sched")).attempts
    body = {"record": [{"task_id": sub.task_id, "token": doc["token"], "reason": "evicted"}]}
    request = urllib.request.Request(base + "/api/v1/hosts/far-1/turn", data=json.dumps(body).encode(),
                                     method="POST", headers={"Authorization": f"Bearer {token}",
                                                             "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400  # a value sched refuses (http.md, "Errors")
    assert json.loads(refused.value.read())["error"] == (
        "record: reason: Input should be 'exit_code', 'timeout', 'spawn_error', 'cancelled' or 'interrupted'")
    assert status_of(ws, sub.task_id) == "running"  # nothing recorded


def test_a_turn_that_names_an_attempt_twice_is_refused(served):
    """Two renewals of one lease in one turn recorded two `LeaseRenewed`; two endings,
    one of them lost. Which was meant cannot be told: 400, nothing recorded."""
    ws, _base, _token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="once")])
    tick(ws)
    (doc,) = hosts.start(ws, hosts.StartRequest(host="far-1", pid=4242, home="/srv/sched")).attempts
    lease = {"task_id": sub.task_id, "token": doc["token"]}
    before = len(queries.show(ws, sub.task_id)[1])
    for field, item in (("renew", lease), ("record", {**lease, "succeeded": True})):
        with pytest.raises(BadInput, match=f"^{field}: task {sub.task_id} is given more than once$"):
            hosts.TurnRequest(host="far-1", **{field: [item, item]})
    assert len(queries.show(ws, sub.task_id)[1]) == before


def test_a_turn_sent_again_records_nothing_twice(served):
    """The answer of a turn that recorded an outcome is lost; the runner sends it again:
    the outcome is answered as already recorded, and the log holds it once."""
    ws, _base, _token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="once")])
    tick(ws)
    started = hosts.start(ws, hosts.StartRequest(host="far-1", pid=4242, home="/srv/sched"))
    (doc,) = started.attempts
    assert (doc["task_id"], doc["workdir"]) == (sub.task_id, f"/srv/sched/work/{sub.task_id}/1")
    ending = {"task_id": sub.task_id, "token": doc["token"], "succeeded": True, "result": {"ok": 1}}
    asked = hosts.TurnRequest(host="far-1", renew=[{"task_id": sub.task_id, "token": doc["token"]}],
                              record=[ending])
    first, again = hosts.turn(ws, asked), hosts.turn(ws, asked)
    assert first.statuses == [{"task_id": sub.task_id, "status": "succeeded"}]
    assert again.statuses == [{"task_id": sub.task_id, "status": "succeeded", "already": True}]
    assert "refused" in again.beats[0]  # the attempt is over: its lease is not renewed
    types = [r.type for r in queries.show(ws, sub.task_id)[1]]
    assert types.count("TaskSucceeded") == 1


def test_an_ending_other_than_the_recorded_one_is_lost_not_already(served):
    """An attempt recorded as succeeded, then reported failed with its token: nothing is
    recorded, and the answer says the attempt ended the other way (not `already`,
    which says this very ending was recorded)."""
    ws, _base, _token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="once")])
    tick(ws)
    (doc,) = hosts.start(ws, hosts.StartRequest(host="far-1", pid=4242, home="/srv/sched")).attempts
    token = doc["token"]
    succeeded = {"task_id": sub.task_id, "token": token, "succeeded": True}
    assert hosts.turn(ws, hosts.TurnRequest(host="far-1", record=[succeeded])).statuses == [
        {"task_id": sub.task_id, "status": "succeeded"}]
    failed = {"task_id": sub.task_id, "token": token, "error": "exit 1", "reason": "exit_code",
              "exit_code": 1}
    assert hosts.turn(ws, hosts.TurnRequest(host="far-1", record=[failed])).statuses == [
        {"task_id": sub.task_id, "status": "lost",
         "why": f"task {sub.task_id}: its attempt 1 already ended (succeeded); this ending is not recorded"}]
    types = [r.type for r in queries.show(ws, sub.task_id)[1]]
    assert "TaskFailed" not in types and types.count("TaskSucceeded") == 1


def test_another_hosts_runner_cannot_end_an_attempt_running_here(served):
    ws, _base, _token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="mine")])
    tick(ws)
    (doc,) = hosts.start(ws, hosts.StartRequest(host="far-1", pid=4242, home="/srv/sched")).attempts
    answer = hosts.turn(ws, hosts.TurnRequest(host="near-1", record=[
        {"task_id": sub.task_id, "token": doc["token"], "succeeded": True}]))
    why = f"task {sub.task_id}: its attempt runs on host 'far-1', not on 'near-1'"
    assert answer.statuses[0] == {"task_id": sub.task_id, "status": "lost", "why": why}
    assert status_of(ws, sub.task_id) == "running"


def test_an_ending_that_did_not_succeed_must_say_what_went_wrong(served):
    """A failure is recorded with its error, as `worker fail` refuses a blank one: a
    turn whose record says neither success nor error is refused whole (nothing
    recorded), not written down as a failure with no reason."""
    ws, base, token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="mute")])
    tick(ws)
    (doc,) = hosts.start(ws, hosts.StartRequest(host="far-1", pid=4242, home="/srv/sched")).attempts
    for error in ("", "  "):
        with pytest.raises(BadInput) as refused:
            hosts.TurnRequest(host="far-1", record=[{"task_id": sub.task_id, "token": doc["token"],
                                                     "error": error}])
        assert refused.value.message.endswith(
            f"task {sub.task_id}: an attempt that did not succeed needs its error (what went wrong)")
    assert status_of(ws, sub.task_id) == "running"
    # over HTTP: the check's line is 400; an ending of the wrong shape is 422, as a body's
    turn = f"{base}/api/v1/hosts/far-1/turn"
    ending = {"task_id": sub.task_id, "token": doc["token"]}
    assert post_json(turn, token, {"record": [{**ending, "error": ""}]})[0] == 400
    assert post_json(turn, token, {"record": [{**ending, "error": None}]}) == (
        422, {"error": "record: error: Input should be a valid string"})
    assert status_of(ws, sub.task_id) == "running"
    answer = hosts.turn(ws, hosts.TurnRequest(host="far-1", record=[
        {"task_id": sub.task_id, "token": doc["token"], "error": "exit 3"}]))
    assert answer.statuses == [{"task_id": sub.task_id, "status": "queued"}]


def test_run_with_server_refuses_database_flags_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    env["SCHED_TOKEN"] = "sched_x"
    done = subprocess.run([sys.executable, "-m", "cli", "run", "--server", "http://127.0.0.1:9",
                           "--db", str(tmp_path / "x.db")], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["sched: --db cannot be used with --server: the server's "
                                                "database, control file and daemon decide"]


def test_a_token_the_server_refuses_stops_the_runner_in_one_line(served, tmp_path):
    ws, base, _token = served
    wrong = access.create_token(ws, "ops", "kim", role="operator").token
    proc = runner(base, wrong, tmp_path / "far-home")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        "sched: the server refused the token: token 'ops' (operator) may not host"]
