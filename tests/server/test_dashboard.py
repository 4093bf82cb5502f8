"""The web dashboard in-process: sign-in and its cookie, the overview and its live
fragment, pause and resume through CSRF-protected forms, what a reader may not do, the
security headers, and untrusted text escaped."""

from __future__ import annotations

import json
import re

import pytest

from scheduler import access, worker
from scheduler.reads import queries
from scheduler.reads.health import health
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from server.web import security
from tests.server.conftest import Api

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
XSS = "<script>alert(1)</script>"


def sign_in(api: Api, name: str) -> str:
    """Sign the client in with token `name`; the CSRF token of its pages."""
    form = api.client.get("/signin")
    csrf = CSRF.search(form.text).group(1)
    answer = api.client.post("/signin", data={"csrf": csrf, "token": api.tokens[name]},
                             follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    page = api.client.get("/")
    assert page.status_code == 200
    return CSRF.search(page.text).group(1)


def test_the_overview_needs_a_session_and_sends_to_the_sign_in_form(api: Api):
    answer = api.client.get("/", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/signin"
    fragment = api.client.get("/", headers={"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["hx-redirect"] == "/signin"
    assert api.client.get("/live").status_code == 401


def test_signing_in_sets_an_httponly_strict_cookie_and_signing_out_clears_it(api: Api):
    form = api.client.get("/signin")
    csrf = CSRF.search(form.text).group(1)
    answer = api.client.post("/signin", data={"csrf": csrf, "token": api.tokens["ops"]},
                             follow_redirects=False)
    cookie = next(v for k, v in answer.headers.multi_items()
                  if k == "set-cookie" and v.startswith(security.SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Max-Age" not in cookie  # a browser session's cookie
    page = api.client.get("/")
    assert "ops" in page.text and "Sign out" in page.text
    token = CSRF.search(page.text).group(1)
    assert token == security.csrf_token(api.tokens["ops"])
    out = api.client.post("/signout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert api.client.get("/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("token, status, says", [
    ("sched_not-a-token", 401, "not valid"),
    ("", 401, "not valid"),
    ("box", 403, "an agent&#39;s token"),
    ("far", 403, "&#39;far&#39; is a host runner&#39;s token"),
])
def test_a_bad_or_an_agents_token_does_not_sign_in(api: Api, token: str, status: int, says: str):
    api.tokens["far"] = access.create_token(api.ws, "far", "kim", host="far-1").token
    form = api.client.get("/signin")
    csrf = CSRF.search(form.text).group(1)
    answer = api.client.post("/signin", data={"csrf": csrf, "token": api.tokens.get(token, token)},
                             follow_redirects=False)
    assert answer.status_code == status and says in answer.text
    assert security.SESSION_COOKIE not in answer.cookies


def test_the_sign_in_form_needs_its_own_csrf_value(api: Api):
    api.client.get("/signin")
    answer = api.client.post("/signin", data={"csrf": "forged", "token": api.tokens["ops"]},
                             follow_redirects=False)
    assert answer.status_code == 403 and "expired" in answer.text


def test_a_revoked_token_is_signed_out_at_its_next_request(api: Api):
    sign_in(api, "dash")
    access.revoke_token(api.ws, "dash", "kim")
    assert api.client.get("/", follow_redirects=False).headers["location"] == "/signin"


def test_the_overview_shows_queues_agents_their_tasks_and_health(api: Api):
    submit(api.ws, [TaskSpec(queue="dev", title="write the parser"), TaskSpec(queue="qa", title="test it")])
    tick(api.ws)
    sign_in(api, "dash")
    page = api.client.get("/").text
    status = queries.status(api.ws)
    assert 'data-queue="dev"' in page and 'data-queue="qa"' in page
    assert "write the parser" in page and "test it" in page
    for name in status["agents"]:
        assert f'data-agent="{name}"' in page
    assert '<meter min="0" max="2" value="1"' in page  # ann: capacity 2, holding one
    assert f'<span id="last-seq">{status["last_seq"]}</span>' in page
    assert 'sse-connect="/live?after=' in page
    report = health(api.ws)  # what `sched health --json` says: its level, each check's
    assert f'<span id="health-level" class="badge level-{report["status"]}">{report["status"]}</span>' in page
    assert report["checks"]
    for check in report["checks"]:
        assert (f'<tr><th scope="row">{check["name"].replace("_", " ")}</th><td><span class="badge '
                f'level-{check["status"]}">{check["status"]}</span></td>') in page
    fragment = api.client.get("/", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "write the parser" in fragment.text and fragment.headers["vary"].startswith("HX-Request")


def test_every_response_carries_the_content_security_policy(api: Api):
    sign_in(api, "ops")
    for path in ("/", "/signin", "/static/dashboard.css", "/static/htmx.min.js", "/health"):
        answer = api.client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"].startswith("default-src 'self'")
        assert answer.headers["x-content-type-options"] == "nosniff"
    page = api.client.get("/").text
    assert "style=" not in page and "<script>" not in page  # no inline style or script
    assert all(src.startswith("/static/") for src in re.findall(r'<script src="([^"]+)"', page))


def test_untrusted_text_is_escaped(api: Api):
    submit(api.ws, [TaskSpec(queue="dev", title=XSS), TaskSpec(queue="qa", title="fails")])
    tick(api.ws)
    claim = worker.claim(api.ws, "qin")
    worker.fail(api.ws, claim.task.task_id, claim.token, f"<b>bold</b>{XSS}", retry=False)
    csrf = sign_in(api, "ops")
    api.client.post("/pause", data={"csrf": csrf, "reason": f'"><img src=x onerror=alert(2)>{XSS}'})
    page = api.client.get("/").text
    assert XSS not in page and "<img" not in page and "<b>" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 3  # title, error, reason
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page


def test_an_operator_pauses_and_resumes_through_the_forms(api: Api):
    csrf = sign_in(api, "ops")
    assert "Assigning work" in api.client.get("/").text
    answer = api.client.post("/pause", data={"csrf": csrf, "reason": "deploying"}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    assert queries.status(api.ws)["paused"]["by"] == "ops"
    assert queries.status(api.ws)["paused"]["reason"] == "deploying"
    page = api.client.get("/").text
    assert 'id="assignment-state" class="state-paused">Paused' in page and 'action="/resume"' in page
    api.client.post("/resume", data={"csrf": csrf})
    assert queries.status(api.ws)["paused"] is None


def test_while_the_stop_file_holds_assignment_the_overview_says_how_to_resume(api: Api):
    """It showed a Resume button, which cannot remove the file: pressing it did nothing."""
    sign_in(api, "ops")
    api.ws.stop_file.touch()
    page = api.client.get("/").text
    assert 'class="state-paused">Paused' in page and "by stop file" in page
    assert 'action="/resume"' not in page and "Remove the stop file to resume" in page


def test_a_change_without_the_csrf_token_is_refused_and_appends_nothing(api: Api):
    sign_in(api, "ops")
    before = api.events()
    for data in ({}, {"csrf": "0" * 64}, {"csrf": security.csrf_token(api.tokens["dash"])}):
        answer = api.client.post("/pause", data=data)
        assert answer.status_code == 403 and "CSRF" in answer.text
    json_body = api.client.post("/pause", json={"csrf": security.csrf_token(api.tokens["ops"])})
    assert json_body.status_code == 403  # only a form carries it
    assert api.events() == before


@pytest.mark.parametrize("name", ["dash", "ci"])
def test_a_reader_sees_no_buttons_and_gets_403_when_posting_anyway(api: Api, name: str):
    csrf = sign_in(api, name)
    page = api.client.get("/").text
    assert 'action="/pause"' not in page and 'action="/resume"' not in page
    before = api.events()
    for path in ("/pause", "/resume"):
        answer = api.client.post(path, data={"csrf": csrf})
        assert answer.status_code == 403 and "may not operate" in answer.text
    assert api.events() == before


def test_a_change_without_a_session_is_401(api: Api):
    answer = api.client.post("/pause", data={"csrf": security.csrf_token(api.tokens["ops"])})
    assert answer.status_code == 401 and "sign in" in answer.text


def test_a_bad_reason_is_the_clis_message_on_a_page(api: Api):
    csrf = sign_in(api, "ops")
    too_long = "x" * (api.ws.settings.max_title_bytes + 1)
    answer = api.client.post("/pause", data={"csrf": csrf, "reason": too_long})
    assert answer.status_code == 400 and "--reason" in answer.text
    assert queries.status(api.ws)["paused"] is None


def test_the_dashboard_pages_are_not_in_the_api_contract(api: Api):
    paths = api.client.get("/openapi.json").json()["paths"]
    assert not {"/", "/signin", "/signout", "/pause", "/resume", "/live"} & set(paths)


def test_the_live_stream_sends_the_page_a_new_events_seq_and_type_not_its_payload(api: Api):
    """(That it goes on sending each new one: test_events_stream.py, the same loop.)"""
    from tests.server.test_events_stream import messages

    sign_in(api, "dash")
    start = queries.status(api.ws)["last_seq"]
    with api.client.stream("GET", f"/live?after={start}") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        submit(api.ws, [TaskSpec(queue="dev", title=XSS, payload={"big": "x" * 1000})])
        first = next(messages(answer.iter_lines()))
    assert first["id"] == str(start + 1)
    assert json.loads(first["data"]) == {"seq": start + 1, "type": "TaskSubmitted"}  # no payload
