"""The dashboard's task pages in-process: the task list (filters, pages), one task
(attempts, errors, the log's tail, explain, its live fragment), the dead letters
(requeue through a confirmation), the approvals, the metrics charts; untrusted text
escaped; CSRF and the operator role on every POST, and nothing appended when refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scheduler import worker
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.usecases import tasks
from server.web import details, security, task_pages
from tests.server.conftest import Api
from tests.server.test_dashboard import CSRF, XSS, sign_in

HOSTILE = f'"><img src=x onerror=alert(2)>{XSS}'
ESCAPED_XSS = "&lt;script&gt;alert(1)&lt;/script&gt;"


def submit_one(api: Api, title: str, queue: str = "dev", **fields: object) -> int:
    return submit(api.ws, [TaskSpec(queue=queue, title=title, **fields)])[0].task_id


def dead_task(api: Api, title: str, error: str = "it broke") -> int:
    """A task of queue qa (agent qin) that failed once, with no retry: dead."""
    task_id = submit_one(api, title, "qa")
    tick(api.ws)
    claim = worker.claim(api.ws, "qin")
    assert claim is not None and claim.task.task_id == task_id
    worker.fail(api.ws, task_id, claim.token, error, retry=False)
    return task_id


def row_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-task="(\d+)"', page)]


# the use case's title filter and pages --------------------------------------------

def test_the_listing_filters_by_text_in_the_title_and_pages_through_it(api: Api):
    for title in ("Fix the parser", "write docs", "parser tests", "deploy", "PARSER again"):
        submit_one(api, title)
    found = tasks.list_tasks(api.ws, tasks.ListRequest(title="parser"))
    assert [t.title for t in found.tasks] == ["Fix the parser", "parser tests", "PARSER again"]
    first = tasks.list_tasks(api.ws, tasks.ListRequest(title="parser", limit=2))
    assert [t.title for t in first.tasks] == ["Fix the parser", "parser tests"]
    second = tasks.list_tasks(api.ws, tasks.ListRequest(title="parser", limit=2, cursor=first.next_cursor))
    assert [t.title for t in second.tasks] == ["PARSER again"] and second.next_cursor is None
    assert tasks.list_tasks(api.ws, tasks.ListRequest(title="nothing like it")).tasks == []


# the task list -------------------------------------------------------------------

def test_pages_need_a_session(api: Api):
    for path in ("/tasks", "/tasks/1", "/dead", "/approvals", "/charts"):
        answer = api.client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/signin", path
    fragment = api.client.get("/tasks/1", headers={"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["hx-redirect"] == "/signin"


def test_the_task_list_filters_by_queue_status_agent_and_title(api: Api):
    one = submit_one(api, "build the parser")
    two = submit_one(api, "test the parser", "qa")
    three = submit_one(api, "write docs", assignee="bob")
    sign_in(api, "dash")
    page = api.client.get("/tasks").text
    assert set(row_ids(page)) == {one, two, three}
    assert f'href="/tasks/{one}"' in page  # each row opens its task
    assert row_ids(api.client.get("/tasks", params={"queue": "qa"}).text) == [two]
    assert set(row_ids(api.client.get("/tasks", params={"q": "PARSER"}).text)) == {one, two}
    assert row_ids(api.client.get("/tasks", params={"agent": "bob"}).text) == [three]
    tick(api.ws)
    running = {t.task_id for t in queries.list_tasks(api.ws) if t.status == "assigned"}
    assert set(row_ids(api.client.get("/tasks", params={"status": "assigned"}).text)) == running
    both = api.client.get("/tasks", params={"queue": "dev", "q": "docs", "status": "", "agent": ""})
    assert row_ids(both.text) == [three]  # empty fields filter nothing
    fragment = api.client.get("/tasks", params={"q": "parser"}, headers={"HX-Request": "true"})
    assert "<html" not in fragment.text and set(row_ids(fragment.text)) == {one, two}
    page = api.client.get("/tasks", params={"q": "parser", "status": ""}).text
    assert 'hx-get="/tasks?q=parser"' in page and 'sse-connect="/live?after=' in page


def test_a_bad_filter_is_the_clis_message(api: Api):
    sign_in(api, "dash")
    answer = api.client.get("/tasks", params={"agent": "nobody"})
    assert answer.status_code == 400 and "unknown agent &#39;nobody&#39;" in answer.text
    answer = api.client.get("/tasks", params={"cursor": "x<b>"})
    assert answer.status_code == 400 and "<b>" not in answer.text
    for limit in ("0", "x", "1001", "9" * 5000):
        answer = api.client.get("/tasks", params={"limit": limit})
        assert answer.status_code == 400 and "limit must be a number from 1 to 1000" in answer.text


def test_the_task_list_pages_keep_their_filters(api: Api):
    ids = [submit_one(api, f"task {n}") for n in range(7)]
    submit_one(api, "other", "qa")
    sign_in(api, "dash")
    seen, url = [], "/tasks?queue=dev&limit=3"
    while url:
        page = api.client.get(url).text
        seen += row_ids(page)
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        url = found.group(1).replace("&amp;", "&") if found else None
        if url:
            assert "queue=dev" in url and "limit=3" in url
    assert seen == ids
    assert "First page" in api.client.get("/tasks?queue=dev&limit=3&cursor=3").text


# one task ------------------------------------------------------------------------

def test_a_task_page_shows_its_status_attempts_errors_timeline_and_explain(api: Api):
    task_id = submit_one(api, "flaky job", "qa", max_attempts=3)
    tick(api.ws)
    claim = worker.claim(api.ws, "qin")
    worker.progress(api.ws, task_id, claim.token, worker.Progress(40.0, "halfway there"))
    worker.fail(api.ws, task_id, claim.token, "disk full")
    sign_in(api, "dash")
    page = api.client.get(f"/tasks/{task_id}")
    assert page.status_code == 200
    text = page.text
    assert 'id="task-status" class="tag queued"' in text
    assert '<tr data-attempt="1">' in text and "disk full" in text and "reported" in text
    assert "progress: 40% halfway there" in text
    for kind in ("TaskSubmitted", "TaskAssigned", "TaskStarted", "TaskProgressed", "TaskFailed",
                 "TaskRequeued"):
        assert f"<td>{kind}</td>" in text
    assert "attempt 1 → qin" in text  # explain
    assert "no log recorded" in text  # a pull worker's attempt has no log here
    assert f'hx-get="/tasks/{task_id}"' in text and 'sse-connect="/live?after=' in text
    fragment = api.client.get(f"/tasks/{task_id}", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text and "disk full" in fragment.text


def test_an_unknown_task_is_404(api: Api):
    sign_in(api, "dash")
    answer = api.client.get("/tasks/999")
    assert answer.status_code == 404 and "no task 999" in answer.text
    for bad in ("0", "abc", "99999999999999999999", "9" * 5000):
        answer = api.client.get(f"/tasks/{bad}")
        assert answer.status_code == 400 and "is not a task id" in answer.text


def test_hostile_titles_errors_and_log_lines_are_escaped(api: Api, tmp_path: Path):
    task_id = dead_task(api, HOSTILE, error=f"<b>bold</b>{XSS}")
    submit_one(api, HOSTILE, requires_approval=True)
    sign_in(api, "ops")
    for path in ("/tasks", f"/tasks/{task_id}", "/dead", "/approvals"):
        page = api.client.get(path).text
        assert XSS not in page and "<img" not in page and "<b>" not in page, path
        assert ESCAPED_XSS in page, path
    assert "&lt;b&gt;bold&lt;/b&gt;" in api.client.get(f"/tasks/{task_id}").text
    log = api.ws.settings.home / "work" / str(task_id) / "1" / details.LOG_NAME
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {n}\n" for n in range(300)) + f"{XSS}\n")
    shown = details.log_tail(str(log), api.ws.settings.home)
    assert shown.unavailable is None and len(shown.lines) == details.LOG_LINES
    assert shown.lines[0] == "line 101" and shown.lines[-1] == XSS


def test_the_log_tail_is_read_only_where_sched_exec_writes_logs(api: Api, tmp_path: Path):
    home = api.ws.settings.home
    elsewhere = tmp_path / "secret" / details.LOG_NAME
    elsewhere.parent.mkdir()
    elsewhere.write_text("do not show me\n")
    assert details.log_tail(str(elsewhere), home).unavailable.startswith("not shown")
    assert details.log_tail("/etc/passwd", home).lines == []
    missing = details.log_tail(str(home / "work" / "9" / "1" / details.LOG_NAME), home)
    assert missing.lines == [] and "not readable on this machine" in missing.unavailable
    assert "no log recorded" in details.log_tail(None, home).unavailable


# dead letters --------------------------------------------------------------------

def test_requeue_goes_through_a_confirmation_that_appends_nothing(api: Api):
    first, second, third = (dead_task(api, f"dead {n}") for n in range(3))
    csrf = sign_in(api, "ops")
    page = api.client.get("/dead").text
    assert set(row_ids(page)) == {first, second, third} and 'type="checkbox"' in page
    before = api.events()
    confirm = api.client.post("/dead/confirm", data={"csrf": csrf, "task_id": [str(first), str(third)]})
    assert confirm.status_code == 200 and "Requeue 2 tasks?" in confirm.text
    assert row_ids(confirm.text) == [first, third]
    assert api.events() == before  # the confirmation is a dry run
    token = CSRF.search(confirm.text).group(1)
    done = api.client.post("/dead/requeue", data={"csrf": token, "task_id": [str(first), str(third)]},
                           follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/dead?requeued=")
    statuses = {t.task_id: t.status for t in queries.list_tasks(api.ws)}
    assert statuses == {first: "queued", second: "dead", third: "queued"}
    requeued = [(e["data"]["task_id"], e["data"]["by"]) for e in api.events() if e["type"] == "TaskRequeued"]
    assert requeued == [(first, "ops"), (third, "ops")]  # the signed-in token did it
    after = api.client.get(done.headers["location"]).text
    assert row_ids(after) == [second] and 'id="requeued"' in after
    # the notice is this session's: a link made by hand, or for another token, says nothing
    for forged in (f"/dead?requeued={second}", f"/dead?requeued={second}&mark={'0' * 32}",
                   done.headers["location"].replace(f"requeued={first}", f"requeued={second}")):
        assert 'id="requeued"' not in api.client.get(forged).text
    sign_in(api, "dash")  # a reader's session: the mark was made for the operator's
    assert 'id="requeued"' not in api.client.get(done.headers["location"]).text


def test_one_dead_tasks_own_button_confirms_only_that_task(api: Api):
    first, second = dead_task(api, "one"), dead_task(api, "two")
    csrf = sign_in(api, "ops")
    confirm = api.client.post("/dead/confirm",
                              data={"csrf": csrf, "task_id": str(first), "only": str(second)})
    assert row_ids(confirm.text) == [second] and "Requeue 1 task?" in confirm.text


def test_requeueing_a_task_that_is_not_dead_is_refused(api: Api, monkeypatch):
    alive = submit_one(api, "still queued")
    csrf = sign_in(api, "ops")
    before = api.events()
    for path in ("/dead/confirm", "/dead/requeue"):
        answer = api.client.post(path, data={"csrf": csrf, "task_id": str(alive)})
        assert answer.status_code == 409 and "only dead tasks are requeued" in answer.text
    for data in ({"csrf": csrf}, {"csrf": csrf, "task_id": "x"}, {"csrf": csrf, "task_id": "9" * 25}):
        assert api.client.post("/dead/confirm", data=data).status_code == 400
        assert api.client.post("/dead/requeue", data=data).status_code == 400
    # an id with 5,000 zeros first is the id, as the CLI and the API read it (int() cannot:
    # an internal error; such a form is past this test's body limit, not a server's)
    assert task_pages.task_ids(["0" * 5000 + str(alive)]) == [alive]
    assert task_pages.MAX_CHECKED == 1000  # the API's bulk limit; its line too, past it:
    monkeypatch.setattr(task_pages, "MAX_CHECKED", 2)  # (1,001 ids are past the test's body limit)
    for path in ("/dead/confirm", "/dead/requeue"):
        answer = api.client.post(path, data={"csrf": csrf, "task_id": [str(alive)] * 3})
        assert answer.status_code == 400 and "at most 2 ids in one request, not 3" in answer.text
        answer = api.client.post(path, data={"csrf": csrf, "task_id": [str(alive)] * 13})  # (12 at most)
        assert answer.status_code == 400 and "the form has more than 12 fields" in answer.text
        answer = api.client.post(path, content=f"csrf={csrf}&task_id={alive}&x=%FF",  # (was read as U+FFFD)
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 400 and "not UTF-8 once %-decoded" in answer.text
    assert api.events() == before


# approvals -----------------------------------------------------------------------

def test_an_operator_approves_and_rejects_with_a_reason(api: Api):
    yes = submit_one(api, "ship it", requires_approval=True)
    no = submit_one(api, "drop the tables", requires_approval=True)
    csrf = sign_in(api, "ops")
    page = api.client.get("/approvals").text
    assert set(row_ids(page)) == {yes, no} and 'action="/approvals/approve"' in page
    answer = api.client.post("/approvals/approve", data={"csrf": csrf, "task_id": str(yes)},
                             follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/approvals"
    api.client.post("/approvals/reject", data={"csrf": csrf, "task_id": str(no), "reason": "too risky"})
    statuses = {t.task_id: t.status for t in queries.list_tasks(api.ws)}
    assert statuses == {yes: "queued", no: "cancelled"}
    events = api.events()
    assert events[-2]["type"] == "TaskApproved" and events[-2]["data"]["task_id"] == yes
    assert events[-2]["data"]["by"] == "ops"
    assert events[-1]["type"] == "TaskRejected" and events[-1]["data"]["reason"] == "too risky"
    assert events[-1]["data"]["by"] == "ops"
    assert row_ids(api.client.get("/approvals").text) == []


def test_approving_a_task_twice_is_refused(api: Api):
    task_id = submit_one(api, "once", requires_approval=True)
    csrf = sign_in(api, "ops")
    api.client.post("/approvals/approve", data={"csrf": csrf, "task_id": str(task_id)})
    before = api.events()
    answer = api.client.post("/approvals/approve", data={"csrf": csrf, "task_id": str(task_id)})
    assert answer.status_code == 409 and "not awaiting approval" in answer.text
    assert api.events() == before


# every POST: CSRF and the role ---------------------------------------------------

POSTS = ("/dead/confirm", "/dead/requeue", "/approvals/approve", "/approvals/reject")


def waiting_work(api: Api) -> dict[str, str]:
    return {"dead": str(dead_task(api, "dead one")),
            "approval": str(submit_one(api, "needs a yes", requires_approval=True))}


def form_for(path: str, work: dict[str, str]) -> dict[str, str]:
    return {"task_id": work["dead" if path.startswith("/dead") else "approval"]}


@pytest.mark.parametrize("path", POSTS)
def test_a_post_without_the_csrf_token_is_refused_and_appends_nothing(api: Api, path: str):
    work = waiting_work(api)
    sign_in(api, "ops")
    before = api.events()
    for csrf in (None, "0" * 64, security.csrf_token(api.tokens["dash"])):
        data = form_for(path, work) | ({"csrf": csrf} if csrf else {})
        answer = api.client.post(path, data=data)
        assert answer.status_code == 403 and "CSRF" in answer.text
    answer = api.client.post(path, json={"csrf": security.csrf_token(api.tokens["ops"]),
                                         **form_for(path, work)})
    assert answer.status_code == 403
    assert api.events() == before


@pytest.mark.parametrize("name", ["dash", "ci"])
def test_a_reader_sees_no_buttons_and_every_post_is_403(api: Api, name: str):
    work = waiting_work(api)
    csrf = sign_in(api, name)
    for path in ("/dead", "/approvals"):
        page = api.client.get(path).text
        assert "<button" not in page.split("</header>")[1], path  # (sign out is in the header)
        assert 'type="checkbox"' not in page and "<form" not in page.split("</header>")[1]
    before = api.events()
    for path in POSTS:
        answer = api.client.post(path, data={"csrf": csrf, **form_for(path, work)})
        assert answer.status_code == 403 and "may not operate" in answer.text, path
    assert api.events() == before


@pytest.mark.parametrize("path", POSTS)
def test_a_post_without_a_session_is_401(api: Api, path: str):
    work = waiting_work(api)
    before = api.events()
    answer = api.client.post(path, data={"csrf": security.csrf_token(api.tokens["ops"]),
                                         **form_for(path, work)})
    assert answer.status_code == 401 and api.events() == before


# metrics -------------------------------------------------------------------------

def test_the_metrics_page_draws_inline_svg_without_inline_style(api: Api):
    dead_task(api, "failed")
    submit_one(api, "done", "dev")
    tick(api.ws)
    claim = worker.claim(api.ws, "ann")
    api.ws.clock.advance(30)
    worker.complete(api.ws, claim.task.task_id, claim.token, None)
    sign_in(api, "dash")
    answer = api.client.get("/charts")
    assert answer.status_code == 200
    page = answer.text
    for chart in ("chart-throughput", "chart-durations", "chart-utilization"):
        assert f'id="{chart}"' in page
    assert page.count('class="bar completed"') == 1 and page.count('class="bar failed"') == 1
    assert "style=" not in page and "<script>" not in page
    assert 'aria-current="page">last 24h' in page
    assert api.client.get("/charts", params={"since": "1h"}).status_code == 200
    bad = api.client.get("/charts", params={"since": "<b>soon"})
    assert bad.status_code == 400 and "<b>" not in bad.text


def test_the_metrics_page_shows_the_start_latency_apart_from_the_run_time(api: Api):
    submit_one(api, "pushed", "dev")
    tick(api.ws)  # assigned to ann
    api.ws.clock.advance(2.5)
    claim = worker.claim(api.ws, "ann")  # started 2.5 s after its assignment
    api.ws.clock.advance(30)
    worker.complete(api.ws, claim.task.task_id, claim.token, None)
    sign_in(api, "dash")
    page = api.client.get("/charts").text
    assert "start latency (from assignment to start) p50 2.5 s, p95 2.5 s" in page
    row = next(line for line in page.splitlines() if '<th scope="row">dev</th>' in line)
    cells = [cell.split("</td>")[0] for cell in row.split('<td class="num">')[1:]]
    assert cells[:5] == ["1", "0", "2.5 s", "2.5 s", "30.0 s"]  # waited, start latency, ran


def test_a_latency_is_in_milliseconds_below_a_second():
    assert [details.latency(s) for s in (0.0849, 0.9994, 2.5)] == ["85 ms", "999 ms", "2.5 s"]


def test_the_chart_axis_goes_to_a_round_value():
    assert [details.nice_top(v) for v in (0, 0.3, 1, 3, 7, 11, 150)] == [1, 0.5, 1, 5, 10, 20, 200]


def test_the_pages_are_in_the_nav_and_not_in_the_api_contract(api: Api):
    sign_in(api, "dash")
    page = api.client.get("/tasks").text
    for href in ("/tasks", "/dead", "/approvals", "/charts"):
        assert f'href="{href}"' in page
    assert 'href="/tasks" aria-current="page"' in page
    paths = set(api.client.get("/openapi.json").json()["paths"])
    assert not {"/tasks", "/tasks/{task_id}", "/dead", "/dead/confirm", "/dead/requeue", "/approvals",
                "/approvals/approve", "/approvals/reject", "/charts"} & paths


def test_the_throughput_chart_keeps_a_place_for_every_hour_of_the_window():
    hour = "2026-01-01T02:00:00.000000Z"
    document = {"window": {"start": "2026-01-01T00:30:00.000000Z", "end": "2026-01-01T06:30:00.000000Z"},
                "hourly": {hour: {"completed": 3, "failed": 0, "dead_lettered": 1}},
                "queues": {}, "agents": {}}
    chart = details.charts(document)["throughput"]
    assert [label for _, label in chart.labels] == [f"0{h}:00" for h in range(7)]
    assert [(b.css, b.label) for b in chart.bars] == [("completed", f"{hour}: 3 completed"),
                                                      ("dead", f"{hour}: 1 dead-lettered")]
    assert chart.top == 5 and chart.bars[0].height == 3 / 5 * (chart.base - 8)


def test_a_form_field_that_is_not_utf8_is_refused_not_recorded_as_a_replacement(api: Api):
    csrf = sign_in(api, "ops")
    before = len(api.events())
    for body in (f"csrf={csrf}&reason=%ff".encode(), f"csrf={csrf}&reason=".encode() + b"\xff"):
        answer = api.client.post("/pause", content=body,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 400 and "not UTF-8" in answer.text, body  # (a raw byte: 403)
    assert len(api.events()) == before  # not paused by ops for the reason "\ufffd"
