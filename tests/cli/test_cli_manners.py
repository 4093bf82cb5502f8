"""The CLI behaves like a well-kept CLI: --version and -h, numbers in range, a home
that must exist, warnings for queue tables no agent serves, Ctrl-C without a
traceback, readable at 80 columns, and a claim that could not be printed gives its
attempt back at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import (
    FLEET,
    InProcess,
    cli_env,
    event_count,
    ok,
    one_error_line,
    sched,
    write_control,
)


@pytest.fixture
def home(cli: InProcess, tmp_path: Path) -> Path:
    write_control(tmp_path, FLEET)
    assert cli("init").returncode == 0
    return tmp_path


def test_version_and_short_help(cli: InProcess, home: Path):
    from importlib.metadata import version

    assert cli("--version").stdout.strip() == f"sched {version('sched')}"
    for args in (["-h"], ["worker", "-h"], ["submit", "-h"], ["agents", "drain", "-h"]):
        result = cli(*args)
        assert result.returncode == 0 and "Usage: sched" in result.stdout, args
    flags = cli("tick", "-h").stdout
    assert "--dry-run " in flags and "<bool>" not in flags  # a boolean flag reads as a flag


@pytest.mark.parametrize("group", [[], ["agents"], ["worker"], ["config"], ["webhooks"], ["tokens"]],
                         ids=lambda group: " ".join(["sched", *group]))
def test_a_bare_command_or_group_prints_readable_help(cli: InProcess, home: Path, group: list[str]):
    """`sched` or a group with no subcommand shows its help as help (lines, not one line of
    literal \\n), on stderr with click's exit code for a missing command."""
    result = cli(*group)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"Usage: {' '.join(['sched', *group])} [OPTIONS] COMMAND [ARGS]..."
    assert "Commands:" in lines and "\\n" not in result.stderr


@pytest.mark.parametrize("args", [
    ["tasks", "--limit", "-1"], ["tasks", "--limit", "0"], ["show", "0"],
    ["show", str(2**63)], ["cancel", "0"], ["approve", "1", "0"], ["requeue", str(2**64)],
    ["explain", "0"], ["replay", "--task", "-3"], ["worker", "heartbeat", "0", "--token", "t"],
    ["worker", "complete", str(2**63), "--token", "t"], ["submit", "-q", "dev", "-t", "x", "--after", "0"],
    ["submit", "-q", "dev", "-t", "x", "--max-attempts", "0"],
    ["submit", "-q", "dev", "-t", "x", "--priority", str(2**63)],
    ["worker", "progress", "1", "--token", "t", "--percent", "-5"],
], ids=lambda args: " ".join(args)[:40])
def test_negative_and_absurd_numbers_are_refused(cli: InProcess, home: Path, args):
    before = event_count(home / "sched.db")
    one_error_line(cli(*args), 2)
    assert event_count(home / "sched.db") == before


def test_the_largest_limit_the_flag_takes_lists_everything(cli: InProcess, home: Path):
    """--limit takes up to 2**63 - 1: that many (from any cursor) is every task, not a
    number too large for the read."""
    assert cli("submit", "-q", "dev", "-t", "one").returncode == 0
    for cursor in ([], ["--cursor", "0"], ["--cursor", "999999999999999999"]):
        result = cli("tasks", "--limit", str(2**63 - 1), *cursor, "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert [t["title"] for t in doc["tasks"]] == ([] if cursor[1:] == ["999999999999999999"] else ["one"])
        assert doc["next_cursor"] is None


def test_a_home_that_does_not_exist_is_refused_except_by_init(cli: InProcess, tmp_path: Path):
    missing = tmp_path / "not" / "there"
    for args in (["status"], ["tasks"], ["config", "show"], ["agents", "validate"], ["tick"]):
        line = one_error_line(cli(*args, env={"SCHED_HOME": str(missing)}), 2)
        assert "does not exist" in line and "sched init" in line
    assert not missing.exists()
    assert cli("init", env={"SCHED_HOME": str(missing)}).returncode == 0
    assert (missing / "sched.db").is_file()


def test_a_queue_table_no_agent_serves_is_warned_about(cli: InProcess, home: Path):
    (home / "sched.toml").write_text("[queues.deev]\nmax_attempts = 5\n")
    shown = cli("config", "show", "--json")
    assert shown.returncode == 0
    (warning,) = json.loads(shown.stdout)["warnings"]
    assert "[queues.deev]" in warning and "dev" in warning
    validated = cli("agents", "validate")
    assert validated.returncode == 0 and "[queues.deev]" in validated.stderr


def test_status_stays_readable_at_80_columns(cli: InProcess, home: Path):
    write_control(home, [{"agentName": "summer-1", "agentType": "checksums", "maxConcurrency": 1}])
    cli("submit", "-q", "checksums", "-t", "t")
    result = cli("status", env={"COLUMNS": "80"})
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in result.stdout  # no header or count cut short
    header = next(line for line in lines if line.startswith("queue "))
    assert header.split() == ["queue", "approval", "blocked", "queued", "assigned", "running",
                              "succeeded", "dead", "cancelled"]
    # a name of up to 14 characters stays on its line (found folded as checks/ums)
    assert any(line.split()[:2] == ["checksums", "0"] for line in lines)
    assert any(line.split()[:2] == ["summer-1", "checksums"] for line in lines)


def test_show_says_who_ran_the_task_and_its_result_without_python_reprs(cli: InProcess, home: Path):
    cli("submit", "-q", "dev", "-t", "job", "--payload", '{"n": 1}')
    claim = json.loads(cli("worker", "claim", "-a", "ann", "--json").stdout)["task"]
    cli("worker", "complete", "1", "--token", claim["token"], "--result", '{"lines": 12}')
    out = cli("show", "1").stdout
    assert "ran on  ann" in out and 'result  {"lines":12}' in out
    for repr_ in ("None", "True", "False", "()", "[]"):
        assert f"  {repr_}\n" not in out, repr_
    doc = json.loads(cli("show", "1", "--json").stdout)["task"]
    assert (doc["result"], doc["last_agent"]) == ({"lines": 12}, "ann")


def test_a_claim_that_could_not_be_printed_gives_its_attempt_back(cli: InProcess, home: Path,
                                                                     monkeypatch):
    cli("submit", "-q", "dev", "-t", "job")

    def closed_pipe(_doc: object) -> None:  # the worker's end of the pipe is gone
        raise BrokenPipeError(32, "Broken pipe")

    with monkeypatch.context() as patch:
        patch.setattr("cli.worker_cmd.emit_json", closed_pipe)
        result = cli("worker", "claim", "-a", "ann", "--json")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    task = json.loads(cli("show", "1", "--json").stdout)
    kinds = [e["type"] for e in task["events"]]
    assert kinds[-3:] == ["TaskStarted", "TaskFailed", "TaskRequeued"]
    assert "could not be printed" in task["events"][-2]["data"]["error"]
    assert task["events"][-2]["data"]["reason"] == "undelivered"
    assert task["task"]["status"] == "queued"  # not held by nobody until its lease runs out
    assert task["task"]["excluded"] == [] and task["task"]["not_before"] is None  # no retry: nothing ran


@pytest.mark.parametrize("output", ["a pipe nobody reads", "closed"])
@pytest.mark.parametrize("form", ["text", "json"])
def test_a_claim_with_nowhere_to_print_gives_its_attempt_back(cli: InProcess, home: Path,
                                                              output: str, form: str):
    """A real process whose standard output is a pipe with no reader, or is closed: the
    claim is released, whichever way the printing fails (rich ends a text print into a
    broken pipe with SystemExit; a closed stdout is None), and no traceback."""
    import os

    cli("submit", "-q", "dev", "-t", "job")
    reader, writer = os.pipe()
    os.close(reader)  # every write to `writer` fails: EPIPE
    argv = [sys.executable, "-m", "cli", "worker", "claim", "-a", "ann", *(["--json"] * (form == "json"))]
    closed = output == "closed"
    try:
        done = subprocess.run(argv, cwd=home, env=cli_env(home), stdout=None if closed else writer,
                              stderr=subprocess.PIPE, text=True, timeout=60,
                              preexec_fn=(lambda: os.close(1)) if closed else None)
    finally:
        os.close(writer)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    task = json.loads(cli("show", "1", "--json").stdout)
    assert [e["type"] for e in task["events"]][-3:] == ["TaskStarted", "TaskFailed", "TaskRequeued"]
    assert task["task"]["status"] == "queued"


@pytest.mark.parametrize("delay", [0.3, 1.0, 3.0])
def test_ctrl_c_never_prints_a_traceback(home: Path, delay: float):
    """SIGINT while the `sched` script loads sched (its imports take most of a second),
    or while it works: a quiet end, whatever the moment."""
    script = Path(sys.executable).parent / "sched"  # the console script users run
    with subprocess.Popen([str(script), "status", "--watch", "--interval", "0.1"],
                          cwd=home, env=cli_env(home), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode in (0, 130, -signal.SIGINT), (proc.returncode, err)


def test_ctrl_c_inside_a_command_says_interrupted(cli: InProcess, monkeypatch):
    """Ctrl-C while a command works (here: reading `--file -` from a pipe) ended with
    exit 130 and nothing on stderr: typer turns the interrupt into its own exit."""

    def interrupted(_path: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("scheduler.submit.read_batch", interrupted)
    done = cli("submit", "--file", "-")
    assert (done.returncode, done.stderr) == (130, "sched: interrupted\n")


def test_an_interrupt_inside_a_librarys_cleanup_is_not_reported_twice():
    """Ctrl-C landing in SQLAlchemy's pool reset (it logs the traceback, then re-raises)
    or in a finalizer (Python's "Exception ignored") leaves only `sched: interrupted`;
    other errors logged or raised in a finalizer are still shown."""
    program = """if True:
        import logging, sys
        from cli.entry import quiet_unraisable_interrupts
        from eventlog.storage.base import quiet_pool_faults
        quiet_unraisable_interrupts()
        quiet_pool_faults()  # as the adapters do when they make an engine
        pool = logging.getLogger("sqlalchemy.pool.impl.QueuePool")
        import psycopg  # a server lost during the reset: sched says so itself, in one line
        for error in (KeyboardInterrupt(), ValueError("a real fault"), psycopg.OperationalError("lost")):
            try:
                raise error
            except BaseException:
                pool.error("Exception during reset or similar", exc_info=True)
        class Closes:
            def __init__(self, error): self.error = error
            def __del__(self): raise self.error
        Closes(KeyboardInterrupt())
        Closes(OSError("a finalizer failed"))
    """
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60, check=True)
    assert "KeyboardInterrupt" not in result.stderr and "OperationalError" not in result.stderr, result.stderr
    assert result.stderr.count("Exception during reset") == 1
    assert "ValueError: a real fault" in result.stderr
    assert "OSError: a finalizer failed" in result.stderr


def test_output_that_cannot_be_written_says_the_submit_stands(home: Path):
    """stdout on a full disk: the submit was recorded before its output failed. The
    line says so (a script retrying without an idempotency key would submit twice),
    exit 1, and nothing else on stderr."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "cli", "submit", "-q", "dev", "-t", "kept", "--json"],
                              cwd=home, env=cli_env(home), stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "sched: cannot write the output (No space left on device): what the command did stands, a write it "
        "made is recorded (look with `sched status` or `sched show` before running it again)"]
    shown = sched(home, "show", "1", "--json")
    assert json.loads(shown.stdout)["task"]["title"] == "kept"


def test_at_80_columns_the_tasks_table_gives_each_task_one_line_and_cuts_only_titles(
        cli: InProcess, home: Path):
    """Titles wrapped over ten lines in a column eight wide, and agent names were cut:
    now every other column keeps its width and the title takes what is left."""
    long = "Implement the feature with a rather long descriptive title that goes on"
    for title in (long, "short"):
        ok(cli("submit", "-q", "dev", "-t", title, "--assignee", "ann"))
    for env in ({"COLUMNS": "80"}, {"COLUMNS": "200"}):
        lines = ok(cli("tasks", env=env)).stdout.splitlines()
        rows = [line for line in lines if line[:1].isdigit()]
        assert len(rows) == 2 and all(len(line) <= int(env["COLUMNS"]) for line in lines), lines
        first = rows[0].split()
        assert first[:3] == ["1", "dev", "queued"] and "for ann" in rows[0]
        if env["COLUMNS"] == "80":
            assert rows[0].rstrip().endswith("…") and long not in rows[0]
        else:
            assert long in rows[0] and "short" in rows[1]


def test_columns_0_prints_as_if_unset_not_nothing(cli: InProcess, home: Path):
    """COLUMNS=0, which some CI runners set, made rich print nothing at all, tables and
    messages alike, with exit 0: it is read as unset (80 columns, off a terminal)."""
    ok(cli("submit", "-q", "dev", "-t", "hello"))
    assert ok(cli("pause", env={"COLUMNS": "0"})).stderr == "paused\n"
    lines = ok(cli("tasks", env={"COLUMNS": "0"})).stdout.splitlines()
    assert [line.split()[:3] for line in lines if line[:1].isdigit()] == [["1", "dev", "queued"]]
    assert max(map(len, lines)) == 80


def test_columns_too_wide_together_for_the_terminal_widen_the_table_not_squeeze_it(
        cli: InProcess, home: Path):
    """With a long agent name and a due column, the other columns alone left the title
    no room at 80: rich cut every column, ids and names included, and the title
    vanished. The table is then made wider than the terminal (which wraps its lines),
    each column whole but the title, which keeps a dozen cells."""
    write_control(home, [{"agentName": "an-agent-with-a-long-name", "agentType": "dev"}])
    ok(cli("submit", "-q", "dev", "-t", "Implement the feature flag rollout", "--due",
           "2026-01-01T00:00:00Z", "--assignee", "an-agent-with-a-long-name"))
    lines = ok(cli("tasks", env={"COLUMNS": "80"})).stdout.splitlines()
    (header,) = [line for line in lines if line.startswith("id ")]
    (row,) = [line for line in lines if line[:1].isdigit()]
    assert header.split()[:3] == ["id", "queue", "status"] and "title" in header and "due" in header
    assert row.split()[:3] == ["1", "dev", "queued"] and "for an-agent-with-a-long-name" in row
    assert "Implement t…" in row and "OVERDUE by " in row
    none = ok(cli("tasks", "--status", "dead", env={"COLUMNS": "80"})).stdout.split()  # (no rows)
    assert none[:10] == ["id", "queue", "status", "prio", "eff", "waited", "est.", "start", "agent", "title"]


def test_the_tasks_table_shows_its_first_rows_and_says_so(cli: InProcess, home: Path, monkeypatch):
    """Drawing 24,000 rows took 20 s: without --limit the table stops at TABLE_ROWS and
    says how to see more; --json still lists every task, --limit draws what it asks."""
    monkeypatch.setattr("cli.tasks_cmd.TABLE_ROWS", 3)
    for n in range(5):
        cli("submit", "-q", "dev", "-t", f"job {n}")
    table = cli("tasks")
    assert table.returncode == 0
    assert [line.split()[0] for line in table.stdout.splitlines()
            if line[:1].isdigit()] == ["1", "2", "3"]
    assert table.stderr.strip() == "(the first 3 tasks in pick order: --limit N for more, --json for all)"
    assert len(json.loads(cli("tasks", "--json").stdout)["tasks"]) == 5
    limited = cli("tasks", "--limit", "4")
    assert "job 3" in limited.stdout and "job 4" not in limited.stdout and limited.stderr == ""


def test_at_80_columns_the_agents_table_keeps_names_and_headers_whole(cli: InProcess, home: Path):
    """`puller` and `puller2` both read `pull…`, and `capa…`, `enab…`: only the
    capabilities and hours now give way."""
    write_control(home, [{"agentName": "puller", "agentType": "dev", "maxConcurrency": 2},
                         {"agentName": "puller2", "agentType": "dev", "hours": ["Mon-Fri 08:00-18:00 UTC"],
                          "capabilities": ["gpu", "cuda12", "a-rather-long-capability"]}])
    ok(cli("init"))
    lines = ok(cli("agents", "list", env={"COLUMNS": "80"})).stdout.splitlines()
    assert lines[0].split() == ["agent", "type", "capacity", "enabled", "assigned", "running", "free",
                                "weight", "capabilities", "hours"]
    rows = [line.split()[:8] for line in lines if line.startswith("puller")]
    assert rows == [["puller", "dev", "2", "yes", "0", "0", "2", "1"],
                    ["puller2", "dev", "1", "yes", "0", "0", "1", "1"]]


def test_at_80_columns_show_gives_each_event_one_line_cut_only_at_its_end(cli: InProcess, home: Path):
    """The data was wrapped at its spaces and each piece cut on its own: words went
    missing from the middle (`reason":…` / `used up (3 of` lost `attempts`)."""
    ok(cli("submit", "-q", "dev", "-t", "task with a title of several words"))
    lines = ok(cli("show", "1", env={"COLUMNS": "80"})).stdout.splitlines()
    (row,) = [line for line in lines if line.startswith("1 ")]
    assert row.split()[2] == "TaskSubmitted" and row.rstrip().endswith("…")
    assert row.split("TaskSubmitted", 1)[1].strip().startswith('{"task_id":1,"queue":"dev","t')
    assert len(row) <= 80


def test_a_doomed_task_is_not_shown_as_plainly_blocked(cli: InProcess, home: Path):
    """A task whose parent was cancelled can never run; until the next tick dead-letters
    it, `tasks` and `show` said only `blocked`, as of a task still waiting (a review)."""
    cli("submit", "-q", "dev", "-t", "parent")
    cli("submit", "-q", "dev", "-t", "child", "--after", "1")
    cli("cancel", "1")
    rows = [line for line in cli("tasks").stdout.splitlines() if "child" in line]
    assert len(rows) == 1 and " blocked (doomed) " in rows[0]
    shown = cli("show", "2").stdout
    assert "  status  blocked (doomed: task 1, which it runs after, did not succeed)\n" in shown
    cli("tick")
    assert json.loads(cli("show", "2", "--json").stdout)["task"]["status"] == "dead"
    # once dead, `why dead` says it (its parent may be requeued and succeed since: a review)
    rows = [line for line in cli("tasks", "--status", "dead").stdout.splitlines() if "child" in line]
    assert len(rows) == 1 and "(doomed)" not in rows[0] and "task 1 it runs after" in rows[0], rows
    assert "doomed" not in cli("show", "2").stdout.split("  status  ")[1].splitlines()[0]


def test_at_80_columns_metrics_gives_each_scope_one_line_and_cuts_only_long_names(
        cli: InProcess, home: Path):
    """The durations table squeezed its scope column to six cells: every scope took two
    lines (`queue` / `devel…`) and the names were lost (a carried-over note)."""
    name = "an-agent-with-a-rather-long-name-indeed"
    write_control(home, [{"agentName": name, "agentType": "development"}])
    ok(cli("submit", "-q", "development", "-t", "t"))
    claim = json.loads(ok(cli("worker", "claim", "-a", name, "--json")).stdout)["task"]
    ok(cli("worker", "complete", "1", "--token", claim["token"]))
    lines = ok(cli("metrics", env={"COLUMNS": "80"})).stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    tables = [line for line in lines if line in ("counts", "waits", "runs and resources", "per hour")]
    assert tables == ["counts", "waits", "runs and resources", "per hour"]
    for scope in ("all ", "queue development "):  # one line of each table, every figure on it
        rows = [line.split() for line in lines if line.startswith(scope)]
        assert [len(row) - len(scope.split()) for row in rows] == [6, 4, 4], (scope, rows)
    agents = [line.split() for line in lines if line.startswith("agent ")]  # (its name cut where it must)
    assert [len(row) - 2 for row in agents] == [6, 4, 4]
    assert all(row[1].startswith("an-agent") for row in agents)
