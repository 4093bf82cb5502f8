"""The CLI contract of the queue view: `tasks --agent`, `--unassigned`, the `position`
and `estimated_completion` keys, and `tasks --watch` (JSON lines with --json; a frame
per interval until Ctrl-C), tested in-process with a manual clock and no waiting."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from cli import queue_view
from cli.main import main
from scheduler.clock import ManualClock
from tests.cli.conftest import InProcess, Run, ok, one_error_line, one_json


@pytest.fixture
def run(cli: InProcess) -> InProcess:
    """`sched` in this process (no interpreter start-up per call): what these tests
    check is the command's documents and exit codes, not a real process's start."""
    return cli


def ids(run: Run, *args: str) -> list[int]:
    return [t["task_id"] for t in one_json(ok(run("tasks", "--json", *args)))["tasks"]]


@pytest.fixture
def queue(seeded: Path, run: Run) -> Path:
    """Tasks 1 (the seed) to 5 in dev: 4 directed at bob (and picked first); after a tick
    ann holds 1 and 2, bob 4; 3 and 5 wait."""
    for title in ("two", "three"):
        ok(run("submit", "-q", "dev", "-t", title))
    ok(run("submit", "-q", "dev", "-t", "for bob", "--assignee", "bob", "--priority", "5"))
    ok(run("submit", "-q", "dev", "-t", "five"))
    ok(run("tick"))
    return seeded


def test_agent_and_unassigned_filters(queue: Path, run: Run):
    assert sorted(ids(run, "--agent", "ann")) == [1, 2]
    assert ids(run, "--agent", "bob") == [4]
    assert sorted(ids(run, "--unassigned")) == [1, 2, 3, 5]
    assert sorted(ids(run, "--unassigned", "--status", "queued")) == [3, 5]
    assert ids(run, "--agent", "qin") == []


def test_the_table_names_the_agent_a_waiting_task_is_directed_at(queue: Path, run: Run):
    ok(run("submit", "-q", "dev", "-t", "also bob", "--assignee", "bob"))  # (6: not ticked yet)
    listed = ok(run("tasks", "--agent", "bob")).stdout.splitlines()
    rows = {line.split()[0]: line for line in listed if line[:1].isdigit()}
    assert " bob " in rows["4"] and " for bob " in rows["6"]  # (6 showed `-`: held by nobody)


def test_the_title_filter_keeps_each_tasks_place_in_the_list_and_the_watch(queue: Path, run: Run):
    assert ids(run, "--title", "T") == [1, 2, 3] and ids(run, "--title", "fIvE") == [5]
    (five,) = one_json(ok(run("tasks", "--json", "--title", "five")))["tasks"]
    assert five["position"] == 2  # behind three, which the filter leaves out
    from cli.common import workspace

    ws = workspace(queue)
    try:  # a frame of `tasks --watch --title FIVE`: the same task, in the same place
        (watched,) = queue_view.queue_document(ws, None, None, None, None, False, "FIVE")["tasks"]
    finally:
        ws.close()
    assert (watched["task_id"], watched["position"]) == (5, 2)


def test_every_task_has_its_place_and_estimated_completion(queue: Path, run: Run):
    tasks = {t["task_id"]: t for t in one_json(ok(run("tasks", "--json")))["tasks"]}
    assert {i: t["position"] for i, t in tasks.items()} == {1: None, 2: None, 4: None, 3: 1, 5: 2}
    assert all("estimated_completion" in t for t in tasks.values())
    # a filter keeps the place the task has in its whole queue
    (five,) = one_json(ok(run("tasks", "--json", "--unassigned", "--status", "queued", "--limit", "5",
                              "--queue", "dev")))["tasks"][1:]
    assert five["task_id"] == 5 and five["position"] == 2


@pytest.mark.parametrize(("args", "named"), [
    (["--agent", "nobody"], "unknown agent"),
    (["--agent", "ann", "--unassigned"], "--unassigned"),
    (["--interval", "2"], "--watch"),
    (["--watch", "--interval", "0"], "--interval"),
    (["--watch", "--verbose"], "--verbose"),
    (["--watch", "--cursor", "garbage"], "--cursor does not go with --watch"),
    (["--watch", "--agent", "nobody"], "unknown agent"),
    (["--title", "a\x00b"], "--title: contains a NUL character"),
    (["--watch", "--title", "a\x00b"], "--title: contains a NUL character"),
])
def test_bad_queue_view_input_exits_2_with_one_line(queue: Path, run: Run, args: list[str], named: str):
    assert named in one_error_line(run("tasks", *args), 2)


def test_watch_json_prints_one_frame_per_interval_until_ctrl_c(queue: Path, monkeypatch, capsys):
    clock = ManualClock()
    waits: list[float] = []

    def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third wait
        clock.advance(seconds)

    monkeypatch.setattr(queue_view, "sleep", fake_sleep)
    code = main(["tasks", "--watch", "--json", "--interval", "7", "--home", str(queue)], clock=clock)
    out = capsys.readouterr().out
    assert code == 0
    frames = [json.loads(line) for line in out.splitlines()]
    assert len(frames) == 3 and waits == [7.0, 7.0, 7.0]
    assert [f["at"] for f in frames] == sorted({f["at"] for f in frames})  # 7 s apart, in order
    # open tasks only, in pick order, each with the queue view's figures
    assert [t["task_id"] for t in frames[0]["tasks"]] == [4, 1, 2, 3, 5]
    assert {"position", "effective_priority", "estimated_start", "estimated_completion"} <= set(
        frames[0]["tasks"][0])


def test_the_text_frame_shows_place_priority_and_estimates(queue: Path):
    from cli.common import workspace

    ws = workspace(queue)
    try:
        doc = queue_view.queue_document(ws, None, None, None, None, False)
    finally:
        ws.close()
    out = io.StringIO()
    Console(file=out, width=200).print(queue_view.render(doc))
    text = out.getvalue()
    for header in ("pos", "eff", "est. start", "est. done"):
        assert header in text
    three = next(line for line in text.splitlines() if "three" in line)
    assert three.split()[0] == "1"  # first in its queue


def test_at_80_columns_a_frame_keeps_one_line_a_task_and_the_overdue_mark():
    """The title gives way to the terminal's width; `(OVERDUE)` comes before it, so
    cutting the title never cuts the mark."""
    task = {"position": 1, "task_id": 7, "queue": "dev", "status": "queued", "priority": 3,
            "effective_priority": 13, "agent": None, "assignee": None, "estimated_start": None,
            "estimated_completion": None, "overdue": True,
            "title": "a title long enough to be cut at eighty columns, whatever else is shown"}
    out = io.StringIO()
    frame = {"at": "2026-05-01T00:00:00.000000Z", "tasks": [task]}
    Console(file=out, width=80).print(queue_view.render(frame))
    (row,) = [line for line in out.getvalue().splitlines() if line[:1].isdigit()]
    assert row.split()[:2] == ["1", "7"] and "(OVERDUE) a" in row and row.rstrip().endswith("…")
    # the other columns too wide for 80: the frame is made wider (the screen crops it)
    # rather than squeeze the title to nothing and cut the agent's name
    task |= {"status": "assigned", "agent": "an-agent-with-a-rather-long-name-indeed"}
    out = io.StringIO()
    Console(file=out, width=250).print(queue_view.render(frame, width=80))
    (row,) = [line for line in out.getvalue().splitlines() if line[:1].isdigit()]
    assert " an-agent-with-a-rather-long-name-indeed " in row and "(OVERDUE) a" in row, row
