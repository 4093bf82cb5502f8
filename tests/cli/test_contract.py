"""The CLI contract (DESIGN, "CLI contract"): with --json every command prints exactly
one JSON document on stdout (replay: one object per line) with the promised keys, and
the exit codes scripts rely on."""

from __future__ import annotations

import json
import re
import shutil
import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.cli.conftest import (
    FLEET,
    InProcess,
    Run,
    event_count,
    json_lines,
    ok,
    one_error_line,
    one_json,
    sched_here,
    write_control,
)


@pytest.fixture
def run(cli: InProcess) -> InProcess:
    """`sched` in this process (no interpreter start-up per call): what these tests
    check is the command's documents and exit codes, not a real process's start."""
    return cli


def write_jsonl(path: Path, tasks: list[object]) -> Path:
    path.write_text("".join((t if isinstance(t, str) else json.dumps(t)) + "\n" for t in tasks))
    return path


# -- setup commands ----------------------------------------------------------------------

def test_init_json_reports_the_database_and_is_idempotent(home: Path, run: Run):
    first = one_json(ok(run("init", "--json")))
    assert {"db", "created"} <= first.keys()
    assert first["created"] is True
    assert Path(first["db"]).resolve() == (home / "sched.db").resolve()
    assert (home / "sched.db").is_file()

    again = one_json(ok(run("init", "--json")))
    assert again["created"] is False
    assert Path(again["db"]).resolve() == (home / "sched.db").resolve()
    assert event_count(home / "sched.db") == 0


def test_agents_validate_json_reports_agents_and_warnings(home: Path, run: Run):
    write_control(home, [*FLEET[:2], {**FLEET[2], "team": "blue"}])
    doc = one_json(ok(run("agents", "validate", "--json")))
    assert {"valid", "path", "agents", "warnings"} <= doc.keys()
    assert doc["valid"] is True
    assert Path(doc["path"]).resolve() == (home / "agent-control.json").resolve()
    assert doc["agents"] == 3
    assert len(doc["warnings"]) == 1 and "team" in doc["warnings"][0]


def test_agents_validate_fix_where_a_directory_is_reports_the_file_missing(home: Path, run: Run):
    """docs/cli.md: exit 1 when the file is missing, with `{"valid": false, "error"}`;
    --fix cannot write one where a directory is, and says so in that document."""
    folder = home / "fleet"
    folder.mkdir()
    result = run("agents", "validate", "--agents", str(folder), "--fix", "--json")
    assert result.returncode == 1, result.stderr
    assert one_json(result) == {"valid": False, "error": f"no agent control file at {folder}, and a "
                                "default one cannot be written there: it is a directory"}
    result = run("agents", "validate", "--agents", str(folder), "--fix")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().startswith(f"invalid: no agent control file at {folder}")
    assert list(folder.iterdir()) == []


def test_config_show_json_names_the_source_of_each_setting(home: Path, run: Run):
    (home / "sched.toml").write_text("max_attempts = 5\n")
    doc = one_json(ok(run("config", "show", "--json", env={"SCHED_LEASE_SECONDS": "42"})))
    settings = doc["settings"]
    assert settings["lease_seconds"] == {"value": 42, "source": "environment"}
    assert settings["max_attempts"] == {"value": 5, "source": "sched.toml"}
    assert settings["start_deadline_seconds"]["source"] == "default"
    assert all({"value", "source"} <= item.keys() for item in settings.values())
    # an unset host is the machine's name, which every command acts as: shown as such
    assert settings["host"] == {"value": socket.gethostname(), "source": "default"}


# -- submit ------------------------------------------------------------------------------

def test_submit_json_prints_the_task_id_and_honours_idempotency_keys(seeded: Path, run: Run):
    db = seeded / "sched.db"
    doc = one_json(ok(run("submit", "--queue", "dev", "--title", "second", "--json")))
    assert isinstance(doc["task_id"], int) and doc["task_id"] == 2
    assert event_count(db) == 2

    keyed = one_json(ok(run("submit", "-q", "qa", "-t", "keyed", "--idempotency-key", "K-1", "--json")))
    assert keyed["task_id"] == 3
    count = event_count(db)
    repeat = one_json(ok(run("submit", "-q", "qa", "-t", "keyed again", "--idempotency-key", "K-1",
                             "--json")))
    assert repeat["task_id"] == keyed["task_id"]
    assert event_count(db) == count


def test_submit_file_json_prints_every_task_id(seeded: Path, run: Run):
    db = seeded / "sched.db"
    tasks = write_jsonl(seeded / "tasks.jsonl", [
        {"queue": "dev", "title": "a", "priority": 2},
        {"queue": "qa", "title": "b"},
        {"queue": "dev", "title": "c", "assignee": "bob", "payload": {"n": 1}},
    ])
    doc = one_json(ok(run("submit", "--file", str(tasks), "--json")))
    assert doc["task_ids"] == [2, 3, 4]
    assert event_count(db) == 4


@pytest.mark.parametrize("third", [
    '{"queue": "dev"}',
    '{"queue": "dev", "title": ',
    '{"queue": "ops", "title": "no agent serves ops"}',
    '{"queue": "dev", "title": " \\t "}',
], ids=["missing-title", "not-json", "unknown-queue", "blank-title"])
def test_submit_file_with_a_bad_third_line_appends_nothing(seeded: Path, run: Run, third: str):
    db = seeded / "sched.db"
    tasks = write_jsonl(seeded / "tasks.jsonl", [
        {"queue": "dev", "title": "fine"}, {"queue": "qa", "title": "fine too"}, third])
    line = one_error_line(run("submit", "--file", str(tasks), "--json"), 2)
    assert event_count(db) == 1
    assert re.search(r"jsonl:3\b|line 3\b", line), line


# -- tick and status ---------------------------------------------------------------------

TICK_KEYS = {"assigned", "expired", "retried", "dead_lettered", "errors", "dry_run", "duration_ms"}


def test_tick_dry_run_shows_the_assignments_a_real_tick_then_makes(seeded: Path, run: Run):
    db = seeded / "sched.db"
    tasks = write_jsonl(seeded / "tasks.jsonl", [
        {"queue": "dev", "title": "d2"}, {"queue": "dev", "title": "d3"},
        {"queue": "dev", "title": "d4"}, {"queue": "qa", "title": "q5"}])
    ok(run("submit", "--file", str(tasks)))
    before = event_count(db)

    dry = one_json(ok(run("tick", "--dry-run", "--json")))
    assert dry.keys() >= TICK_KEYS
    assert dry["dry_run"] is True
    assert event_count(db) == before
    for key in ("expired", "retried", "dead_lettered", "errors"):
        assert dry[key] == []
    assert isinstance(dry["duration_ms"], int | float) and dry["duration_ms"] >= 0
    # capacity: ann 2 + bob 1 for four dev tasks, qin 1 for the qa task
    assert len(dry["assigned"]) == 4
    assert all(set(item) >= {"task_id", "agent"} for item in dry["assigned"])
    per_agent = {name: sum(a["agent"] == name for a in dry["assigned"]) for name in ("ann", "bob", "qin")}
    assert per_agent == {"ann": 2, "bob": 1, "qin": 1}
    assert {a["task_id"] for a in dry["assigned"] if a["agent"] == "qin"} == {5}

    real = one_json(ok(run("tick", "--json")))
    assert real.keys() >= TICK_KEYS
    assert real["dry_run"] is False
    pairs = sorted((a["task_id"], a["agent"]) for a in real["assigned"])
    assert pairs == sorted((a["task_id"], a["agent"]) for a in dry["assigned"])
    assert event_count(db) >= before + len(pairs)

    # every slot is taken now: the fourth dev task waits, no agent goes over capacity
    assert one_json(ok(run("tick", "--json")))["assigned"] == []


def test_status_json_keeps_a_queue_whose_agents_left(seeded: Path, run: Run):
    db = seeded / "sched.db"
    ok(run("submit", "--queue", "qa", "--title", "check it"))
    doc = one_json(ok(run("status", "--json")))
    assert {"queues", "agents", "last_seq"} <= doc.keys()
    assert doc["last_seq"] == event_count(db)
    for name in ("dev", "qa"):
        assert {"queued", "running"} <= doc["queues"][name].keys()
        assert doc["queues"][name]["queued"] == 1
    write_control(seeded, [a for a in FLEET if a["agentType"] != "qa"])
    ok(run("tick"))

    doc = one_json(ok(run("status", "--json")))
    assert doc["queues"]["qa"]["queued"] == 1
    assert doc["last_seq"] == event_count(db)
    assert all(a["free"] == 0 for a in doc["agents"].values() if a["type"] == "qa")


def test_status_and_tasks_read_the_control_file_agents_names(home: Path, run: Run):
    ok(run("init"))
    other = home / "elsewhere.json"
    other.write_text(json.dumps([{"agentName": "zed", "agentType": "ops", "maxConcurrency": 3}]))
    assert "zed" not in one_json(ok(run("status", "--json")))["agents"]
    doc = one_json(ok(run("status", "--json", "--agents", str(other))))  # before any tick records it
    assert doc["agents"]["zed"]["free"] == 3 and "ann" not in doc["agents"]
    ok(run("submit", "--queue", "ops", "--title", "deploy", "--agents", str(other)))
    (queued,) = one_json(ok(run("tasks", "--json", "--agents", str(other))))["tasks"]
    assert queued["queue"] == "ops"
    assert "ops" in one_json(ok(run("status", "--json", "--agents", str(other))))["queues"]


# -- read views on one populated workspace ------------------------------------------------

@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory, seeded_template: Path) -> Path:
    """Task 1 (dev, from the seed) assigned to bob, task 2 (dev) running on ann,
    task 3 (qa) succeeded on qin. Read-only tests share it."""
    home = tmp_path_factory.mktemp("populated")
    shutil.copytree(seeded_template, home, dirs_exist_ok=True)
    tasks = write_jsonl(home / "tasks.jsonl", [
        {"queue": "dev", "title": "urgent", "priority": 1}, {"queue": "qa", "title": "check"}])
    assert one_json(ok(sched_here(home, "submit", "--file", str(tasks), "--json")))["task_ids"] == [2, 3]
    ok(sched_here(home, "tick"))
    claimed = one_json(ok(sched_here(home, "worker", "claim", "--agent", "ann", "--json")))["task"]
    assert claimed["task_id"] == 2
    claimed = one_json(ok(sched_here(home, "worker", "claim", "--agent", "qin", "--json")))["task"]
    ok(sched_here(home, "worker", "complete", "3", "--token", claimed["token"]))
    return home


def test_tasks_json_lists_every_task_with_its_status(populated: Path):
    doc = one_json(ok(sched_here(populated, "tasks", "--json")))
    status = {t["task_id"]: (t["status"], t.get("agent")) for t in doc["tasks"]}
    assert status == {1: ("assigned", "bob"), 2: ("running", "ann"), 3: ("succeeded", None)}


def test_show_json_gives_the_task_and_its_events(populated: Path):
    doc = one_json(ok(sched_here(populated, "show", "2", "--json")))
    assert doc["task"]["task_id"] == 2 and doc["task"]["status"] == "running"
    seqs = [e["seq"] for e in doc["events"]]
    assert len(seqs) == 3 and seqs == sorted(seqs)
    assert all(e["data"]["task_id"] == 2 for e in doc["events"])


def test_replay_json_prints_every_event_numbered_from_one(populated: Path):
    events = json_lines(ok(sched_here(populated, "replay", "--json")))
    assert [e["seq"] for e in events] == list(range(1, event_count(populated / "sched.db") + 1))
    assert all({"seq", "type", "data"} <= e.keys() for e in events)


def test_agents_list_json_shows_load_and_free_slots(populated: Path):
    agents = one_json(ok(sched_here(populated, "agents", "list", "--json")))["agents"]
    view = {name: {k: a[k] for k in ("type", "capacity", "running", "free")} for name, a in agents.items()}
    assert view == {
        "ann": {"type": "dev", "capacity": 2, "running": 1, "free": 1},
        "bob": {"type": "dev", "capacity": 1, "running": 0, "free": 0},
        "qin": {"type": "qa", "capacity": 1, "running": 0, "free": 1},
    }


def test_status_json_counts_queues_and_agent_load(populated: Path):
    doc = one_json(ok(sched_here(populated, "status", "--json")))
    assert doc["last_seq"] == event_count(populated / "sched.db")
    dev, qa = doc["queues"]["dev"], doc["queues"]["qa"]
    assert (dev["queued"], dev["running"], dev["assigned"]) == (0, 1, 1)
    assert (qa["queued"], qa["running"], qa["succeeded"]) == (0, 0, 1)
    bob = doc["agents"]["bob"]
    assert {"type", "capacity", "assigned", "running", "free"} <= bob.keys()
    assert (bob["type"], bob["capacity"], bob["assigned"], bob["running"], bob["free"]) == ("dev", 1, 1, 0, 0)


# -- the worker protocol ------------------------------------------------------------------

def test_worker_protocol(seeded: Path, run: Run):
    db = seeded / "sched.db"
    (seeded / "sched.toml").write_text("backoff_base_seconds = 0\n")  # retry at once
    assert one_json(ok(run("worker", "claim", "--agent", "qin", "--json"))) == {"task": None}

    ok(run("submit", "-q", "dev", "-t", "flaky", "--priority", "5", "--max-attempts", "3"))
    task = one_json(ok(run("worker", "claim", "--agent", "ann", "--json")))["task"]
    assert task["task_id"] == 2
    assert task["token"] and task["lease_expires_at"]
    token = task["token"]

    count = event_count(db)
    for args in (["heartbeat", "2"], ["complete", "2"], ["fail", "2", "--error", "boom"]):
        one_error_line(run("worker", *args, "--token", token + "x", "--json"), 1)
        assert event_count(db) == count

    beat = one_json(ok(run("worker", "heartbeat", "2", "--token", token, "--json")))
    assert beat["task_id"] == 2 and beat["lease_expires_at"] >= task["lease_expires_at"]
    failed = one_json(ok(run("worker", "fail", "2", "--token", token, "--error", "boom", "--json")))
    assert failed["status"] == "queued"

    retry = one_json(ok(run("worker", "claim", "--agent", "bob", "--json")))["task"]
    assert retry["task_id"] == 2 and retry["token"] != token
    count = event_count(db)
    one_error_line(run("worker", "heartbeat", "2", "--token", token, "--json"), 1)
    assert event_count(db) == count
    dead = one_json(ok(run("worker", "fail", "2", "--token", retry["token"], "--error", "again",
                           "--no-retry", "--json")))
    assert dead["status"] == "dead"

    seed = one_json(ok(run("worker", "claim", "--agent", "ann", "--json")))["task"]
    assert seed["task_id"] == 1
    done = one_json(ok(run("worker", "complete", "1", "--token", seed["token"], "--result", '{"ok": true}',
                           "--json")))
    assert done["task_id"] == 1
    assert one_json(ok(run("show", "1", "--json")))["task"]["status"] == "succeeded"


def test_a_worker_may_give_its_lease_token_in_the_environment(seeded: Path, run: Run):
    """`--token` on the command line is readable by every user of the machine (`ps`): the
    token may come from $SCHED_LEASE_TOKEN instead, as a push agent has it."""
    claimed = one_json(ok(run("worker", "claim", "--agent", "ann", "--json")))["task"]
    env = {"SCHED_LEASE_TOKEN": claimed["token"]}
    assert one_json(ok(run("worker", "heartbeat", "1", "--json", env=env)))["cancel"] is False
    ok(run("worker", "complete", "1", "--result", '{"ok": true}', env=env))
    assert one_json(ok(run("show", "1", "--json")))["task"]["status"] == "succeeded"
    assert one_error_line(run("worker", "complete", "1"), 2) == (
        "sched: Missing option '--token' (env var: 'SCHED_LEASE_TOKEN').")


# -- verify and rebuild --------------------------------------------------------------------

def test_verify_rebuild_and_tampering(seeded: Path, run: Run):
    db = seeded / "sched.db"
    ok(run("tick"))
    assert event_count(db) >= 2
    doc = one_json(ok(run("replay", "--verify", "--json")))
    assert doc["ok"] is True

    count = event_count(db)
    one_json(ok(run("rebuild", "--json")))
    assert event_count(db) == count
    assert one_json(ok(run("replay", "--verify", "--json")))["ok"] is True

    with closing(sqlite3.connect(db)) as conn, conn:
        (data,) = conn.execute("SELECT data FROM events WHERE seq = 2").fetchone()
        conn.execute("UPDATE events SET data = ? WHERE seq = 2",
                     (json.dumps({**json.loads(data), "tampered": True}),))
    result = run("replay", "--verify", "--json")
    assert result.returncode == 1
    doc = one_json(result)
    assert doc["ok"] is False
    assert any(re.search(r"\bseq 2\b", p) for p in doc["problems"]), doc["problems"]
    # a rebuild would fold the altered event into the tables: refused, the tables kept
    before = one_json(ok(run("show", "1", "--json")))
    line = one_error_line(run("rebuild"), 1)
    assert line.startswith("sched: hash chain broken at seq 2: seq 2 was altered")
    assert "nothing rebuilt" in line
    assert one_json(ok(run("show", "1", "--json"))) == before


def test_the_head_of_an_empty_log_is_accepted_by_expect_head(home: Path, run: Run):
    """`replay --head` on a fresh database prints `0:000...0`: kept for a later
    `--expect-head`, it must pass, now and after events are appended."""
    ok(run("init"))
    head = ok(run("replay", "--head")).stdout.strip()
    assert head == "0:" + "0" * 64
    for _ in range(2):
        doc = one_json(ok(run("replay", "--verify", "--expect-head", head, "--json")))
        assert doc == {"ok": True, "events": event_count(home / "sched.db"), "problems": []}
        ok(run("submit", "--queue", "dev", "--title", "t"))
    line = one_error_line(run("replay", "--verify", "--expect-head", "0:" + "0" * 63 + "1"), 2)
    assert line.startswith("sched: --expect-head: expected SEQ:HASH")
