"""The database file: sched opens only its own (another program's SQLite file is left
exactly as it was), verify sees every column and names damage by seq or key, a writer
refuses to append after a head that does not match its hash, faults of the machine
(read-only media, a full disk, a busy lock) exit 1 and change nothing, and health
notices a -wal deleted under a running process."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from cli.main import main
from eventlog.errors import ProjectionsChanged
from eventlog.storage import base
from eventlog.storage.sqlite import APPLICATION_ID
from projections import rebuild
from scheduler.reads import queries
from scheduler.reads.health import health
from scheduler.rebuild import rebuild_projections
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from tests.cli.conftest import cli_env, file_digest
from tests.conftest import DEFAULT_FLEET, new_workspace, wait_for, write_fleet


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sched: "), lines
    return lines[0]


def events(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def foreign(path: Path, kind: str) -> None:
    with closing(sqlite3.connect(path)) as conn:
        if kind == "tables":
            conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            conn.execute("INSERT INTO users (name) VALUES ('ada')")
        elif kind == "application_id":
            conn.execute("PRAGMA application_id = 1234")
        elif kind == "user_version":
            conn.execute("PRAGMA user_version = 7")
        elif kind == "events_of_another_shape":
            conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)")
        conn.commit()


@pytest.mark.parametrize("kind", ["tables", "application_id", "user_version", "events_of_another_shape"])
def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path, capsys, kind):
    write_fleet(tmp_path, DEFAULT_FLEET)
    db = tmp_path / "sched.db"
    foreign(db, kind)
    before = file_digest(db)
    for args in (["init"], ["init", "--example"], ["status"], ["tick"], ["tasks"],
                 ["submit", "-q", "dev", "-t", "x"], ["replay", "--verify"],
                 ["worker", "claim", "-a", "ann"]):
        code, _out, err = run(capsys, *args, "--home", str(tmp_path))
        assert code == 2, (args, err)
        assert "not sched's" in one_line(err) or "not a sched database" in one_line(err)
    code, out, _ = run(capsys, "health", "--json", "--home", str(tmp_path))
    report = json.loads(out)
    assert code == 2 and report["status"] == "unhealthy"
    assert "not sched's" in report["checks"][0]["saw"] or "not a sched" in report["checks"][0]["saw"]
    assert file_digest(db) == before
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_database_made_before_the_mark_still_opens(tmp_path, capsys):
    ws = new_workspace(tmp_path)
    submit(ws, [TaskSpec(queue="dev", title="old")])
    ws.close()
    with closing(sqlite3.connect(tmp_path / "sched.db")) as conn:
        conn.execute("PRAGMA application_id = 0")  # as the sched before the mark left it
        conn.commit()
    code, out, _ = run(capsys, "tasks", "--json", "--home", str(tmp_path))
    assert code == 0 and '"title": "old"' in out
    assert run(capsys, "init", "--home", str(tmp_path))[0] == 0  # init marks it
    with closing(sqlite3.connect(tmp_path / "sched.db")) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_an_empty_file_is_initialised_but_not_opened_as_a_database(tmp_path, capsys):
    write_fleet(tmp_path, DEFAULT_FLEET)
    (tmp_path / "sched.db").touch()
    code, _, err = run(capsys, "status", "--home", str(tmp_path))
    assert code == 2 and "run `sched init`" in one_line(err)
    assert run(capsys, "init", "--home", str(tmp_path))[0] == 0
    assert run(capsys, "status", "--home", str(tmp_path))[0] == 0


# -- verify ---------------------------------------------------------------------------

@pytest.fixture
def history(make_workspace):
    ws = make_workspace()
    parent, _ = submit(ws, [TaskSpec(queue="dev", title="parent"), TaskSpec(queue="dev", title="c")])
    submit(ws, [TaskSpec(queue="dev", title="grandchild", after=[parent.task_id])])
    tick(ws)
    return ws


def sql(ws, statement: str, *params: object) -> None:
    with closing(sqlite3.connect(ws.settings.db_path)) as conn:
        conn.execute(statement, params)
        conn.commit()


def test_verify_compares_every_column_even_the_derived_ones(history, capsys):
    sql(history, "UPDATE tasks SET unblocks = 5 WHERE task_id = 1")
    result = queries.verify_log(history)
    assert result.problems == ["task 1: unblocks: log gives 1, table has 5"]
    code, out, _ = run(capsys, "replay", "--verify", "--home", str(history.settings.home))
    assert code == 1 and "task 1: unblocks: log gives 1, table has 5" in out


def damage_root_page(db: Path, name: str, whole: bool = False) -> int:
    """Overwrite with 0xff the first byte (or all) of the root page of the table or index
    `name`, its WAL checkpointed first; the page's number."""
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    with open(db, "r+b") as file:
        file.seek((root - 1) * size)
        file.write(b"\xff" * (size if whole else 1))
    return root


def test_a_damaged_index_page_fails_verify_and_the_documented_copy_recovers(history, capsys, tmp_path):
    """A damaged page that no fold reads (an index of `tasks`): health was unhealthy, but
    `replay --verify` said `verified`, and no recovery was documented (a QA drill). It
    reports the engine's check now, and operations.md's way (a copy of the log into a
    new file) gives a database that verifies."""
    home, db = str(history.settings.home), history.settings.db_path
    history.close()
    root = damage_root_page(db, "ix_tasks_agent")  # (its kind, its first byte: no b-tree page has 0xff)
    code, out, _ = run(capsys, "replay", "--verify", "--home", home)
    assert code == 1 and out.splitlines() == [
        f"the engine's integrity check: *** in database main *** Page {root}: btreeInitPage() returns "
        "error code 11: the database file is damaged (docs/operations.md, A damaged database file)"]
    copy = tmp_path / "sched-new.db"
    assert run(capsys, "migrate", "--to", str(copy), "--home", home)[0] == 0
    code, out, _ = run(capsys, "replay", "--verify", "--db", str(copy), "--home", home)
    assert code == 0 and out.startswith(f"verified: {events(db)} events"), out


def test_a_damaged_page_of_a_projection_table_leaves_verify_saying_the_log_is_intact(history, capsys,
                                                                                    tmp_path):
    """The root page of `tasks` damaged: `replay --verify` said only `the database file
    is damaged`, never whether the hash chain held, which is what operations.md's way
    out depends on (a copy of the log into a new file, else a backup and its losses)."""
    home, db = str(history.settings.home), history.settings.db_path
    history.close()
    damage_root_page(db, "tasks", whole=True)
    code, out, _ = run(capsys, "replay", "--verify", "--home", home)
    assert code == 1 and out.splitlines() == [
        f"the projections cannot be read: {db}: the database file is damaged (database disk image is "
        "malformed): a retry will not help: see docs/operations.md, A damaged database file",
        f"the log's hash chain is intact ({events(db)} events): `sched migrate` can copy it into a new file "
        "(docs/operations.md, A damaged database file, step 2)"], out
    copy = tmp_path / "sched-new.db"
    assert run(capsys, "migrate", "--to", str(copy), "--home", home)[0] == 0
    code, out, _ = run(capsys, "replay", "--verify", "--db", str(copy), "--home", home)
    assert code == 0 and out.startswith(f"verified: {events(db)} events"), out


def test_a_damaged_projection_row_is_reported_never_crashed_on(history, capsys):
    sql(history, "UPDATE tasks SET excluded = 'not json' WHERE task_id = 2")
    problems = queries.verify_log(history).problems
    assert problems == ["task 2: excluded: log gives '[]', table has 'not json'"]
    code, _, err = run(capsys, "tasks", "--home", str(history.settings.home))
    assert code == 1 and "task 2" in one_line(err) and "sched rebuild" in one_line(err)
    assert run(capsys, "rebuild", "--home", str(history.settings.home))[0] == 0
    assert queries.verify_log(history).ok


def test_verify_reads_the_tables_a_batch_at_a_time_and_misses_no_row(make_workspace, monkeypatch, capsys):
    """The stored rows are streamed a few at a time: a row that is not UTF-8 in the
    middle of the table (read again leniently, on from where it was met), a row only in
    the table, a row only in the log and a changed row are each reported once, the
    first `limit` problems in key order; the steps' progress goes to stderr."""
    monkeypatch.setattr(base, "FETCH_BATCH", 2)
    monkeypatch.setattr(rebuild, "PROGRESS_EVERY", 4)
    ws = make_workspace()
    submit(ws, [TaskSpec(queue="dev", title=f"t{n}") for n in range(9)])
    sql(ws, "UPDATE tasks SET title = CAST(X'41ff' AS TEXT) WHERE task_id = 4")
    sql(ws, "UPDATE tasks SET priority = 7 WHERE task_id = 8")
    sql(ws, "DELETE FROM tasks WHERE task_id = 6")
    with closing(sqlite3.connect(ws.settings.db_path)) as conn:
        conn.executescript("CREATE TEMP TABLE copy AS SELECT * FROM tasks WHERE task_id = 1; "
                           "UPDATE copy SET task_id = 99; INSERT INTO tasks SELECT * FROM copy;")
    problems = queries.verify_log(ws).problems
    assert problems == ["task 4: title: log gives 't3', table has 'A\\udcff'",
                        "task 6: in the log but missing from the table",
                        "task 8: priority: log gives 0, table has 7",
                        "task 99: in the table but not in the log"]
    with ws.read() as (log, views):
        assert rebuild.verify(log, views, limit=2).problems == problems[:2]
    code, out, err = run(capsys, "replay", "--verify", "--home", str(ws.settings.home))
    assert code == 1 and out.splitlines() == problems
    steps = [line.strip() for line in err.splitlines()]
    assert steps[:2] == ["chain: 4 of 9 events", "chain: 8 of 9 events"]
    assert steps[2:4] == ["fold: 4 of 9 events", "fold: 8 of 9 events"]
    assert steps[4:] == [f"compared: {n} of 8 tables" for n in range(1, 9)]
    assert run(capsys, "replay", "--verify", "--json", "--home", str(ws.settings.home))[2] == ""


def test_projections_of_a_newer_sched_are_refused_not_folded_back(history, capsys):
    """An older sched refolded a newer one's tables to its own shape, and the newer one
    back at its next start: each a full refold with every writer waiting, silently. A
    newer shape is refused now; `sched rebuild` goes back to this version on purpose."""
    from projections.views import PROJECTION_SCHEMA

    home = str(history.settings.home)
    sql(history, "UPDATE projection_schema SET version = ?", PROJECTION_SCHEMA + 1)
    for args in (["status"], ["init"], ["submit", "-q", "dev", "-t", "more"]):
        code, _, err = run(capsys, *args, "--home", home)
        assert code == 1 and one_line(err).endswith(
            f"its projections were made by a newer sched (projection schema {PROJECTION_SCHEMA + 1}; this "
            f"one knows {PROJECTION_SCHEMA}): upgrade sched; to go back to this version on purpose, stop "
            "every process of the newer one and run `sched rebuild`"), (args, err)
    with closing(sqlite3.connect(history.settings.db_path)) as conn:
        stored = conn.execute("SELECT max(version) FROM projection_schema").fetchone()
    assert stored == (PROJECTION_SCHEMA + 1,)  # not folded back
    assert run(capsys, "rebuild", "--home", home)[0] == 0
    assert run(capsys, "replay", "--verify", "--home", home)[0] == 0


@pytest.mark.parametrize("shape", ["newer", "none"])
def test_a_process_writes_nothing_into_tables_another_version_rebuilt_meanwhile(history, shape):
    """A process checked the tables' shape only when it opened the database: a daemon
    left running while another version rebuilt the tables went on folding its own way
    into them. Every write reads the meta first, and the shape is there now: the
    process refuses, appending nothing, until it is stopped (or the damage rebuilt)."""
    from projections.views import PROJECTION_SCHEMA, SHAPE_KEY

    submit(history, [TaskSpec(queue="dev", title="before")])  # (open, as a daemon is)
    head = events(history.settings.db_path)
    if shape == "newer":  # a newer sched's refold writes its own shape
        sql(history, "UPDATE projection_meta SET value = ? WHERE key = ?",
            str(PROJECTION_SCHEMA + 1), SHAPE_KEY)
    else:  # a sched from before the shape was kept there (or a damaged table)
        sql(history, "DELETE FROM projection_meta WHERE key = ?", SHAPE_KEY)
    made = (f"made for projection schema {PROJECTION_SCHEMA + 1}" if shape == "newer"
            else "they no longer say which version of sched made them")
    refused = (f"{history.settings.db_path}: its projection tables are not of this sched's shape ({made}; "
               f"this sched writes projection schema {PROJECTION_SCHEMA})")
    remedy = ("Another version of sched rebuilt them: stop the processes of one of the two and run one "
              "version (docs/operations.md, Upgrading sched); if no other version runs, they were damaged: "
              "`sched rebuild`")
    with pytest.raises(ProjectionsChanged) as refused_write:
        submit(history, [TaskSpec(queue="dev", title="after")])
    assert refused_write.value.message == f"{refused}: nothing recorded. {remedy}"
    integrity = {c["name"]: c for c in health(history)["checks"]}["integrity"]  # (no daemon needed to see it)
    assert (integrity["status"], integrity["saw"]) == ("unhealthy",
                                                       f"{refused}: every write is refused. {remedy}")
    assert events(history.settings.db_path) == head
    if shape == "none":
        rebuild_projections(history)  # (what the line says for damage)
        submit(history, [TaskSpec(queue="dev", title="after")])
        assert events(history.settings.db_path) == head + 1
        assert queries.verify_log(history).ok


def test_health_is_unhealthy_when_a_table_no_check_reads_is_missing(history):
    """With the tokens table dropped, `tokens`, `replay --verify` and `sched serve`
    failed, while `sched health` said healthy."""
    history.close()
    sql(history, "DROP TABLE tokens")
    integrity = {c["name"]: c for c in health(history)["checks"]}["integrity"]
    assert (integrity["status"], integrity["saw"]) == ("unhealthy", (
        f"{history.settings.db_path}: the table tokens is missing: `sched rebuild` makes it again and "
        "folds the log into it"))
    rebuild_projections(history)  # (what the line says)
    assert {c["name"]: c for c in health(history)["checks"]}["integrity"]["status"] == "healthy"


def test_a_refold_on_upgrade_says_so(history, capsys, monkeypatch):
    """The first command after an upgrade refolds the whole log with every writer
    waiting (40 s a million events) and said nothing."""
    from projections import rebuild as folding
    from projections.views import PROJECTION_SCHEMA

    monkeypatch.setattr(folding, "PROGRESS_EVERY", 2)
    home = str(history.settings.home)
    sql(history, "UPDATE projection_schema SET version = ?", PROJECTION_SCHEMA - 1)
    code, out, err = run(capsys, "status", "--json", "--home", home)
    events = json.loads(out)["last_seq"]
    assert code == 0 and err.splitlines() == [
        f"rebuilding the projections for this version of sched (their shape {PROJECTION_SCHEMA - 1}, now "
        f"{PROJECTION_SCHEMA}): writers wait until it is done",
        *(f"  {n} events folded" for n in range(2, events + 1, 2)),
        f"rebuilt the projections from {events} events"]
    assert run(capsys, "status", "--home", home)[2] == ""  # once


@pytest.mark.parametrize("shape", ["older", "newer"])
def test_replay_and_migrate_read_a_database_of_another_version_as_it_is(history, capsys, tmp_path, shape):
    """Verifying a backup made by an older sched refolded its tables to this version's
    shape (a write: the backup could no longer take a rollback, and on read-only media
    it could not be audited at all); one of a newer sched was refused even a plain
    replay. The log is read as it is now, and the tables of another shape are said not
    compared, exit 1."""
    from projections.views import PROJECTION_SCHEMA

    home, db = str(history.settings.home), history.settings.db_path
    stored = PROJECTION_SCHEMA + (-1 if shape == "older" else 1)
    sql(history, "UPDATE projection_schema SET version = ?", stored)
    history.close()
    before = file_digest(db)
    code, out, err = run(capsys, "replay", "--verify", "--home", home)
    assert (code, err) == (1, "") and out.splitlines() == [
        f"the projection tables were made by another version of sched (projection schema {stored}; this "
        f"one writes {PROJECTION_SCHEMA}): not compared; the log's hash chain is intact ({events(db)} "
        "events), and `sched rebuild` makes the tables this version's (it writes)"]
    assert run(capsys, "replay", "--head", "--home", home)[0] == 0
    code, out, _ = run(capsys, "replay", "--task", "1", "--json", "--home", home)
    assert code == 0 and json.loads(out.splitlines()[0])["type"] == "TaskSubmitted"
    assert run(capsys, "migrate", "--to", str(tmp_path / "copy.db"), "--home", home)[0] == 0
    assert file_digest(db) == before  # (nothing refolded, nothing upgraded)
    code, out, _ = run(capsys, "replay", "--verify", "--db", str(tmp_path / "copy.db"), "--home", home)
    assert code == 0 and out.startswith(f"verified: {events(db)} events, hash chain intact, projections")


@pytest.mark.parametrize("older", [True, False])
def test_rebuild_after_an_upgrade_or_a_downgrade_folds_the_log_once(history, capsys, monkeypatch, older):
    """`sched rebuild` on tables of another shape folded the whole log twice: once when it
    opened the database (the refold on upgrade), then its own. Once now, chain checked,
    whether the tables are older (an upgrade) or newer (going back on purpose)."""
    from projections import rebuild as folding
    from projections.views import PROJECTION_SCHEMA

    monkeypatch.setattr(folding, "PROGRESS_EVERY", 2)
    home = str(history.settings.home)
    sql(history, "UPDATE projection_schema SET version = ?", PROJECTION_SCHEMA + (-1 if older else 1))
    code, _, err = run(capsys, "rebuild", "--home", home)
    total = events(history.settings.db_path)
    assert code == 0 and err.splitlines() == [
        *(f"  {n} events..." for n in range(2, total + 1, 2)), f"rebuilt the projections from {total} events"]
    assert run(capsys, "replay", "--verify", "--home", home)[0] == 0
    with closing(sqlite3.connect(history.settings.db_path)) as conn:
        assert conn.execute("SELECT version FROM projection_schema").fetchall() == [(PROJECTION_SCHEMA,)]


def test_event_bytes_that_are_not_utf8_are_named_by_seq(history, capsys):
    sql(history, "UPDATE events SET data = CAST(? AS BLOB) WHERE seq = 2", b'{"title": "\xff\xfe"}')
    code, out, err = run(capsys, "replay", "--verify", "--home", str(history.settings.home))
    assert code == 1, err
    assert "hash chain broken at seq 2" in out


def test_a_writer_refuses_to_append_after_an_altered_head(history, capsys):
    head = events(history.settings.db_path)
    sql(history, "UPDATE events SET recorded_at = '2000-01-01T00:00:00.000000Z' WHERE seq = ?", head)
    code, _, err = run(capsys, "submit", "-q", "dev", "-t", "more", "--home", str(history.settings.home))
    assert code == 1 and f"seq {head}" in one_line(err) and "refusing to append" in one_line(err)
    assert events(history.settings.db_path) == head


# -- faults of the machine ----------------------------------------------------------------

def namespaced(script: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run a shell script as root in a mount namespace of its own (its mounts vanish
    with it), with `sched` meaning this checkout's CLI."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    sched = f"{sys.executable} -m cli"
    env = cli_env(home, {"PYTHONPATH": str(Path(__file__).parents[3])})
    return subprocess.run(["unshare", "-m", "sh", "-euc", script.replace("sched ", sched + " ")],
                          cwd=home, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_read_only_media_serve_reads_and_refuse_writes_in_one_line(tmp_path):
    home = tmp_path / "home"
    ws = new_workspace(home)
    submit(ws, [TaskSpec(queue="dev", title="t")])
    ws.close()
    before = file_digest(home / "sched.db")
    done = namespaced(f"""
        mount --bind {home} {home}
        mount -o remount,ro,bind {home}
        set +e
        sched tasks --json
        sched replay --verify
        sched health --json > /dev/null 2> {tmp_path}/health.err; echo "health exit $?"
        sched submit -q dev -t more 2> {tmp_path}/err; echo "submit exit $?"
        cat {tmp_path}/err
        """, home)
    assert done.returncode == 0, done.stderr
    assert '"title": "t"' in done.stdout and "verified:" in done.stdout, done.stdout + done.stderr
    assert "health exit" in done.stdout and (tmp_path / "health.err").read_text() == ""
    assert "submit exit 1" in done.stdout and "read-only" in done.stdout
    # (a home that cannot be written, the file itself writable, gives the same line: it said "the file")
    assert "no write permission on the file or on its directory" in done.stdout
    assert file_digest(home / "sched.db") == before


def test_a_full_disk_exits_1_and_leaves_nothing_half_done(tmp_path):
    home = tmp_path / "full"
    home.mkdir()
    (tmp_path / "fleet.json").write_text(json.dumps(DEFAULT_FLEET))
    (tmp_path / "big.jsonl").write_text(json.dumps({"queue": "dev", "title": "after",
                                                    "payload": "x" * 500_000}) + "\n")
    done = namespaced(f"""
        mount -t tmpfs -o size=2m tmpfs {home}
        cp {tmp_path}/fleet.json {home}/agent-control.json
        sched init
        sched submit -q dev -t before
        dd if=/dev/zero of={home}/filler bs=4k 2>/dev/null || true
        set +e
        sched submit --file {tmp_path}/big.jsonl 2> {tmp_path}/err; echo "submit exit $?"
        cat {tmp_path}/err
        set -e
        rm {home}/filler
        sched tasks --json
        sched replay --verify
        """, home)
    assert done.returncode == 0, done.stderr
    assert "submit exit 1" in done.stdout and "disk is full" in done.stdout, done.stdout
    assert '"before"' in done.stdout and '"after"' not in done.stdout and "verified:" in done.stdout


def test_health_notices_a_wal_deleted_under_a_running_process(make_workspace):
    ws = make_workspace()
    submit(ws, [TaskSpec(queue="dev", title="t")])
    ws.close()  # the last connection checkpoints: the log is in sched.db itself
    db = ws.settings.db_path
    with subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys\n"
             f"c = sqlite3.connect({str(db)!r}); c.execute('SELECT count(*) FROM events').fetchone()\n"
             "print('ready', flush=True); sys.stdin.readline()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert next(c for c in _checks(ws) if c["name"] == "files")["status"] == "healthy"
        Path(f"{db}-wal").unlink()
        Path(f"{db}-shm").unlink()
        files = wait_for("health to notice", lambda: next(
            (c for c in _checks(ws) if c["name"] == "files" and c["status"] == "unhealthy"), None))
        assert f"pid {holder.pid} holds the deleted" in files["saw"]  # type: ignore[index]
        holder.kill()


def _checks(ws) -> list[dict[str, str]]:
    from scheduler.reads.health import health

    ws.close()  # this test's own connection must not be the one holding the deleted file
    report = health(ws)
    ws.close()
    return report["checks"]


def test_init_in_a_home_on_read_only_media_is_one_line_exit_1(tmp_path):
    """A fault of the machine, as a database on read-only media is (exit 2 until
    2026-12-07, as if the path given were wrong)."""
    home = tmp_path / "locked"
    home.mkdir()
    write_fleet(home, DEFAULT_FLEET)
    done = namespaced(f"""
        mount --bind {home} {home}
        mount -o remount,ro,bind {home}
        set +e
        sched init 2> {tmp_path}/err; echo "init exit $?"
        sched agents validate --fix > /dev/null 2>> {tmp_path}/err; echo "validate exit $?"
        """, home)
    assert done.returncode == 0, done.stderr
    assert "init exit 1" in done.stdout, done.stdout
    errors = (tmp_path / "err").read_text().splitlines()
    assert errors[0].startswith("sched: ") and "Read-only file system" in errors[0], errors
    assert "Traceback" not in "".join(errors)
    assert not (home / "sched.db").exists()
