"""Bad input, generated: control files, JSONL batches and payloads from Hypothesis, a
database file truncated or with bytes flipped, a `-wal` file without its database,
events of an unknown type or a future schema version, and a clock moved back. Every
rejection is one `sched:` line on stderr (never a traceback, never an internal error),
exit 2 (or 1 where the contract says so), no event appended, the input file's bytes
unchanged."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.main import main
from eventlog.store import chain_hash
from scheduler import worker
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from tests.conftest import new_workspace
from tests.invariants import check_log

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                    max_leaves=12)
AGENT_KEYS = ["agentName", "agentType", "maxConcurrency", "enabled", "command", "timeoutSeconds",
              "nonRetryableExitCodes", "other"]
AGENT = st.dictionaries(st.sampled_from(AGENT_KEYS), JSON | st.integers(-3, 5) | st.text(max_size=8),
                        max_size=6)
TASK_KEYS = ["queue", "title", "priority", "payload", "max_attempts", "after", "not_before", "assignee",
             "idempotency_key", "requires_approval", "type", "delay", "other"]
TASK = st.dictionaries(st.sampled_from(TASK_KEYS), JSON | st.sampled_from(["dev", "qa", "ann"]), max_size=7)


def events(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err.strip().splitlines()


def rejected_cleanly(code: int, lines: list[str], allowed: tuple[int, ...] = (2,)) -> None:
    assert code in allowed, (code, lines)
    assert len(lines) == 1 and lines[0].startswith("sched: "), lines


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """A home with a database holding a configured fleet and a few tasks."""
    ws = new_workspace(tmp_path_factory.mktemp("seeded"))
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(3)])
    tick(ws)
    ws.close()
    with sqlite3.connect(ws.settings.db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return ws.settings.home


def fresh_copy(seeded: Path, root: Path) -> Path:
    home = Path(tempfile.mkdtemp(dir=root))
    for name in ("sched.db", "agent-control.json"):
        shutil.copy(seeded / name, home / name)
    return home


@FUZZ
@given(agents=st.lists(AGENT, max_size=4) | JSON)
def test_generated_control_files(seeded, tmp_path, capsys, agents):
    home = fresh_copy(seeded, tmp_path)
    control = home / "agent-control.json"
    control.write_text(json.dumps(agents))
    before, content = events(home / "sched.db"), digest(control)
    code, lines = run(capsys, "tick", "--json", "--home", str(home))
    if code != 0:
        rejected_cleanly(code, lines)
        assert events(home / "sched.db") == before
    assert digest(control) == content


@FUZZ
@given(lines=st.lists(TASK.map(json.dumps) | st.text(max_size=30), min_size=1, max_size=5),
       bad_at=st.integers(0, 4))
def test_generated_batches_are_all_or_nothing(seeded, tmp_path, capsys, lines, bad_at):
    home = fresh_copy(seeded, tmp_path)
    batch = home / "tasks.jsonl"
    good = json.dumps({"queue": "dev", "title": "fine"})
    lines = [good, *lines]
    lines.insert(min(bad_at, len(lines)), "{broken")  # at least one bad line
    batch.write_text("\n".join(lines) + "\n")
    before, content = events(home / "sched.db"), digest(batch)
    code, err = run(capsys, "submit", "--file", str(batch), "--home", str(home))
    rejected_cleanly(code, err)
    assert str(batch) in err[0] and ":" in err[0]  # names the file and the line
    assert events(home / "sched.db") == before
    assert digest(batch) == content


@FUZZ
@given(payload=st.text(max_size=40))
def test_generated_payload_text(seeded, tmp_path, capsys, payload):
    home = fresh_copy(seeded, tmp_path)
    before = events(home / "sched.db")
    code, err = run(capsys, "submit", "-q", "dev", "-t", "p", "--payload", payload, "--home", str(home))
    if code == 0:
        assert events(home / "sched.db") == before + 1
    else:
        rejected_cleanly(code, err)
        assert "--payload" in err[0]
        assert events(home / "sched.db") == before


@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_a_damaged_database_file_fails_in_one_line_or_goes_unnoticed(seeded, tmp_path, capsys, data):
    home = fresh_copy(seeded, tmp_path)
    db = home / "sched.db"
    raw = bytearray(db.read_bytes())
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw) - 1)):]  # truncated
    else:
        for _ in range(data.draw(st.integers(1, 16))):  # bytes flipped
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    db.write_bytes(bytes(raw))
    for args in (["status", "--json"], ["tasks", "--json"], ["replay", "--verify"], ["tick"]):
        code, err = run(capsys, *args, "--home", str(home))
        if code == 1 and args[-1] == "--verify" and not err:
            continue  # verify found the damage: its problems are its output (stdout), exit 1
        if code != 0:  # a flip in an unused page can go unnoticed: then it must work
            rejected_cleanly(code, err, (1, 2))


def test_a_sched_database_cut_short_is_damaged_not_another_programs(seeded, tmp_path, capsys):
    """Its header still says it is sched's: a fault of the file (exit 1, a retry will
    not help), never "not a sched database" (exit 2), which would invite starting
    afresh beside it."""
    home = fresh_copy(seeded, tmp_path)
    db = home / "sched.db"
    raw = db.read_bytes()
    db.write_bytes(raw[:4096 + 100])  # the first page and a little of the next
    code, lines = run(capsys, "status", "--home", str(home))
    rejected_cleanly(code, lines, (1,))
    assert lines[0].startswith(f"sched: {db}: the database file is damaged"), lines
    assert "a retry will not help" in lines[0]


def test_a_table_name_that_is_not_utf8_fails_in_one_line(seeded, tmp_path, capsys):
    """(Found by the fuzz test above: a flipped byte in a table's name in the schema.)"""
    home = fresh_copy(seeded, tmp_path)
    db = home / "sched.db"
    raw = bytearray(db.read_bytes())
    at = raw.index(b"tableeventsevents")  # a schema row: its type, name and table name
    raw[at + len("tablee")] ^= 0x80  # the name's 'v' becomes a byte that starts no UTF-8 sequence
    db.write_bytes(bytes(raw))
    for args in (["status", "--json"], ["tick"]):
        code, err = run(capsys, *args, "--home", str(home))
        rejected_cleanly(code, err, (1,))
        assert "the database file is damaged" in err[0], err


def test_a_damaged_time_of_the_last_event_refuses_a_write_in_one_line(seeded, tmp_path, capsys):
    """(Found by the fuzz test above: a flipped byte in the last event's time.)"""
    home = fresh_copy(seeded, tmp_path)
    db = home / "sched.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET recorded_at = ':' || substr(recorded_at, 2) "
                     "WHERE seq = (SELECT max(seq) FROM events)")
    before = digest(db)
    for args in (["tick"], ["submit", "-q", "dev", "-t", "x"]):
        code, err = run(capsys, *args, "--home", str(home))
        rejected_cleanly(code, err, (1,))
        assert "refusing to write: the last event of the log" in err[0], err
    assert digest(db) == before


def test_a_wal_file_without_its_database(tmp_path, capsys):
    (tmp_path / "sched.db-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(60))
    code, err = run(capsys, "status", "--home", str(tmp_path))
    rejected_cleanly(code, err)
    assert err == [f"sched: no database at {tmp_path / 'sched.db'}: run `sched init` first"]
    assert not (tmp_path / "sched.db").exists()


@pytest.mark.parametrize("kind, version, named", [
    ("TaskTeleported", 1, "unknown type 'TaskTeleported'"),
    ("TaskSubmitted", 99, "schema_version 99, newer than this sched understands"),
])
def test_an_event_this_sched_cannot_read_is_named_by_seq(seeded, tmp_path, capsys, kind, version, named):
    home = fresh_copy(seeded, tmp_path)
    db = home / "sched.db"
    with sqlite3.connect(db) as conn:  # appended behind sched's back, chain and all
        seq, prev = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        at, data = "2026-01-01T00:00:00.000000Z", "{}"
        conn.execute("INSERT INTO events VALUES (?, 'scheduler', ?, ?, ?, ?, ?, ?)",
                     (seq + 1, kind, version, at, data, prev,
                      chain_hash(prev, seq + 1, "scheduler", kind, version, at, data)))
    before = events(db)
    # (plain `replay` shows the raw rows, readable or not: that is what an audit needs)
    for args in (["tick"], ["worker", "claim", "--agent", "ann"]):
        code, err = run(capsys, *args, "--home", str(home))
        rejected_cleanly(code, err, (1,))  # not bad input: the request could not be met
        assert f"event seq {seq + 1}" in err[0] and named in err[0], err
    # verify reports it as what it found, on stdout, exit 1
    assert main(["replay", "--verify", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    assert f"event seq {seq + 1}" in out and named in out, out
    assert events(db) == before


def test_the_clock_moved_back_an_hour_expires_nothing_early_and_assigns_nothing_twice(make_workspace):
    ws = make_workspace(lease_seconds=300)
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}") for i in range(6)])
    claim = worker.claim(ws, "ann")
    assert claim is not None
    ws.clock.advance(-3600)  # someone set the clock back an hour
    def leases_expired() -> list[object]:
        return [e["task_id"] for e in tick(ws).expired if e["reason"] == "lease_expired"]

    for _ in range(3):
        assert leases_expired() == []
    ws.clock.advance(3600 + 299)  # one second before the lease ends, by the lease's own clock
    assert leases_expired() == []
    ws.clock.advance(2)
    assert leases_expired() == [claim.task.task_id]
    check_log(list(queries.replay(ws)))  # one holder per task, capacity held throughout
    rng = random.Random(7)
    for _ in range(20):  # and a clock that jumps around
        ws.clock.advance(rng.uniform(-900, 600))
        tick(ws)
    check_log(list(queries.replay(ws)))


SET_META = "INSERT OR REPLACE INTO projection_meta (key, value) VALUES (?, ?)"
# (Found by the fuzz test above: a flipped byte in a projection row that a tick parses,
# or writes back when it takes a task back, crashed it with an internal error)
DAMAGED_ROWS = {
    "time": ("UPDATE tasks SET ready_at = ':' || substr(ready_at, 2)", (),
             "a time in the database is damaged (':0"),
    "text-not-utf8": ("UPDATE tasks SET title = CAST(X'B2' || CAST(title AS BLOB) AS TEXT)", (),
                      "a text in the database is damaged (not UTF-8"),
    "checkpoint": (SET_META, ("last_seq", "?"), "the projections' last_seq value is damaged"),
    "pause": (SET_META, ("paused", '{"by": "ops"'), "the projections' paused value is damaged"),
    "gate": (SET_META, ("gate:dev", "{"), "the projections' gate:dev value is damaged"),
}


@pytest.mark.parametrize("damage", DAMAGED_ROWS.values(), ids=DAMAGED_ROWS.keys())
def test_a_damaged_projection_row_fails_in_one_line_and_rebuild_mends_it(seeded, tmp_path, capsys, damage):
    sql, params, said = damage
    home = fresh_copy(seeded, tmp_path)
    db = home / "sched.db"
    with sqlite3.connect(db) as conn:
        conn.execute(sql, params)
    conn.close()
    before = events(db)
    code, err = run(capsys, "tick", "--home", str(home))
    rejected_cleanly(code, err, (1,))
    assert said in err[0] and "sched rebuild" in err[0], err
    assert events(db) == before
    code, err = run(capsys, "rebuild", "--home", str(home))  # what the line says mends it
    assert code == 0, err
    code, err = run(capsys, "tick", "--home", str(home))
    assert code == 0, err
