"""`sched tokens`: a token is printed once and only its hash is kept; names are unique
among live tokens; each change is an event; bad input appends nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.tokens import hash_token
from tests.cli.conftest import InProcess, write_control


def events(cli: InProcess) -> list[dict]:
    return [json.loads(line) for line in cli("replay", "--json").stdout.splitlines() if line.strip()]


@pytest.fixture
def ready(cli: InProcess, home: Path) -> InProcess:
    assert cli("init").returncode == 0
    return cli


def one_line_exit_2(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sched: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_create_prints_the_token_once_and_records_only_its_hash(ready: InProcess, home: Path):
    made = ready("tokens", "create", "--name", "ops", "--role", "operator", "--by", "kim")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("sched_") and len(token) > 40
    (created,) = [e for e in events(ready) if e["type"] == "TokenCreated"]
    assert created["data"] == {"name": "ops", "role": "operator", "agent": None, "host": None,
                               "token_hash": hash_token(token), "by": "kim"}
    assert not any(token.encode() in p.read_bytes() for p in home.glob("sched.db*"))
    listed = json.loads(ready("tokens", "list", "--json").stdout)["tokens"]
    assert [(t["name"], t["role"], t["created_by"]) for t in listed] == [("ops", "operator", "kim")]
    assert "token" not in listed[0] and token not in ready("tokens", "list").stdout


def test_an_agent_token_names_a_known_agent(ready: InProcess):
    doc = json.loads(ready("tokens", "create", "--name", "ann-box", "--agent", "ann", "--json").stdout)
    assert (doc["role"], doc["agent"]) == ("agent", "ann") and doc["token"].startswith("sched_")
    line = one_line_exit_2(ready("tokens", "create", "--name", "x", "--agent", "nobody"))
    assert "unknown agent 'nobody'" in line


@pytest.mark.parametrize("args, says", [
    (["--name", "x"], "give one of --agent A, --host H or --role"),
    (["--name", "x", "--role", "reader", "--agent", "ann"], "give one of --agent A, --host H or --role"),
    (["--name", "x", "--role", "admin"], "--role 'admin'"),
    (["--name", "two words", "--role", "reader"], "a token name is"),
    (["--name", "", "--role", "reader"], "a token name is"),
    (["--name", "x", "--role", "reader", "--by", "a\x00b"], "--by"),
    (["--name", "h1", "--host", ""], "sched: --host '': a host name is 1 to 255 characters, not 0"),
    (["--name", "h1", "--host", "h" * 256], "a host name is 1 to 255 characters, not 256"),
])
def test_bad_input_is_one_line_exit_2_and_appends_nothing(ready: InProcess, args, says):
    before = len(events(ready))
    assert says in one_line_exit_2(ready("tokens", "create", *args))
    assert len(events(ready)) == before


def test_names_are_unique_among_live_tokens_and_free_again_after_a_revoke(ready: InProcess):
    first = ready("tokens", "create", "--name", "ci", "--role", "submitter").stdout.strip()
    before = len(events(ready))
    assert "already named 'ci'" in one_line_exit_2(ready("tokens", "create", "--name", "ci",
                                                         "--role", "reader"))
    assert len(events(ready)) == before
    revoked = json.loads(ready("tokens", "revoke", "ci", "--by", "kim", "--json").stdout)
    assert (revoked["name"], revoked["revoked_by"]) == ("ci", "kim") and revoked["revoked_at"]
    assert events(ready)[-1]["type"] == "TokenRevoked"
    second = ready("tokens", "create", "--name", "ci", "--role", "reader").stdout.strip()
    assert second != first
    live = json.loads(ready("tokens", "list", "--json").stdout)["tokens"]
    assert [(t["name"], t["role"]) for t in live] == [("ci", "reader")]
    every = json.loads(ready("tokens", "list", "--all", "--json").stdout)["tokens"]
    assert [(t["name"], t["role"], t["revoked_at"] is None) for t in every] == [
        ("ci", "submitter", False), ("ci", "reader", True)]


def test_revoking_an_unknown_token_is_refused_and_appends_nothing(ready: InProcess):
    before = len(events(ready))
    assert "no live token named 'ghost'" in one_line_exit_2(ready("tokens", "revoke", "ghost"))
    assert len(events(ready)) == before


def test_token_rows_are_rebuilt_from_the_log(ready: InProcess):
    ready("tokens", "create", "--name", "a", "--role", "reader")
    ready("tokens", "create", "--name", "b", "--role", "operator")
    ready("tokens", "revoke", "a")
    assert ready("replay", "--verify").returncode == 0
    before = ready("tokens", "list", "--all", "--json").stdout
    assert ready("rebuild").returncode == 0
    assert ready("tokens", "list", "--all", "--json").stdout == before


def test_tokens_need_an_initialized_home(cli: InProcess, tmp_path: Path):
    write_control(tmp_path, [])
    result = cli("tokens", "list")
    assert result.returncode != 0 and "Traceback" not in result.stderr


def test_a_host_token_is_for_one_host_and_says_so(ready: InProcess):
    made = ready("tokens", "create", "--name", "gpu-runner", "--host", "gpu-1", "--json")
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert (doc["role"], doc["host"], doc["agent"]) == ("host", "gpu-1", None)
    listed = ready("tokens", "list").stdout
    assert "gpu-runner" in listed and "gpu-1" in listed
    line = one_line_exit_2(ready("tokens", "create", "--name", "x", "--host", "gpu-1", "--role", "reader"))
    assert line == "sched: give one of --agent A, --host H or --role operator|submitter|reader"
    # the longest host name the host API takes
    longest = ready("tokens", "create", "--name", "longest", "--host", "h" * 255, "--json")
    assert json.loads(longest.stdout)["host"] == "h" * 255
