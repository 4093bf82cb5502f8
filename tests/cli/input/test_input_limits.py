"""What the log cannot carry is refused at the door (exit 2, one line, nothing
appended): text that is not valid Unicode, JSON numbers that are not finite, nesting
too deep, sizes over the configured limits, loosely typed JSONL fields. Run in-process
(`cli` fixture), on a home initialised through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.conftest import FLEET, InProcess, event_count, one_error_line, write_control

SURROGATE = "bad \udc80 byte"  # how Python hands an undecodable argv byte to the program


@pytest.fixture
def home(cli: InProcess, tmp_path: Path) -> Path:
    write_control(tmp_path, FLEET)
    assert cli("init").returncode == 0
    assert cli("submit", "--queue", "dev", "--title", "seed").returncode == 0
    return tmp_path


def refused(cli: InProcess, home: Path, *args: str, env: dict[str, str] | None = None,
            stdin: bytes | None = None) -> str:
    before = event_count(home / "sched.db")
    line = one_error_line(cli(*args, env=env, stdin=stdin), 2)
    assert event_count(home / "sched.db") == before
    assert "\udc80" not in line and "\x1b" not in line
    return line


DEEP = "[" * 100 + "]" * 100
ABYSS = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(("extra", "named"), [
    (["--title", SURROGATE], r"--title: .*not valid Unicode"),
    (["--title", "x" * 1025], r"title.*1025 bytes, over the limit of 1024"),
    (["--title", "\u20ac" * 342], r"title.*1026 bytes, over the limit of 1024"),  # 3 bytes each
    (["--title", "ok", "--payload", '"\\ud800"'], r"--payload.*not valid Unicode"),
    (["--title", "ok", "--payload", '{"k\\udc80": 1}'], r"--payload.*not valid Unicode"),
    (["--title", "ok", "--payload", "1e400"], r"--payload.*out of range"),
    (["--title", "ok", "--payload", '{"x": [-1e999]}'], r"--payload.*out of range"),
    (["--title", "ok", "--payload", "Infinity"], r"--payload.*Infinity is not valid JSON"),
    (["--title", "ok", "--payload", DEEP], r"--payload.*nested deeper than 64"),
    (["--title", "ok", "--payload", ABYSS], r"--payload.*nested deeper than 64"),
    (["--title", "ok", "--payload", json.dumps("x" * 200)], r"payload.*over the limit of 100"),
    (["--title", "ok", "--payload", "9" * 5000], r"--payload: a number of 5000 digits is too long"),
    (["--title", "ok", "--assignee", SURROGATE], r"--assignee: .*not valid Unicode"),
    (["--title", "ok", "--idempotency-key", SURROGATE], r"--idempotency-key: .*not valid Unicode"),
], ids=["title-surrogate", "title-size", "title-size-in-bytes", "payload-escaped-surrogate",
        "payload-key-surrogate", "payload-overflow", "payload-negative-overflow", "payload-infinity",
        "payload-deep", "payload-abyss", "payload-size", "payload-long-number", "assignee-surrogate",
        "key-surrogate"])
def test_a_submit_the_log_could_not_carry_is_refused(cli: InProcess, home: Path, extra, named):
    line = refused(cli, home, "submit", "--queue", "dev", *extra, env={"SCHED_MAX_PAYLOAD_BYTES": "100"})
    assert re.search(named, line), line


@pytest.mark.parametrize(("line", "named"), [
    ('{"queue": "dev", "title": "t", "priority": "5"}', r"stdin:2: priority: .*valid integer"),
    ('{"queue": "dev", "title": "t", "max_attempts": 2.0}', r"max_attempts: Input should be a valid integer"),
    ('{"queue": "dev", "title": "t", "requires_approval": 1}', r"requires_approval: .*valid boolean"),
    ('{"queue": "dev", "title": 5}', r"title: Input should be a valid string"),
    ('{"queue": "dev", "title": "t", "after": ["1"]}', r"after.0: Input should be a valid integer"),
    ('{"queue": "dev", "title": "\\udc80"}', r"stdin:2: .*not valid Unicode"),
    ('{"queue": "dev", "title": "t", "payload": 1e400}', r"stdin:2: .*out of range"),
], ids=["int-as-string", "int-as-float", "bool-as-int", "title-as-int", "after-as-strings", "surrogate",
        "overflow"])
def test_jsonl_fields_are_as_strict_as_the_control_file(cli: InProcess, home: Path, line, named):
    batch = ('{"queue": "dev", "title": "fine"}\n' + line + "\n").encode()
    message = refused(cli, home, "submit", "--file", "-", stdin=batch)
    assert re.search(named, message), message


def test_a_batch_on_standard_input_is_submitted(cli: InProcess, home: Path):
    batch = b'{"queue": "dev", "title": "a"}\n{"queue": "qa", "title": "b", "priority": 2}\n'
    result = cli("submit", "--file", "-", "--json", stdin=batch)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"task_ids": [2, 3], "created": 2}


def test_a_worker_report_the_log_could_not_carry_is_refused(cli: InProcess, home: Path):
    claim = json.loads(cli("worker", "claim", "--agent", "ann", "--json").stdout)["task"]
    token = claim["token"]
    task = str(claim["task_id"])
    for args, named in (
        (["complete", task, "--token", token, "--result", '{"x": "\\udfff"}'], "--result"),
        (["complete", task, "--token", token, "--result", '{"x": NaN}'], "--result"),
        (["complete", task, "--token", token, "--result", "[" * 70 + "]" * 70], "nested"),
        (["complete", task, "--token", token, "--result", json.dumps("y" * 200)], "result: is"),
        (["fail", task, "--token", token, "--error", SURROGATE], "error"),
        (["fail", task, "--token", token, "--error", "e" * 5000], "over the limit of 4096"),
        (["progress", task, "--token", token, "--message", SURROGATE], "--message"),
        (["progress", task, "--token", token, "--message", "  "], "--message must say what"),
        (["heartbeat", task, "--token", token, "--message", ""], "--message must say what"),
    ):
        line = refused(cli, home, "worker", *args, env={"SCHED_MAX_PAYLOAD_BYTES": "100"})
        assert named in line, line
    done = cli("worker", "complete", task, "--token", token, "--result", '{"ok": 1.5e300}', "--json")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("args", [
    ["pause", "--by", SURROGATE], ["pause", "--reason", SURROGATE],
    ["cancel", "1", "--reason", SURROGATE], ["agents", "drain", "ann", "--by", SURROGATE],
], ids=["pause-by", "pause-reason", "cancel-reason", "drain-by"])
def test_operator_words_the_log_could_not_carry_are_refused(cli: InProcess, home: Path, args):
    assert "not valid Unicode" in refused(cli, home, *args)


@pytest.mark.parametrize(("entry", "named"), [
    ('"maxConcurrency": 1e400', "agent #1: maxConcurrency"),
    ('"maxConcurrency": 99999999999999999999999', "agent #1: maxConcurrency"),
    ('"timeoutSeconds": 1e400', "agent #1: timeoutSeconds"),
    ('"timeoutSeconds": -1e400', "agent #1: timeoutSeconds"),
    ('"nonRetryableExitCodes": [99999999999999999999999]', "agent #1: nonRetryableExitCodes"),
    ('"agentName": "a\\ud800"', "agent #1: agentName"),
], ids=["capacity-overflow", "capacity-huge", "timeout-overflow", "timeout-negative-overflow",
        "exit-code-huge", "name-surrogate"])
def test_numbers_out_of_range_in_the_control_file_are_named(cli: InProcess, home: Path, entry, named):
    path = home / "agent-control.json"
    fields = {"agentName": '"ann"', "agentType": '"dev"'}
    key = entry.split(":")[0].strip('"')
    fields[key] = entry.split(":", 1)[1].strip()
    path.write_text("[{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}]")
    result = cli("agents", "validate", "--json")
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert str(path) in error and named in error, error
    line = refused(cli, home, "tick", "--json")
    assert named in line
