"""A worker with no database access: `sched worker ... --server URL` against a real
`sched serve` on 127.0.0.1 (issue 12 item 4), printing what it prints against the
database; an outcome whose answer was lost is sent again and recorded once."""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.main import main
from eventlog.errors import ServerUnreachable
from scheduler import access, worker
from scheduler.reads import queries
from scheduler.runner.remote import Server
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace
from server.app import create_app
from tests.browser.live import serving
from tests.conftest import wait_for

WORKER = [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 1}]


@pytest.fixture
def served(make_workspace: Callable[..., Workspace]) -> Iterator[tuple[Workspace, str, str]]:
    """A workspace, the base URL of a live server over it, and a token for agent ann."""
    ws = make_workspace(WORKER)
    token = access.create_token(ws, "box", "kim", agent="ann").token
    with serving(create_app(ws.settings, ws.clock)) as base:
        yield ws, base, token


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
        *args: str) -> tuple[int, str, str]:
    """`sched ARGS` in this process, in a directory with no database, with `env`."""
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("SCHED_")]:
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
    return code, out, err


def test_a_worker_runs_the_whole_protocol_through_the_server(served, capsys, monkeypatch, tmp_path):
    ws, base, token = served
    env = {"SCHED_SERVER": base, "SCHED_TOKEN": token, "SCHED_HOME": str(tmp_path / "nowhere")}
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="remote")])
    tick(ws)
    code, out, _ = run(capsys, monkeypatch, env, "worker", "claim", "--agent", "ann", "--json")
    assert code == 0
    claimed = json.loads(out)["task"]
    assert (claimed["task_id"], claimed["attempt"]) == (sub.task_id, 1)
    code, out, _ = run(capsys, monkeypatch, env, "worker", "heartbeat", str(sub.task_id), "--token",
                       claimed["token"], "--percent", "50", "--json")
    assert code == 0 and json.loads(out)["cancel"] is False
    code, out, err = run(capsys, monkeypatch, env, "worker", "complete", str(sub.task_id), "--token",
                         claimed["token"], "--result", '{"ok": 1}')
    assert (code, err.strip()) == (0, f"task {sub.task_id}: succeeded")
    task, events = queries.show(ws, sub.task_id)
    assert task.status == "succeeded"
    assert [e.type for e in events].count("TaskSucceeded") == 1
    # a stale lease token: refused by the server, as by the database (exit 1, one line)
    code, _, err = run(capsys, monkeypatch, env, "worker", "complete", str(sub.task_id), "--token",
                       claimed["token"])
    assert code == 1 and err.startswith("sched: task ") and len(err.strip().splitlines()) == 1


def test_a_missing_token_or_a_wrong_one_is_one_line_and_exit_2(served, capsys, monkeypatch, tmp_path):
    _ws, base, _token = served
    code, _, err = run(capsys, monkeypatch, {"SCHED_HOME": str(tmp_path)}, "worker", "claim", "--agent",
                       "ann", "--server", base)
    assert code == 2 and "SCHED_TOKEN" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, monkeypatch, {"SCHED_HOME": str(tmp_path), "SCHED_TOKEN": "nope"},
                       "worker", "claim", "--agent", "ann", "--server", base)
    assert code == 2 and "the server refused the token" in err and len(err.strip().splitlines()) == 1


def test_a_server_url_with_the_api_path_says_what_to_give(served, capsys, monkeypatch, tmp_path):
    """`--server http://host:port/api/v1`: each call went to `/api/v1/api/v1/...` and the
    worker said only `sched: Not Found`."""
    _ws, base, token = served
    env = {"SCHED_HOME": str(tmp_path), "SCHED_TOKEN": token}
    code, out, err = run(capsys, monkeypatch, env, "worker", "claim", "--agent", "ann",
                         "--server", f"{base}/api/v1")
    assert (code, out) == (2, "")
    assert err == (f"sched: the server has no POST {base}/api/v1/api/v1/agents/ann/claim: give --server the "
                   "address the server listens on, without /api/v1\n")


def test_a_claim_for_an_unknown_agent_is_one_line_and_exit_2_on_both_paths(served, capsys, monkeypatch,
                                                                          tmp_path):
    """Against the database and through the server: NotFound, the same line (the
    server's 404 is the CLI's exit 2)."""
    ws, base, token = served
    control = ws.settings.home / "agent-control.json"
    local = {"SCHED_HOME": str(ws.settings.home)}
    code, out, err = run(capsys, monkeypatch, local, "worker", "claim", "--agent", "zed")
    assert (code, out, err) == (2, "", f"sched: no agent 'zed' in {control}\n")
    control.write_text("[]")  # ann, whom the token acts for, leaves the control file
    remote = {"SCHED_SERVER": base, "SCHED_TOKEN": token, "SCHED_HOME": str(tmp_path / "nowhere")}
    code, out, err = run(capsys, monkeypatch, remote, "worker", "claim", "--agent", "ann", "--json")
    assert (code, out, err) == (2, "", f"sched: no agent 'ann' in {control}\n")


def test_an_unreachable_server_is_tried_again_then_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    waits: list[float] = []
    server = Server("http://127.0.0.1:9", "t", tries=3, sleep=waits.append)  # nothing listens there
    with pytest.raises(ServerUnreachable) as raised:
        server.claim("ann")
    assert raised.value.exit_code == 1 and "tried 3 times" in raised.value.message
    assert waits == [0.5, 1.0]  # backoff between the tries


@pytest.mark.parametrize("answer", ["not JSON", "cut short"])
def test_an_answer_that_is_no_answer_is_tried_again_then_one_line_and_exit_1(monkeypatch, answer):
    """A proxy's page where JSON was expected, or a body cut short: the call fails as an
    unreachable server does (it escaped as a raw exception, which ended the runner's
    asking thread)."""
    import http.client
    import io

    class Page(io.BytesIO):
        def __enter__(self):
            return self

        def read(self, *args):
            if answer == "cut short":
                raise http.client.IncompleteRead(b"{", 10)
            return b"<html>502 from the proxy</html>"

    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: Page())
    waits: list[float] = []
    with pytest.raises(ServerUnreachable) as raised:
        Server("http://127.0.0.1:9", "t", tries=2, sleep=waits.append).claim("ann")
    assert raised.value.exit_code == 1 and "tried 2 times" in raised.value.message
    assert ("IncompleteRead" if answer == "cut short" else "JSONDecodeError") in raised.value.message
    assert waits == [0.5]


def test_a_host_runner_asks_again_after_a_refusal_and_stops_only_for_its_token(monkeypatch):
    """A 400 while the server's control file is being edited is for now; a refused token
    is for good. The cancels pending that an answer brings are the ledger's, and the
    next ask says it heard of them."""
    from eventlog.errors import BadInput, TokenRefused
    from scheduler.runner import agent_host

    monkeypatch.setattr(agent_host, "RETRY_SECONDS", 0.01)
    answers: list[Exception | dict] = [BadInput("no agent control file found"),
                                       {"attempts": [{"task_id": 1}], "cancel": [5]},
                                       TokenRefused("the server refused the token: revoked")]
    asks: list[tuple[str, list[int] | None]] = []

    class Answering:
        def host_start(self, host, pid, home, request_id, wait, machine, cancelling, abort=None):
            asks.append((request_id, cancelling))
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    said: list[str] = []
    ledger = agent_host.HttpLedger(Answering(), "h1", 60)  # type: ignore[arg-type]
    asker = agent_host.Asker(Answering(), "h1", "/srv", wake=lambda: None, say=said.append,  # type: ignore[arg-type]
                             ledger=ledger)
    asker.start()
    asker._thread.join(10)
    assert not asker._thread.is_alive() and isinstance(asker.fatal, TokenRefused)
    assert said == ["asking for work: no agent control file found; again in 0.01 s"]
    assert asker.answers.get_nowait()[2]["attempts"] == [{"task_id": 1}]  # (asked, arrived, answer)
    # an ask that got no answer is sent again as it was (what it started is handed over
    # then); one that was answered is not
    request_ids = [request_id for request_id, _heard in asks]
    assert request_ids[0] == request_ids[1] != request_ids[2]
    assert [heard for _id, heard in asks] == [[], [], [5]]
    assert ledger.cancelled([(5, 1), (6, 1)]) == {5}


def test_a_runner_asks_an_older_server_as_an_older_runner_does():
    """A server from before `cancelling` refuses it (422): the runner exited 2 and ran
    nothing. It now asks without it, and learns of cancels at its turns."""
    from eventlog.errors import BadInput
    from scheduler.runner import agent_host

    asked: list[list[int] | None] = []

    class Older:
        def host_start(self, host, pid, home, request_id, wait, machine, cancelling=None):
            asked.append(cancelling)
            if cancelling is not None:
                raise BadInput("start: cancelling: Extra inputs are not permitted")
            return {"attempts": []}

    assert agent_host.first_start(Older(), "h1", "/srv") == ({"attempts": []}, False)  # type: ignore[arg-type]
    assert asked == [[], None]
    ledger = agent_host.HttpLedger(Older(), "h1", 60, tells_cancels=False)  # type: ignore[arg-type]
    ledger.hear({"attempts": []})
    assert ledger.heard_of() is None and ledger.cancelled([(5, 1)]) == set()

    class Refusing:  # any other refusal is not taken for an older server
        def host_start(self, *args, **kwargs):
            raise BadInput("start: home: must be an absolute path, not 'srv'")

    with pytest.raises(BadInput, match="home"):
        agent_host.first_start(Refusing(), "h1", "srv")  # type: ignore[arg-type]


def test_an_outcome_whose_answer_was_lost_is_recorded_once(served, monkeypatch):
    ws, base, token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    tick(ws)
    server = Server(base, token, sleep=lambda _s: None)
    claimed = server.claim("ann")["task"]
    real = urllib.request.urlopen
    lose: list[bool] = [True]

    def lost_answer(request, *args, **kwargs):  # the first complete arrives; its answer does not
        answer = real(request, *args, **kwargs)
        if lose and request.full_url.endswith("/complete"):
            lose.clear()
            answer.close()
            raise ConnectionResetError("connection reset by peer")
        return answer

    monkeypatch.setattr(urllib.request, "urlopen", lost_answer)
    doc = server.complete(sub.task_id, claimed["token"], {"n": 1})
    assert doc == {"task_id": sub.task_id, "status": "succeeded"}
    events = [e.type for e in queries.show(ws, sub.task_id)[1]]
    assert events.count("TaskSucceeded") == 1


def test_a_wait_needs_a_server(capsys, monkeypatch, tmp_path: Path):
    code, _, err = run(capsys, monkeypatch, {"SCHED_HOME": str(tmp_path)}, "worker", "claim", "--agent",
                       "ann", "--wait", "5")
    assert code == 2 and "--wait needs --server" in err


@pytest.mark.parametrize(("url", "says"), [
    ("http://[::1", "--server 'http://[::1' is not a URL (Invalid IPv6 URL)"),
    ("http://h:99999", "--server 'http://h:99999' is not a URL (Port out of range 0-65535)"),
    ("http://", "--server must be an http:// or https:// URL, not 'http://'"),
    ("ftp://h", "--server must be an http:// or https:// URL, not 'ftp://h'"),
])
def test_a_server_url_that_is_no_http_url_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path: Path,
                                                                 url, says):
    code, out, err = run(capsys, monkeypatch, {"SCHED_HOME": str(tmp_path), "SCHED_TOKEN": "t"}, "worker",
                         "heartbeat", "1", "--token", "x", "--server", url)
    assert (code, out, err) == (2, "", f"sched: {says}\n")


def test_a_claim_whose_client_hangs_up_gives_its_attempt_back_uncounted(served):
    """A claim's client goes away before the answer (a proxy's or client's timeout):
    the attempt is given back at once as `undelivered`. Nothing ran, so with one attempt
    allowed the task is queued again at once, not dead, and the same agent may take it."""
    ws, base, token = served
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="never ran", max_attempts=1)])
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as hung_up:
        hung_up.sendall(f"POST /api/v1/agents/ann/claim HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
                        "\r\nContent-Length: 0\r\n\r\n".encode())
        hung_up.shutdown(socket.SHUT_WR)  # gone before the answer
    wait_for("the claim given back", lambda: [e.type for e in queries.show(ws, sub.task_id)[1]][-1]
             == "TaskRequeued")
    task, events = queries.show(ws, sub.task_id)
    failed = [e.event for e in events if e.type == "TaskFailed"]
    assert [(f.reason, f.error) for f in failed] == [("undelivered", "the claim's client went away")]
    assert events[-1].type == "TaskRequeued" and events[-1].event.reason == "undelivered"
    assert task.excluded == () and task.not_before is None  # not passed over, no backoff
    again = worker.claim(ws, "ann")  # the one allowed attempt is still there
    assert again is not None and again.task.task_id == sub.task_id and again.attempt == 2
    worker.fail(ws, sub.task_id, again.token, "boom")
    assert queries.show(ws, sub.task_id)[0].dead_reason == "attempts used up (1 of 1)"


def assert_no_error_logged(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    """Nothing at error level in the server's log: its records (caplog), and what its
    handlers wrote to stderr (uvicorn's own, where the logging config left them)."""
    errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    written = capfd.readouterr().err
    assert errors == [] and "ERROR" not in written and "Traceback" not in written, (errors, written)


def test_a_client_gone_mid_body_is_no_error_in_the_servers_log(served, caplog, capfd):
    """A request whose client hangs up before its body is all sent (a killed worker, a
    dropped connection) is not an internal error: nothing is logged at error level (it
    was a traceback, for any POST, `/signin` too, which needs no token)."""
    _ws, base, _token = served
    host, port = base.removeprefix("http://").split(":")
    for path in ("/api/v1/tasks", "/signin"):
        with socket.create_connection((host, int(port))) as gone:
            gone.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         "Content-Length: 100\r\n\r\n{\"q\":".encode())
        # the server has seen the hang-up once a request after it is answered
        with urllib.request.urlopen(base + "/health", timeout=10) as answer:
            assert answer.status in (200, 503)
    assert_no_error_logged(caplog, capfd)


def test_an_open_event_stream_ends_when_the_server_stops_with_no_error(make_workspace, caplog, capfd):
    """SIGTERM with a dashboard tab or an `/api/v1/events` reader open: the stream ends
    as the server stops, not cut when its grace runs out (an error and a traceback)."""
    ws = make_workspace(WORKER)
    reader = access.create_token(ws, "rd", "kim", role="reader").token
    lines: list[bytes] = []
    with serving(create_app(ws.settings, ws.clock)) as base:
        request = urllib.request.Request(base + "/api/v1/events",
                                         headers={"Authorization": f"Bearer {reader}"})
        answer = urllib.request.urlopen(request, timeout=30)
        lines.append(answer.readline())  # the stream is open: its first line came
        reading = threading.Thread(target=lambda: lines.extend(answer))
        reading.start()
    reading.join(timeout=30)
    assert not reading.is_alive() and lines[0] == b"retry: 2000\n"
    assert_no_error_logged(caplog, capfd)


def test_a_claim_through_the_server_that_could_not_be_printed_gives_its_attempt_back_uncounted(
        served, capsys, monkeypatch, tmp_path):
    """Against the database such a claim is given back as `undelivered`; through the
    server it was reported as the attempt's failure: counted, the agent passed over,
    the backoff waited, and a task of one attempt dead-lettered although nothing ran."""
    ws, base, token = served
    env = {"SCHED_SERVER": base, "SCHED_TOKEN": token, "SCHED_HOME": str(tmp_path / "nowhere")}
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="once", max_attempts=1)])

    def closed_pipe(_doc: object) -> None:  # the worker's end of the pipe is gone
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("cli.worker_cmd.emit_json", closed_pipe)
    code, _, err = run(capsys, monkeypatch, env, "worker", "claim", "--agent", "ann", "--json")
    assert code != 0 and "Traceback" not in err
    task, events = queries.show(ws, sub.task_id)
    failed = json.loads(events[-2].data)
    assert (events[-2].type, failed["reason"], failed["by"]) == ("TaskFailed", "undelivered", "box")
    assert (task.status, task.excluded, task.not_before) == ("queued", (), None)
    assert worker.claim(ws, "ann") is not None  # its one attempt is still to come


def test_an_ask_for_work_is_cut_short_when_its_runner_stops():
    """A stopping host runner's ask (a long poll of up to 20 s) stayed open: the server
    could still start work in it for a runner gone. `Abort` shuts its connection, which
    the server sees as a client gone, and no try follows."""
    from scheduler.runner.remote import Abort, Aborted

    with socket.socket() as listener:  # a server that reads the request and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        accepted: list[socket.socket] = []
        request = [b""]
        taken = threading.Event()

        def take() -> None:
            connection = listener.accept()[0]
            accepted.append(connection)
            while b"\r\n\r\n" not in request[0]:  # (its head: the ask is under way)
                request[0] += connection.recv(65536)
            taken.set()

        threading.Thread(target=take, daemon=True).start()
        abort, ended = Abort(), []

        def ask() -> None:
            try:
                Server(f"http://127.0.0.1:{port}", "t").host_start("h1", 1, "/srv", "r" * 32, 20, abort=abort)
            except Exception as e:  # (what the asker would meet)
                ended.append(e)

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        try:
            assert taken.wait(10)
            abort()
            asker.join(10)
            assert not asker.is_alive() and len(ended) == 1 and isinstance(ended[0], Aborted), ended
            abort()  # (a stopping runner asks again at each turn of its loop)
            assert abort.cut  # (the runner then sends that ask again, without a wait: see `Asker.finish`)
            accepted[0].settimeout(10)
            while chunk := accepted[0].recv(65536):  # to its end: the connection was shut (a client gone)
                request[0] += chunk
        finally:
            for connection in accepted:
                connection.close()
        assert request[0].startswith(b"POST /api/v1/hosts/h1/start") and request[0].count(b"POST") == 1
