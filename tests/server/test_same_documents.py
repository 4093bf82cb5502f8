"""The HTTP API and the CLI are one product (issue 12): for every operation, the body
of the HTTP response is the document `sched ... --json` prints, on an identical
workspace with the same clock, and bad input is the same one line (400/404/409/422
for exit codes 2 and 1) with nothing appended.

Writes run on twins (tests/integration/test_usecases.py): the API (FastAPI's
TestClient, in this process) over twin A, the CLI over twin B, each step's documents
equal (a lease token is random: each side uses its own, left out of the comparison).
Both twins hold the same tokens, named as the CLI's actor (`tester`), so every event
records the same `by`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from scheduler import access
from server.app import create_app
from server.errors import ErrorBody
from server.limits import ServerLimits
from server.routes import agents, scheduler, tasks
from tests.integration.test_usecases import Side, fill, plain

Doc = dict[str, Any]
AGENTS = ("ann", "bob", "qin")


class Http:
    """The API over a side's home and clock, with a token named `tester` (operator) and
    one per agent (named after it)."""

    def __init__(self, side: Side, client: TestClient, tokens: dict[str, str]) -> None:
        self.side, self.client, self.tokens = side, client, tokens

    def call(self, method: str, path: str, body: Any = None, as_: str = "tester") -> tuple[int, Doc]:
        answer = self.client.request(method, f"/api/v1{path}", json=body,
                                     headers={"Authorization": f"Bearer {self.tokens[as_]}"})
        declared(self.client, method, f"/api/v1{path}", answer.status_code, answer.json())
        return answer.status_code, answer.json()


def declared(client: TestClient, method: str, url: str, status: int, body: Any) -> None:
    """The answer is one /openapi.json declares for the operation: its status is listed,
    and a 200 body validates against the route's response model (an error: `ErrorBody`)."""
    path = urlsplit(url).path
    routes = [r for module in (tasks, agents, scheduler) for r in module.router.routes] + scheduler.top.routes
    route = min((r for r in routes if isinstance(r, APIRoute) and method in r.methods
                 and r.path_regex.match(path)), key=lambda r: r.path.count("{"))
    responses = client.app.openapi()["paths"][route.path][method.lower()]["responses"]  # type: ignore[attr-defined]
    assert str(status) in responses, (method, route.path, status, body)
    model = route.response_model if status == 200 else ErrorBody
    if model is not None:
        TypeAdapter(model).validate_python(body)


# what the runner protocol records: the agent's HTTP API token as its actor, or none
RUNNER_EVENTS = {"TaskAssigned", "TaskStarted", "LeaseRenewed", "TaskProgressed", "TaskSucceeded",
                 "TaskFailed"}


def give_tokens(side: Side) -> dict[str, str]:
    tokens = {"tester": access.create_token(side.ws, "tester", "kim", role="operator").token}
    for agent in AGENTS:
        tokens[agent] = access.create_token(side.ws, agent, "kim", agent=agent).token
    return tokens


@pytest.fixture
def http_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Http, Side]]:
    """Twin A behind the API, twin B for the CLI: the same tokens on both."""
    a, b = Side(tmp_path / "a", monkeypatch), Side(tmp_path / "b", monkeypatch)
    tokens = give_tokens(a)
    give_tokens(b)
    app = create_app(a.ws.settings, a.clock, ServerLimits(claim_poll_seconds=0.01))
    with TestClient(app) as client:
        yield Http(a, client, tokens), b
    a.ws.close()
    b.ws.close()


def test_every_write_answers_the_cli_document(http_cli: tuple[Http, Side]) -> None:
    api, b = http_cli
    leases: dict[str, str] = {}

    def same(method: str, path: str, body: Any, *args: str, as_: str = "tester",
             token_free: bool = False) -> Doc:
        status, mine = api.call(method, path, body, as_)
        theirs = b.json(*args)
        assert status == 200, (path, mine)
        if token_free and mine["task"] is not None:  # a claim: each side got its own token
            leases["a"], leases["b"] = mine["task"].pop("token"), theirs["task"].pop("token")
        assert mine == theirs, args
        return mine

    def step(seconds: float = 1) -> None:
        api.side.clock.advance(seconds)
        b.clock.advance(seconds)

    same("POST", "/tasks", {"queue": "dev", "title": "one", "priority": 2},
         "submit", "--queue", "dev", "--title", "one", "--priority", "2")
    same("POST", "/tasks", {"queue": "dev", "title": "later", "delay": "10m", "payload": {"k": [1]},
                            "requires": ["gpu"]},
         "submit", "-q", "dev", "-t", "later", "--delay", "10m", "--payload", '{"k": [1]}',
         "--requires", "gpu")
    same("POST", "/tasks", {"queue": "qa", "title": "ok?", "requires_approval": True, "due": "2h",
                            "idempotency_key": "k1"},
         "submit", "-q", "qa", "-t", "ok?", "--requires-approval", "--due", "2h", "--idempotency-key", "k1")
    # the Idempotency-Key header is the same key: the same task, not created
    answer = api.client.post("/api/v1/tasks", json={"queue": "qa", "title": "again"}, headers={
        "Authorization": f"Bearer {api.tokens['tester']}", "Idempotency-Key": "k1"})
    assert answer.json() == b.json("submit", "-q", "qa", "-t", "again", "--idempotency-key", "k1")
    dry = same("POST", "/tasks", {"queue": "dev", "title": "dry", "dry_run": True},
               "submit", "-q", "dev", "-t", "dry", "--dry-run")
    assert dry["dry_run"] and dry["changes"]
    lines = [{"queue": "dev", "title": "batch one"},
             {"queue": "qa", "title": "no", "requires_approval": True}]
    batch = b.home / "batch.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    same("POST", "/tasks", {"tasks": lines}, "submit", "--file", str(batch))
    step()
    same("POST", "/tasks/3/approve", None, "approve", "3")
    same("POST", "/tasks/5/reject", {"reason": "no"}, "reject", "5", "--reason", "no")
    same("POST", "/pause", {"reason": "lunch"}, "pause", "--reason", "lunch")
    same("POST", "/pause", None, "pause")  # already paused
    same("POST", "/resume", None, "resume")
    same("POST", "/resume", None, "resume")  # was not paused
    step()

    claimed = same("POST", "/agents/ann/claim", None, "worker", "claim", "--agent", "ann",
                   as_="ann", token_free=True)
    task = claimed["task"]["task_id"]
    step()
    same("POST", f"/tasks/{task}/heartbeat", {"token": leases["a"], "percent": 10},
         "worker", "heartbeat", str(task), "--token", leases["b"], "--percent", "10", as_="ann")
    same("POST", f"/tasks/{task}/heartbeat", {"token": leases["a"]},
         "worker", "heartbeat", str(task), "--token", leases["b"], as_="ann")
    same("POST", f"/tasks/{task}/progress", {"token": leases["a"], "message": "half"},
         "worker", "progress", str(task), "--token", leases["b"], "--message", "half", as_="ann")
    step(60)
    same("POST", f"/tasks/{task}/progress", {"token": leases["a"], "percent": 50.5},
         "worker", "progress", str(task), "--token", leases["b"], "--percent", "50.5", as_="ann")
    same("POST", f"/tasks/{task}/complete", {"token": leases["a"], "result": {"done": [1, 2]}},
         "worker", "complete", str(task), "--token", leases["b"], "--result", '{"done": [1, 2]}', as_="ann")

    claimed = same("POST", "/agents/ann/claim", {"wait_seconds": 0}, "worker", "claim", "--agent", "ann",
                   as_="ann", token_free=True)
    task = claimed["task"]["task_id"]
    same("POST", f"/tasks/{task}/fail", {"token": leases["a"], "error": "boom", "retry": False},
         "worker", "fail", str(task), "--token", leases["b"], "--error", "boom", "--no-retry", as_="ann")
    same("POST", "/tasks/requeue", {"all": True, "queue": "dev", "dry_run": True},
         "requeue", "--all", "--queue", "dev", "--dry-run")
    same("POST", f"/tasks/{task}/requeue", None, "requeue", str(task))
    step()

    claimed = same("POST", "/agents/ann/claim", None, "worker", "claim", "--agent", "ann",
                   as_="ann", token_free=True)
    task = claimed["task"]["task_id"]
    same("POST", f"/tasks/{task}/cancel", {"dry_run": True}, "cancel", str(task), "--dry-run")
    same("POST", f"/tasks/{task}/cancel", {"reason": "enough"}, "cancel", str(task), "--reason", "enough")
    same("POST", f"/tasks/{task}/heartbeat", {"token": leases["a"]},
         "worker", "heartbeat", str(task), "--token", leases["b"], as_="ann")  # cancel: true
    same("POST", f"/tasks/{task}/fail", {"token": leases["a"], "error": "stopped"},
         "worker", "fail", str(task), "--token", leases["b"], "--error", "stopped", as_="ann")
    same("POST", "/tasks/2/cancel", None, "cancel", "2")
    step()

    same("POST", "/tasks", {"queue": "dev", "title": "for bob", "assignee": "bob"},
         "submit", "-q", "dev", "-t", "for bob", "--assignee", "bob")
    same("POST", "/agents/bob/claim", None, "worker", "claim", "--agent", "bob", as_="bob", token_free=True)
    same("POST", "/agents/qin/claim", None, "worker", "claim", "--agent", "qin", as_="qin", token_free=True)
    same("POST", "/agents/qin/claim", None, "worker", "claim", "--agent", "qin", as_="qin")  # {"task": null}
    same("POST", "/agents/bob/drain", {"reason": "patch"}, "agents", "drain", "bob", "--reason", "patch")
    same("POST", "/agents/qin/evict", {"dry_run": True}, "agents", "evict", "qin", "--dry-run")
    same("POST", "/agents/qin/evict", None, "agents", "evict", "qin")
    same("POST", "/agents/bob/restore", None, "agents", "restore", "bob")
    ids = [same("POST", "/tasks", {"queue": "qa", "title": title, "requires_approval": True},
                "submit", "-q", "qa", "-t", title, "--requires-approval")["task_id"] for title in "ab"]
    same("POST", "/tasks/approve", {"ids": ids[:1]}, "approve", str(ids[0]))
    same("POST", "/tasks/reject", {"ids": ids[1:], "reason": "no"}, "reject", str(ids[1]), "--reason", "no")

    # the two logs hold the same events, with the same actors (a lease token's hash aside),
    # but that the runner protocol's events name the agent's token only through the API
    def trail(side: Side) -> list[tuple[str, str, Any]]:
        with side.ws.read() as (log, _views):
            return [(r.type, r.stream_id, json.loads(r.data).get("by")) for r in log.read()]

    through_api, through_cli = trail(api.side), trail(b)
    assert [event[:2] for event in through_api] == [event[:2] for event in through_cli]
    for (kind, _stream, api_by), (_kind, _stream, cli_by) in zip(through_api, through_cli, strict=True):
        if kind in RUNNER_EVENTS and api_by is not None:  # (else a tick's, an eviction's)
            assert api_by in AGENTS and cli_by is None, kind
        else:
            assert api_by == cli_by, kind


@pytest.fixture
def busy_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Http]:
    """One home with history (test_usecases' `busy`), behind the API and for the CLI."""
    side = Side(tmp_path / "home", monkeypatch)
    tokens = give_tokens(side)
    fill(side)
    app = create_app(side.ws.settings, side.clock, ServerLimits())
    with TestClient(app) as client:
        yield Http(side, client, tokens)
    side.ws.close()


READS: list[tuple[str, tuple[str, ...]]] = [
    ("/tasks?limit=100", ("tasks", "--limit", "100")),
    ("/tasks?queue=dev&limit=2", ("tasks", "-q", "dev", "--limit", "2")),
    ("/tasks?queue=dev&limit=2&cursor=2", ("tasks", "-q", "dev", "--limit", "2", "--cursor", "2")),
    ("/tasks?status=dead&limit=5", ("tasks", "--status", "dead", "--limit", "5")),
    ("/tasks?agent=qin&limit=5", ("tasks", "--agent", "qin", "--limit", "5")),
    ("/tasks?unassigned=true&limit=5", ("tasks", "--unassigned", "--limit", "5")),
    ("/tasks?title=O&limit=2", ("tasks", "--title", "O", "--limit", "2")),
    ("/tasks?title=o&limit=2&cursor=2", ("tasks", "--title", "o", "--limit", "2", "--cursor", "2")),
    ("/tasks?title=OU&queue=dev&status=queued&limit=5",
     ("tasks", "--title", "OU", "-q", "dev", "--status", "queued", "--limit", "5")),
    ("/tasks/1", ("show", "1")),
    ("/tasks/2", ("show", "2")),
    ("/tasks/1/explain", ("explain", "1")),
    ("/tasks/4/explain", ("explain", "4")),
    ("/status", ("status",)),
    ("/status?at=4", ("status", "--at", "4")),
    ("/status?at=2026-01-01T00:00:05%2B00:00", ("status", "--at", "2026-01-01T00:00:05+00:00")),
    ("/metrics", ("metrics",)),
    ("/metrics?since=24h", ("metrics", "--since", "24h")),
    ("/replay?verify=true", ("replay", "--verify")),
    ("/replay?head=true", ("replay", "--head")),
    ("/agents", ("agents", "list")),
]


@pytest.mark.parametrize(("path", "args"), READS, ids=[" ".join(args) for _, args in READS])
def test_every_read_answers_the_cli_document(busy_api: Http, path: str, args: tuple[str, ...]) -> None:
    status, body = busy_api.call("GET", path)
    assert status == 200, body
    assert body == plain(busy_api.side.json(*args))


def test_the_tasks_default_page_is_the_cli_listing_with_a_cursor(busy_api: Http) -> None:
    _, body = busy_api.call("GET", "/tasks")
    assert body == busy_api.side.json("tasks", "--limit", "100")
    assert body["next_cursor"] is None and body["tasks"] == busy_api.side.json("tasks")["tasks"]


def test_health_is_the_cli_document(busy_api: Http) -> None:
    answer = busy_api.client.get("/health")
    assert answer.json() == busy_api.side.json("health")


@pytest.mark.parametrize(("query", "args"), [
    ("", ()), ("task=1", ("--task", "1")), ("since=3&until=6", ("--since", "3", "--until", "6")),
    ("since=2026-01-01T00:00:05%2B00:00", ("--since", "2026-01-01T00:00:05+00:00")),
])
def test_replay_pages_hold_the_cli_lines(busy_api: Http, query: str, args: tuple[str, ...]) -> None:
    code, out, _ = busy_api.side.sched("replay", *args, "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and lines
    _, whole = busy_api.call("GET", f"/replay?{query}&limit=1000")
    assert whole == {"events": lines, "next_since": None}
    params, paged = dict(parse_qsl(query)), []
    while True:  # two at a time, each page from where the one before said
        page = busy_api.client.get("/api/v1/replay", params={**params, "limit": 2}, headers={
            "Authorization": f"Bearer {busy_api.tokens['tester']}"}).json()
        paged += page["events"]
        if page["next_since"] is None:
            break
        params["since"] = page["next_since"]
    assert paged == lines


def test_prometheus_text_is_the_cli_text(busy_api: Http) -> None:
    answer = busy_api.client.get("/metrics", headers={"Authorization": f"Bearer {busy_api.tokens['tester']}"})
    code, out, _ = busy_api.side.sched("metrics", "--prometheus")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert code == 0 and answer.text == out


BAD: list[tuple[str, str, Any, tuple[str, ...]]] = [
    ("POST", "/tasks", {"queue": "dev"}, ("submit", "--queue", "dev")),
    ("POST", "/tasks", {"queue": "dev", "title": "t", "delay": "1m",
                        "not_before": "2026-01-02T00:00:00+00:00"},
     ("submit", "-q", "dev", "-t", "t", "--delay", "1m", "--not-before", "2026-01-02T00:00:00+00:00")),
    ("POST", "/tasks", {"queue": "dev", "title": "t", "delay": "soon"},
     ("submit", "-q", "dev", "-t", "t", "--delay", "soon")),
    ("POST", "/tasks", {"queue": "dev", "title": "t", "max_attempts": 0},
     ("submit", "-q", "dev", "-t", "t", "--max-attempts", "0")),
    ("POST", "/tasks", {"queue": "dev", "title": "t", "not_before": "tomorrow"},
     ("submit", "-q", "dev", "-t", "t", "--not-before", "tomorrow")),
    ("POST", "/tasks", {"queue": "ops", "title": "t"}, ("submit", "-q", "ops", "-t", "t")),
    ("POST", "/tasks", {"queue": "dev", "title": "t", "assignee": "qin"},
     ("submit", "-q", "dev", "-t", "t", "--assignee", "qin")),
    ("POST", "/tasks", {"queue": "dev", "title": "t", "after": [99]},
     ("submit", "-q", "dev", "-t", "t", "--after", "99")),
    ("POST", "/tasks", {"queue": "dev", "priority": 3, "tasks": [{}]},
     ("submit", "--file", "tasks.jsonl", "--queue", "dev", "--priority", "3")),
    ("POST", "/tasks/requeue", {}, ("requeue",)),
    ("POST", "/tasks/requeue", {"ids": [1], "all": True, "queue": "dev"},
     ("requeue", "1", "--all", "--queue", "dev")),
    ("POST", "/tasks/1/requeue", None, ("requeue", "1")),
    ("POST", "/tasks/999/cancel", None, ("cancel", "999")),
    ("POST", "/tasks/1/cancel", None, ("cancel", "1")),
    ("POST", "/tasks/1/approve", None, ("approve", "1")),
    ("POST", "/tasks/999/reject", None, ("reject", "999")),
    ("POST", "/tasks/approve", {"ids": [1]}, ("approve", "1")),
    ("GET", "/tasks?status=sleeping", None, ("tasks", "--status", "sleeping")),
    ("GET", "/tasks?agent=ann&unassigned=true", None, ("tasks", "--agent", "ann", "--unassigned")),
    ("GET", "/tasks?agent=zed", None, ("tasks", "--agent", "zed")),
    ("GET", "/tasks?cursor=later", None, ("tasks", "--cursor", "later")),
    ("GET", "/tasks/999", None, ("show", "999")),
    ("GET", "/status?at=yesterday", None, ("status", "--at", "yesterday")),
    ("GET", "/metrics?since=0", None, ("metrics", "--since", "0")),
    ("GET", "/metrics?since=a%20week", None, ("metrics", "--since", "a week")),
    ("GET", "/tasks/999/explain", None, ("explain", "999")),
    ("GET", "/replay?expect_head=1:ab", None, ("replay", "--expect-head", "1:ab")),
    ("GET", "/replay?head=true&verify=true", None, ("replay", "--head", "--verify")),
    ("GET", "/replay?verify=true&expect_head=x", None, ("replay", "--verify", "--expect-head", "x")),
    ("GET", "/replay?since=soon", None, ("replay", "--since", "soon")),
    ("POST", "/pause", {"reason": "x" * 3000}, ("pause", "--reason", "x" * 3000)),
    ("POST", "/agents/zed/drain", None, ("agents", "drain", "zed")),
    ("POST", "/agents/zed/evict", None, ("agents", "evict", "zed")),
    ("POST", "/tasks/1/heartbeat", {"token": "t", "percent": 150},
     ("worker", "heartbeat", "1", "--token", "t", "--percent", "150")),
    ("POST", "/tasks/3/heartbeat", {"token": "not-it"}, ("worker", "heartbeat", "3", "--token", "not-it")),
    ("POST", "/tasks/1/progress", {"token": "t"}, ("worker", "progress", "1", "--token", "t")),
    ("POST", "/tasks/999/complete", {"token": "t"}, ("worker", "complete", "999", "--token", "t")),
    ("POST", "/tasks/1/fail", {"token": "t", "error": "  "},
     ("worker", "fail", "1", "--token", "t", "--error", "  ")),
]
# a value FastAPI refuses before the use case sees it: the line the CLI's parser prints
PARSED: list[tuple[str, tuple[str, ...]]] = [
    ("/tasks?limit=abc", ("tasks", "--limit", "abc")),
    ("/tasks?limit=0", ("tasks", "--limit", "0")),
    ("/tasks/0", ("show", "0")),
    ("/tasks/abc", ("show", "abc")),
    ("/tasks/1.0", ("show", "1.0")),  # (pydantic reads 1.0 and 1_0 as 1 and 10: no task)
    ("/tasks/1_0", ("show", "1_0")),
    ("/tasks/+1/explain", ("explain", "+1")),
    ("/tasks/9223372036854775808", ("show", "9223372036854775808")),
    ("/replay?task=1.0", ("replay", "--task", "1.0")),
    ("/replay?task=x", ("replay", "--task", "x")),
]
BAD += [("GET", path, None, args) for path, args in PARSED]
STATUS_OF_EXIT = {2: {400, 404, 422}, 1: {409}}


@pytest.mark.parametrize(("method", "path", "body", "args"), BAD,
                         ids=[" ".join(args)[:60] for *_, args in BAD])
def test_bad_input_answers_the_cli_line(busy_api: Http, method: str, path: str, body: Any,
                                        args: tuple[str, ...]) -> None:
    """The same one line, a status for the CLI's exit code, and nothing appended."""
    side = busy_api.side
    before = side.events()
    as_ = "qin" if "heartbeat" in path and path.startswith("/tasks/3") else \
        "ann" if any(w in path for w in ("heartbeat", "progress", "complete", "fail")) else "tester"
    status, answer = busy_api.call(method, path, body, as_)
    code, out, err = side.sched(*args)
    assert out == ""
    assert err == f"sched: {answer['error']}\n"
    assert status in STATUS_OF_EXIT[code], (status, code)
    assert side.events() == before
