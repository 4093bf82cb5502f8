"""The endpoints of tasks, agents and the runner protocol as a client meets them: long
polling claims woken by new work, an agent's token acting only for its agent, stale
lease tokens, rate limits, pages, bulk actions, the token's name as the actor, and the
contract in /openapi.json. (That each body is the CLI's document: test_same_documents.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from scheduler import operator
from scheduler.usecases import actions
from scheduler.workspace import Workspace
from server.limits import ServerLimits
from tests.conftest import wait_for
from tests.server.conftest import Api
from tests.server.test_same_documents import declared


def post(api: Api, path: str, body: Any = None, as_: str = "ops", **headers: str) -> Any:
    answer = api.client.post(f"/api/v1{path}", json=body, headers={**api.auth(as_), **headers})
    declared(api.client, "POST", f"/api/v1{path}", answer.status_code, answer.json())
    return answer


def get(api: Api, path: str, as_: str = "ops", **params: Any) -> Any:
    answer = api.client.get(f"/api/v1{path}", params=params, headers=api.auth(as_))
    declared(api.client, "GET", f"/api/v1{path}", answer.status_code, answer.json())
    return answer


def submit(api: Api, title: str = "t", **fields: Any) -> int:
    answer = post(api, "/tasks", {"queue": "dev", "title": title, **fields})
    assert answer.status_code == 200, answer.json()
    return int(answer.json()["task_id"])


def waiting_claim(api: Api, wait: int = 20) -> tuple[threading.Thread, list[Any]]:
    """A claim for ann waiting up to `wait` s, in a thread; returns once it waits."""
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(post(api, "/agents/ann/claim",
                                                                 {"wait_seconds": wait}, as_="box")))
    thread.start()
    bell = api.client.app.state.doorbell  # type: ignore[attr-defined]
    wait_for("the claim to wait", lambda: bell.waiting == 1)
    return thread, answers


def test_a_waiting_claim_is_woken_by_work_submitted_through_the_server(make_api: Callable[..., Api]):
    api = make_api(ServerLimits(claim_poll_seconds=60))  # no look at the head: only the doorbell
    started = time.monotonic()
    thread, answers = waiting_claim(api)
    task = submit(api, "wake")
    thread.join(15)
    (answer,) = answers
    assert answer.status_code == 200 and answer.json()["task"]["task_id"] == task
    assert time.monotonic() - started < 15  # well before its 20 s


def test_a_waiting_claim_is_woken_by_an_operators_action_on_the_dashboard(make_api: Callable[..., Api]):
    """Work that waits behind a pause (submitted by another process: no doorbell) is
    taken at once when an operator resumes on the dashboard, as through the API."""
    from tests.server.test_dashboard import sign_in

    api = make_api(ServerLimits(claim_poll_seconds=60))  # no look at the head: only the doorbell
    operator.pause(api.ws, "kim", None)
    task = actions.submit(api.ws, actions.SubmitRequest(queue="dev", title="after the pause")).task_ids[0]
    csrf = sign_in(api, "ops")
    thread, answers = waiting_claim(api)
    started = time.monotonic()
    assert api.client.post("/resume", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    thread.join(15)
    (answer,) = answers
    assert answer.json()["task"]["task_id"] == task
    assert time.monotonic() - started < 15  # well before its 20 s


def test_a_waiting_claim_sees_work_from_another_process_at_its_next_look(make_api: Callable[..., Api]):
    api = make_api(ServerLimits(claim_poll_seconds=0.05))
    thread, answers = waiting_claim(api)
    other = api.ws  # another writer of the same database: the server hears no doorbell
    task = actions.submit(other, actions.SubmitRequest(queue="dev", title="elsewhere")).task_ids[0]
    thread.join(15)
    (answer,) = answers
    assert answer.json()["task"]["task_id"] == task


@pytest.mark.parametrize("engine", ["postgresql"])
def test_on_postgresql_a_commit_of_another_process_wakes_a_waiting_claim_at_once(
        make_api: Callable[..., Api], new_database: Callable[[], str]):
    api = make_api(ServerLimits(claim_poll_seconds=60), database=new_database())  # no look at the head
    thread, answers = waiting_claim(api)
    other = Workspace(api.ws.settings, clock=api.ws.clock)  # its own connections: as another process
    try:
        task = actions.submit(other, actions.SubmitRequest(queue="dev", title="elsewhere")).task_ids[0]
    finally:
        other.close()
    thread.join(15)
    (answer,) = answers
    assert answer.json()["task"]["task_id"] == task


def test_the_events_of_the_runner_protocol_name_the_agents_token_as_their_actor(api: Api):
    done, failed = submit(api, "done"), submit(api, "failed")
    claims = [post(api, "/agents/ann/claim", {}, as_="box").json()["task"] for _ in range(2)]
    tokens = {c["task_id"]: c["token"] for c in claims}
    assert post(api, f"/tasks/{done}/heartbeat", {"token": tokens[done], "percent": 50},
                as_="box").status_code == 200
    assert post(api, f"/tasks/{done}/complete", {"token": tokens[done]}, as_="box").status_code == 200
    assert post(api, f"/tasks/{failed}/fail", {"token": tokens[failed], "error": "no"},
                as_="box").status_code == 200
    acted = {(e["data"]["task_id"], e["type"]): e["data"].get("by") for e in api.events()
             if e["type"] in ("TaskAssigned", "TaskStarted", "LeaseRenewed", "TaskProgressed",
                              "TaskSucceeded", "TaskFailed")}
    assert acted == {(done, "TaskAssigned"): "box", (done, "TaskStarted"): "box",
                     (done, "LeaseRenewed"): "box", (done, "TaskProgressed"): "box",
                     (done, "TaskSucceeded"): "box", (failed, "TaskAssigned"): "box",
                     (failed, "TaskStarted"): "box", (failed, "TaskFailed"): "box"}


def test_the_actor_of_a_runner_event_cannot_be_given_in_the_body(api: Api):
    task = submit(api)
    claimed = post(api, "/agents/ann/claim", {}, as_="box").json()["task"]
    answer = post(api, f"/tasks/{task}/complete", {"token": claimed["token"], "by": "someone-else"},
                  as_="box")
    assert answer.status_code == 422
    assert answer.json() == {"error": "complete: by: Extra inputs are not permitted"}


def test_a_stopping_server_answers_a_waiting_claim_at_once(api: Api):
    """A claim waiting when the server stops used to wait on until the shutdown's grace
    ran out and was then cut: a plain-text 500, and a traceback in the log."""
    from server.app import create_app
    from tests.browser.live import serving
    from tests.server.test_agent_host import post_json

    app = create_app(api.ws.settings, api.ws.clock)
    answers: list[tuple[int, dict]] = []
    with serving(app) as base:
        waiting = threading.Thread(target=lambda: answers.append(post_json(
            base + "/api/v1/agents/ann/claim", api.tokens["box"], {"wait_seconds": 20})))
        waiting.start()
        wait_for("the claim to wait", lambda: app.state.doorbell.waiting == 1)
    waiting.join(30)
    assert answers == [(200, {"task": None})]


def test_a_token_revoked_while_its_claim_waits_is_refused_when_work_comes(make_api: Callable[..., Api]):
    """A long poll checked its token once, when it came: work submitted up to 20 s after
    a revoke was started for the revoked token, its payload and lease handed over."""
    from scheduler.access import revoke_token

    api = make_api(ServerLimits(claim_poll_seconds=60))  # woken by the doorbell only
    thread, answers = waiting_claim(api)
    revoke_token(api.ws, "box", "alice")
    task = submit(api, "after the revoke")  # rings the doorbell: the claim looks again
    thread.join(15)
    (answer,) = answers
    assert answer.status_code == 401 and set(answer.json()) == {"error"}, answer.json()
    shown = get(api, f"/tasks/{task}").json()
    assert shown["task"]["status"] == "queued"
    assert [e["type"] for e in shown["events"]] == ["TaskSubmitted"]


def test_a_claim_with_no_work_answers_null_when_its_wait_is_over(api: Api):
    started = time.monotonic()
    answer = post(api, "/agents/ann/claim", {"wait_seconds": 1}, as_="box")
    assert answer.status_code == 200 and answer.json() == {"task": None}
    assert time.monotonic() - started >= 1
    assert post(api, "/agents/ann/claim", None, as_="box").json() == {"task": None}  # no wait


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"wait_seconds": 21}, 400, "wait_seconds must be 0 to 20, not 21"),
    ({"wait_seconds": -1}, 400, "wait_seconds must be 0 to 20, not -1"),
    ({"wait_seconds": "5"}, 422, "claim: wait_seconds: Input should be a valid integer"),
    ({"agent": "bob"}, 422, "claim: agent: Extra inputs are not permitted"),
])
def test_a_bad_claim_is_one_line(api: Api, body: dict[str, Any], status: int, says: str):
    answer = post(api, "/agents/ann/claim", body, as_="box")
    assert (answer.status_code, answer.json()) == (status, {"error": says})


def test_an_agent_token_acts_only_for_its_own_agent(api: Api):
    answer = post(api, "/agents/bob/claim", None, as_="box")
    assert answer.status_code == 403
    assert answer.json() == {"error": "token 'box' acts only for agent 'ann', not 'bob'"}
    assert post(api, "/agents/ann/claim", None, as_="ops").status_code == 403  # no operator either
    task = submit(api, assignee="bob")
    from scheduler.usecases import work

    claimed = work.claim(api.ws, "bob").claim
    assert claimed is not None and claimed.task.task_id == task
    before = len(api.events())
    bodies = {"fail": {"error": "x"}, "release": {"why": "x"}}
    for path in ("heartbeat", "progress", "complete", "fail", "release"):
        body = {"token": claimed.token, **bodies.get(path, {"percent": 1})}
        answer = post(api, f"/tasks/{task}/{path}", body, as_="box")
        assert answer.status_code == 403, path
    assert len(api.events()) == before


RUNNER_ROUTES = ("/agents/ann/claim", "/tasks/1/heartbeat", "/tasks/1/progress", "/tasks/1/complete",
                 "/tasks/1/fail", "/tasks/1/release")


@pytest.mark.parametrize("path", RUNNER_ROUTES)
def test_a_runner_route_asks_who_calls_before_what_is_asked(api: Api, path: str):
    """The runner's routes check the token in the same trip to a worker thread as their
    use case: still who calls (401, then the role's 403) before the body (422), one line
    each, and nothing appended."""
    before = len(api.events())
    for headers, status, says in (({}, 401, "no bearer token"), (api.auth("dash"), 403, "may not work"),
                                  (api.auth("box"), 422, "the request body is not JSON")):
        answer = api.client.post(f"/api/v1{path}", content=b"{not json",
                                 headers={"Content-Type": "application/json", **headers})
        assert answer.status_code == status and says in answer.json()["error"], (headers, answer.json())
        assert set(answer.json()) == {"error"}
    assert len(api.events()) == before


def test_the_lease_token_goes_in_the_body_and_a_stale_one_is_409(api: Api):
    task = submit(api)
    claimed = post(api, "/agents/ann/claim", None, as_="box").json()["task"]
    assert claimed["task_id"] == task and claimed["token"]
    stale = post(api, f"/tasks/{task}/heartbeat", {"token": "sched_lease_not_it"}, as_="box")
    assert stale.status_code == 409 and set(stale.json()) == {"error"}
    beat = post(api, f"/tasks/{task}/heartbeat", {"token": claimed["token"], "percent": 40}, as_="box")
    assert beat.status_code == 200 and beat.json()["progress_recorded"] is True
    done = post(api, f"/tasks/{task}/complete", {"token": claimed["token"], "result": [1]}, as_="box")
    assert done.json() == {"task_id": task, "status": "succeeded"}
    again = post(api, f"/tasks/{task}/complete", {"token": claimed["token"]}, as_="box")
    assert again.status_code == 409  # sent again (its answer lost): says it is recorded
    assert again.json()["error"].startswith(
        f"task {task}: the token's attempt 1 already ended (succeeded on ann, at 20"), again.json()
    assert again.json()["error"].endswith("; nothing recorded (task is succeeded)")
    assert "not that of any of its attempts" in stale.json()["error"]


def test_a_lease_token_sent_again_after_the_task_went_to_another_agent_is_409(api: Api):
    """ann failed its attempt and bob then took the task: ann's fail sent again (its
    answer lost) was refused 403, `acts only for agent 'ann', not 'bob'`, as if ann
    acted on bob's attempt, and ann could no longer read the task. A worker took the
    403 for a refused token and never learnt its failure was recorded."""
    from scheduler import access
    from scheduler.usecases import work

    task = submit(api, max_attempts=3)
    ann = post(api, "/agents/ann/claim", None, as_="box").json()["task"]
    failed = {"token": ann["token"], "error": "oops"}
    assert post(api, f"/tasks/{task}/fail", failed, as_="box").json()["status"] == "queued"
    api.ws.clock.advance(3600)  # (past the backoff)
    bob = work.claim(api.ws, "bob").claim
    assert bob is not None and bob.task.task_id == task  # (ann, who failed it, is passed over)
    api.tokens["bobt"] = access.create_token(api.ws, "bobt", "kim", agent="bob").token
    other = submit(api, "not theirs")
    before = len(api.events())
    again = post(api, f"/tasks/{task}/fail", failed, as_="box")
    assert again.status_code == 409, again.json()
    said = again.json()["error"]
    assert said.startswith(f"task {task}: the token's attempt 1 already ended (failed on ann"), said
    assert get(api, f"/tasks/{task}", as_="box").status_code == 200  # a task ann ran
    assert get(api, f"/tasks/{task}", as_="bobt").status_code == 200
    assert get(api, f"/tasks/{other}", as_="box").status_code == 403
    for path in ("heartbeat", "complete"):  # bob's attempt, under way, is still not ann's
        assert post(api, f"/tasks/{task}/{path}", {"token": bob.token}, as_="box").status_code == 403
    assert len(api.events()) == before
    # nor is a task ann never ran: any lease token there is 403 (a 409 would say its state)
    work.complete(api.ws, work.CompleteRequest(task_id=task, token=bob.token))
    api.ws.clock.advance(1)
    theirs = work.claim(api.ws, "bob").claim
    assert theirs is not None and theirs.task.task_id == other
    for lease in ("sched_lease_not_it", ann["token"]):
        answer = post(api, f"/tasks/{other}/heartbeat", {"token": lease}, as_="box")
        said = {"error": "token 'box' acts only for agent 'ann', not 'bob'"}
        assert (answer.status_code, answer.json()) == (403, said)


def test_an_agent_name_no_agent_could_have_is_not_found_on_either_engine(
        make_api: Callable[..., Api], new_database: Callable[[], str]):
    """On PostgreSQL a NUL in an agent's name (a path, `?agent=`) was 503, `retry`, with
    the database's location in the line: PostgreSQL refuses a NUL in a query's text."""
    api = make_api(database=new_database())
    before = api.events()
    for answer in (get(api, "/tasks", agent="a\x00b"), post(api, "/agents/a%00b/evict", {}),
                   post(api, "/agents/a%00b/drain", {})):
        assert (answer.status_code, answer.json()) == (404, {"error": "unknown agent 'a\\x00b'"})
    assert api.events() == before


def test_claims_and_heartbeats_are_rate_limited_per_token(make_api: Callable[..., Api]):
    api = make_api(ServerLimits(claim_burst=2, claims_per_second=0.5, heartbeat_burst=1,
                                heartbeats_per_second=0.25))
    for _ in range(2):
        assert post(api, "/agents/ann/claim", None, as_="box").status_code == 200
    limited = post(api, "/agents/ann/claim", None, as_="box")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert limited.json() == {"error": "too many claims for token 'box': retry in 2 s"}
    api.ws.clock.advance(2)
    assert post(api, "/agents/ann/claim", None, as_="box").status_code == 200
    post(api, "/tasks/1/heartbeat", {"token": "t"}, as_="box")  # (409: no such attempt, but counted)
    limited = post(api, "/tasks/1/heartbeat", {"token": "t"}, as_="box")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "4"


def test_tasks_come_a_page_at_a_time(api: Api):
    ids = [submit(api, f"t{i}", priority=i % 3) for i in range(7)]
    whole = get(api, "/tasks").json()
    assert whole["next_cursor"] is None and len(whole["tasks"]) == 7
    seen, cursor = [], None
    while True:
        page = get(api, "/tasks", limit=3, **({"cursor": cursor} if cursor else {})).json()
        seen += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == whole["tasks"] and sorted(t["task_id"] for t in seen) == ids
    over = get(api, "/tasks", limit=1001)
    assert (over.status_code, over.json()) == (400, {"error": "limit must be at most 1000, not 1001"})


def test_tasks_filter_by_text_in_the_title_a_page_at_a_time(api: Api):
    titles = ["Fix the parser", "write docs", "parser tests", "100% done", "a_b", "PARSER again",
              "deploy", "Ünicode parser"]
    ids = dict(zip(titles, (submit(api, t) for t in titles), strict=True))
    every = get(api, "/tasks").json()["tasks"]
    place = {t["task_id"]: t["position"] for t in every}

    def listed(**params: Any) -> list[str]:
        answer = get(api, "/tasks", **params)
        assert answer.status_code == 200, answer.json()
        return [t["title"] for t in answer.json()["tasks"]]

    parsers = ["Fix the parser", "parser tests", "PARSER again", "Ünicode parser"]
    assert listed(title="parser") == listed(title="PaRsEr") == parsers
    seen, cursor = [], None
    while True:  # two at a time, each page from where the one before said
        page = get(api, "/tasks", title="parser", limit=2, **({"cursor": cursor} if cursor else {})).json()
        seen += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [t["title"] for t in seen] == parsers
    assert all(t["position"] == place[t["task_id"]] for t in seen)  # each keeps its place in the queue
    assert listed(title="%") == ["100% done"] and listed(title="_") == ["a_b"]  # no wildcards
    assert listed(title="ü") == [] and listed(title="Ü") == ["Ünicode parser"]  # ASCII letters fold only
    assert listed(title="parser", status="queued", unassigned="true", limit=3) == parsers[:3]
    assert listed(title="nothing like it") == [] and ids["deploy"] not in [t["task_id"] for t in seen]
    refused = get(api, "/tasks", title="a\x00b")
    assert (refused.status_code, refused.json()) == (400, {"error": "--title: contains a NUL character "
                                                                    "(\\x00), which sched does not "
                                                                    "store in text"})


def test_a_batch_of_more_tasks_than_a_page_is_refused_before_any_is_read(make_api: Callable[..., Api]):
    """A batch of 30,000 tasks (within the body limit) was validated on the event loop, a
    second of it, before being refused as over the queue's depth: 60 at once held a
    `GET /status` for 31 s and the server at 1.6 GB (a security review). A batch holds
    at most `max_page` tasks, as a bulk action holds at most that many ids."""
    api = make_api(ServerLimits(max_page=3, max_body_bytes=4096, poll_seconds=0.01))
    before = len(api.events())
    tasks = [{"queue": "dev", "title": f"t{i}"} for i in range(4)]
    too_many = post(api, "/tasks", {"tasks": tasks}, as_="ci")
    assert (too_many.status_code, too_many.json()) == (
        400, {"error": "at most 3 tasks in one request, not 4: send the rest in further requests"})
    assert len(api.events()) == before
    assert post(api, "/tasks", {"tasks": tasks[:3]}, as_="ci").status_code == 200


def test_bulk_actions_take_ids_and_record_the_token_as_the_actor(api: Api):
    one, two = submit(api, "a"), submit(api, "b")
    answer = post(api, "/tasks/cancel", {"ids": [one, 999, two], "reason": "enough"})
    assert answer.status_code == 200
    assert answer.json() == {"results": [
        {"task_id": one, "status": "cancelled", "cancelling": False},
        {"task_id": 999, "error": "no task 999"},
        {"task_id": two, "status": "cancelled", "cancelling": False}]}
    cancels = [e["data"] for e in api.events() if e["type"] == "TaskCancelled"]
    assert [c["by"] for c in cancels] == ["ops", "ops"]
    gated = [submit(api, f"g{i}", requires_approval=True) for i in range(3)]
    assert post(api, "/tasks/approve", {"ids": gated[:2]}).json() == {"approved": gated[:2]}
    assert post(api, "/tasks/reject", {"ids": gated[2:]}).json() == {"rejected": gated[2:]}
    too_many = post(api, "/tasks/approve", {"ids": list(range(1, 1002))})
    assert too_many.status_code == 400
    assert too_many.json() == {"error": "at most 1000 ids in one request, not 1001"}
    assert post(api, "/tasks/approve", {"ids": []}).json() == {"error": "give task ids"}
    assert post(api, "/tasks/approve", {"ids": "1"}).status_code == 422
    assert post(api, "/tasks/approve", {"ids": [1.5]}).status_code == 422
    assert post(api, "/tasks/cancel", {"ids": [float(one)]}).json()["results"][0]["task_id"] == one
    unknown = post(api, f"/tasks/{gated[0]}/approve", {"surprise": 1})
    assert (unknown.status_code, unknown.json()) == (422, {"error": "approval: surprise: Extra inputs are "
                                                                    "not permitted"})


def dead_task(api: Api, title: str) -> int:
    """A task submitted through the API whose one attempt failed: dead."""
    from scheduler.usecases import work

    task = submit(api, title, queue="qa", max_attempts=1)
    claimed = work.claim(api.ws, "qin").claim
    assert claimed is not None and claimed.task.task_id == task
    work.fail(api.ws, work.FailRequest(task_id=task, token=claimed.token, error="boom"))
    return task


def test_submits_and_requeues_record_the_token_as_the_actor(api: Api):
    first, second, third = (dead_task(api, f"dead {i}") for i in range(3))
    one = submit(api, "one")
    batch = post(api, "/tasks", {"tasks": [{"queue": "dev", "title": "b1"}, {"queue": "dev", "title": "b2"}]},
                 as_="ci")
    assert batch.status_code == 200
    submits = {e["data"]["task_id"]: e["data"]["by"] for e in api.events() if e["type"] == "TaskSubmitted"}
    assert submits == {first: "ops", second: "ops", third: "ops", one: "ops",
                       **dict.fromkeys(batch.json()["task_ids"], "ci")}
    assert post(api, f"/tasks/{first}/requeue").json() == {"requeued": [first]}
    assert post(api, "/tasks/requeue", {"ids": [second]}).json() == {"requeued": [second]}
    assert post(api, "/tasks/requeue", {"all": True, "queue": "qa"}).json() == {"requeued": [third]}
    requeues = [e["data"] for e in api.events() if e["type"] == "TaskRequeued"]
    assert [(r["task_id"], r["reason"], r["by"]) for r in requeues] == [
        (first, "operator", "ops"), (second, "operator", "ops"), (third, "operator", "ops")]
    shown = get(api, f"/tasks/{first}/explain").json()
    assert any(step["what"] == "requeued by ops" for step in shown["timeline"])


@pytest.mark.parametrize(("path", "body"), [
    ("/tasks", {"queue": "dev", "title": "t", "by": "mallory"}),
    ("/tasks/1/requeue", {"by": "mallory"}),
    ("/tasks/requeue", {"ids": [1], "by": "mallory"}),
])
def test_a_submit_or_requeue_may_not_name_its_actor(api: Api, path: str, body: dict[str, Any]):
    answer = post(api, path, body)
    assert answer.status_code == 422 and answer.json()["error"].endswith("by: Extra inputs are not permitted")


def test_a_body_may_not_name_the_actor(api: Api):
    task = submit(api)
    answer = post(api, f"/tasks/{task}/cancel", {"by": "mallory"})
    assert answer.status_code == 422
    assert answer.json() == {"error": "cancel: by: Extra inputs are not permitted"}
    answer = post(api, "/agents/bob/drain", {"by": "mallory"})
    assert answer.status_code == 422
    drained = post(api, "/agents/bob/drain", {"reason": "patch"})
    assert drained.status_code == 200 and api.events()[-1]["data"]["by"] == "ops"


def test_an_unknown_agent_is_404_with_the_cli_line(api: Api):
    for answer in (post(api, "/agents/zed/drain"), get(api, "/tasks", agent="zed")):
        assert (answer.status_code, answer.json()) == (404, {"error": "unknown agent 'zed'"})


def test_a_claim_for_an_agent_the_control_file_does_not_name_is_404_with_the_cli_line(api: Api):
    from tests.conftest import write_fleet

    path = write_fleet(api.ws.settings.home, [{"agentName": "bob", "agentType": "dev"}])  # ann left
    before = api.events()
    answer = post(api, "/agents/ann/claim", {"wait_seconds": 0}, as_="box")
    assert (answer.status_code, answer.json()) == (404, {"error": f"no agent 'ann' in {path}"})
    assert api.events() == before


def test_the_idempotency_key_header_is_the_tasks_key(api: Api):
    first = post(api, "/tasks", {"queue": "dev", "title": "once"}, **{"Idempotency-Key": "abc"})
    again = post(api, "/tasks", {"queue": "dev", "title": "once"}, **{"Idempotency-Key": "abc"})
    assert first.json()["created"] is True and again.json() == {**first.json(), "created": False}
    batch = post(api, "/tasks", {"tasks": [{"queue": "dev", "title": "x"}]}, **{"Idempotency-Key": "b"})
    assert batch.status_code == 400 and "each task of a batch its own" in batch.json()["error"]
    differ = post(api, "/tasks", {"queue": "dev", "title": "t", "idempotency_key": "x"},
                  **{"Idempotency-Key": "y"})
    assert differ.status_code == 400
    # a key beyond ASCII is the same key in the header as in the body (or the CLI's): the
    # header's UTF-8 bytes were read as Latin-1, `café` as `cafÃ©`, another key
    header = post(api, "/tasks", {"queue": "dev", "title": "t"}, **{"Idempotency-Key": "café".encode()})
    body = post(api, "/tasks", {"queue": "dev", "title": "t", "idempotency_key": "café"})
    both = post(api, "/tasks", {"queue": "dev", "title": "t", "idempotency_key": "café"},
                **{"Idempotency-Key": "café".encode()})
    assert header.json()["created"] is True
    assert body.json() == both.json() == {**header.json(), "created": False}
    from eventlog.errors import BadInput
    from server.routes.tasks import header_text  # (the test client sends any header as UTF-8)

    with pytest.raises(BadInput, match=r"^Idempotency-Key: not UTF-8 text$"):
        header_text(b"caf\xe9".decode("latin-1"), "Idempotency-Key")  # as the server reads those bytes


def test_a_submitter_may_submit_and_read_but_not_operate(api: Api):
    assert post(api, "/tasks", {"queue": "dev", "title": "t"}, as_="ci").status_code == 200
    assert get(api, "/tasks", as_="dash").status_code == 200
    assert post(api, "/tasks", {"queue": "dev", "title": "t"}, as_="dash").status_code == 403
    assert post(api, "/tasks/1/cancel", None, as_="ci").status_code == 403


def test_a_body_that_is_not_json_is_one_line(api: Api):
    answer = api.client.post("/api/v1/tasks", content=b"{nope", headers={
        **api.auth("ops"), "Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.json()["error"].startswith("the request body is not JSON")
    misspelt = get(api, "/tasks", qeue="dev")
    assert (misspelt.status_code, misspelt.json()) == (422, {"error": "No such option: --qeue"})


@pytest.mark.parametrize("path", ["/tasks", "/pause", "/agents/ann/claim", "/tasks/1/heartbeat"])
def test_a_body_said_to_be_something_else_than_json_is_415(api: Api, path: str):
    """`curl -d '{...}'` without `-H 'Content-Type: application/json'` sends form data:
    one line saying so (415), nothing appended, rather than JSON read from a body said
    to be something else. JSON types with parameters pass; so does a body that says
    nothing of its type."""
    before = len(api.events())
    as_ = "box" if path.startswith(("/agents", "/tasks/1")) else "ops"
    answer = api.client.post(f"/api/v1{path}", content=b'{"queue": "dev", "title": "t"}', headers={
        **api.auth(as_), "Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 415, answer.json()
    assert answer.json()["error"].endswith(
        "the body must be JSON (Content-Type: application/json), not application/x-www-form-urlencoded")
    declared(api.client, "POST", f"/api/v1{path}", answer.status_code, answer.json())
    assert len(api.events()) == before
    for said in ("application/json; charset=utf-8", "application/merge-patch+json", None):
        headers = {**api.auth("ops")} | ({"Content-Type": said} if said else {})
        taken = api.client.post("/api/v1/tasks", content=b'{"queue": "dev", "title": "t"}', headers=headers)
        assert taken.status_code == 200, (said, taken.json())


def test_a_key_or_a_query_parameter_given_twice_is_refused_not_the_last_taken(api: Api):
    """`{"queue": "dev", ..., "queue": "qa"}` and `?queue=dev&queue=qa`: which one was
    meant cannot be told (plain parsing keeps the last): 422, nothing appended."""
    before = len(api.events())
    answer = api.client.post("/api/v1/tasks", content=b'{"queue": "dev", "title": "t", "queue": "qa"}',
                             headers={**api.auth("ops"), "Content-Type": "application/json"})
    assert (answer.status_code, answer.json()) == (422, {"error": "submit: the key 'queue' is given twice"})
    assert len(api.events()) == before
    twice = api.client.get("/api/v1/tasks?queue=dev&queue=qa", headers=api.auth("ops"))
    assert (twice.status_code, twice.json()) == (422, {"error": "--queue: given more than once"})
    keys = api.client.post("/api/v1/tasks", json={"queue": "dev", "title": "t"},
                           headers=[*api.auth("ops").items(), ("Idempotency-Key", "a"),
                                    ("Idempotency-Key", "b")])
    assert (keys.status_code, keys.json()) == (422, {"error": "Idempotency-Key: given more than once"})
    assert len(api.events()) == before


@pytest.mark.parametrize("path", ["/agents", "/status", "/metrics", "/replay", "/tasks", "/tasks/1",
                                  "/tasks/1/explain", "/metrics/prometheus", "/events"])
def test_a_misspelt_query_is_checked_after_the_token(api: Api, path: str):
    """No token, or a bad one: 401, whatever the query; a live token: the misspelt
    parameter is the 422 it always was (the order every route keeps: 401, 403, 422)."""
    url = ("/metrics" if path == "/metrics/prometheus" else "/api/v1" + path) + "?qeue=dev"
    submit(api)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        assert api.client.get(url, headers=headers).status_code == 401, headers
    answer = api.client.get(url, headers=api.auth("ops"))
    assert (answer.status_code, answer.json()) == (422, {"error": "No such option: --qeue"})


def test_a_request_with_a_body_refuses_query_parameters_after_the_token(api: Api):
    """Every field of a POST goes in its JSON body: `?reason=...` on a pause, or a
    claim's `?wait_seconds=...`, is refused (422, one line), never dropped unseen, and
    nothing is appended; a caller without a valid token hears 401 first."""
    submit(api)
    claimed = post(api, "/agents/ann/claim", None, as_="box").json()["task"]
    head = get(api, "/status").json()["last_seq"]
    for path, body, who in (("/pause", {}, "ops"), ("/agents/ann/claim", None, "box"),
                            (f"/tasks/{claimed['task_id']}/heartbeat", {"token": claimed["token"]}, "box"),
                            ("/tasks", {"queue": "dev", "title": "t"}, "ops")):
        url = f"/api/v1{path}?reason=deploying"
        assert api.client.post(url, json=body).status_code == 401, path
        answer = api.client.post(url, json=body, headers=api.auth(who))
        assert answer.status_code == 422, (path, answer.json())
        assert answer.json()["error"].endswith(
            "reason: a query parameter is not read here (the fields go in the JSON body)"), answer.json()
    assert get(api, "/status").json()["last_seq"] == head
    assert get(api, "/status").json()["paused"] is None


@pytest.mark.parametrize(("task", "status", "says"), [
    ({"queue": "dev", "title": "x", "bogus": 1}, 422, "bogus: Extra inputs are not permitted"),
    ({"queue": "dev", "title": "x", "priority": "2"}, 422, "priority: Input should be a valid integer"),
    ({"queue": "dev"}, 422, "title: Field required"),
    (1, 422, "task: must be a JSON object of a task's fields, not int"),
    ({"queue": "dev", "title": " "}, 400, "title: must say what the task is, not be blank"),
    ({"queue": "dev", "title": ""}, 400, "title: must say what the task is, not be blank"),
])
def test_a_task_of_a_batch_off_its_schema_is_422_as_a_body_is(api: Api, task: Any, status: int, says: str):
    """A batch's task of the wrong shape (a wrong type, an unknown or missing field) is
    422, as the same mistake in a single task's body; a value a check refuses is 400."""
    head = get(api, "/status").json()["last_seq"]
    answer = post(api, "/tasks", {"tasks": [{"queue": "dev", "title": "fine"}, task]})
    assert (answer.status_code, answer.json()) == (status, {"error": f"submit: tasks.1: {says}"})
    assert get(api, "/status").json()["last_seq"] == head  # all or none: the first is not submitted


@pytest.mark.parametrize(("path", "body", "says"), [
    ("/tasks/1/heartbeat", {}, "heartbeat: token: Field required"),
    ("/tasks/1/progress", {}, "progress: token: Field required"),
    ("/agents/ann/drain", {"agent": "bob"}, "drain: agent: Extra inputs are not permitted"),
    ("/agents/ann/evict", {"by": "kim"}, "evict: by: Extra inputs are not permitted"),
])
def test_a_body_error_names_the_request_it_was_sent_with(api: Api, path: str, body: Any, says: str):
    submit(api)
    who = "box" if path.startswith("/tasks") else "ops"
    answer = post(api, path, body, as_=who)
    assert (answer.status_code, answer.json()) == (422, {"error": says})


def test_a_url_that_is_not_utf8_once_decoded_is_one_line_400(api: Api):
    """As the CLI refuses an argument that is not text: the server would otherwise read
    the byte as U+FFFD and answer about a name nobody sent (`unknown agent '\ufffd'`)."""
    submit(api)
    for method, url in (("POST", "/api/v1/agents/%ff%fe/drain"), ("GET", "/api/v1/tasks?title=%ff"),
                        ("GET", "/tasks?q=ab%c3")):
        answer = api.client.request(method, url, headers=api.auth("ops"))
        part = "path" if "?" not in url else "query string"
        assert (answer.status_code, answer.json()) == (
            400, {"error": f"the request's {part} holds a byte that is not UTF-8 text (once %-decoded)"}), url
    accented = get(api, "/tasks", title="caf\u00e9")  # %C3%A9: text, and no such task
    assert accented.status_code == 200 and accented.json()["tasks"] == []


def test_openapi_describes_every_endpoint_and_its_bodies(api: Api):
    doc = api.client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in ("/api/v1/tasks", "/api/v1/tasks/{task_id}", "/api/v1/tasks/{task_id}/explain",
                 "/api/v1/tasks/{task_id}/cancel", "/api/v1/tasks/cancel", "/api/v1/tasks/approve",
                 "/api/v1/tasks/{task_id}/heartbeat", "/api/v1/agents", "/api/v1/agents/{name}/claim",
                 "/api/v1/agents/{name}/drain", "/api/v1/metrics", "/metrics", "/api/v1/replay"):
        assert path in paths, path
    submit_body = paths["/api/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"queue", "title", "tasks", "payload"} <= set(submit_body["properties"])
    beat = paths["/api/v1/tasks/{task_id}/heartbeat"]["post"]
    assert "token" in beat["requestBody"]["content"]["application/json"]["schema"]["required"]
    assert "429" in beat["responses"]
    assert "by" not in json.dumps(paths["/api/v1/tasks/{task_id}/cancel"]["post"]["requestBody"])


def test_a_trailing_slash_is_a_path_that_does_not_exist_not_a_redirect(api: Api):
    """`/api/v1/tasks/` is 404, as any unknown path: never a redirect, which would name
    the client's Host header and come before the token check."""
    answer = api.client.post("/api/v1/tasks/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert answer.status_code == 404 and "location" not in answer.headers


def test_a_release_must_say_why_and_records_nothing_otherwise(api: Api):
    task = submit(api)
    claimed = post(api, "/agents/ann/claim", None, as_="box").json()["task"]
    before = len(api.events())
    answer = post(api, f"/tasks/{task}/release", {"token": claimed["token"], "why": " "}, as_="box")
    assert (answer.status_code, answer.json()) == (
        400, {"error": "release: why must say why the claim did not reach its worker"})
    answer = post(api, f"/tasks/{task}/release", {"token": claimed["token"], "why": "a\x00b"}, as_="box")
    assert answer.status_code == 400 and answer.json()["error"].startswith("release: why: contains a NUL")
    assert len(api.events()) == before
    answer = post(api, f"/tasks/{task}/release", {"token": claimed["token"], "why": "lost"}, as_="box")
    assert (answer.status_code, answer.json()) == (200, {"task_id": task, "status": "queued"})
