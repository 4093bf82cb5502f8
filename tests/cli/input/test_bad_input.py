"""Bad input changes nothing (DESIGN, invariant 5): a rejected command exits 2, prints
one clear line on stderr and no traceback, appends no event and leaves the database
file as it was."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import (
    FLEET,
    InProcess,
    Run,
    event_count,
    file_digest,
    json_lines,
    ok,
    one_error_line,
    one_json,
    write_control,
)

BAD_CONTROL_FILES = {
    "not-json": ("[{'agentName': 'ann',", r"JSON"),
    "missing-agentType": ('[{"agentName": "ann", "maxConcurrency": 2}]', r"agentType"),
    "duplicate-agentName": (
        '[{"agentName": "ann", "agentType": "dev"}, {"agentName": "ann", "agentType": "qa"}]',
        r"duplicate.*ann|ann.*duplicate"),
    "a-key-given-twice": (  # (the last one was taken, without a word)
        '[{"agentName": "ann", "agentType": "dev", "agentName": "bob"}]',
        r"the key 'agentName' is given twice"),
}


@pytest.fixture
def db(seeded: Path) -> Path:
    """The database of this test's seeded SCHED_HOME (one event in its log)."""
    path = seeded / "sched.db"
    assert event_count(path) == 1
    return path


def assert_unchanged(db: Path, before: str) -> None:
    assert event_count(db) == 1
    assert file_digest(db) == before


@pytest.mark.parametrize("case", list(BAD_CONTROL_FILES))
def test_an_invalid_control_file_stops_tick_and_claim(run: Run, db: Path, case: str):
    content, named = BAD_CONTROL_FILES[case]
    write_control(db.parent, content)
    before = file_digest(db)

    for args in (["tick", "--json"], ["worker", "claim", "--agent", "ann", "--json"]):
        line = one_error_line(run(*args), 2)
        assert re.search(named, line), line
        assert_unchanged(db, before)

    result = run("agents", "validate")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(named, result.stdout + result.stderr)
    assert_unchanged(db, before)


@pytest.mark.parametrize("case", list(BAD_CONTROL_FILES))
def test_the_reads_of_the_fleet_say_the_control_file_cannot_be_read(run: Run, db: Path, case: str):
    """status, tasks and explain show the fleet last recorded while the control file is
    broken (an operator still sees the scheduler), and say so in one line on stderr."""
    content, named = BAD_CONTROL_FILES[case]
    write_control(db.parent, content)
    before = file_digest(db)
    for args in (["status", "--json"], ["tasks", "--json"], ["explain", "1", "--json"], ["status"]):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith("sched: warning: ") and line.endswith("; showing the fleet as last recorded")
        assert re.search(named, line), line
        if "--json" in args:
            assert json.loads(result.stdout)
    assert_unchanged(db, before)
    result = run("status", "--json", "--agents", str(db.parent / "nowhere.json"))
    assert result.returncode == 0 and "(looked at " in result.stderr and "nowhere.json" in result.stderr
    for args in (["tasks", "--status", "sleeping"], ["status", "--at", "soon"], ["explain", "99"]):
        one_error_line(run(*args), 2)  # bad input is still one line: the warning is not added


@pytest.mark.parametrize(("args", "named"), [
    (["--queue", "ops", "--title", "t"], r"ops.*dev.*qa"),
    (["--queue", "dev", "--title", "t", "--assignee", "zed"], r"zed"),
    (["--queue", "dev", "--title", "t", "--payload", "{not json"], r"--payload"),
    (["--queue", "dev", "--title", "t", "--not-before", "2030-01-01T09:00:00"],
     r"not.before: .*timezone.*\(give an ISO time with its offset"),
    (["--queue", "dev", "--title", "t", "--priority", "notanumber"], r"--priority"),
    (["--queue", "dev", "--title", "t", "--payload", '{"x": NaN}'], r"NaN is not valid JSON"),
    (["--queue", "dev", "--title", "t", "--priority", str(2**70)], r"priority"),
    (["--queue", "dev", "--title", "t", "--not-before", "0999-01-01T00:00:00+00:00"],
     r"1970-01-01 and 9999-01-01"),
    (["--queue", "dev", "--title", "t", "--after", str(2**70)], r"too large|after"),
    (["--queue", "dev", "--title", "   "], r"^sched: submit: title: must say what the task is, not be blank"),
    (["--queue", "dev", "--title", ""], r"^sched: submit: title: must say what the task is, not be blank$"),
    (["--queue", "dev", "--title", "t", "--not-before", "3600"],
     r"^sched: submit: not_before: must be an ISO time with its offset, e\.g\. .*, not the number 3600$"),
    (["--queue", "dev", "--title", "t", "--payload", '{"a": 1, "a": 2}'],
     r"^sched: --payload: the key 'a' is given twice$"),
    (["--queue", "dev", "--title", "t", "--by", " "], r"^sched: --by: must name who acts, not be blank$"),
], ids=["unknown-queue", "unknown-assignee", "payload-not-json", "not-before-naive", "priority-nan",
        "payload-nan", "priority-too-big", "not-before-year-999", "after-too-big", "blank-title",
        "empty-title", "not-before-a-number", "payload-key-twice", "blank-by"])
def test_a_bad_submit_appends_nothing(run: Run, db: Path, args: list[str], named: str):
    before = file_digest(db)
    line = one_error_line(run("submit", *args, "--json"), 2)
    assert re.search(named, line), line
    assert_unchanged(db, before)


COMMANDS_THAT_OPEN_THE_DB = [
    ["status", "--json"],
    ["tick", "--json"],
    ["submit", "--queue", "dev", "--title", "t", "--json"],
]


@pytest.mark.parametrize("args", COMMANDS_THAT_OPEN_THE_DB, ids=["status", "tick", "submit"])
def test_db_flag_at_a_missing_file(run: Run, db: Path, args: list[str]):
    missing = db.parent / "nowhere" / "missing.db"
    before = file_digest(db)
    one_error_line(run(*args, "--db", str(missing)), 2)
    assert not missing.exists()
    assert not missing.parent.exists()
    assert_unchanged(db, before)


@pytest.mark.parametrize("args", COMMANDS_THAT_OPEN_THE_DB, ids=["status", "tick", "submit"])
def test_db_flag_at_a_file_that_is_not_a_database(run: Run, db: Path, args: list[str]):
    junk = db.parent / "junk.db"
    junk.write_bytes(b"not a database\n" + os.urandom(4096))
    junk_before, db_before = file_digest(junk), file_digest(db)
    line = one_error_line(run(*args, "--db", str(junk)), 2)
    assert "junk.db" in line
    assert file_digest(junk) == junk_before
    assert not Path(f"{junk}-wal").exists() and not Path(f"{junk}-journal").exists()
    assert_unchanged(db, db_before)


def test_a_directory_given_as_the_database_is_bad_input_not_a_disk_fault(cli: InProcess, tmp_path: Path):
    folder = tmp_path / "data"
    folder.mkdir()
    for args in (["init"], ["init", "--json"], ["status"]):
        result = cli(*args, "--db", str(folder))
        assert one_error_line(result, 2) == (f"sched: {folder} is a directory, not a database file "
                                             f"(give a file, such as {folder / 'sched.db'})")
        assert result.stdout == ""
    assert list(folder.iterdir()) == []


def test_show_an_unknown_task(run: Run, db: Path):
    before = file_digest(db)
    line = one_error_line(run("show", "9999", "--json"), 2)
    assert "9999" in line
    assert_unchanged(db, before)


@pytest.mark.parametrize("given", ["1.0", "+1", " 1", "0_1", "\u0661"])
def test_a_task_id_is_digits_only(run: Run, db: Path, given: str):
    """int() and pydantic read `1.0`, `+1`, `0_1` or an Arabic-Indic one as task 1: a
    cancel of such a text would cancel task 1. Refused, as the dashboard and the API
    refuse it."""
    before = file_digest(db)
    for args in (("cancel", given), ("show", given),
                 ("submit", "--queue", "dev", "--title", "t", "--after", given)):
        line = one_error_line(run(*args), 2)
        assert line.endswith(f"{given!r} is not a task id (a whole number)"), (args, line)
    assert_unchanged(db, before)


@pytest.mark.parametrize("given", ["1e3", "1_0", "nan", "90 sec", "-5m"])
def test_a_duration_is_one_grammar_everywhere(run: Run, db: Path, given: str):
    """`--delay 1e3` waited 1,000 s and `--delay 1_0` 10 s (Python's float), where
    simulate's `--duration` refused both: two parsers of durations. One now."""
    before = file_digest(db)
    simulate = ("simulate", "--generate", "dev:rate=1/h,run=1m", "--duration", given)
    for args, flag in ((("submit", "--queue", "dev", "--title", "t", "--delay", given), ""),
                       (("metrics", "--since", given), ""), (simulate, "--duration: ")):
        line = one_error_line(run(*args), 2)
        assert line == f"sched: {flag}not a duration: {given!r} (try 90s, 10m, 2h, 1d)", (args, line)
    assert_unchanged(db, before)


def test_an_unknown_command(run: Run, db: Path):
    before = file_digest(db)
    line = one_error_line(run("frobnicate", "--json"), 2)
    assert "frobnicate" in line
    assert_unchanged(db, before)


def test_a_bad_setting_in_the_environment(run: Run, db: Path):
    before = file_digest(db)
    for args in (["tick", "--json"], ["submit", "--queue", "dev", "--title", "t", "--json"]):
        line = one_error_line(run(*args, env={"SCHED_LEASE_SECONDS": "abc"}), 2)
        assert "SCHED_LEASE_SECONDS" in line
        assert_unchanged(db, before)


def test_a_database_url_that_is_a_file(run: Run, db: Path):
    before = file_digest(db)
    for name, hint in (("SCHED_DATABASE_URL", " (a file goes in db)"), ("SCHED_DATABASE_LISTEN_URL", "")):
        line = one_error_line(run("status", "--json", env={name: str(db)}), 2)
        assert line.endswith(f"setting {name}: must be a postgresql:// URL{hint}")
        assert_unchanged(db, before)


def test_a_url_of_another_kind_is_refused_not_taken_for_a_file(run: Run, db: Path):
    """`mysql://`, SQLAlchemy's `sqlite:///` or a misspelt scheme, wherever a database
    is named: one line (no password in it), exit 2, and no folder named after the
    scheme with a SQLite file in it."""
    home = db.parent
    before = file_digest(db)
    said = "not a database sched can use (give a file path for SQLite, or a postgresql:// URL)"
    calls = [(["init", "--db", "mysql://me:hunter2@db1/sched"], {}, "setting --db: mysql://me:***@db1/sched"),
             (["status", "--json"], {"SCHED_DB": "postgresq://db1/sched"}, "setting SCHED_DB: postgresq://db1/sched"),
             (["migrate", "--to", "sqlite:///copy.db"], {}, "sqlite:///copy.db")]
    for args, env, named in calls:
        line = one_error_line(run(*args, env=env), 2)
        assert line == f"sched: {named}: {said}"
    # a PostgreSQL URL that cannot name a server (a bracket left open): bad input, not an outage
    line = one_error_line(run("status", "--db", "postgresql://me:hunter2@[db1/sched"), 2)
    assert line == "sched: setting --db: postgresql://***@[db1/sched: not a valid URL (Invalid IPv6 URL)"
    # parameters libpq refuses only when it connects were "internal error" or "a retry helps", exit 1
    for url, problem in (("postgresql://me:hunter2@db1:abc/sched", "port 'abc' is not a port number"),
                         ("postgresql://me@/sched?host=/run/pg&port=99999", "port '99999' is not a port"),
                         ("postgresql://me@db1/sched?bogus=1", 'invalid URI query parameter: "bogus"'),
                         ("postgresql://me@db1/sched?connect_timeout=x", "connect_timeout 'x' is not"),
                         ("postgresql://me@db1/sched?sslmode=bogus", "sslmode 'bogus' is not one of")):
        line = one_error_line(run("status", "--db", url), 2)
        assert line.startswith(f"sched: setting --db: {url.replace(':hunter2', ':***')}: {problem}"), line
        assert line.endswith("(a fault of the URL: no retry helps)") and "hunter2" not in line
    toml = home / "sched.toml"
    toml.write_text('db = "mysql://db1/sched"\n')  # (not joined to the file's folder as a path would be)
    assert one_error_line(run("status"), 2) == f"sched: setting {toml}: db: mysql://db1/sched: {said}"
    assert not [p for p in home.iterdir() if ":" in p.name]
    assert_unchanged(db, before)


def test_the_fleet_fixture_is_valid(run: Run, db: Path):
    """Guards the cases above: with the good control file the same commands succeed,
    so each rejection comes from the one bad input it injects."""
    write_control(db.parent, FLEET)
    result = run("submit", "--queue", "dev", "--title", "t", "--assignee", "ann", "--priority", "3",
                 "--payload", '{"k": 1}', "--not-before", "2030-01-01T09:00:00+00:00", "--json")
    assert result.returncode == 0, result.stderr
    assert event_count(db) == 2


def test_a_home_that_does_not_exist_is_named_by_where_it_came_from(cli: InProcess, tmp_path: Path):
    missing = tmp_path / "nowhere"
    line = one_error_line(cli("status", "--home", str(missing)), 2)
    assert line == f"sched: --home {missing} does not exist or is not a directory (`sched init` creates it)"
    line = one_error_line(cli("status", env={"SCHED_HOME": str(missing)}), 2)
    assert line.startswith(f"sched: SCHED_HOME {missing} does not exist")


def test_a_home_whose_path_is_not_text_is_refused_before_anything_is_made(tmp_path: Path):
    """A byte that is not UTF-8 in the home's path (an undecodable name reaches Python as
    a lone surrogate) is bad input wherever the path came from, as it is in a flag: the
    database could be made there but never opened again, nor named in a message."""
    home = tmp_path / "home-\udcff"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    for args, extra, named in ((["init"], {"SCHED_HOME": str(home)}, "SCHED_HOME"),
                               (["status"], {"SCHED_HOME": str(home)}, "SCHED_HOME"),
                               (["init"], {}, "home"),  # the current directory
                               (["submit", "-q", "dev", "-t", "x"], {}, "home")):
        done = subprocess.run([sys.executable, "-m", "cli", *args], cwd=home, env={**env, **extra},
                              capture_output=True, text=True, errors="surrogateescape", timeout=60,
                              check=False)
        line = one_error_line(done, 2)
        assert line.startswith(f"sched: setting {named}: the path "), line
        assert "not valid Unicode text" in line, line
    assert list(home.iterdir()) == []  # no database, no control file


@pytest.mark.parametrize("args", [["tick"], ["worker", "claim", "--agent", "ann"],
                                  ["submit", "-q", "dev", "-t", "x"]])
def test_with_no_database_and_no_control_file_the_missing_database_is_said_first(
        cli: InProcess, tmp_path: Path, args: list[str]):
    """A newcomer who skipped `sched init` is told to run it (docs/cli.md), not sent to
    fix a control file first."""
    line = one_error_line(cli(*args), 2)
    assert line == f"sched: no database at {tmp_path / 'sched.db'}: run `sched init` first"


@pytest.mark.parametrize("args", [["webhooks", "deliver"], ["webhooks", "deliver", "--json"]])
def test_webhooks_deliver_needs_a_database_even_with_no_webhook(cli: InProcess, tmp_path: Path,
                                                                args: list[str]):
    """docs/cli.md: every command but init, agents validate and config show needs a
    database; with no [[webhooks]] configured, deliver did nothing and exited 0."""
    result = cli(*args)
    line = one_error_line(result, 2)
    assert line == f"sched: no database at {tmp_path / 'sched.db'}: run `sched init` first"
    assert result.stdout == ""
    assert not (tmp_path / "sched.db").exists()


def test_a_line_of_a_file_that_runs_after_a_task_of_the_same_file_is_named(cli: InProcess, tmp_path: Path):
    """Ids are given as the file is submitted: a line cannot name another line's task.
    The line is named, and nothing is submitted."""
    ok(cli("init"))
    write_control(tmp_path, FLEET)
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"queue": "dev", "title": "build"}\n{"queue": "dev", "title": "test", "after": [1]}\n')
    line = one_error_line(cli("submit", "--file", str(batch)), 2)
    assert line == (f"sched: {batch}:2: after 1: no such task (a task of the same batch has no id before "
                    "it is submitted: submit it first)")
    assert one_json(ok(cli("status", "--json")))["last_seq"] == 0


@pytest.mark.parametrize(("flags", "named"), [
    (["--priority", "3"], "--priority"),
    (["--priority", "0"], "--priority"),  # equal to its default: given all the same
    (["--title", ""], "--title"),
    (["--queue", "", "--delay", "1h"], "--queue, --delay"),
    (["--payload", "null"], "--payload"),
    (["--requires-approval"], "--requires-approval"),
])
def test_a_task_flag_beside_file_is_refused_whatever_its_value(cli: InProcess, tmp_path: Path,
                                                                flags: list[str], named: str):
    """docs/cli.md: with --file every field comes from the file, and a task flag given
    beside it exits 2 naming the flags, never dropped unseen (an empty or default value
    included)."""
    ok(cli("init"))
    write_control(tmp_path, FLEET)
    batch = tmp_path / "batch.jsonl"
    batch.write_text('{"queue": "dev", "title": "build"}\n')
    line = one_error_line(cli("submit", "--file", str(batch), *flags), 2)
    assert line == f"sched: --file takes every field from the file; drop {named}"
    assert one_json(ok(cli("status", "--json")))["last_seq"] == 0
    assert one_json(ok(cli("submit", "--file", str(batch), "--json")))["task_ids"] == [1]


@pytest.mark.parametrize("args", [["replay", "--since", "9999-12-31T23:59:59-14:00"],
                                  ["replay", "--until", "0001-01-01T00:00:00+14:00"],
                                  ["status", "--at", "9999-12-31T23:59:59-14:00"]])
def test_a_time_off_the_calendar_in_utc_is_named_as_a_time(run: Run, db: Path, args: list[str]):
    line = one_error_line(run(*args), 2)
    assert line == (f"sched: {args[1]}: expected a seq number or an ISO time with offset (within the "
                    f"years 1 to 9999 in UTC), got {args[2]!r}")


@pytest.mark.parametrize(("args", "flag"), [
    (["replay", "--verify", "--expect-head", ""], "--expect-head"),
    (["status", "--at", ""], "--at"),
    (["replay", "--since", ""], "--since"),
    (["replay", "--until", ""], "--until"),
], ids=["expect-head", "at", "since", "until"])
def test_an_empty_value_is_refused_not_ignored(run: Run, db: Path, args: list[str], flag: str):
    """An empty value (a script's unset variable) is malformed: skipping the check or
    the filter would answer a question that was not asked."""
    before = file_digest(db)
    result = run(*args, "--json")
    line = one_error_line(result, 2)
    assert line.startswith(f"sched: {flag}: expected ") and line.endswith("got ''"), line
    assert result.stdout == ""
    assert_unchanged(db, before)


def test_an_expected_head_past_any_seq_is_bad_input_as_since_is(run: Run, db: Path):
    """A seq no log can reach is a malformed value (exit 2), as `--since` says of it,
    not a truncated log (exit 1)."""
    big = "99999999999999999999"
    for args in (["--verify", "--expect-head", f"{big}:" + "0" * 64], ["--since", big]):
        line = one_error_line(run("replay", *args), 2)
        assert line.endswith(f"{big} is not a seq (at most 2**63 - 1)"), line
    # past the 4,300 digits Python reads, the same line, not an internal error
    huge = "9" * 5000
    for args in (["replay", "--verify", "--expect-head", f"{huge}:" + "0" * 64], ["replay", "--since", huge],
                 ["replay", "--until", huge], ["status", "--at", huge]):
        line = one_error_line(run(*args), 2)
        assert line.endswith(f"{huge[:40]} is not a seq (at most 2**63 - 1)"), line
    line = one_error_line(run("show", huge), 2)
    assert line.endswith(f"{huge[:40]} is not a task id (1 to 2**63 - 1)"), line
    line = one_error_line(run("replay", "--since", "5", "--until", "3"), 2)  # (it answered nothing, exit 0)
    assert line == "sched: --until is before --since: no event lies between"
    one = "0" * 5000 + "1"  # (zeros first: read as 1, without int() reading 5,001 digits)
    assert one_json(ok(run("status", "--at", one, "--json")))["last_seq"] == 1
    assert one_json(ok(run("show", one, "--json")))["task"]["task_id"] == 1


@pytest.mark.parametrize("command", ["heartbeat", "progress", "complete", "fail"])
def test_an_empty_lease_token_is_bad_input_not_a_stale_one(run: Run, db: Path, command: str):
    """`--token "$TOKEN"` with the variable unset: a script's mistake (exit 2), not an
    attempt that ended meanwhile (exit 1, which a runner takes as "stop")."""
    before = file_digest(db)
    extra = {"progress": ["--percent", "5"], "fail": ["--error", "x"]}.get(command, [])
    line = one_error_line(run("worker", command, "1", "--token", "", *extra), 2)
    assert line == f"sched: {command}: token: String should have at least 1 character"
    assert_unchanged(db, before)


def test_replay_tasks_and_requeue_refuse_an_unknown_task_or_queue(run: Run, db: Path):
    """docs/cli.md: an unknown task id or queue exits 2. A queue is known when an agent
    of the control file serves it or the log has seen a task in it (`requeue --all` of
    a misspelt queue is not "nothing to requeue")."""
    before = file_digest(db)
    result = run("replay", "--task", "99", "--json")
    assert one_error_line(result, 2) == "sched: no task 99"
    assert result.stdout == ""
    for args in (("tasks", "--queue", "nope", "--json"), ("requeue", "--all", "--queue", "nope"),
                 ("requeue", "--all", "--queue", "nope", "--dry-run", "--json")):
        result = run(*args)
        assert one_error_line(result, 2) == "sched: unknown queue 'nope' (known queues: dev, qa)", args
        assert result.stdout == ""
    assert_unchanged(db, before)
    assert one_json(ok(run("requeue", "--all", "--queue", "qa", "--json")))["requeued"] == []

    write_control(db.parent, [a for a in FLEET if a["agentType"] == "qa"])  # dev's agents leave
    listed = one_json(ok(run("tasks", "--queue", "dev", "--json")))["tasks"]
    assert [t["title"] for t in listed] == ["seed task"]
    assert one_json(ok(run("tasks", "--queue", "qa", "--json")))["tasks"] == []
    assert [e["seq"] for e in json_lines(ok(run("replay", "--task", "1", "--json")))] == [1]


@pytest.mark.parametrize("command", ["approve", "reject", "requeue"])
def test_an_unknown_id_among_several_is_bad_input_wherever_it_stands(run: Run, db: Path, command: str):
    """`approve 1 99` and `approve 99 1` both exit 2 (no task 99), not 1 for the known
    task's state when it comes first: every id is looked up before any is judged."""
    before = file_digest(db)
    for ids in (("1", "99"), ("99", "1")):
        assert one_error_line(run(command, *ids), 2) == "sched: no task 99", (command, ids)
    assert_unchanged(db, before)


def test_a_user_name_that_is_not_text_is_named_as_user_not_as_by(cli: InProcess):
    ok(cli("init"))
    line = one_error_line(cli("pause", env={"USER": "kim\udcff"}), 2)
    assert line.startswith("sched: $USER (who acts when --by is not given) contains '\\udcff'"), line
    assert line.endswith(": give --by NAME")
    assert one_json(ok(cli("pause", "--by", "kim", "--json", env={"USER": "kim\udcff"})))["paused"]


def test_metrics_refuses_prometheus_with_json(run: Run, db: Path):
    """--json promises one JSON document: Prometheus text is not one."""
    result = run("metrics", "--prometheus", "--json")
    line = one_error_line(result, 2)
    assert line == "sched: give --prometheus or --json, not both (each is a whole format)"
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["status", "--watch", "--json"], ["tasks", "--watch", "--json"], ["run"]],
                         ids=["status-watch", "tasks-watch", "run"])
@pytest.mark.parametrize("interval", ["1e20", "86401"])
def test_an_interval_over_a_day_is_refused_before_the_first_frame_or_tick(run: Run, db: Path,
                                                                          args: list[str], interval: str):
    before = file_digest(db)
    result = run(*args, "--interval", interval)
    line = one_error_line(result, 2)
    assert line == f"sched: --interval must be at most 86400 seconds (a day), not {float(interval):g}"
    assert result.stdout == ""
    assert_unchanged(db, before)


@pytest.mark.parametrize("args", [["pause", "--by", ""], ["resume", "--by", "  "],
                                  ["agents", "drain", "ann", "--by", ""],
                                  ["tokens", "create", "--name", "z", "--role", "reader", "--by", " "]],
                         ids=["pause", "resume", "drain", "token"])
def test_a_blank_actor_is_refused_not_recorded(run: Run, db: Path, args: list[str]):
    """The audit trail names who did each thing: a blank `--by` (a script's unset
    variable) is bad input, not an event by nobody."""
    before = file_digest(db)
    assert one_error_line(run(*args), 2) == "sched: --by: must name who acts, not be blank"
    assert_unchanged(db, before)


def test_a_line_naming_a_key_twice_is_refused_whole(cli: InProcess, tmp_path: Path):
    batch = tmp_path / "twice.jsonl"
    batch.write_text('{"queue": "dev", "title": "a"}\n{"queue": "dev", "title": "b", "queue": "qa"}\n')
    assert one_error_line(cli("submit", "--file", str(batch)), 2) == (
        f"sched: {batch}:2: the key 'queue' is given twice")


@pytest.mark.parametrize(("args", "said"), [
    (["requeue", "--all", "-q", "dev", "1"], "give task ids or --all --queue Q, not both"),
    (["status", "--watch", "--interval", "1e400"],
     "--interval must be at most 86400 seconds (a day), not inf"),
    (["replay", "--since", "99999999999999999999"],
     "--since: 99999999999999999999 is not a seq (at most 2**63 - 1)"),
], ids=["ids-and-all", "interval-infinite", "since-too-big"])
def test_a_refusal_says_what_was_given(run: Run, db: Path, args: list[str], said: str):
    before = file_digest(db)
    assert one_error_line(run(*args), 2) == f"sched: {said}"
    assert_unchanged(db, before)


@pytest.mark.parametrize(("args", "flag"), [
    (["init", "--home", ""], "--home"), (["init", "--db="], "--db"), (["init", "--home", " "], "--home"),
    (["status", "--agents", ""], "--agents"), (["submit", "--file", ""], "--file"),
    (["migrate", "--to", ""], "--to"), (["worker", "claim", "--agent", "ann", "--home="], "--home"),
    (["simulate", "--agents="], "--agents"), (["run", "--server-token-file", ""], "--server-token-file"),
], ids=["init-home", "init-db", "init-blank-home", "agents", "file", "migrate-to", "claim-home",
        "simulate-agents", "token-file"])
def test_an_empty_path_is_refused_not_taken_for_the_current_directory(tmp_path: Path, args: list[str],
                                                                       flag: str):
    """A path of '' is '.': `sched init --home "$DIR"` with DIR unset made a database in
    the current directory and said `created`. Each option that names a place refuses
    an empty (or blank) value before anything is read or made."""
    from tests.cli.conftest import sched_here

    here = tmp_path / "cwd"
    here.mkdir()
    line = one_error_line(sched_here(here, *args), 2)
    assert re.fullmatch(rf"sched: Invalid value for '{flag}': (empty|blank); give .+ "
                        r"\(is a variable unset\?\)", line), line
    assert list(here.iterdir()) == []


def test_a_value_spelled_like_an_empty_path_option_is_still_a_value(cli: InProcess, seeded: Path):
    """Only the option itself is checked: a title that reads `--home=` is a title."""
    done = one_json(ok(cli("submit", "-q", "dev", "-t", "--home=", "--json")))
    assert one_json(ok(cli("show", str(done["task_id"]), "--json")))["task"]["title"] == "--home="


# -- found by a fuzz of every command's input (2026-12-07) ------------------------------

def test_a_settings_file_nested_too_deeply_is_one_line(cli: InProcess, seeded: Path):
    """`exec_env_allowlist = [[[...]]]` 500 deep: every command ended in an internal
    error (RecursionError, exit 1)."""
    (seeded / "sched.toml").write_text("exec_env_allowlist = " + "[" * 500 + "]" * 500 + "\n")
    for args in (["config", "show"], ["status"]):
        assert one_error_line(cli(*args), 2) == f"sched: {seeded / 'sched.toml'}: nested too deeply to read"


@pytest.mark.parametrize(("gate", "says"), [
    (["\u0000"], "gate argument '\\x00': contains a NUL character"),
    ([""], "gate's first argument, the program to run, is empty"),
    ([], "gate must be a non-empty argv list")])
def test_a_gate_that_could_never_run_is_a_bad_setting(cli: InProcess, db: Path, gate: list[str], says: str):
    """A NUL in a gate's argument made every tick an internal error; an empty program
    closed the queue for good. Both are refused as an agent's command is."""
    (db.parent / "sched.toml").write_text(f"[queues.dev]\ngate = {json.dumps(gate)}\n")
    before = file_digest(db)
    for args in (["config", "show"], ["tick"]):
        line = one_error_line(cli(*args), 2)
        assert f"sched.toml: [queues.dev] gate: {says}" in line, line
    assert_unchanged(db, before)


def test_a_pipe_or_a_device_given_as_the_database_is_bad_input_not_a_disk_fault(cli: InProcess, db: Path,
                                                                                tmp_path: Path):
    """`init --db /dev/null` said `an I/O error ... check the disk` (exit 1) and left
    /dev/null-journal behind; `status --db FIFO` said there was no database."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for place in (fifo, Path("/dev/null")):
        for args in (["init"], ["status"], ["migrate", "--to"]):
            where = ["--db", str(place)] if args != ["migrate", "--to"] else [str(place)]
            line = one_error_line(cli(*args, *where), 2)
            said = f"sched: {place} is not a regular file (a pipe or a device, say), not a database file"
            assert line == said, (args, line)
    assert not Path("/dev/null-journal").exists() and not Path("/dev/null-lock").exists()


def test_the_server_and_its_token_are_checked_before_any_try(cli: InProcess, db: Path, tmp_path: Path):
    """An empty --server took the database instead (a claim made, exit 0); a URL with a
    space, or a token with a newline, was tried five times as a server away (exit 1 after
    7 s); a binary token file was an internal error."""
    before = file_digest(db)
    claim = ("worker", "claim", "--agent", "ann")
    assert one_error_line(cli(*claim, "--server", ""), 2) == (
        "sched: Invalid value for '--server': empty; give the server's http:// or https:// URL (is a "
        "variable unset?)")
    assert one_error_line(cli(*claim, "--server", "http://a b", env={"SCHED_TOKEN": "t"}), 2) == (
        "sched: --server must be an http:// or https:// URL, not 'http://a b'")
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe\x00binary")
    assert one_error_line(cli(*claim, "--server", "http://127.0.0.1:9", "--server-token-file", str(token)),
                          2) == f"sched: {token} holds no token (it is not text)"
    line = one_error_line(cli(*claim, "--server", "http://127.0.0.1:9", env={"SCHED_TOKEN": "a\nb"}), 2)
    assert line.startswith("sched: $SCHED_TOKEN holds no token: a token is one word of printable ASCII")
    assert_unchanged(db, before)


@pytest.mark.parametrize("host", [" ", " x", "a\nb"])
def test_a_host_token_for_a_host_no_runner_could_act_as_is_refused(cli: InProcess, db: Path, host: str):
    """`tick --host`, `SCHED_HOST` and the control file refused such a name; `tokens
    create --host` recorded a token for it."""
    before = file_digest(db)
    line = one_error_line(cli("tokens", "create", "--name", "runner", "--host", host), 2)
    assert line.startswith("sched: --host: must name a host"), line
    assert_unchanged(db, before)


def test_a_huge_terminal_width_is_held_to_a_screens(cli: InProcess, db: Path):
    """COLUMNS=2147483648 padded each row of `sched tasks` to that width until the
    memory ran out (killed at 24 GB)."""
    out = ok(cli("tasks", env={"COLUMNS": "2147483648"})).stdout
    assert "seed task" in out and max(map(len, out.splitlines())) <= 1000


# -- what the fuzz left as doubts (2026-12-07, later) -----------------------------------

@pytest.mark.parametrize(("args", "flag"), [
    (["tokens", "create", "--name", "z", "--role", "reader", "--role", "operator"], "'--role'"),
    (["cancel", "1", "--reason", "a", "--reason=b"], "'--reason'"),
    (["submit", "--queue", "dev", "-q", "qa", "--title", "t"], "'--queue' / '-q'"),
], ids=["role", "reason", "queue-short-and-long"])
def test_an_option_given_twice_is_refused_not_the_last_one_taken(run: Run, db: Path, args: list[str],
                                                                  flag: str):
    """Click keeps the last of two values without a word: `--role reader --role
    operator` made an operator's token."""
    before = file_digest(db)
    assert one_error_line(run(*args), 2) == f"sched: Invalid value for {flag}: given twice: give it once"
    assert_unchanged(db, before)


def test_help_is_shown_even_beside_an_option_given_twice(cli: InProcess):
    assert "--reason" in ok(cli("cancel", "--reason", "a", "--reason", "b", "--help")).stdout


def test_flags_and_options_meant_to_repeat_may_be_given_again(cli: InProcess, db: Path):
    assert one_json(ok(cli("status", "--json", "--json")))["queues"] is not None
    line = one_error_line(cli("simulate", "--set", "max_attempts=2", "--set", "nope=1"), 2)
    assert "nope" in line  # the second --set was read, not refused as given twice


@pytest.mark.parametrize("args", [["pause", "--reason", " "], ["cancel", "1", "--reason", ""],
                                  ["agents", "drain", "ann", "--reason", "\t"]],
                         ids=["pause", "cancel", "drain"])
def test_a_blank_reason_is_refused_not_recorded(run: Run, db: Path, args: list[str]):
    """As a blank `--error` or `--by`: the audit trail would say "why: (blank)"."""
    before = file_digest(db)
    line = one_error_line(run(*args), 2)
    assert line.endswith("reason: blank: say why, or leave the reason out"), line
    assert_unchanged(db, before)


@pytest.mark.parametrize("args", [["--db", "{file}/x.db"], ["--db", "{file}/deeper/x.db"],
                                  ["--home", "{file}"]],
                         ids=["db-in-a-file", "db-below-a-file", "home-a-file"])
def test_init_where_a_file_stands_in_the_path_says_so(cli: InProcess, tmp_path: Path, args: list[str]):
    """Python said only `FILE: File exists`."""
    in_the_way = tmp_path / "plain"
    in_the_way.write_text("a file, not a directory\n")
    given = [arg.format(file=in_the_way) for arg in args]
    line = one_error_line(cli("init", *given), 2)
    made = f"{'the home ' if given[0] == '--home' else ''}{given[1]}"
    assert line == f"sched: cannot make {made}: a file stands where a directory of its path should be"
    assert in_the_way.read_text() == "a file, not a directory\n"


@pytest.mark.parametrize("table", ["", "[queues.dev]\n"], ids=["top-level", "queue-table"])
def test_a_boolean_for_a_number_in_sched_toml_is_refused(cli: InProcess, seeded: Path, table: str):
    """`max_attempts = true` was read as 1 attempt."""
    (seeded / "sched.toml").write_text(f"{table}max_attempts = true\n")
    where = "[queues.dev] " if table else ""
    assert one_error_line(cli("config", "show"), 2) == (
        f"sched: {seeded / 'sched.toml'}: {where}max_attempts: true is a boolean, not a number")


@pytest.mark.parametrize("change", ["max_attempts=true", "queues.dev.max_attempts=false"])
def test_a_boolean_for_a_number_in_a_what_if_is_refused(cli: InProcess, db: Path, change: str):
    """`simulate --set max_attempts=true` ran the what-if with 1 attempt (a review)."""
    value = change.partition("=")[2]
    assert one_error_line(cli("simulate", "--set", change), 2) == (
        f"sched: --set {change!r}: {value} is a boolean, not a number")
