"""The quick commands stay quick (issue 13: a quick CLI): run in a new interpreter, the
read commands and the worker protocol (claim included) load no SQLAlchemy or sqlmodel
on SQLite (and no psycopg, which only a postgresql:// URL needs), and the read
commands no event model either. What a command imports is most of what it costs to
start: `make bench` measures the time (`cold_cli`, `cold_tasks`, and the worker's
`cold_heartbeat`, `cold_complete`, `cold_claim`, `cold_fail`); this keeps the imports
from creeping back. Bad input still ends with one line and its exit code, whatever is
loaded lazily."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import cli_env, ok, one_json, sched

SLOW = ("sqlalchemy", "sqlmodel", "psycopg", "apscheduler")
# run `sched ARGS` in this interpreter, then report its exit code and which modules it loaded
PROBE = """
import contextlib, io, json, sys
from cli.main import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(),
                  "modules": sorted({name.split(".")[0] for name in sys.modules}),
                  "events": "eventlog.events" in sys.modules}))
"""


def probe(home: Path, *args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=home, env=cli_env(home),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def working(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, str]]]:
    """A home whose pull worker `ann` holds two running attempts: their ids and tokens."""
    from tests.cli.conftest import FLEET, write_control

    home = tmp_path_factory.mktemp("quick")
    write_control(home, FLEET)
    (home / "sched.toml").write_text("backoff_base_seconds = 0\n")  # a failed task: ready again at once
    ok(sched(home, "init"))
    for title in ("one", "two", "three"):
        ok(sched(home, "submit", "--queue", "dev", "--title", title))
    ok(sched(home, "tick"))  # records the control file, as a running fleet has it
    attempts = []
    for _ in range(2):
        task = one_json(ok(sched(home, "worker", "claim", "--agent", "ann", "--json")))["task"]
        attempts.append((task["task_id"], task["token"]))
    return home, attempts


@pytest.mark.parametrize("args", [
    ("status", "--json"), ("status",), ("tasks", "--json"), ("tasks",), ("show", "1", "--json"),
    ("replay", "--json"), ("replay", "--head"), ("metrics", "--json"), ("metrics", "--prometheus"),
    ("agents", "list", "--json"), ("config", "show", "--json"), ("webhooks", "list", "--json"),
])
def test_read_commands_load_neither_sqlalchemy_nor_the_event_models(working, args):
    home, _ = working
    found = probe(home, *args)
    assert found["code"] == 0, found["err"]
    assert not set(SLOW) & set(found["modules"]), found["modules"]  # type: ignore[arg-type]
    assert not found["events"]
    if "--json" in args:
        assert [json.loads(line) for line in str(found["out"]).splitlines()]  # (replay: one per line)
        assert "rich" not in found["modules"]  # type: ignore[operator]


def test_the_worker_protocol_loads_no_sqlalchemy(working):
    home, [(first, first_token), (second, second_token)] = working
    for args in (("worker", "heartbeat", str(first), "--token", first_token, "--json"),
                 ("worker", "progress", str(first), "--token", first_token, "--percent", "50", "--json"),
                 ("worker", "complete", str(first), "--token", first_token, "--result", "[1]", "--json"),
                 ("worker", "fail", str(second), "--token", second_token, "--error", "boom", "--json")):
        found = probe(home, *args)
        assert found["code"] == 0, (args, found["err"])
        assert not set(SLOW) & set(found["modules"]), (args, found["modules"])  # type: ignore[arg-type]
    found = probe(home, "health", "--json")  # exit 0, 1 or 2 with the level
    assert found["code"] in (0, 1, 2) and json.loads(str(found["out"]))["checks"], found["err"]
    assert not set(SLOW) & set(found["modules"]), found["modules"]  # type: ignore[arg-type]
    found = probe(home, "explain", str(first), "--json")  # it reads the decisions: their models, no SQL
    assert found["code"] == 0, found["err"]
    assert not set(SLOW) & set(found["modules"]), found["modules"]  # type: ignore[arg-type]
    task = one_json(ok(sched(home, "show", str(first), "--json")))["task"]
    assert (task["status"], task["progress_percent"]) == ("succeeded", 50)
    assert one_json(ok(sched(home, "show", str(second), "--json")))["task"]["status"] == "queued"
    found = probe(home, "worker", "claim", "--agent", "bob", "--json")  # assigns and starts in one go
    assert found["code"] == 0, found["err"]
    assert json.loads(str(found["out"]))["task"]["title"] == "two"  # (its failure retries at once)
    assert not set(SLOW) & set(found["modules"]), found["modules"]  # type: ignore[arg-type]


@pytest.mark.parametrize(("args", "code"), [
    (("status", "--at", "yesterday"), 2),
    (("tasks", "--status", "sleeping"), 2),
    (("show", "999"), 2),
    (("worker", "heartbeat", "1", "--token", "not-the-token"), 1),
    (("worker", "complete", "2", "--token", "x", "--result", "{nope"), 2),
])
def test_bad_input_is_still_one_line(working, args, code):
    home, _ = working
    found = probe(home, *args)
    assert found["code"] == code, found
    lines = str(found["err"]).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sched: "), found["err"]
    assert "Traceback" not in str(found["err"])
    assert not set(SLOW) & set(found["modules"]), found["modules"]  # type: ignore[arg-type]
