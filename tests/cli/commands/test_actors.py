"""Who submitted a task and who requeued it are recorded, as for every other operator
action: `--by`, else $USER (`TaskSubmitted.by`, `TaskRequeued.by`), shown by `sched
show` and `sched explain`. The scheduler's own requeues name nobody."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.conftest import InProcess, ok, one_error_line, one_json


def events(cli: InProcess, kind: str) -> list[dict[str, Any]]:
    lines = ok(cli("replay", "--json")).stdout.splitlines()
    return [e["data"] for e in map(json.loads, filter(str.strip, lines)) if e["type"] == kind]


def test_a_submit_records_the_user_or_by(home: Path, cli: InProcess):
    ok(cli("init"))
    one = one_json(ok(cli("submit", "-q", "dev", "-t", "mine", "--json", env={"USER": "kim"})))["task_id"]
    two = one_json(ok(cli("submit", "-q", "dev", "-t", "theirs", "--by", "release-bot", "--json")))["task_id"]
    (home / "batch.jsonl").write_text('{"queue": "dev", "title": "a"}\n{"queue": "qa", "title": "b"}\n')
    batch = one_json(ok(cli("submit", "--file", "batch.jsonl", "--json", env={"USER": "lee"})))["task_ids"]
    assert {e["task_id"]: e["by"] for e in events(cli, "TaskSubmitted")} == {
        one: "kim", two: "release-bot", batch[0]: "lee", batch[1]: "lee"}
    shown = one_json(ok(cli("show", str(two), "--json")))
    assert shown["events"][0]["data"]["by"] == "release-bot"
    timeline = one_json(ok(cli("explain", str(two), "--json")))["timeline"]
    assert timeline[0]["what"].startswith("submitted to dev by release-bot (")


def test_a_requeue_records_the_user_or_by_and_the_schedulers_own_names_nobody(home: Path, cli: InProcess):
    ok(cli("init"))
    dead = []
    for title in ("first", "second"):
        submitted = ok(cli("submit", "-q", "qa", "-t", title, "--max-attempts", "2", "--json"))
        task = one_json(submitted)["task_id"]
        for _ in range(2):  # failed, retried by the scheduler, failed again: dead
            claimed = one_json(ok(cli("worker", "claim", "--agent", "qin", "--json")))["task"]
            assert claimed["task_id"] == task
            ok(cli("worker", "fail", str(task), "--token", claimed["token"], "--error", "boom",
                   env={"SCHED_BACKOFF_BASE_SECONDS": "0"}))  # retried at once
        dead.append(task)
    ok(cli("requeue", str(dead[0]), env={"USER": "kim"}))
    ok(cli("requeue", "--all", "--queue", "qa", "--by", "night-shift"))
    requeues = [(e["task_id"], e["reason"], e["by"]) for e in events(cli, "TaskRequeued")]
    assert requeues == [(dead[0], "failed", None), (dead[1], "failed", None),
                        (dead[0], "operator", "kim"), (dead[1], "operator", "night-shift")]
    timeline = one_json(ok(cli("explain", str(dead[0]), "--json")))["timeline"]
    whats = [step["what"] for step in timeline if step["event"] == "TaskRequeued"]
    assert whats[0].startswith("requeued (failed") and whats[1] == "requeued by kim"


def test_a_by_the_log_cannot_store_is_refused_and_nothing_is_appended(home: Path, cli: InProcess):
    ok(cli("init"))
    before = one_json(ok(cli("replay", "--head", "--json")))
    line = one_error_line(cli("submit", "-q", "dev", "-t", "t", "--by", "x" * 2000), 2)
    assert line.startswith("sched: --by: is 2000 bytes, over the limit")
    line = one_error_line(cli("requeue", "1", "--by", "x" * 2000), 2)
    assert line.startswith("sched: --by: is 2000 bytes, over the limit")
    assert one_json(ok(cli("replay", "--head", "--json"))) == before
