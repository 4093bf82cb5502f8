"""Settings: defaults < sched.toml < environment < flags, each with its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventlog.errors import BadInput
from scheduler.config.settings import load_settings


def test_defaults(tmp_path):
    loaded = load_settings({}, {"home": tmp_path})
    assert loaded.settings.lease_seconds == 300
    assert loaded.settings.db_path == tmp_path / "sched.db"
    assert loaded.sources["lease_seconds"] == "default"
    assert loaded.sources["home"] == "flag"


def test_layers_override_in_order(tmp_path):
    (tmp_path / "sched.toml").write_text("lease_seconds = 60\nmax_attempts = 5\nsynchronous = 'FULL'\n")
    env = {"SCHED_HOME": str(tmp_path), "SCHED_MAX_ATTEMPTS": "7"}
    loaded = load_settings(env, {"db": tmp_path / "x.db"})
    s = loaded.settings
    assert (s.lease_seconds, s.max_attempts, s.synchronous, s.db_path) == (60, 7, "FULL", tmp_path / "x.db")
    assert loaded.sources["lease_seconds"] == "sched.toml"
    assert loaded.sources["max_attempts"] == "environment"
    assert loaded.sources["db"] == "flag"
    assert loaded.sources["home"] == "environment"


@pytest.mark.parametrize(("toml", "env", "problem"), [
    ("", {"SCHED_LEASE_SECONDS": "abc"}, "SCHED_LEASE_SECONDS"),
    ("", {"SCHED_SYNCHRONOUS": "SOMETIMES"}, "SCHED_SYNCHRONOUS"),
    ("leese_seconds = 3\n", {}, "unknown setting 'leese_seconds'"),
    ("lease_seconds = \n", {}, "sched.toml"),
    ("max_attempts = 0\n", {}, "max_attempts"),
    ("", {"SCHED_QUEUES": "{}"}, r"SCHED_QUEUES: per-queue settings are \[queues.NAME\] tables in "
                                 r"sched.toml, which the environment cannot set \(unset SCHED_QUEUES\)"),
    ("", {"SCHED_WEBHOOKS": "[]"}, r"SCHED_WEBHOOKS: webhooks are \[\[webhooks\]\] tables in sched.toml"),
    # a host name that no control file's `host` and no host token could ever match
    ("", {"SCHED_HOST": " "}, "SCHED_HOST: must name a host, not be blank"),
    ('host = "web-1 "\n', {}, "host: must name a host without spaces around it: 'web-1 '"),
])
def test_bad_settings_name_where_they_came_from(tmp_path: Path, toml, env, problem):
    (tmp_path / "sched.toml").write_text(toml)
    with pytest.raises(BadInput, match=problem):
        load_settings(env, {"home": tmp_path})


def test_a_sched_toml_that_is_no_file_is_refused_not_ignored(tmp_path):
    (tmp_path / "sched.toml").mkdir()  # its settings were taken for none: every default in force
    with pytest.raises(BadInput, match=r"sched\.toml: not a file; sched reads its settings from a TOML file"):
        load_settings({}, {"home": tmp_path})


def test_a_db_given_above_database_url_wins_over_it(tmp_path):
    """`replay --verify --db backups/sched.db` where sched.toml sets database_url checked
    the live database, and said it verified."""
    (tmp_path / "sched.toml").write_text('database_url = "postgresql://sched@db/live"\n'
                                         'database_listen_url = "postgresql://sched@db:5432/live"\n')
    live = load_settings({}, {"home": tmp_path})
    assert live.settings.database == "postgresql://sched@db/live"  # in the same file, it wins over db
    backup = load_settings({}, {"home": tmp_path, "db": str(tmp_path / "backup.db")})
    assert backup.settings.database == tmp_path / "backup.db"
    assert backup.settings.database_listen_url is None  # (it listened on the live database)
    assert (backup.sources["db"], backup.sources["database_url"]) == ("flag", "default")
    from_env = load_settings({"SCHED_DB": "postgresql://sched@db/copy"}, {"home": tmp_path})
    assert from_env.settings.database == "postgresql://sched@db/copy"
    (tmp_path / "sched.toml").write_text('db = "sched.db"\n')
    above = load_settings({"SCHED_DATABASE_URL": "postgresql://sched@db/live"}, {"home": tmp_path})
    assert above.settings.database == "postgresql://sched@db/live"


def test_relative_paths_in_sched_toml_are_relative_to_home(tmp_path):
    (tmp_path / "sched.toml").write_text('db = "data/x.db"\nagent_control_file = "fleet.json"\n')
    s = load_settings({}, {"home": tmp_path}).settings
    assert s.db_path == tmp_path / "data" / "x.db"
    assert s.agent_control_file == tmp_path / "fleet.json"


def test_home_cannot_be_set_in_the_file_found_through_it(tmp_path):
    (tmp_path / "sched.toml").write_text('home = "/elsewhere"\n')
    with pytest.raises(BadInput, match=r"'home' cannot be set in sched\.toml"):
        load_settings({}, {"home": tmp_path})


def test_webhook_tables(tmp_path):
    (tmp_path / "sched.toml").write_text(
        '[[webhooks]]\nurl = "https://hooks.example/sched"\nevents = ["task.dead_lettered"]\n'
        '[[webhooks]]\nurl = "http://10.0.0.5:8080/in"\nevents = ["task.failed", "health.changed"]\n')
    hooks = load_settings({}, {"home": tmp_path}).settings.webhooks
    assert [(h.url, h.events) for h in hooks] == [
        ("https://hooks.example/sched", ["task.dead_lettered"]),
        ("http://10.0.0.5:8080/in", ["task.failed", "health.changed"])]


@pytest.mark.parametrize(("table", "problem"), [
    ('url = "ftp://x.example/"\nevents = ["task.failed"]', r"webhooks #2 url: the scheme 'ftp' is not http"),
    ('url = "http:///path"\nevents = ["task.failed"]', r"webhooks #2 url: the URL names no host"),
    # (every delivery of these failed, each retried)
    ('url = "http://x y/in"\nevents = ["task.failed"]', r"webhooks #2 url: the URL holds a space"),
    ('url = "http://x.example/\\u001b[2J"\nevents = ["task.failed"]',
     r"webhooks #2 url: the URL holds a space or a control character"),
    ('url = "https://x.example/"\nevents = []', r"webhooks #2 events: List should have at least 1"),
    ('url = "https://x.example/"\nevents = ["task.done"]', r"webhooks #2 events #1: Input should be"),
    ('url = "https://x.example/"', r"webhooks #2 events: Field required"),
    ('url = "https://x.example/"\nevents = ["task.failed"]\ntoken = "s"', r"webhooks #2 token: Extra"),
    ('url = "https://x.example/"\nevents = ["task.failed"]\nsecret = "s"',
     r"webhooks #2 secret: String should have at least 16 characters"),
])
def test_a_bad_webhook_table_is_named_by_its_position(tmp_path: Path, table: str, problem: str):
    good = '[[webhooks]]\nurl = "https://ok.example/"\nevents = ["task.failed"]\n'
    (tmp_path / "sched.toml").write_text(f"{good}[[webhooks]]\n{table}\n")
    with pytest.raises(BadInput, match=rf"sched\.toml: {problem}"):
        load_settings({}, {"home": tmp_path})


def test_a_bad_webhook_url_never_shows_what_came_from_the_environment(tmp_path: Path):
    """A typo in the scheme of a URL whose path holds a secret from the environment: the
    line every command then prints (cron mail, journald) names the problem only."""
    (tmp_path / "sched.toml").write_text('[[webhooks]]\nurl = "${HOOK_URL}"\nevents = ["task.failed"]\n')
    with pytest.raises(BadInput) as refused:
        load_settings({"HOOK_URL": "htps://hooks.example.com/services/T0/B0/SECRETXYZ"}, {"home": tmp_path})
    assert "SECRETXYZ" not in refused.value.message and "the scheme 'htps'" in refused.value.message


# -- ${VAR} in sched.toml ------------------------------------------------------------------

def test_variables_in_sched_toml_are_filled_in_from_the_environment(tmp_path):
    (tmp_path / "sched.toml").write_text(
        'lease_seconds = "${LEASE:-90}"\nmax_attempts = "${ATTEMPTS}"\n'
        'agent_control_file = "${FLEET_DIR}/fleet.json"\n'
        '[[webhooks]]\nurl = "https://hooks.example/in/${HOOK_TOKEN}?x=${UNSET:-1}"\n'
        'events = ["task.failed"]\n')
    env = {"ATTEMPTS": "6", "FLEET_DIR": "/etc/sched", "HOOK_TOKEN": "s3cret"}
    loaded = load_settings(env, {"home": tmp_path})
    s = loaded.settings
    assert (s.lease_seconds, s.max_attempts) == (90, 6)  # the default; the variable
    assert s.agent_control_file == Path("/etc/sched/fleet.json")
    assert s.webhooks[0].url == "https://hooks.example/in/s3cret?x=1"
    assert loaded.sources["max_attempts"] == "sched.toml"
    assert loaded.variables == {"max_attempts": ["ATTEMPTS"], "agent_control_file": ["FLEET_DIR"],
                                "webhooks": ["HOOK_TOKEN"]}
    assert loaded.masked == {"webhooks": [{"url": "https://hooks.example/in/***?x=1",
                                           "events": ["task.failed"]}]}


def test_an_empty_variable_counts_as_unset_and_a_set_one_wins_over_the_default(tmp_path):
    (tmp_path / "sched.toml").write_text('synchronous = "${SYNC:-FULL}"\n')
    assert load_settings({"SYNC": ""}, {"home": tmp_path}).settings.synchronous == "FULL"
    assert load_settings({"SYNC": "OFF"}, {"home": tmp_path}).settings.synchronous == "OFF"


def test_dollar_dollar_brace_is_a_literal_and_other_dollars_are_kept(tmp_path):
    (tmp_path / "sched.toml").write_text(
        'exec_env_allowlist = ["$${NOT_A_VAR}", "$HOME", "a$b", "$$", "${NAME}"]\n')
    allow = load_settings({"NAME": "PATH"}, {"home": tmp_path}).settings.exec_env_allowlist
    assert allow == ["${NOT_A_VAR}", "$HOME", "a$b", "$$", "PATH"]


def test_an_unset_variable_without_a_default_is_named_in_one_line(tmp_path):
    (tmp_path / "sched.toml").write_text(
        '[[webhooks]]\nurl = "https://hooks.example/${HOOK_TOKEN}"\nevents = ["task.failed"]\n')
    with pytest.raises(BadInput) as caught:
        load_settings({"OTHER": "x"}, {"home": tmp_path})
    text = caught.value.message
    assert "\n" not in text
    assert text.startswith(f"{tmp_path / 'sched.toml'}: webhooks #1 url: environment variable "
                           "HOOK_TOKEN is not set")


@pytest.mark.parametrize("value", ["${}", "${1X}", "${OPEN", "${A:-${B}}", "${A:=x}"])
def test_a_malformed_substitution_is_refused(tmp_path, value):
    (tmp_path / "sched.toml").write_text(f'synchronous = "{value}"\n')
    with pytest.raises(BadInput, match=r"synchronous: cannot read '\$\{.*write \$\{NAME\}"):
        load_settings({"A": "FULL", "B": "OFF"}, {"home": tmp_path})


def test_the_environment_layer_is_not_substituted(tmp_path):
    """`SCHED_*` values are taken as they are: the shell that sets them expands."""
    with pytest.raises(BadInput, match="SCHED_SYNCHRONOUS"):
        load_settings({"SCHED_SYNCHRONOUS": "${SYNC}", "SYNC": "FULL"}, {"home": tmp_path})


def test_a_setting_overridden_by_the_environment_needs_no_variable_of_its_toml_value(tmp_path):
    (tmp_path / "sched.toml").write_text('lease_seconds = "${LEASE}"\n')
    loaded = load_settings({"SCHED_LEASE_SECONDS": "30"}, {"home": tmp_path})
    assert (loaded.settings.lease_seconds, loaded.sources["lease_seconds"]) == (30, "environment")
    assert loaded.variables == {}
    with pytest.raises(BadInput, match="environment variable LEASE is not set"):
        load_settings({}, {"home": tmp_path})


def test_a_database_password_is_masked_in_the_user_part_and_in_the_query():
    from eventlog.storage import redact

    assert redact("postgresql://u:pw@db-1:5432/sched") == "postgresql://u:***@db-1:5432/sched"
    assert redact("postgresql://u@db-1/sched?sslmode=require&password=pw") == (
        "postgresql://u@db-1/sched?sslmode=require&password=***")
    assert redact("postgresql:///sched?host=/run/pg&sslpassword=k") == (
        "postgresql:///sched?host=/run/pg&sslpassword=***")
    assert redact("postgresql:///sched?host=/run/pg") == "postgresql:///sched?host=/run/pg"  # as given
    assert redact("/srv/sched/sched.db") == "/srv/sched/sched.db"
