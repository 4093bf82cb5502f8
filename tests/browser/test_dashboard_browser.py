"""The dashboard as an operator meets it, in Debian's chromium: signing in, a task that
appears without a reload, pausing, what a reader sees, untrusted titles shown as text,
and light or dark as the browser prefers."""

from __future__ import annotations

from tests.browser import live

live.skip_module_unless_available()  # (before playwright is imported: it may be missing)

from playwright.sync_api import expect  # noqa: E402

from scheduler.reads import queries  # noqa: E402
from scheduler.submit import TaskSpec, submit  # noqa: E402
from scheduler.tick import tick  # noqa: E402
from tests.browser.conftest import Dashboard  # noqa: E402

XSS = "<script>alert(1)</script>"


def test_signing_in_asks_for_a_token_and_signing_out_forgets_it(dashboard: Dashboard):
    page = dashboard.page
    page.goto(f"{dashboard.base}/")
    page.get_by_label("Token").fill("sched_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("that token is not valid (unknown or revoked)")
    dashboard.sign_in("ops")
    expect(page.locator(".who")).to_contain_text("ops")
    cookie = next(c for c in page.context.cookies() if c["name"] == "sched_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{dashboard.base}/signin")
    page.goto(f"{dashboard.base}/")
    expect(page).to_have_url(f"{dashboard.base}/signin")


def test_a_submitted_task_appears_live_without_a_reload(dashboard: Dashboard):
    page = dashboard.page
    dashboard.sign_in("dash")
    queued = page.locator('tr[data-queue="dev"] td[data-status="queued"]')
    expect(queued).to_have_text("0")
    page.evaluate("window.notReloaded = true")  # gone if the page were loaded again
    submit(dashboard.ws, [TaskSpec(queue="dev", title="appears live")])
    expect(queued).to_have_text("1")
    tick(dashboard.ws)
    expect(page.locator("#agents .held")).to_contain_text("appears live")
    expect(queued).to_have_text("0")
    expect(page.locator("#last-seq")).to_have_text(str(queries.status(dashboard.ws)["last_seq"]))
    assert page.evaluate("window.notReloaded") is True
    assert dashboard.console_errors == []  # no CSP violation, no failed request


def test_a_reader_sees_no_buttons_and_is_refused_when_posting_anyway(dashboard: Dashboard):
    page = dashboard.page
    dashboard.sign_in("dash")
    expect(page.locator("#assignment-state")).to_have_text("Assigning work")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    expect(page.get_by_role("button", name="Resume")).to_have_count(0)
    csrf = page.locator('input[name="csrf"]').first.input_value()
    answer = page.request.post(f"{dashboard.base}/pause", form={"csrf": csrf})
    assert answer.status == 403 and "may not operate" in answer.text()
    assert queries.status(dashboard.ws)["paused"] is None


def test_an_operator_pauses_and_resumes(dashboard: Dashboard):
    page = dashboard.page
    dashboard.sign_in("ops")
    page.get_by_label("reason for pausing").fill("deploying")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#assignment-state")).to_have_text("Paused")
    expect(page.locator(".card.paused")).to_contain_text("by ops")
    expect(page.locator(".card.paused")).to_contain_text("deploying")
    assert queries.status(dashboard.ws)["paused"]["by"] == "ops"
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#assignment-state")).to_have_text("Assigning work")
    assert queries.status(dashboard.ws)["paused"] is None


def test_a_title_that_is_markup_shows_as_text(dashboard: Dashboard):
    page = dashboard.page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    submit(dashboard.ws, [TaskSpec(queue="dev", title=XSS)])
    tick(dashboard.ws)
    dashboard.sign_in("ops")
    titles = page.locator("#agents .held .title")
    expect(titles).to_have_text([XSS])
    # and through the live fragment too
    submit(dashboard.ws, [TaskSpec(queue="dev", title=f'<img src=x onerror="alert(2)">{XSS}')])
    tick(dashboard.ws)
    expect(titles).to_have_count(2)
    expect(titles.nth(1)).to_have_text(f'<img src=x onerror="alert(2)">{XSS}')
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 2  # htmx and its SSE extension, nothing else
    assert dialogs == []


def test_light_and_dark_follow_the_browser(dashboard: Dashboard):
    page = dashboard.page
    dashboard.sign_in("dash")
    background = "getComputedStyle(document.body).backgroundColor"
    page.emulate_media(color_scheme="light")
    light = page.evaluate(background)
    page.emulate_media(color_scheme="dark")
    dark = page.evaluate(background)
    assert light == "rgb(247, 247, 245)" and dark == "rgb(21, 23, 27)"
