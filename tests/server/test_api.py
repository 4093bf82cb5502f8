"""The HTTP API as a client meets it: who may call what (401, 403), the same documents
as the CLI's --json, events recorded with the token's name as the actor, errors as one
JSON line, and the body size limit."""

from __future__ import annotations

import pytest

from eventlog.errors import BadInput
from scheduler import access, operator
from scheduler.reads import queries
from scheduler.reads.health import health
from server.limits import ServerLimits
from tests.server.conftest import Api


def test_health_needs_no_token_and_is_the_document_of_sched_health(api: Api):
    answer = api.client.get("/health")
    assert answer.status_code == 200  # degraded (no tick yet) still serves
    assert answer.json() == health(api.ws) and answer.json()["status"] == "degraded"


def test_health_is_503_when_unhealthy(api: Api):
    from scheduler.tick import tick

    tick(api.ws)
    api.ws.clock.advance(3600)  # the last tick is long past: unhealthy
    answer = api.client.get("/health")
    assert answer.status_code == 503
    assert answer.json()["status"] == "unhealthy" and answer.json() == health(api.ws)


def test_a_head_probe_gets_the_status_without_the_document(make_api):
    from scheduler.tick import tick

    api = make_api(ServerLimits(health_cache_seconds=0))
    answer = api.client.head("/health")
    assert (answer.status_code, answer.content) == (200, b"")
    tick(api.ws)
    api.ws.clock.advance(3600)
    answer = api.client.head("/health")
    assert (answer.status_code, answer.content) == (503, b"")


def test_probing_health_costs_one_report_per_window_however_often_it_is_asked(
        make_api, monkeypatch: pytest.MonkeyPatch):
    """An anonymous probe runs the integrity check and looks through /proc: within
    `health_cache_seconds` the last report is answered again."""
    from scheduler.reads import health as checks

    made: list[dict] = []
    real = checks.health
    monkeypatch.setattr(checks, "health", lambda ws: made.append(real(ws)) or made[-1])
    cached = make_api(ServerLimits(health_cache_seconds=3600))
    answers = [cached.client.get("/health").json() for _ in range(20)]
    assert len(made) == 1 and all(answer == made[0] for answer in answers)
    fresh = make_api(ServerLimits(health_cache_seconds=0))
    for _ in range(3):
        fresh.client.get("/health")
    assert len(made) == 1 + 3


def test_status_is_the_document_of_sched_status(api: Api):
    for name in ("ops", "ci", "dash"):
        answer = api.client.get("/api/v1/status", headers=api.auth(name))
        assert answer.status_code == 200
        assert answer.json() == queries.status(api.ws)
    assert answer.json()["last_seq"] == len(api.events())


@pytest.mark.parametrize("headers, says", [
    ({}, "no bearer token"),
    ({"Authorization": "Basic b3BzOnB3"}, "no bearer token"),
    ({"Authorization": "Bearer sched_not-a-token"}, "not valid"),
    ({"Authorization": "Bearer "}, "no bearer token"),
])
def test_no_or_a_bad_token_is_401(api: Api, headers, says):
    answer = api.client.get("/api/v1/status", headers=headers)
    assert answer.status_code == 401
    assert says in answer.json()["error"] and set(answer.json()) == {"error"}
    assert answer.headers["www-authenticate"] == "Bearer"


def test_a_revoked_token_is_refused_from_the_next_request(api: Api):
    assert api.client.get("/api/v1/status", headers=api.auth("dash")).status_code == 200
    access.revoke_token(api.ws, "dash", "kim")
    assert api.client.get("/api/v1/status", headers=api.auth("dash")).status_code == 401


def test_an_agent_token_may_not_read_or_operate(api: Api):
    assert api.client.get("/api/v1/status", headers=api.auth("box")).status_code == 403
    answer = api.client.post("/api/v1/pause", headers=api.auth("box"))
    assert answer.status_code == 403 and "may not operate" in answer.json()["error"]


def test_pause_and_resume_record_the_tokens_name_as_the_actor(api: Api):
    before = len(api.events())
    paused = api.client.post("/api/v1/pause", json={"reason": "deploy"}, headers=api.auth("ops"))
    assert paused.status_code == 200 and paused.json() == {"paused": True, "changed": True}
    assert api.events()[before:] == [{"seq": before + 1, "type": "SchedulerPaused",
                                      "data": {"by": "ops", "reason": "deploy"}}]
    assert queries.status(api.ws)["paused"]["by"] == "ops"
    again = api.client.post("/api/v1/pause", headers=api.auth("ops"))
    assert again.json() == {"paused": True, "changed": False} and len(api.events()) == before + 1
    resumed = api.client.post("/api/v1/resume", headers=api.auth("ops"))
    assert resumed.json() == {"paused": False, "changed": True, "stop_file": False}
    assert api.events()[-1] == {"seq": before + 2, "type": "SchedulerResumed", "data": {"by": "ops"}}


@pytest.mark.parametrize("name", ["ci", "dash", "box"])
def test_only_an_operator_may_pause_and_a_refusal_appends_nothing(api: Api, name: str):
    before = api.events()
    for path in ("/api/v1/pause", "/api/v1/resume"):
        assert api.client.post(path, headers=api.auth(name)).status_code == 403
    assert api.events() == before


@pytest.mark.parametrize("body", [{"reason": 5}, {"reason": "x", "by": "mallory"}, [1], "text"])
def test_a_body_that_does_not_match_is_422_one_line_and_appends_nothing(api: Api, body):
    before = api.events()
    answer = api.client.post("/api/v1/pause", json=body, headers=api.auth("ops"))
    assert answer.status_code == 422
    assert set(answer.json()) == {"error"} and "\n" not in answer.json()["error"]
    assert api.events() == before


def test_bad_input_is_400_with_the_line_the_cli_prints(api: Api):
    before = api.events()
    answer = api.client.post("/api/v1/pause", json={"reason": "x" * 3000}, headers=api.auth("ops"))
    assert answer.status_code == 400
    with pytest.raises(BadInput) as raised:
        operator.pause(api.ws, "ops", "x" * 3000)
    assert answer.json() == {"error": raised.value.message}
    assert api.events() == before


def test_a_body_over_the_limit_is_413_whether_or_not_its_length_is_declared(api: Api):
    before = api.events()
    big = b'{"reason": "' + b"x" * 5000 + b'"}'
    declared = api.client.post("/api/v1/pause", content=big, headers={
        **api.auth("ops"), "Content-Type": "application/json"})
    assert declared.status_code == 413 and "limit of 4096 bytes" in declared.json()["error"]
    chunked = api.client.post("/api/v1/pause", content=iter([big[:3000], big[3000:]]), headers={
        **api.auth("ops"), "Content-Type": "application/json"})
    assert chunked.status_code == 413 and "limit of 4096 bytes" in chunked.json()["error"]
    assert api.events() == before


def test_unknown_paths_and_methods_answer_in_the_same_shape(api: Api):
    assert api.client.get("/api/v1/nothing").json() == {"error": "Not Found"}
    answer = api.client.get("/api/v1/pause", headers=api.auth("ops"))
    assert answer.status_code == 405 and set(answer.json()) == {"error"}


def test_openapi_is_the_contract(api: Api):
    doc = api.client.get("/openapi.json").json()
    paths = {"/health", "/api/v1/status", "/api/v1/pause", "/api/v1/resume", "/api/v1/events"}
    assert paths <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    pause = doc["paths"]["/api/v1/pause"]["post"]
    assert {"401", "403", "413", "422"} <= set(pause["responses"])
    assert api.client.get("/docs").status_code == 404  # no page that loads scripts from a CDN


def test_the_contract_takes_every_window_the_server_takes(api: Api):
    """`since` is described, not constrained by a pattern stricter than the parser: a
    generated client must not refuse `90` or `1.5h`, which the server answers."""
    doc = api.client.get("/openapi.json").json()
    (since,) = [p for p in doc["paths"]["/api/v1/metrics"]["get"]["parameters"] if p["name"] == "since"]
    assert "pattern" not in since["schema"] and since["schema"]["format"] == "sched-duration"
    for window in ("90", "1.5h", "1000m", "7d"):
        answer = api.client.get(f"/api/v1/metrics?since={window}", headers=api.auth("ops"))
        assert answer.status_code == 200, (window, answer.text)
    refused = api.client.get("/api/v1/metrics?since=soon", headers=api.auth("ops"))
    assert refused.status_code == 400
    assert refused.json() == {"error": "not a duration: 'soon' (try 90s, 10m, 2h, 1d)"}


@pytest.mark.parametrize(("path", "body"), [("/api/v1/pause", {"reason": " "}),
                                            ("/api/v1/tasks/cancel", {"ids": [1], "reason": ""})],
                         ids=["pause", "cancel"])
def test_a_blank_reason_is_refused_with_the_line_the_cli_prints(api: Api, path: str, body: dict):
    before = api.events()
    answer = api.client.post(path, json=body, headers=api.auth("ops"))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].endswith("reason: blank: say why, or leave the reason out")
    assert api.events() == before
