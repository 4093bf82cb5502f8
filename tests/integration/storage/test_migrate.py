"""`sched migrate`: the log moves to another engine whole (same head, same hash, same
projections), checked as it goes, and only into an empty database."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from eventlog.errors import CorruptLog, ForeignDatabase, LogTampered, Refused
from eventlog.schema import EventRow
from scheduler import worker
from scheduler.config.settings import load_settings
from scheduler.migrate import migrate
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace
from tests.cli.conftest import CONTROL_NAME, FLEET, sched
from tests.conftest import new_workspace
from tests.integration.storage.test_storage_contract import add_foreign_table


def with_history(ws: Workspace) -> Workspace:
    submit(ws, [TaskSpec(queue="dev", title=f"t{i}", priority=i % 3) for i in range(7)])
    tick(ws)
    claim = worker.claim(ws, "ann")
    worker.complete(ws, claim.task.task_id, claim.token, {"ok": True})
    submit(ws, [TaskSpec(queue="qa", title="check")])
    return ws


def at(location: str, tmp_path, name: str) -> Workspace:
    home = tmp_path / name
    home.mkdir(exist_ok=True)
    (home / CONTROL_NAME).write_text(json.dumps(FLEET))
    key = {"database_url": location} if location.startswith("postgresql") else {"db": location}
    return Workspace(load_settings({}, {"home": home, **key}).settings)


@pytest.mark.parametrize("direction", ["sqlite->postgresql", "postgresql->sqlite"])
def test_the_log_arrives_whole_with_the_same_head_and_projections(tmp_path, pg_url, direction):
    sqlite_file = str(tmp_path / "laptop.db")
    source_at, target_at = (sqlite_file, pg_url) if direction.startswith("sqlite") else (pg_url, sqlite_file)
    source = with_history(new_workspace(tmp_path / "src", database=source_at))
    seen: list[tuple[int, int]] = []
    done = migrate(source, target_at, progress=lambda n, total: seen.append((n, total)))
    target = at(target_at, tmp_path, "dst")
    assert (done.head_seq, done.head_hash) == queries.head(source) == queries.head(target)
    assert done.events == done.head_seq and seen[-1] == (done.events, done.events)
    assert [r.hash for r in queries.replay(target)] == [r.hash for r in queries.replay(source)]
    assert queries.verify_log(target).ok
    assert queries.status(target)["queues"] == queries.status(source)["queues"]
    assert sorted((t.task_id, t.status, t.title) for t in queries.list_tasks(target)) == sorted(
        (t.task_id, t.status, t.title) for t in queries.list_tasks(source))
    source.close()
    target.close()


def test_a_target_made_by_sched_init_first_gets_its_projections_too(tmp_path, pg_url):
    """operations.md has the PostgreSQL database made with `sched init`, then migrated
    into: its projection tables exist already, with the current shape, and must still
    be folded from the copied log (they stayed empty: status showed nothing queued)."""
    source = with_history(new_workspace(tmp_path / "src", database=str(tmp_path / "laptop.db")))
    target = at(pg_url, tmp_path, "dst")
    target.init_db()
    migrate(source, pg_url)
    assert queries.status(target)["queues"] == queries.status(source)["queues"]
    assert queries.status(target)["last_seq"] == queries.head(source)[0]
    assert queries.verify_log(target).ok
    source.close()
    target.close()


def test_only_an_empty_database_is_a_target(tmp_path, pg_url):
    source = with_history(new_workspace(tmp_path / "src"))
    migrate(source, pg_url)
    target = at(pg_url, tmp_path, "dst")
    before = queries.head(target)
    with pytest.raises(Refused, match="already holds a sched log"):
        migrate(source, pg_url)
    with pytest.raises(Refused, match="already holds a sched log"):
        migrate(source, str(source.settings.db_path))  # itself
    assert queries.head(target) == before
    foreign = str(tmp_path / "other.db")
    add_foreign_table(foreign)
    with pytest.raises(ForeignDatabase):
        migrate(source, foreign)
    source.close()
    target.close()


def test_a_second_migrate_into_the_same_target_is_refused_whole(tmp_path, monkeypatch):
    """Two migrates started together both found the target empty; the second copied
    every event, then failed on a duplicate key. The target is looked at again under
    its writers' lock."""
    from scheduler import migrate as migration

    target = str(tmp_path / "copy.db")
    source = with_history(new_workspace(tmp_path / "src"))
    other = with_history(new_workspace(tmp_path / "other"))
    look = migration._refuse_a_log
    looks: list[str] = []

    def then_the_other_migrates(txn, location: str) -> None:  # type: ignore[no-untyped-def]
        look(txn, location)
        if not looks:  # (after the first look of the first migrate only)
            looks.append(location)
            migrate(other, target)

    monkeypatch.setattr(migration, "_refuse_a_log", then_the_other_migrates)
    with pytest.raises(Refused, match="already holds a sched log"):
        migrate(source, target)
    copy = at(target, tmp_path, "dst")
    assert queries.head(copy) == queries.head(other) and queries.verify_log(copy).ok
    for ws in (source, other, copy):
        ws.close()


def test_a_log_that_lost_its_last_events_is_not_migrated(tmp_path):
    """Its tables had folded events the log no longer held: every write and `replay
    --verify` said so, but migrate copied what was left, and the copy verified clean."""
    from sqlalchemy import delete

    source = with_history(new_workspace(tmp_path / "src"))
    head = queries.head(source)[0]
    with source.db.write() as txn:
        txn.session.execute(delete(EventRow).where(EventRow.seq > head - 2))
    target = str(tmp_path / "copy.db")
    with pytest.raises(LogTampered, match=rf"folded events up to seq {head}, but the log ends at seq "
                       rf"{head - 2}: .*nothing was copied: restore the database from a backup"):
        migrate(source, target)
    copy = at(target, tmp_path, "dst")
    assert queries.head(copy)[0] == 0
    source.close()
    copy.close()


def test_a_source_whose_projections_cannot_be_read_is_copied_all_the_same(tmp_path):
    """The documented way out of a damaged projection table is a copy of the log:
    migrate's check of the tables' checkpoint must not stop it."""
    import sqlite3
    from contextlib import closing

    source = with_history(new_workspace(tmp_path / "src"))
    head = queries.head(source)
    source.close()
    with closing(sqlite3.connect(source.settings.db_path)) as conn:
        conn.execute("DROP TABLE projection_meta")
        conn.commit()
    done = migrate(Workspace(source.settings, as_found=True), str(tmp_path / "copy.db"))
    copy = at(str(tmp_path / "copy.db"), tmp_path, "dst")
    assert (done.head_seq, done.head_hash) == head == queries.head(copy) and queries.verify_log(copy).ok
    copy.close()


def test_a_directory_is_no_target(tmp_path):
    home = tmp_path / "home"
    with_history(new_workspace(home)).close()
    done = sched(home, "migrate", "--to", str(tmp_path))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"sched: --to {tmp_path}: a directory; give the database file to make in it"]


def test_a_broken_source_chain_copies_nothing_and_a_new_try_copies_all(tmp_path, pg_url):
    source = with_history(new_workspace(tmp_path / "src"))
    (original,) = [r.data for r in queries.replay(source) if r.seq == 3]
    with source.db.write() as txn:
        txn.session.execute(update(EventRow).where(EventRow.seq == 3).values(data='{"forged": 1}'))
    with pytest.raises(CorruptLog, match="broken at seq 3"):
        migrate(source, pg_url)
    target = at(pg_url, tmp_path, "dst")
    assert queries.head(target)[0] == 0
    with source.db.write() as txn:  # the source mended (restored from a backup, say)
        txn.session.execute(update(EventRow).where(EventRow.seq == 3).values(data=original))
    done = migrate(source, pg_url)  # into the tables the failed try left
    assert (done.head_seq, done.head_hash) == queries.head(source) == queries.head(target)
    assert queries.verify_log(target).ok
    source.close()
    target.close()


def test_progress_shows_each_batch_once(tmp_path, monkeypatch):
    """A log of whole batches was shown done twice ("200000 of 200000 events copied",
    then again): the last, empty batch was reported too."""
    import scheduler.migrate as migrating

    source = with_history(new_workspace(tmp_path / "src"))
    events = queries.head(source)[0]
    monkeypatch.setattr(migrating, "BATCH", events // 2 if events % 2 == 0 else events)
    seen: list[tuple[int, int]] = []
    migrate(source, str(tmp_path / "copy.db"), progress=lambda n, total: seen.append((n, total)))
    assert seen[-1] == (events, events) and len(seen) == len(set(seen))
    source.close()


def test_the_cli_shows_progress_and_the_head(tmp_path, pg_url):
    home = tmp_path / "home"
    with_history(new_workspace(home)).close()
    done = sched(home, "migrate", "--to", pg_url)
    assert done.returncode == 0, done.stderr
    assert "events copied" in done.stderr and "head on both: seq" in done.stderr
    again = sched(home, "migrate", "--to", pg_url, "--json")
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1
    heads = [sched(home, "replay", "--head", *extra).stdout for extra in ([], ["--db", pg_url])]
    assert heads[0] == heads[1] and heads[0].strip()
