"""User data is data (issue 10): titles, payloads, errors, results, agent and queue names,
reasons and paths holding rich markup (`[/]`, `[bold]x`) or terminal control (ESC, BEL,
CSI U+009B, other C0/C1 controls, lone surrogates) are shown literally in every text
view, controls as visible escapes (`\\x1b`), never sent raw and never a MarkupError."""

from __future__ import annotations

import functools
import json
import re
import socket
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import pytest
import typer.main
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cli.common import console, emit_json, message
from cli.dashboard import render
from cli.main import main
from cli.text import literal, visible
from scheduler.reads.dashboard import snapshot
from tests.conftest import new_workspace

# a raw control character: C0 but the newline that ends a line, DEL, C1, a bidirectional
# control, a lone surrogate
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                         "\ud800-\udfff]")
MARKUP = ["[/]", "[bold]x", "[red]", "[red]x[/red]", "[/bold]", "\x1b[31m", "\x9b2J", "\x07",
          "\x1b]0;title\x07", ":thumbs_up:", "[link=file:///etc]y[/link]", "\\", "\r", "\t", "\n"]
# anything but lone surrogates and NUL: argv cannot carry them (see the surrogate tests
# below; a NUL is refused as text sched does not store)
STORABLE = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
USER_TEXT = st.lists(st.sampled_from(MARKUP) | st.text(STORABLE, min_size=1, max_size=6),
                     min_size=1, max_size=4).map("".join)


@pytest.fixture(autouse=True)
def plain_wide_output(monkeypatch):
    """No colour codes of sched's own (so any ESC in the output came from user data) and
    room for every table column (so a cell is not wrapped across lines)."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "4000")
    # typer rebuilds the click command from the annotations at every call (~80 ms, most
    # of an in-process run): build it once, so the generated test can afford its examples
    monkeypatch.setattr(typer.main, "get_command", functools.cache(typer.main.get_command))


class Runner:
    """`sched` run in-process on one home with the workspace's manual clock; every run's
    output is checked for raw controls and tracebacks as it is read."""

    def __init__(self, capsys, ws) -> None:
        self.capsys, self.ws = capsys, ws

    def __call__(self, *args: str, codes: tuple[int, ...] = (0,)) -> tuple[str, str]:
        code = main([*args, "--home", str(self.ws.settings.home)], clock=self.ws.clock)
        out, err = self.capsys.readouterr()
        assert code in codes, (args, code, err)
        assert_clean(out, err)
        return out, err


def assert_clean(*outputs: str) -> None:
    for text in outputs:
        assert not RAW_CONTROL.search(text), f"raw control character in {text!r}"
        assert "Traceback" not in text and "MarkupError" not in text and "internal error" not in text, text


def shown(text: str) -> str:
    """What a view must show of `text`: its visible form (without the whitespace at its
    ends, which a table cell pads or trims)."""
    return visible(text).strip()


def after(prefix: str, text: str) -> str:
    """What a view shows of `text` right after `prefix` on a line: its visible form, the
    whitespace at its start kept (it is mid-line), that at its end trimmed."""
    return prefix + visible(text).rstrip()


# -- the one function --------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "seen"), [
    ("\x1b[31mred", "\\x1b[31mred"), ("bell\x07", "bell\\x07"), ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
    ("\x00\x1f\x7f", "\\x00\\x1f\\x7f"), ("\x9b2J\x85", "\\x9b2J\\x85"),
    ("\ud800\udc80\udfff", "\\ud800\\udc80\\udfff"), ("[/] [bold]x", "[/] [bold]x"),
    ("back\\slash é ü 漢 \u00a0", "back\\slash é ü 漢 \u00a0"),
    ("abc\u202edcba", "abc\\u202edcba"), ("\u2066x\u2069\u200f\u061c", "\\u2066x\\u2069\\u200f\\u061c"),
    ("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧"),  # (a joiner stays: the emoji need it)
])
def test_visible_escapes_controls_and_lone_surrogates_only(raw: str, seen: str):
    assert visible(raw) == seen


def unescape(text: str) -> str:
    return re.sub(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|([ntr]))",
                  lambda m: chr(int(m[1] or m[2], 16)) if m[3] is None else "\n\t\r"["ntr".index(m[3])],
                  text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(exclude_categories=())))  # surrogates too
def test_visible_leaves_no_control_and_loses_nothing(text: str):
    out = visible(text)
    assert not RAW_CONTROL.search(out) and "\n" not in out
    out.encode("utf-8")  # nothing left that no encoder writes
    without_backslashes = text.replace("\\", "")  # only they make the escapes ambiguous
    assert unescape(visible(without_backslashes)) == without_backslashes


def test_literal_never_parses_markup():
    assert literal("[red]x[/red] [/]", ("[bold]", "bold")).plain == "[red]x[/red] [/][bold]"


# -- every view, generated text ----------------------------------------------------------

# ~1 s an example; no shrinking: an example is a few short pieces already, and shrinking
# one that takes a second would run for minutes
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=USER_TEXT, agent=USER_TEXT, queue=USER_TEXT, payload=USER_TEXT, result=USER_TEXT,
       error=USER_TEXT, by=USER_TEXT, reason=USER_TEXT)
def test_user_text_is_shown_literally_in_every_view(tmp_path, capsys, title, agent, queue, payload,
                                                    result, error, by, reason):
    if not error.strip():
        error += "!"  # `worker fail` asks for a non-blank --error
    if not title.strip():
        title += "!"  # as `submit` asks of a title
    agent, queue = (name if name.strip() else name + "!" for name in (agent, queue))  # (as the control
    # file asks of an agent's name and type)
    home = Path(tempfile.mkdtemp(dir=tmp_path))
    ws = new_workspace(home, [{"agentName": agent, "agentType": queue, "maxConcurrency": 2},
                              {"agentName": agent + "2", "agentType": queue, "maxConcurrency": 1}])
    sched = Runner(capsys, ws)
    try:
        for _ in range(3):
            sched("submit", "-q", queue, "-t", title, "--payload", json.dumps(payload))
        out, err = sched("worker", "claim", "--agent", agent)  # task 1
        token = out.split()[-1]
        assert shown(title) in err  # "lease until ...: TITLE"
        sched("worker", "complete", "1", "--token", token, "--result", json.dumps(result))
        token = sched("worker", "claim", "--agent", agent)[0].split()[-1]  # task 2
        sched("worker", "fail", "2", "--token", token, "--error", error, "--no-retry")
        out, _ = sched("tick")  # task 3 to the agent
        assert after("-> ", agent) in out or after("-> ", agent + "2") in out
        sched("pause", "--by", by, "--reason", reason)
        sched("submit", "-q", queue, "-t", title)  # task 4
        sched("cancel", "4", "--by", by, "--reason", reason)
        _, err = sched("tick")
        assert after("paused by ", by) in err

        views = {args: sched(*args)[0] for args in [
            ("tasks",), ("tasks", "--verbose"), ("show", "1"), ("show", "2"), ("show", "4"),
            ("replay",), ("replay", "--json"), ("status",), ("explain", "1"), ("agents", "list"),
            ("metrics",), ("webhooks", "list"), ("config", "show")]}
        views[("health",)] = sched("health", codes=(0, 1, 2))[0]
        console().print(render(snapshot(ws)))  # one frame of `status --watch`
        views[("watch",)], err = capsys.readouterr()
        assert_clean(views[("watch",)], err)

        for view in (("tasks",), ("status",), ("agents", "list"), ("watch",)):
            assert shown(agent) in views[view], view
        for view in (("tasks",), ("status",), ("agents", "list"), ("show", "1"), ("explain", "1")):
            assert shown(queue) in views[view], view
        for view in (("tasks",), ("show", "1")):
            assert shown(title) in views[view], view
        # the payload line: its JSON (controls JSON-escaped, the rest shown visibly)
        assert visible(json.dumps(payload, ensure_ascii=False))[:150] in views[("show", "1")]
        assert shown(error) in views[("show", "2")]  # last_error
        assert after("queue ", queue) in views[("metrics",)]
        assert after("agent ", agent) in views[("metrics",)]
        assert after("PAUSED by ", by) in views[("watch",)]
        assert shown(error[:60]) in views[("watch",)]  # the latest failure's detail
        assert after("paused by ", by) in views[("status",)]
        assert shown(reason) in views[("status",)]
        # replay prints each event's stored JSON: controls below U+0020 are JSON escapes
        # there, DEL and C1 come through raw and must be made visible
        replayed = views[("replay",)]
        assert len(replayed.splitlines()) == len(views[("replay", "--json")].splitlines())
        for text in (title, result, error, by, reason):
            assert visible(json.dumps(text, ensure_ascii=False)[1:-1]) in replayed
    finally:
        ws.close()


# -- what a test can only write into the database ---------------------------------------

def test_a_damaged_row_with_controls_and_surrogates_is_shown_visibly(make_workspace, capsys):
    """Lone surrogates cannot come through argv (refused, below) and SQLite's UTF-8 text
    cannot hold them, but a JSON column can: a payload `"\\udc80"` reads back as one."""
    ws = make_workspace()
    sched = Runner(capsys, ws)
    sched("submit", "-q", "dev", "-t", "fine")
    with closing(sqlite3.connect(ws.settings.db_path)) as conn, conn:
        conn.execute("UPDATE tasks SET title = ?, payload = ?, queue = ? WHERE task_id = 1",
                     ("t[/]\x1b[2J\x9b\x07", '"p\\udc80[bold]\\u001b\\u009b"', "q[red]\x1b"))
    out, _ = sched("show", "1")
    assert "t[/]\\x1b[2J\\x9b\\x07" in out
    assert '"p\\udc80[bold]\\u001b\\x9b"' in out  # its JSON, shown visibly
    out, _ = sched("tasks", "--verbose")
    assert "t[/]\\x1b[2J\\x9b\\x07" in out and "q[red]\\x1b" in out


def test_undecodable_text_in_the_database_is_shown_visibly(make_workspace, capsys):
    """Bytes that are not UTF-8 in a text column (a damaged file) are read with
    surrogate escapes and shown as escapes, ESC included: never raw, never a crash."""
    ws = make_workspace()
    sched = Runner(capsys, ws)
    sched("submit", "-q", "dev", "-t", "fine")
    with closing(sqlite3.connect(ws.settings.db_path)) as conn, conn:
        conn.execute("UPDATE tasks SET title = CAST(X'41eda0801b5b324a07' AS TEXT) WHERE task_id = 1")
    code = main(["tasks", "--home", str(ws.settings.home)], clock=ws.clock)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert not RAW_CONTROL.search(out + err), err
    assert "A\\udced\\udca0\\udc80\\x1b[2J\\x07" in out


@pytest.mark.parametrize("args", [
    ["submit", "-q", "dev", "-t", "t\udc80\x1b[31m"],
    ["submit", "-q", "d\udc80\x1b", "-t", "t"],
    ["submit", "-q", "dev", "-t", "t", "--payload", '"\\udc80\\u001b"'],
    ["tasks", "--queue", "\udcff\x1b[2J"],
    ["pause", "--by", "\udc9b\x07", "--reason", "r"],
], ids=["title", "queue", "payload", "tasks-queue", "pause-by"])
def test_a_lone_surrogate_in_argv_is_refused_in_one_clean_line(make_workspace, capsys, args):
    ws = make_workspace()
    code = main([*args, "--home", str(ws.settings.home)], clock=ws.clock)
    out, err = capsys.readouterr()
    assert not RAW_CONTROL.search(out + err), err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sched: "), err
    assert code == 2, err


# -- paths, messages, help ---------------------------------------------------------------

def test_a_path_with_markup_and_controls_is_shown_literally(tmp_path, capsys):
    home = tmp_path / "home [/] [red]x \x1b[31m \x07 \x9b"
    ws = new_workspace(home)
    try:
        sched = Runner(capsys, ws)
        out, _ = sched("config", "show")
        assert visible(str(home)) in out
        out, _ = sched("agents", "validate")
        assert visible(str(home)) in out
        _, err = sched("init")
        assert visible(str(home)) in err
    finally:
        ws.close()


def test_webhook_urls_and_errors_are_shown_literally(make_workspace, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ws = make_workspace()
    url = f"http://127.0.0.1:{port}/h[/][red]x"
    (ws.settings.home / "sched.toml").write_text(  # (a control character in it is refused: test_settings)
        f'[[webhooks]]\nurl = "{url}"\nevents = ["task.failed"]\n')
    sched = Runner(capsys, ws)
    sched("webhooks", "deliver")  # from here on, events are sent
    sched("submit", "-q", "dev", "-t", "t")
    token = sched("worker", "claim", "--agent", "ann")[0].split()[-1]
    sched("worker", "fail", "1", "--token", token, "--error", "e[/]")
    _, err = sched("webhooks", "deliver")
    assert "failed: task.failed" in err and url in err
    out, _ = sched("webhooks", "list")
    assert url in out


def test_a_message_with_markup_is_literal_and_keeps_sched_styling(capsys):
    message(("error:", "red"), " [/] [bold]x \x1b[31m")
    _, err = capsys.readouterr()
    assert err == "error: [/] [bold]x \\x1b[31m\n"


def test_json_output_escapes_every_control_and_lone_surrogate(capsys):
    emit_json({"t": "\x1b\x07\x7f\x9b\udc80[/]"})
    out, _ = capsys.readouterr()
    assert not RAW_CONTROL.search(out)
    assert json.loads(out) == {"t": "\x1b\x07\x7f\x9b\udc80[/]"}


def help_paths() -> list[tuple[str, ...]]:
    from cli.main import app

    def walk(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*path, name))

    return list(walk(typer.main.get_command(app), ()))


@pytest.mark.parametrize("path", help_paths(), ids=lambda p: " ".join(p) or "sched")
def test_help_is_printed_as_written(path: tuple[str, ...], capsys):
    assert main([*path, "--help"]) == 0
    out, err = capsys.readouterr()
    assert_clean(out, err)
    if path in ((), ("webhooks",)):
        assert "[[webhooks]]" in out  # a TOML table name, not rich markup
