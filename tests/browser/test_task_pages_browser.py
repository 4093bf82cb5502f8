"""The task pages as an operator meets them in Debian's chromium: opening a task from
the list and watching its timeline move, requeueing a dead task through the
confirmation, approving a task, and the metrics charts under the CSP."""

from __future__ import annotations

import re

from tests.browser import live

live.skip_module_unless_available()  # (before playwright is imported: it may be missing)

from playwright.sync_api import expect  # noqa: E402

from scheduler import worker  # noqa: E402
from scheduler.reads import queries  # noqa: E402
from scheduler.submit import TaskSpec, submit  # noqa: E402
from scheduler.tick import tick  # noqa: E402
from tests.browser.conftest import Dashboard  # noqa: E402

XSS = "<script>alert(1)</script>"


def status_of(board: Dashboard, task_id: int) -> str:
    return next(t.status for t in queries.list_tasks(board.ws) if t.task_id == task_id)


def test_open_a_task_from_the_live_list_and_its_timeline_follows_the_log(dashboard: Dashboard):
    page = dashboard.page
    (task,) = submit(dashboard.ws, [TaskSpec(queue="qa", title=f"check {XSS}")])
    submit(dashboard.ws, [TaskSpec(queue="dev", title="something else")])
    dashboard.sign_in("dash")
    page.get_by_role("link", name="Tasks").click()
    page.get_by_label("Title").fill("CHECK")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#tasks tbody tr")).to_have_count(1)
    submit(dashboard.ws, [TaskSpec(queue="dev", title="check it again")])  # the list follows the log
    expect(page.locator("#tasks tbody tr")).to_have_count(2)
    page.get_by_role("link", name=f"check {XSS}").click()
    expect(page).to_have_url(f"{dashboard.base}/tasks/{task.task_id}")
    expect(page.locator("#task-title")).to_have_text(f"check {XSS}")
    expect(page.locator("#task-status")).to_have_text("queued")
    page.evaluate("window.notReloaded = true")
    tick(dashboard.ws)
    claim = worker.claim(dashboard.ws, "qin")
    worker.fail(dashboard.ws, task.task_id, claim.token, "<b>disk</b> full")
    expect(page.locator("#timeline")).to_contain_text("TaskFailed")
    expect(page.locator('#attempts tr[data-attempt="1"]')).to_contain_text("<b>disk</b> full")
    assert page.evaluate("window.notReloaded") is True
    assert page.locator("b").count() == 0
    assert dashboard.console_errors == []


def test_requeue_a_dead_task_through_the_confirmation(dashboard: Dashboard):
    page = dashboard.page
    ids = []
    for title in ("first dead", "second dead"):
        (task,) = submit(dashboard.ws, [TaskSpec(queue="qa", title=title)])
        tick(dashboard.ws)
        claim = worker.claim(dashboard.ws, "qin")
        worker.fail(dashboard.ws, task.task_id, claim.token, "gave up", retry=False)
        ids.append(task.task_id)
    dashboard.sign_in("ops")
    page.get_by_role("link", name="Dead letters").click()
    expect(page.locator("#dead tbody tr")).to_have_count(2)
    page.get_by_label(f"pick task {ids[1]}").check()
    page.get_by_role("button", name=re.compile("Requeue the ticked tasks")).click()
    expect(page.get_by_role("heading", name="Requeue 1 task?")).to_be_visible()
    expect(page.locator("#to-requeue")).to_contain_text("second dead")
    assert status_of(dashboard, ids[1]) == "dead"  # nothing yet
    page.get_by_role("button", name="Yes, requeue").click()
    expect(page.locator("#requeued")).to_contain_text(f"#{ids[1]}")
    expect(page.locator("#dead tbody tr")).to_have_count(1)
    assert status_of(dashboard, ids[1]) == "queued" and status_of(dashboard, ids[0]) == "dead"


def test_approve_a_task(dashboard: Dashboard):
    page = dashboard.page
    (task,) = submit(dashboard.ws, [TaskSpec(queue="dev", title="ship it", requires_approval=True)])
    dashboard.sign_in("ops")
    page.get_by_role("link", name="Approvals").click()
    expect(page.locator("#approvals")).to_contain_text("ship it")
    page.get_by_role("button", name=f"approve task {task.task_id}").click()
    expect(page.get_by_text("No task awaits approval.")).to_be_visible()
    assert status_of(dashboard, task.task_id) == "queued"


def test_a_reader_sees_no_requeue_or_approval_buttons(dashboard: Dashboard):
    page = dashboard.page
    submit(dashboard.ws, [TaskSpec(queue="dev", title="ship it", requires_approval=True)])
    dashboard.sign_in("dash")
    page.goto(f"{dashboard.base}/approvals")
    expect(page.locator("#approvals")).to_contain_text("ship it")
    expect(page.locator("main button")).to_have_count(0)


def test_the_metrics_charts_draw_under_the_csp(dashboard: Dashboard):
    page = dashboard.page
    (task,) = submit(dashboard.ws, [TaskSpec(queue="qa", title="measured")])
    tick(dashboard.ws)
    claim = worker.claim(dashboard.ws, "qin")
    dashboard.ws.clock.advance(20)
    worker.complete(dashboard.ws, task.task_id, claim.token, None)
    dashboard.sign_in("dash")
    page.get_by_role("link", name="Metrics").click()
    expect(page.locator("#chart-throughput rect.bar.completed")).to_have_count(1)
    fill = page.locator("#chart-throughput rect.bar.completed").evaluate("e => getComputedStyle(e).fill")
    assert fill not in ("", "none", "rgb(0, 0, 0)")  # coloured by the stylesheet
    assert dashboard.console_errors == []
