"""Tampering with the stored log is caught: a changed character in any column of any
event, a deleted, swapped or inserted event, each reported by `replay --verify` at
the first bad seq; a truncated tail is caught with `--expect-head`."""

from __future__ import annotations

import hashlib
import json
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
from scheduler.config.settings import load_settings
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace
from tests.conftest import DEFAULT_FLEET, new_workspace, write_fleet

COLUMNS = ("stream_id", "type", "schema_version", "recorded_at", "data", "prev_hash", "hash")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, int]:
    """A database with a few dozen events of every common kind, checkpointed into
    one file; returns its path and the number of events."""
    home = tmp_path_factory.mktemp("template")
    ws = new_workspace(home)
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}", payload={"i": i}) for i in range(8)])
    tick(ws)
    for agent in ("ann", "bob"):
        claim = worker.claim(ws, agent)
        assert claim is not None
        worker.complete(ws, claim.task.task_id, claim.token, {"ok": True})
    claim = worker.claim(ws, "ann")
    assert claim is not None
    worker.fail(ws, claim.task.task_id, claim.token, "boom")
    ws.close()
    path = ws.settings.db_path
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        count = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    return path, count


def copy_of(template_path: Path, where: Path) -> Workspace:
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy(template_path, where / "sched.db")
    return Workspace(load_settings({}, {"home": where}).settings)


def first_problem(ws: Workspace) -> str:
    result = queries.verify_log(ws)
    assert not result.ok, "tampering went unnoticed"
    return result.problems[0]


def row(conn: sqlite3.Connection, seq: int) -> tuple:
    return conn.execute(f"SELECT {', '.join(COLUMNS)} FROM events WHERE seq = ?", (seq,)).fetchone()


def _changed(text: str, position: int, replacement: str) -> str:
    position %= max(len(text), 1)
    new = replacement if text[position:position + 1] != replacement else chr(ord(replacement) + 1)
    return text[:position] + new + text[position + 1:]


HYPOTHESIS = settings(max_examples=60, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYPOTHESIS
@given(data=st.data())
def test_any_edit_delete_swap_or_insert_is_reported_at_the_first_bad_seq(template, tmp_path, data):
    path, count = template
    ws = copy_of(path, Path(tempfile.mkdtemp(dir=tmp_path)))  # fresh for every example
    kind = data.draw(st.sampled_from(["edit", "delete", "swap", "insert", "forged insert"]))
    seq = data.draw(st.integers(1, count - 1 if kind == "delete" else count))
    with sqlite3.connect(ws.settings.db_path) as conn:
        if kind == "edit":
            column = data.draw(st.sampled_from(COLUMNS))
            old = conn.execute(f"SELECT {column} FROM events WHERE seq = ?", (seq,)).fetchone()[0]
            if column == "schema_version":  # an integer: another version of the same type
                new = old + data.draw(st.integers(-old, 50).filter(bool))
            else:
                new = _changed(old, data.draw(st.integers(0, 10_000)),
                               data.draw(st.characters(min_codepoint=33, max_codepoint=126)))
            conn.execute(f"UPDATE events SET {column} = ? WHERE seq = ?", (new, seq))
            expected = seq
        elif kind == "delete":  # a row in the middle (the last one: see the --expect-head test)
            conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
            expected = seq
        elif kind == "swap":
            other = data.draw(st.integers(1, count).filter(lambda s: s != seq))
            a, b = row(conn, seq), row(conn, other)
            for target, values in ((seq, b), (other, a)):
                conn.execute(f"UPDATE events SET {', '.join(f'{c} = ?' for c in COLUMNS)} "
                             "WHERE seq = ?", (*values, target))
            expected = min(seq, other)
        else:  # a new event at `seq`, the later ones moved up by one
            conn.execute("UPDATE events SET seq = -seq WHERE seq >= ?", (seq,))
            conn.execute("UPDATE events SET seq = 1 - seq WHERE seq < 0")
            prev = conn.execute("SELECT hash FROM events WHERE seq = ?", (seq - 1,)).fetchone()
            prev_hash = prev[0] if prev else "0" * 64
            values = ("scheduler", "SchedulerResumed", "2026-01-01T00:00:00.000000Z", '{"by":"x"}')
            digest = chain_hash(prev_hash, seq, values[0], values[1], 1, values[2], values[3]) \
                if kind == "forged insert" else "f" * 64
            conn.execute("INSERT INTO events (seq, stream_id, type, schema_version, recorded_at, "
                         "data, prev_hash, hash) VALUES (?, ?, ?, 1, ?, ?, ?, ?)",
                         (seq, *values, prev_hash, digest))
            # a forger who computes the hash of his own event is caught where his rewrite
            # stops: at the next event, which no longer links to what precedes it
            expected = seq + 1 if kind == "forged insert" else seq
    try:
        problem = first_problem(ws)
    finally:
        ws.close()
    assert problem.startswith(f"hash chain broken at seq {expected}:"), (kind, seq, problem)


@pytest.mark.parametrize("column", COLUMNS)
def test_an_edit_of_each_column_is_reported(template, tmp_path, column):
    """Every stored column is covered by the chain, whatever the examples above drew."""
    path, count = template
    ws = copy_of(path, tmp_path / column)
    seq = count // 2
    with sqlite3.connect(ws.settings.db_path) as conn:
        old = conn.execute(f"SELECT {column} FROM events WHERE seq = ?", (seq,)).fetchone()[0]
        new = old + 1 if column == "schema_version" else _changed(old, 5, "x")
        conn.execute(f"UPDATE events SET {column} = ? WHERE seq = ?", (new, seq))
    try:
        problem = first_problem(ws)
    finally:
        ws.close()
    assert problem.startswith(f"hash chain broken at seq {seq}:"), problem


def test_the_hash_of_an_event_follows_the_documented_format(template):
    """docs/architecture.md: hash = sha256(prev_hash \n seq \n stream_id \n type \n
    schema_version \n recorded_at \n data), and prev_hash of seq 1 is 64 zeros. Computed
    here from that text alone, so a field left out of (or added to) the hash shows."""
    path, _ = template
    with sqlite3.connect(path) as conn:
        stream_id, type_, version, recorded_at, text, prev_hash, stored = conn.execute(
            "SELECT stream_id, type, schema_version, recorded_at, data, prev_hash, hash "
            "FROM events WHERE seq = 1").fetchone()
    assert (stream_id, type_) == ("task-1", "TaskSubmitted")
    assert json.loads(text)["title"] == "t0"
    assert prev_hash == "0" * 64
    documented = "\n".join([prev_hash, "1", stream_id, type_, str(version), recorded_at, text])
    assert stored == hashlib.sha256(documented.encode("utf-8")).hexdigest()


def test_a_truncated_tail_is_caught_only_with_the_expected_head(template, tmp_path, capsys):
    path, count = template
    ws = copy_of(path, tmp_path / "cut")
    home = str(ws.settings.home)
    assert main(["replay", "--head", "--home", home]) == 0
    head = capsys.readouterr().out.strip()
    assert head.startswith(f"{count}:")
    with sqlite3.connect(ws.settings.db_path) as conn:
        conn.execute("DELETE FROM events WHERE seq > ?", (count - 3,))
    # the chain that is left is intact: without an anchor, nobody can tell
    assert main(["replay", "--verify", "--home", home]) == 1  # the projections still know more
    capsys.readouterr()
    # the cut head, and (it hid it) what the tables still know, with the ways on
    assert queries.verify_log(ws, queries.parse_head(head)).problems == [
        f"the log ends at seq {count - 3}, but seq {count} was expected: events were removed from its end",
        f"the projections have folded events up to seq {count}, but the log ends at seq {count - 3}: events "
        "were lost from the end of the log (a damaged or partly restored file); restore the database from a "
        "backup (docs/operations.md, Restoring a backup), or go on without them: `sched rebuild` folds the "
        "log as it is"]
    assert main(["replay", "--verify", "--expect-head", head, "--home", home]) == 1
    assert "events were removed from its end" in capsys.readouterr().out


def test_an_expected_head_that_differs_is_reported(template, tmp_path, capsys):
    path, count = template
    ws = copy_of(path, tmp_path / "other")
    with sqlite3.connect(ws.settings.db_path) as conn:
        real = conn.execute("SELECT hash FROM events WHERE seq = ?", (count,)).fetchone()[0]
    assert queries.verify_log(ws, (count, real)).ok
    home = str(ws.settings.home)  # its hex digits upper-cased: the same head (it was refused as not hex)
    assert main(["replay", "--verify", "--expect-head", f"{count}:{real.upper()}", "--home", home]) == 0
    capsys.readouterr()
    wrong = "0" * 64
    (problem,) = queries.verify_log(ws, (count, wrong)).problems
    assert problem.startswith(f"seq {count} has hash {real}, not the expected {wrong}")
    assert main(["replay", "--verify", "--expect-head", "12:nothex", "--home",
                 str(ws.settings.home)]) == 2
    assert "--expect-head: expected SEQ:HASH" in capsys.readouterr().err


def test_a_log_that_lost_its_tail_says_so_and_takes_no_write_until_rebuilt(template, tmp_path, capsys):
    """The tables have folded events the log no longer holds: `verify` says events
    were lost from its end (and to restore a backup, not only that rows differ); a
    write is refused whole, since its events would take the lost ones' seqs on tables
    that still hold what those did; `rebuild` goes on with the log as it is."""
    path, count = template
    ws = copy_of(path, tmp_path / "lost")
    home = str(ws.settings.home)
    with sqlite3.connect(ws.settings.db_path) as conn:
        conn.execute("DELETE FROM events WHERE seq > ?", (count - 3,))
    (problem,) = queries.verify_log(ws).problems
    assert problem.startswith(f"the projections have folded events up to seq {count}, but the log ends at "
                              f"seq {count - 3}: events were lost from the end of the log")
    assert "restore the database from a backup" in problem
    assert main(["pause", "--home", home]) == 1  # (a write that needs no control file)
    (line,) = capsys.readouterr().err.splitlines()
    assert "events were lost from the end of the log" in line and "nothing appended" in line
    assert queries.verify_log(ws).problems == [problem]  # nothing was appended
    # `health` said healthy, exit 0, while every write was refused
    assert main(["health", "--json", "--home", home]) == 2
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["integrity"]["status"] == "unhealthy"
    assert checks["integrity"]["saw"].startswith(f"the projections have folded events up to seq {count}")
    assert main(["rebuild", "--home", home]) == 0
    assert queries.verify_log(ws).ok
    assert main(["pause", "--home", home]) == 0


def test_health_says_so_when_the_log_ends_with_an_event_this_sched_cannot_read(template, tmp_path, capsys):
    """A newer sched's event at the log's end, not yet folded (written, say, by a
    newer version whose fold failed here): every write must fold it first and refuses,
    so `integrity` is unhealthy, not `ok`."""
    path, count = template
    ws = copy_of(path, tmp_path / "newer")
    home = str(ws.settings.home)
    with sqlite3.connect(ws.settings.db_path) as conn:
        *_, at, _data, _prev, last = row(conn, count)
        cells = (count + 1, "scheduler", "SchedulerPaused", 99, at, '{"by": "future"}')
        conn.execute(f"INSERT INTO events (seq, {', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (*cells, last, chain_hash(last, *cells)))
    assert main(["pause", "--home", home]) == 1
    refused = capsys.readouterr().err.splitlines()[-1]
    assert f"event seq {count + 1}" in refused and "upgrade sched" in refused
    assert main(["health", "--json", "--home", home]) == 2
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["integrity"]["status"] == "unhealthy"
    assert checks["integrity"]["saw"].startswith(f"event seq {count + 1} ")
    assert checks["integrity"]["saw"].endswith("every write is refused until this sched can read it")


def test_a_task_left_failed_by_a_lost_tail_can_be_requeued(template, tmp_path, capsys):
    """`failed` lasts only inside the transaction that records a failure and what
    follows it (a retry, a dead letter). A log cut between the two leaves the task
    `failed` after `rebuild`: `requeue` brings it back."""
    path, _count = template
    ws = copy_of(path, tmp_path / "cut-failure")
    home = str(ws.settings.home)
    with sqlite3.connect(ws.settings.db_path) as conn:
        last_two = conn.execute(
            "SELECT seq, type, stream_id FROM events ORDER BY seq DESC LIMIT 2").fetchall()
        assert [t for _s, t, _id in last_two] == ["TaskRequeued", "TaskFailed"]  # the template's last fail
        conn.execute("DELETE FROM events WHERE seq = ?", (last_two[0][0],))
    task_id = int(last_two[0][2].removeprefix("task-"))
    assert main(["rebuild", "--home", home]) == 0
    assert queries.show(ws, task_id)[0].status == "failed"
    assert main(["requeue", str(task_id), "--home", home]) == 0
    assert queries.show(ws, task_id)[0].status == "queued"
    assert queries.verify_log(ws).ok


def test_a_dropped_table_is_named_and_rebuild_makes_it_again_but_not_the_log(template, tmp_path, capsys):
    path, _count = template
    ws = copy_of(path, tmp_path / "dropped")
    home, db = str(ws.settings.home), ws.settings.db_path
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE queue_counts")
    capsys.readouterr()
    assert main(["status", "--home", home]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"sched: {db}: the table queue_counts is missing: `sched rebuild` makes it again and folds the log "
        "into it"]
    assert main(["rebuild", "--home", home]) == 0
    assert queries.verify_log(ws).ok
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE events")
    capsys.readouterr()
    for command in ("rebuild", "init"):  # (init made an empty log: a rebuild then emptied every table)
        assert main([command, "--home", home]) == 1
        assert capsys.readouterr().err.splitlines() == [
            f"sched: {db}: the event log's table is missing (no table events): restore the database from a "
            "backup (docs/operations.md, Restoring a backup)"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'events'").fetchone() == (0,)


@pytest.mark.parametrize("data", ["{not json", "[1, 2]"])
def test_an_event_whose_data_is_not_a_json_object_is_named_by_every_reader(template, tmp_path, capsys, data):
    """`replay --json` printed the events before it, then `internal error:
    JSONDecodeError`; `show` and `simulate` said the same, naming no event."""
    path, _count = template
    ws = copy_of(path, tmp_path / "edited")
    home = str(ws.settings.home)
    with sqlite3.connect(ws.settings.db_path) as conn:
        conn.execute("UPDATE events SET data = ? WHERE seq = 2", (data,))
    write_fleet(ws.settings.home, DEFAULT_FLEET)  # (the fleet, for simulate)
    for args in (["replay", "--json"], ["show", "2", "--json"], ["simulate", "--json"]):
        assert main([*args, "--home", home]) == 1, args
        err = capsys.readouterr().err.splitlines()
        assert err[-1].startswith("sched: event seq 2 (TaskSubmitted) cannot be read: "), (args, err)
        assert not any("internal error" in line for line in err), (args, err)
