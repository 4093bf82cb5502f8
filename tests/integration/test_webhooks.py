"""Webhooks against a real HTTP server on 127.0.0.1: delivery, retries after a failing
endpoint, restarts in between, redirects not followed, giving up."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from eventlog.timeutil import from_text
from scheduler import operator, worker
from scheduler.config.settings import load_settings
from scheduler.config.webhook_config import WebhookConfig
from scheduler.daemon import webhooks
from scheduler.reads import queries
from scheduler.reads.outbox import outbox
from scheduler.rebuild import rebuild_projections
from scheduler.submit import TaskSpec, submit
from scheduler.workspace import Workspace
from tests.conftest import new_workspace, wait_for

ALL_LOG_EVENTS = ["task.failed", "task.dead_lettered", "scheduler.paused"]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = b""


class Endpoint:
    """An HTTP server in a thread that records every request and answers POSTs to
    /hook with `status` (a 302 points at /elsewhere); while `hold` is set, it waits for
    `release` before answering."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.hold = False
        self.release = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                body = json.loads(raw) if length else None
                endpoint.received.append(Received(self.command, self.path, dict(self.headers), body, raw))
                if endpoint.hold:
                    endpoint.release.wait(10)
                status = endpoint.status if self.path == "/hook" else 200
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", endpoint.url("/elsewhere"))
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def bodies(self) -> list[Any]:
        return [r.body for r in self.received]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    yield server
    server.close()


@pytest.fixture
def hooked(make_workspace, endpoint):
    """`hooked(events=..., **settings)`: a workspace whose webhook is the endpoint, its
    cursor placed (at the end of its log: nothing is sent for what came before)."""

    def factory(events: list[str] = ALL_LOG_EVENTS, **settings: object) -> Workspace:
        ws = make_workspace(webhooks=[{"url": endpoint.url(), "events": events}], **settings)
        ws.rng = random.Random(7)
        assert webhooks.collect(ws) == 0
        return ws

    return factory


def fail_task(ws: Workspace, error: str = "boom", **spec: object) -> int:
    """Submit a dev task, claim it as ann, and fail it (dead-lettered with max_attempts=1)."""
    (task,) = submit(ws, [TaskSpec(queue="dev", title="build the thing", **spec)])
    claim = worker.claim(ws, "ann")
    assert claim is not None and claim.task.task_id == task.task_id
    worker.fail(ws, task.task_id, claim.token, error)
    return task.task_id


def test_a_webhook_with_a_secret_signs_its_posts_so_the_receiver_can_check_them(make_workspace, endpoint):
    """Deliveries carried nothing a receiver could check: anyone who knew the URL could
    post as sched (a security review). A webhook with a `secret` signs each POST: the
    HMAC-SHA256 of `TIMESTAMP.BODY`, as operations.md tells a receiver to compute it."""
    import hashlib
    import hmac

    secret = "a-secret-of-enough-length"
    ws = make_workspace(webhooks=[{"url": endpoint.url(), "events": ["scheduler.paused"], "secret": secret},
                                  {"url": endpoint.url("/plain"), "events": ["scheduler.paused"]}])
    assert webhooks.collect(ws) == 0
    operator.pause(ws, "alice", "maintenance")
    webhooks.collect(ws)
    assert len(webhooks.deliver_due(ws).delivered) == 2
    (signed,) = [r for r in endpoint.received if r.path == "/hook"]
    (plain,) = [r for r in endpoint.received if r.path == "/plain"]
    stamp = signed.headers["X-Sched-Timestamp"]
    assert stamp == str(int(ws.clock.now().timestamp()))
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + signed.raw, hashlib.sha256).hexdigest()
    assert signed.headers["X-Sched-Signature"] == f"sha256={expected}"
    assert "X-Sched-Signature" not in plain.headers and "X-Sched-Timestamp" not in plain.headers
    # the receiver's check that operations.md gives (this clock is in 2026-01: a wide leeway)
    docs = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    check: dict[str, Any] = {}
    exec(re.search(r"```python\n(import hashlib, hmac, time\n.*?)```", docs, re.DOTALL)[1], check)
    from_sched = check["from_sched"]
    assert from_sched(secret.encode(), signed.headers, signed.raw, leeway=10**9)
    assert not from_sched(secret.encode(), signed.headers, signed.raw + b" ", leeway=10**9)
    assert not from_sched(secret.encode(), signed.headers, signed.raw)  # (not recent)
    assert not from_sched(secret.encode(), plain.headers, plain.raw, leeway=10**9)


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def test_failures_dead_letters_and_pauses_are_posted_once(hooked, endpoint):
    ws = hooked()
    task_id = fail_task(ws, max_attempts=1)
    operator.pause(ws, "alice", "maintenance")
    assert webhooks.collect(ws) == 3
    report = webhooks.deliver_due(ws)
    assert (len(report.delivered), report.failed, report.gave_up) == (3, [], [])

    failed, dead, paused = endpoint.bodies()
    assert [b["event"] for b in (failed, dead, paused)] == ALL_LOG_EVENTS
    log = {rec.type: rec for rec in queries.replay(ws)}
    assert failed["seq"] == log["TaskFailed"].seq
    assert failed["recorded_at"] == log["TaskFailed"].recorded_at
    assert (failed["schema_version"], paused["schema_version"]) == (7, 1)  # as stored
    assert failed["data"]["task_id"] == task_id
    assert (failed["data"]["reason"], failed["data"]["error"]) == ("reported", "boom")
    assert failed["task"] == dead["task"] == {"queue": "dev", "title": "build the thing"}
    assert dead["data"]["errors"] == ["boom"]
    assert paused["data"] == {"by": "alice", "reason": "maintenance"} and "task" not in paused
    for request in endpoint.received:
        assert (request.method, request.path) == ("POST", "/hook")
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"].startswith("sched/")
        assert request.headers["X-Sched-Delivery"] == request.body["id"]
        assert request.headers["X-Sched-Event"] == request.body["event"]
    assert sorted(ids(report.delivered)) == sorted(b["id"] for b in endpoint.bodies())

    rebuild_projections(ws)  # the outbox is not a projection: nothing is sent again
    assert webhooks.collect(ws) == 0
    assert webhooks.deliver_due(ws) == webhooks.DeliveryReport()
    assert len(endpoint.received) == 3
    assert [row["status"] for row in outbox(ws)] == ["delivered"] * 3


def test_only_subscribed_events_are_posted_and_history_is_not(make_workspace, endpoint):
    ws = make_workspace(webhooks=[{"url": endpoint.url(), "events": ["task.dead_lettered"]}])
    fail_task(ws, max_attempts=1)  # before the first collect: history, never sent
    assert webhooks.collect(ws) == 0
    fail_task(ws, max_attempts=2)  # failed, retried later: not subscribed
    operator.pause(ws, "alice")
    assert webhooks.collect(ws) == 0
    assert webhooks.deliver_due(ws) == webhooks.DeliveryReport()
    assert endpoint.received == []


def test_a_claim_that_never_reached_its_worker_is_no_failure_to_post(hooked, endpoint):
    """An HTTP claim whose client timed out is given back as `undelivered`: nothing ran,
    so an alert on task.failed must not fire for it; the attempt that ran and failed
    after it is posted."""
    ws = hooked(events=["task.failed"])
    (task,) = submit(ws, [TaskSpec(queue="dev", title="build the thing", max_attempts=1)])
    claim = worker.claim(ws, "ann")
    worker.release_undelivered(ws, claim, "the client went away before the answer")
    assert webhooks.collect(ws) == 0
    assert fail_task_again(ws, task.task_id) == "dead"  # its one attempt was not used up
    assert webhooks.collect(ws) == 1
    webhooks.deliver_due(ws)
    (failed,) = endpoint.bodies()
    assert (failed["data"]["reason"], failed["data"]["attempt"]) == ("reported", 2)  # (numbers stay unique)


def fail_task_again(ws: Workspace, task_id: int) -> str:
    claim = worker.claim(ws, "ann")
    assert claim is not None and claim.task.task_id == task_id
    return worker.fail(ws, task_id, claim.token, "boom")


def test_a_failing_endpoint_is_retried_after_the_backoff(hooked, endpoint):
    ws = hooked(["task.failed"], webhook_backoff_base_seconds=10)
    fail_task(ws)
    webhooks.collect(ws)
    endpoint.status = 500
    (failure,) = webhooks.deliver_due(ws).failed
    assert failure["error"] == "HTTP 500 Internal Server Error"
    assert failure["attempts"] == 1
    (pending,) = outbox(ws, "pending")
    assert pending["last_error"] == failure["error"]
    assert pending["next_attempt_at"] == failure["next_attempt_at"]

    endpoint.status = 200
    assert webhooks.deliver_due(ws) == webhooks.DeliveryReport()  # still backing off
    assert len(endpoint.received) == 1
    ws.clock.advance(10)  # the first delay is drawn below 10 s
    (delivered,) = webhooks.deliver_due(ws).delivered
    assert (delivered["id"], delivered["attempts"]) == (failure["id"], 2)
    assert [r.headers["X-Sched-Delivery"] for r in endpoint.received] == [failure["id"]] * 2
    assert outbox(ws, "pending") == []


def test_each_retry_waits_below_a_doubling_cap_bounded_by_the_maximum(hooked, endpoint):
    """After the n-th failure the delay is drawn (from ws.rng) uniform below
    min(webhook_backoff_max_seconds, webhook_backoff_base_seconds * 2 ^ (n - 1)): here
    below 10 s, 20 s, then 25 s twice (the maximum caps 40 s and 80 s)."""
    ws = hooked(["task.failed"], webhook_backoff_base_seconds=10, webhook_backoff_max_seconds=25,
                webhook_max_attempts=10)
    fail_task(ws)
    webhooks.collect(ws)
    endpoint.status = 500
    ws.rng, draws = random.Random(0), random.Random(0)  # the same draws, for the expectation
    for n, cap in enumerate([10, 20, 25, 25], start=1):
        now = ws.clock.now()
        (failure,) = webhooks.deliver_due(ws).failed
        assert failure["attempts"] == n
        delay = (from_text(failure["next_attempt_at"]) - now).total_seconds()
        assert 0 <= delay < cap
        assert delay == pytest.approx(draws.random() * cap, abs=1e-3), (n, delay)
        assert webhooks.deliver_due(ws) == webhooks.DeliveryReport()  # still backing off
        ws.clock.advance(delay)
    assert len(endpoint.received) == 4
    endpoint.status = 200
    (delivered,) = webhooks.deliver_due(ws).delivered
    assert delivered["attempts"] == 5


def test_a_restart_in_between_loses_nothing_and_sends_nothing_twice(hooked, endpoint):
    ws = hooked(["task.failed", "scheduler.paused"])
    fail_task(ws)
    webhooks.collect(ws)
    endpoint.status = 500
    (first,) = webhooks.deliver_due(ws).failed
    operator.pause(ws, "alice")  # recorded, not yet collected
    settings, clock = ws.settings, ws.clock
    ws.close()

    ws = Workspace(settings, clock=clock, rng=random.Random(1))  # a new process, same files
    endpoint.status = 200
    clock.advance(10)
    assert webhooks.collect(ws) == 1
    report = webhooks.deliver_due(ws)
    ws.close()
    assert sorted(ids(report.delivered)) == sorted([first["id"], endpoint.received[-1].body["id"]])

    ws = Workspace(settings, clock=clock)
    clock.advance(3600)
    assert webhooks.collect(ws) == 0
    assert webhooks.deliver_due(ws) == webhooks.DeliveryReport()
    ws.close()
    assert [b["event"] for b in endpoint.bodies()] == ["task.failed", "task.failed", "scheduler.paused"]


def test_a_delivery_to_a_url_no_longer_configured_is_given_up_unsent(hooked, endpoint):
    ws = hooked()
    fail_task(ws)
    webhooks.collect(ws)
    ws.close()
    other = WebhookConfig(url="http://127.0.0.1:9/other", events=["task.failed"])
    ws = Workspace(ws.settings.model_copy(update={"webhooks": [other]}), clock=ws.clock)
    (gave_up,) = webhooks.deliver_due(ws).gave_up
    assert (gave_up["error"], gave_up["attempts"]) == ("the URL is no longer configured", 0)
    assert endpoint.received == []
    ws.close()


def test_a_process_without_webhooks_leaves_the_cursor_and_the_outbox_alone(hooked, endpoint):
    ws = hooked()
    fail_task(ws)
    webhooks.collect(ws)  # one delivery pending
    bare = Workspace(ws.settings.model_copy(update={"webhooks": []}), clock=ws.clock)
    fail_task(ws)  # a second failure, recorded after the cursor
    assert webhooks.collect(bare) == 0 and webhooks.deliver_due(bare) == webhooks.DeliveryReport()
    bare.close()
    assert webhooks.collect(ws) == 1  # the second failure is still queued by a configured one
    assert len(webhooks.deliver_due(ws).delivered) == 2
    assert len(endpoint.bodies()) == 2
    ws.close()


def test_a_deliverer_that_dies_while_posting_loses_nothing(hooked, endpoint):
    ws = hooked(webhook_timeout_seconds=5)
    fail_task(ws)
    webhooks.collect(ws)

    def die(*_args: object) -> None:
        raise SystemExit("killed while posting")

    with pytest.raises(SystemExit):
        webhooks.deliver_due(ws, post=die)
    ws.close()

    ws = Workspace(ws.settings, clock=ws.clock)
    assert webhooks.deliver_due(ws) == webhooks.DeliveryReport()  # claimed by the dead one ...
    ws.clock.advance(12)  # ... for twice the timeout, plus one
    (delivered,) = webhooks.deliver_due(ws).delivered
    assert delivered["attempts"] == 1
    assert [b["id"] for b in endpoint.bodies()] == [delivered["id"]]
    ws.close()


def test_a_delivery_another_deliverer_settled_meanwhile_is_left_alone(hooked):
    ws = hooked(webhook_timeout_seconds=5)
    fail_task(ws)
    webhooks.collect(ws)
    other = Workspace(ws.settings, clock=ws.clock)  # e.g. cron beside the daemon

    def slow(*_args: object) -> str:
        ws.clock.advance(12)  # past the claim: the other deliverer takes the row
        assert len(webhooks.deliver_due(other).delivered) == 1
        return "no answer within 5 s"

    assert webhooks.deliver_due(ws, post=slow) == webhooks.DeliveryReport()
    (row,) = outbox(ws)
    assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 1, None)
    other.close()


def test_a_redirect_is_not_followed(hooked, endpoint):
    ws = hooked()
    fail_task(ws)
    webhooks.collect(ws)
    endpoint.status = 302
    (failure,) = webhooks.deliver_due(ws).failed
    assert failure["error"] == (f"HTTP 302 Found: redirect to {endpoint.url('/elsewhere')} "
                                "not followed")
    assert [r.path for r in endpoint.received] == ["/hook"]


def test_a_slow_endpoint_times_out(hooked, endpoint):
    ws = hooked(webhook_timeout_seconds=0.2)
    fail_task(ws)
    webhooks.collect(ws)
    endpoint.hold = True
    (failure,) = webhooks.deliver_due(ws).failed
    endpoint.release.set()
    assert failure["error"] == "no answer within 0.2 s"


def test_posts_hold_no_database_lock(hooked):
    ws = hooked()
    fail_task(ws)
    webhooks.collect(ws)
    seen = []

    def post(url, body, headers, timeout):
        with closing(sqlite3.connect(ws.settings.db_path, timeout=0)) as other:
            other.execute("BEGIN IMMEDIATE")  # fails at once if deliver_due held the lock
            other.rollback()
        seen.append(json.loads(body)["event"])
        return None

    assert len(webhooks.deliver_due(ws, post=post).delivered) == 1
    assert seen == ["task.failed"]


def test_a_delivery_is_given_up_after_max_attempts(make_workspace):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/hook"
    ws = make_workspace(webhooks=[{"url": closed, "events": ["task.failed"]}], webhook_max_attempts=2)
    webhooks.collect(ws)
    fail_task(ws)
    webhooks.collect(ws)
    (failure,) = webhooks.deliver_due(ws).failed
    assert failure["error"] == "cannot connect: Connection refused"
    ws.clock.advance(10)
    (gave_up,) = webhooks.deliver_due(ws).gave_up
    assert (gave_up["id"], gave_up["attempts"]) == (failure["id"], 2)
    ws.clock.advance(86_400)
    assert webhooks.deliver_due(ws) == webhooks.DeliveryReport()
    (row,) = outbox(ws, "failed")
    assert (row["status"], row["last_error"], row["next_attempt_at"]) == ("gave_up", failure["error"], None)


def test_notify_posts_an_event_that_is_not_in_the_log(hooked, endpoint):
    ws = hooked(["health.changed"])
    with ws.db.write() as txn:
        added = webhooks.notify(txn, ws.settings, "health.changed",
                                {"status": "degraded", "was": "healthy"}, ws.clock.now())
    assert added == 1
    assert len(webhooks.deliver_due(ws).delivered) == 1
    (body,) = endpoint.bodies()
    assert (body["event"], body["seq"], body["data"]) == (
        "health.changed", None, {"status": "degraded", "was": "healthy"})


def test_a_change_of_the_health_level_is_announced_once(hooked, endpoint):
    from scheduler.daemon.health_changes import record_health
    from scheduler.reads.health import health
    from scheduler.tick import tick

    ws = hooked(["health.changed"])
    tick(ws)
    assert record_health(ws, health(ws)) is None  # the first evaluation: nothing to compare
    (ws.settings.home / "agent-control.json").write_text("[")  # the control file breaks
    assert record_health(ws, health(ws)) == "healthy"
    assert record_health(ws, health(ws)) is None  # still unhealthy: no news
    assert len(webhooks.deliver_due(ws).delivered) == 1
    (body,) = endpoint.bodies()
    assert body["event"] == "health.changed"
    assert (body["data"]["from"], body["data"]["to"]) == ("healthy", "unhealthy")
    assert [c["name"] for c in body["data"]["checks"]] == ["control_file"]


# -- the command line and the daemon ------------------------------------------------------

@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("SCHED_")]:
        monkeypatch.delenv(name)


def write_hooks(home: Path, url: str, *lines: str) -> None:
    (home / "sched.toml").write_text("\n".join([*lines, "[[webhooks]]", f'url = "{url}"',
                                                'events = ["task.failed"]', ""]))


def test_webhooks_deliver_and_list_commands(make_workspace, endpoint, clean_env, capsys, monkeypatch):
    ws = make_workspace()
    home = str(ws.settings.home)
    write_hooks(ws.settings.home, endpoint.url())
    assert main(["webhooks", "deliver", "--home", home], clock=ws.clock) == 0  # places the cursor
    fail_task(ws)
    endpoint.status = 500
    capsys.readouterr()
    assert main(["webhooks", "deliver", "--json", "--home", home], clock=ws.clock) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["queued"], report["delivered"], report["gave_up"]) == (1, [], [])
    assert report["failed"][0]["error"] == "HTTP 500 Internal Server Error"

    assert main(["webhooks", "list", "--pending", "--json", "--home", home]) == 0
    (row,) = json.loads(capsys.readouterr().out)["deliveries"]
    assert (row["id"], row["status"], row["attempts"]) == (report["failed"][0]["id"], "pending", 1)
    assert row["body"]["event"] == "task.failed"
    assert main(["webhooks", "list", "--failed", "--json", "--home", home]) == 0
    assert json.loads(capsys.readouterr().out) == {"deliveries": []}
    monkeypatch.setenv("COLUMNS", "80")  # the text: a line a delivery, its URL and event whole
    assert main(["webhooks", "list", "--home", home]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(row["id"])]
    assert line.split()[1:4] == ["task.failed", endpoint.url(), "pending"]

    endpoint.status = 200
    ws.clock.advance(10)
    assert main(["webhooks", "deliver", "--home", home], clock=ws.clock) == 0
    out, err = capsys.readouterr()
    assert out == f"delivered task.failed {row['id']} to {endpoint.url()}\n"
    assert err.splitlines()[-1] == "webhooks: 0 queued, 1 delivered, 0 failed, 0 given up"
    assert main(["webhooks", "list", "--pending", "--failed", "--home", home]) == 2


def test_a_bad_webhook_url_in_sched_toml_exits_2_with_one_line(tmp_path, clean_env, capsys):
    write_hooks(tmp_path, "file:///etc/passwd")
    assert main(["webhooks", "deliver", "--home", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"sched: setting {tmp_path / 'sched.toml'}: webhooks #1 url: the scheme 'file' is not http or https"]


@pytest.mark.slow
def test_the_daemon_delivers_webhooks(tmp_path, endpoint):
    ws = new_workspace(tmp_path)
    write_hooks(tmp_path, endpoint.url(), "webhook_interval_seconds = 0.2")
    ws = Workspace(load_settings({}, {"home": tmp_path}).settings, clock=ws.clock)
    webhooks.collect(ws)  # the cursor, before the event
    fail_task(ws)
    ws.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    daemon = subprocess.Popen([sys.executable, "-m", "cli", "run", "--interval", "60", "--home",
                               str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the webhook", lambda: endpoint.received)
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert "delivering webhooks every 0.2 s" in err
    assert f"webhooks: queued 1; task.failed to {endpoint.url()}: delivered" in err
    assert [b["event"] for b in endpoint.bodies()] == ["task.failed"]


def test_settled_deliveries_leave_the_outbox_after_the_retention(hooked, endpoint):
    ws = hooked(webhook_retention_days=2)
    fail_task(ws)
    webhooks.collect(ws)
    webhooks.deliver_due(ws)
    ws.clock.advance(86400)
    webhooks.collect(ws)
    assert [row["status"] for row in outbox(ws)] == ["delivered"]  # one day: kept
    ws.clock.advance(86401)
    webhooks.collect(ws)
    assert outbox(ws) == []  # two days after its delivery: gone
