"""`${VAR}` in sched.toml as a user meets it: `config show` names the variables and
never prints a secret it filled in; an unset variable stops a command in one line."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import FLEET, InProcess, ok, one_error_line, write_control

TOML = ('database_url = "postgresql://sched:${PGPASSWORD}@${PGHOST:-db.internal}/sched"\n'
        '[[webhooks]]\nurl = "https://hooks.example/in/${HOOK_TOKEN}"\nevents = ["task.failed"]\n')
ENV = {"PGPASSWORD": "pg-s3cret", "HOOK_TOKEN": "hook-s3cret"}


def test_config_show_names_the_variables_and_masks_the_secrets(tmp_path: Path, cli: InProcess):
    write_control(tmp_path, FLEET)
    (tmp_path / "sched.toml").write_text(TOML)
    result = ok(cli("config", "show", "--json", env=ENV))
    assert "s3cret" not in result.stdout + result.stderr
    settings = json.loads(result.stdout)["settings"]
    assert settings["database_url"] == {
        "value": "postgresql://sched:***@db.internal/sched", "source": "sched.toml",
        "variables": ["PGPASSWORD"]}
    assert settings["webhooks"] == {
        "value": [{"url": "https://hooks.example/in/***", "events": ["task.failed"]}],
        "source": "sched.toml", "variables": ["HOOK_TOKEN"]}
    assert "variables" not in settings["lease_seconds"]

    text = ok(cli("config", "show", env={**ENV, "COLUMNS": "400"}))
    assert "s3cret" not in text.stdout + text.stderr
    assert "${HOOK_TOKEN}" in text.stdout and "https://hooks.example/in/***" in text.stdout


def test_config_show_writes_values_as_the_docs_and_sched_toml_do(tmp_path: Path, cli: InProcess):
    """The table printed Python's None, True and {'url': ...}; the docs say none and true."""
    write_control(tmp_path, FLEET)
    (tmp_path / "sched.toml").write_text(TOML)
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in ok(cli("config", "show", env={**ENV, "COLUMNS": "400"})).stdout.splitlines()
            if line.count("│") == 4}
    assert (rows["agent_control_file"], rows["postgres_prepared_statements"], rows["synchronous"]) == (
        "none", "true", "NORMAL")
    webhooks = [{"url": "https://hooks.example/in/***", "events": ["task.failed"]}]
    assert json.loads(rows["webhooks"]) == webhooks


def test_an_unset_variable_exits_2_naming_it(tmp_path: Path, cli: InProcess):
    write_control(tmp_path, FLEET)
    (tmp_path / "sched.toml").write_text(TOML)
    for args in (["config", "show", "--json"], ["status"]):
        line = one_error_line(cli(*args, env={"HOOK_TOKEN": "x"}), 2)
        assert "database_url: environment variable PGPASSWORD is not set" in line


def test_webhook_deliveries_never_print_a_secret_filled_into_their_url(tmp_path: Path, cli: InProcess):
    """The outbox keeps the URL it POSTs to; `webhooks deliver` and `webhooks list` show
    it as sched.toml wrote it, what came from the environment masked."""
    write_control(tmp_path, FLEET)
    # port 9 (discard): nothing listens there, so every POST fails at once
    (tmp_path / "sched.toml").write_text('[[webhooks]]\nurl = "http://127.0.0.1:9/in/${HOOK_TOKEN}?k=1"\n'
                                         'events = ["task.failed"]\n')
    env = {"HOOK_TOKEN": "hook-s3cret"}
    ok(cli("init", env=env))
    ok(cli("webhooks", "deliver", env=env))  # from here on, events are sent (not the history)
    ok(cli("submit", "-q", "qa", "-t", "t", env=env))
    ok(cli("tick", env=env))
    claimed = json.loads(ok(cli("worker", "claim", "--agent", "qin", "--json", env=env)).stdout)["task"]
    ok(cli("worker", "fail", str(claimed["task_id"]), "--token", claimed["token"], "--error", "no",
           "--no-retry", env=env))
    shown = "http://127.0.0.1:9/in/***?k=1"
    delivered = ok(cli("webhooks", "deliver", "--json", env=env))
    assert [item["url"] for item in json.loads(delivered.stdout)["failed"]] == [shown]
    listed = ok(cli("webhooks", "list", "--json", env=env))
    assert [row["url"] for row in json.loads(listed.stdout)["deliveries"]] == [shown]
    text = ok(cli("webhooks", "list", env={**env, "COLUMNS": "400"}))
    for result in (delivered, listed, text):
        assert "s3cret" not in result.stdout + result.stderr
    assert shown in text.stdout


def test_a_check_across_settings_names_where_each_value_came_from(tmp_path: Path, cli: InProcess):
    """Thresholds out of order: the line names the source of each setting involved
    that was set (the variable, the file), not sched.toml for a value it does not hold."""
    write_control(tmp_path, FLEET)
    env = {"SCHED_HEALTH_BACKLOG_UNHEALTHY": "10"}
    assert one_error_line(cli("status", env=env), 2) == (
        "sched: setting SCHED_HEALTH_BACKLOG_UNHEALTHY: health_backlog_unhealthy (10) is below "
        "health_backlog_degraded (1000)")
    (tmp_path / "sched.toml").write_text("health_backlog_degraded = 5000\n")
    assert one_error_line(cli("status", env=env), 2) == (
        f"sched: setting {tmp_path / 'sched.toml'}, SCHED_HEALTH_BACKLOG_UNHEALTHY: health_backlog_unhealthy "
        "(10) is below health_backlog_degraded (5000)")


def test_config_show_never_prints_a_webhooks_secret(tmp_path: Path, cli: InProcess):
    """Written in sched.toml as it is, not only through `${VAR}`."""
    write_control(tmp_path, FLEET)
    (tmp_path / "sched.toml").write_text('[[webhooks]]\nurl = "https://hooks.example/in"\n'
                                         'events = ["task.failed"]\nsecret = "a-secret-of-enough-length"\n')
    shown = ok(cli("config", "show", "--json"))
    assert json.loads(shown.stdout)["settings"]["webhooks"]["value"] == [
        {"url": "https://hooks.example/in", "events": ["task.failed"], "secret": "***"}]
    text = ok(cli("config", "show", env={"COLUMNS": "400"}))
    assert "a-secret" not in shown.stdout + text.stdout + text.stderr and '"secret": "***"' in text.stdout
