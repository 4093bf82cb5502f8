"""Push agents run by their wrapper, with real processes: the wrapper runs the agent
and records how it ended. Every test runs both ways a tick starts wrappers: `sched
exec` processes (a cron tick) and wrappers forked by a daemon's launcher (the tick
then starts the attempt itself). Waits poll with a deadline; nothing sleeps on a race."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from eventlog.timeutil import from_text
from scheduler import operator, worker
from scheduler.clock import SystemClock
from scheduler.reads import queries
from scheduler.reads.metrics import metrics
from scheduler.runner import supervisor
from scheduler.runner.launcher import Launcher
from scheduler.runner.spawn import exec_argv
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from tests.conftest import new_workspace, wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc")


def agent_script(home: Path, name: str, body: str) -> list[str]:
    path = home / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


LAUNCHERS: list[Launcher] = []
STARTED_BY = ["sched exec"]


@pytest.fixture(autouse=True, params=["sched exec", "launcher"])
def started_by(request):
    """How this test's ticks start wrappers (`push_workspace` sets it up)."""
    STARTED_BY[0] = request.param
    yield request.param
    STARTED_BY[0] = "sched exec"  # other modules' tests use push_workspace without this fixture
    while LAUNCHERS:
        LAUNCHERS.pop().close()


def push_workspace(tmp_path: Path, commands: dict[str, list[str]], agents=None, **settings):
    """A workspace whose settings live in its sched.toml, where the `sched exec`
    processes that ticks start will read them too."""
    agents = agents or [{"agentName": name, "agentType": "dev", "maxConcurrency": 1, "command": argv}
                        for name, argv in commands.items()]
    home = tmp_path / "home"
    home.mkdir()
    queues = settings.pop("queues", {})
    toml = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    for queue, keys in queues.items():  # [queues.NAME] tables come after the top-level keys
        toml += f"[queues.{queue}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    (home / "sched.toml").write_text(toml)
    ws = new_workspace(home, agents)
    ws.clock = SystemClock()  # the wrapper runs in real time
    if STARTED_BY[0] == "launcher":
        launcher = Launcher(ws.settings, ws.clock)
        launcher.start()
        LAUNCHERS.append(launcher)
        ws.starter = launcher
    return ws


def status_of(ws, task_id: int) -> str:
    return queries.show(ws, task_id)[0].status


def finished(ws, task_id: int) -> Callable[[], bool]:
    return lambda: status_of(ws, task_id) in {"succeeded", "dead"}


def last_event(ws, task_id: int, kind: str) -> dict:
    return next(json.loads(r.data) for r in reversed(queries.show(ws, task_id)[1]) if r.type == kind)


def run_one(ws, payload=None, **spec) -> int:
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t", payload=payload, **spec)])
    report = tick(ws)
    assert report.spawned == [sub.task_id], report
    wait_for(f"task {sub.task_id} to finish", finished(ws, sub.task_id))
    return sub.task_id


def test_a_succeeding_agent_records_its_result_and_argv(tmp_path):
    argv = agent_script(tmp_path, "ok", """
        import json, os, sys
        payload = json.load(open(os.environ["SCHED_PAYLOAD_FILE"]))
        print("working on", payload)
        with open(os.environ["SCHED_RESULT_FILE"], "w") as f:
            json.dump({"argv": sys.argv[1:], "double": payload["n"] * 2, "cwd": os.getcwd()}, f)
        """)
    ws = push_workspace(tmp_path, {"ann": [*argv, "task={task_id}", "{queue}", "{agent}", "{attempt}"]})
    task_id = run_one(ws, {"n": 21})
    assert status_of(ws, task_id) == "succeeded"
    result = last_event(ws, task_id, "TaskSucceeded")["result"]
    assert result["argv"] == [f"task={task_id}", "dev", "ann", "1"]
    assert result["double"] == 42
    started = last_event(ws, task_id, "TaskStarted")
    assert started["runner"] == "exec" and result["cwd"] == started["workdir"]
    assert "working on {'n': 21}" in Path(started["log_path"]).read_text()


def test_each_line_of_exec_log_starts_with_its_time(tmp_path):
    """The wrappers' and the supervisor's lines in logs/exec.log had no time: a line
    could not be set beside the daemon's log or the events (a recovery drill)."""
    ws = push_workspace(tmp_path, {"ann": ["true"]})
    before = ws.clock.now()
    task_id = run_one(ws)
    log = ws.settings.home / "logs" / "exec.log"
    line = wait_for("the wrapper's line", lambda: next(
        (line for line in log.read_text().splitlines() if f"task {task_id}: " in line), None))
    stamp, _, said = str(line).partition(" ")
    assert said == f"task {task_id}: succeeded (exit 0)"
    assert before <= from_text(stamp) <= ws.clock.now()


def test_the_last_stdout_line_is_the_result_when_no_file_is_written(tmp_path):
    argv = agent_script(tmp_path, "echo", 'print("noise")\nprint(\'{"answer": 7}\')\n')
    ws = push_workspace(tmp_path, {"ann": argv})
    task_id = run_one(ws)
    assert last_event(ws, task_id, "TaskSucceeded")["result"] == {"answer": 7}


@pytest.mark.parametrize("line", ['{"ok": true} ', '{"ok": true}\r', '    {"ok": true}'],
                         ids=["trailing-space", "crlf", "indented"])
def test_blanks_around_the_last_line_leave_it_the_result(tmp_path, line):
    """A JSON line with blanks around it (a CRLF ending, an indent) was taken for one
    cut short, 'over the limit of 1048576', and the successful attempt failed."""
    argv = agent_script(tmp_path, "blanks", f"import sys\nsys.stdout.write({line!r} + '\\n')\n")
    ws = push_workspace(tmp_path, {"ann": argv})
    task_id = run_one(ws, max_attempts=1)
    assert last_event(ws, task_id, "TaskSucceeded")["result"] == {"ok": True}


def test_a_result_left_in_the_attempts_directory_by_an_earlier_run_is_not_this_runs(tmp_path):
    """After a restore from a backup, an attempt number runs again in the directory its
    lost run used: that run's result.json must not become this run's result."""
    argv = agent_script(tmp_path, "quiet", 'print("done, nothing to report")\n')
    ws = push_workspace(tmp_path, {"ann": argv})
    earlier = ws.settings.home / "work" / "1" / "1"
    earlier.mkdir(parents=True)
    (earlier / "result.json").write_text('{"from": "the lost run"}')
    task_id = run_one(ws)
    assert task_id == 1
    assert last_event(ws, task_id, "TaskSucceeded")["result"] is None


def test_a_failing_agent_is_recorded_with_its_exit_code_and_last_line(tmp_path):
    argv = agent_script(tmp_path, "bad", 'import sys\nprint("step 1")\nsys.exit("disk full")\n')
    ws = push_workspace(tmp_path, {"ann": argv})
    task_id = run_one(ws, max_attempts=1)
    assert status_of(ws, task_id) == "dead"
    failed = last_event(ws, task_id, "TaskFailed")
    assert (failed["reason"], failed["exit_code"]) == ("exit_code", 1)
    assert failed["error"] == "exited with 1: disk full"
    assert Path(failed["log_path"]).is_file()


@pytest.mark.parametrize("kind", ["not executable", "missing", "not a program"])
def test_an_agent_that_cannot_start_is_a_spawn_error_and_not_retried(tmp_path, kind):
    target = tmp_path / "agent.sh"
    if kind == "not executable":
        target.write_text("#!/bin/sh\necho hi\n")
        target.chmod(0o644)
    elif kind == "not a program":  # executable, but neither a script with #! nor a binary
        target.write_bytes(b"\x00\x01 not a program\n")
        target.chmod(0o755)
    ws = push_workspace(tmp_path, {"ann": [str(target)]})
    task_id = run_one(ws, max_attempts=3)
    failed = last_event(ws, task_id, "TaskFailed")
    assert (failed["reason"], failed["retryable"]) == ("spawn_error", False)
    assert str(target) in failed["error"]
    assert status_of(ws, task_id) == "dead"  # at once: it will not get better by itself
    assert last_event(ws, task_id, "TaskDeadLettered")["reason"] == "failure marked not retryable"


def test_a_queue_may_retry_spawn_errors(tmp_path):
    ws = push_workspace(tmp_path, {"ann": [str(tmp_path / "missing")]}, backoff_base_seconds=0,
                        queues={"dev": {"retry_spawn_errors": True}})
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t", max_attempts=2)])
    tick(ws)
    wait_for("the first failure", lambda: status_of(ws, sub.task_id) != "running"
             and any(r.type == "TaskFailed" for r in queries.show(ws, sub.task_id)[1]))
    assert last_event(ws, sub.task_id, "TaskFailed")["retryable"] is True
    assert last_event(ws, sub.task_id, "TaskRequeued")["reason"] == "failed"


@pytest.mark.parametrize("broken", ["work is a file", "payload.json is a directory"])
def test_a_working_directory_that_cannot_be_prepared_is_not_the_programs_fault(tmp_path, broken, started_by):
    """`sched exec` prepares the directory before it starts the attempt: the assignment
    goes back without using one. The daemon's supervisor makes it after the start was
    recorded (no file is made inside the tick's transaction): the attempt fails as a
    spawn error, retried after the queue's backoff."""
    ws = push_workspace(tmp_path, {"ann": ["true"]}, backoff_base_seconds=30)
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    work = ws.settings.home / "work"

    def break_it() -> None:
        if broken == "work is a file":
            work.write_text("in the way")
        else:
            (work / str(sub.task_id) / "1" / "payload.json").mkdir(parents=True)

    if started_by == "launcher":  # the tick starts the attempt; its supervisor finds the place broken
        break_it()
        assert tick(ws).spawned == [sub.task_id]
        wait_for("the attempt's end", lambda: status_of(ws, sub.task_id) == "queued")
    else:
        ws.launcher = lambda settings, task_id: None  # the test starts the wrapper itself
        tick(ws)
        break_it()
        done = subprocess.run([*exec_argv(ws.settings, sub.task_id), "--json"], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "queued"
    task, records = queries.show(ws, sub.task_id)
    if started_by == "launcher":
        assert [r.type for r in records] == ["TaskSubmitted", "TaskAssigned", "TaskStarted", "TaskFailed",
                                             "TaskRequeued"]
        failed = json.loads(records[-2].data)
        assert (failed["reason"], failed["attempt"], failed["retryable"]) == ("spawn_error", 1, True)
        assert failed["error"].startswith(f"cannot prepare the working directory {work}/")
        assert task.attempt == 1
        assert datetime.fromisoformat(json.loads(records[-1].data)["not_before"]) > records[-1].at  # backoff
    else:
        assert [r.type for r in records] == ["TaskSubmitted", "TaskAssigned", "TaskRequeued"]
        requeued = json.loads(records[-1].data)
        assert requeued["reason"] == "not_started"
        assert requeued["detail"].startswith(f"cannot prepare the working directory {work}/")
        assert task.attempt == 0  # no attempt used up
        wait = datetime.fromisoformat(requeued["not_before"]) - records[-1].at
        assert wait == timedelta(seconds=30)  # the queue's backoff_base_seconds
    assert task.status == "queued"


def test_a_long_last_line_is_cut_to_max_message_bytes_in_the_error(tmp_path):
    argv = agent_script(tmp_path, "chatty", 'import sys\nprint("é" * 10000)\nsys.exit(3)\n')
    ws = push_workspace(tmp_path, {"ann": argv}, max_message_bytes=1000)
    task_id = run_one(ws, max_attempts=1)
    error = last_event(ws, task_id, "TaskFailed")["error"]
    assert error.startswith("exited with 3: éé") and error.endswith("...")
    assert 990 < len(error.encode()) <= 1000


def test_agent_log_is_rotated_at_its_limit(tmp_path):
    # 3,511 bytes of output with a 1,024-byte limit: agent.log.1 holds bytes 2048-3071,
    # agent.log the rest; the two first kilobytes are gone
    argv = agent_script(tmp_path, "verbose", """
        import sys
        for i in range(350):
            sys.stdout.write("line %04d\\n" % i)
            sys.stdout.flush()
        print("last words")
        sys.exit(1)
        """)
    ws = push_workspace(tmp_path, {"ann": argv}, agent_log_max_bytes=1024)
    task_id = run_one(ws, max_attempts=1)
    failed = last_event(ws, task_id, "TaskFailed")
    assert failed["error"] == "exited with 1: last words"
    log = Path(failed["log_path"])
    everything = "".join(f"line {i:04d}\n" for i in range(350)) + "last words\n"
    rotated = log.with_name("agent.log.1")
    assert rotated.stat().st_size == 1024 and log.stat().st_size <= 1024
    assert rotated.read_text() + log.read_text() == everything[2048:]
    assert sorted(p.name for p in log.parent.iterdir()) == ["agent.log", "agent.log.1", "payload.json"]


BAD_RESULTS = {
    "a lone surrogate": ('{"text": "\\ud800"}', "which is not valid Unicode text"),
    "NaN": ('{"score": NaN}', "NaN is not valid JSON"),
    "Infinity": ('[Infinity]', "Infinity is not valid JSON"),
    "an overflowing number": ('{"big": 1e400}', "the number 1e400 is out of range"),
    "a key given twice": ('{"ok": true, "ok": false}', "the key 'ok' is given twice"),
    "deep nesting": ("[" * 70 + "]" * 70, "nested deeper than 64 levels"),
    "very deep nesting": ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
    "too many bytes": (json.dumps({"text": "x" * 2000}), "over the limit of 1024"),
}


@pytest.mark.parametrize("where", ["result.json", "the last output line"])
@pytest.mark.parametrize("kind", list(BAD_RESULTS))
def test_a_result_the_log_cannot_carry_fails_the_attempt_at_once(tmp_path, where, kind):
    text, problem = BAD_RESULTS[kind]
    (tmp_path / "result.txt").write_text(text)
    write = ("open(os.environ['SCHED_RESULT_FILE'], 'w').write(text)" if where == "result.json"
             else "print(text)")
    source = f"import os\ntext = open({str(tmp_path / 'result.txt')!r}).read()\n{write}\n"
    argv = agent_script(tmp_path, "bad_result", source)
    limits = {"max_payload_bytes": 1024} if kind == "too many bytes" else {}
    ws = push_workspace(tmp_path, {"ann": argv}, **limits)
    task_id = run_one(ws, max_attempts=1)
    failed = last_event(ws, task_id, "TaskFailed")  # recorded by the wrapper, not by a lease expiry
    assert (failed["reason"], failed["exit_code"]) == ("exit_code", 0)
    assert failed["error"].startswith(f"exited 0 but its result cannot be recorded: {where}: ")
    assert problem in failed["error"]
    assert status_of(ws, task_id) == "dead"


@pytest.mark.parametrize("made", ["a FIFO", "a link to /dev/zero"])
def test_a_result_file_that_is_not_a_regular_file_fails_the_attempt_and_the_runner_goes_on(tmp_path, made):
    """A FIFO as result.json blocked the read for ever, a link to /dev/zero read
    without end: in the daemon's supervisor, on the thread that settles every attempt's
    end (a review). Only a regular file is read; the next attempt is settled as ever."""
    make = ("os.mkfifo(os.environ['SCHED_RESULT_FILE'])" if made == "a FIFO"
            else "os.symlink('/dev/zero', os.environ['SCHED_RESULT_FILE'])")
    argv = agent_script(tmp_path, "odd_result",  # (an odd result for a task without a payload)
                        f"import json, os\nif json.load(open(os.environ['SCHED_PAYLOAD_FILE'])) is None:\n"
                        f"    {make}\n")
    ws = push_workspace(tmp_path, {"ann": argv})
    task_id = run_one(ws, max_attempts=1)
    failed = last_event(ws, task_id, "TaskFailed")
    why = "is not a regular file" if made == "a FIFO" else "cannot be read (a symbolic link)"
    assert failed["error"] == f"exited 0 but its result cannot be recorded: result.json: {why}"
    assert status_of(ws, task_id) == "dead"
    (plain,) = submit(ws, [TaskSpec(queue="dev", title="after it", payload={"n": 1})])
    assert tick(ws).spawned == [plain.task_id]
    wait_for("the next attempt's end", finished(ws, plain.task_id))
    assert status_of(ws, plain.task_id) == "succeeded"


def test_a_last_line_that_is_not_json_is_no_result(tmp_path):
    argv = agent_script(tmp_path, "prose", 'print("[1, 2, 3] done, and NaN left")\n')
    ws = push_workspace(tmp_path, {"ann": argv})
    task_id = run_one(ws)
    assert last_event(ws, task_id, "TaskSucceeded")["result"] is None


def group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def test_a_hanging_agent_and_its_grandchild_are_stopped_at_the_timeout(tmp_path):
    agents = [{"agentName": "ann", "agentType": "dev", "timeoutSeconds": 1,
               "command": ["sh", "-c", "echo $$ > pgid; sleep 600 & sleep 600"]}]
    ws = push_workspace(tmp_path, {}, agents, kill_grace_seconds=0.5)
    task_id = run_one(ws, max_attempts=1)
    failed = last_event(ws, task_id, "TaskFailed")
    assert failed["reason"] == "timeout" and failed["error"] == "timed out after 1 s"
    assert failed["signal"] == signal.SIGTERM  # sh ended on the group's SIGTERM
    workdir = Path(last_event(ws, task_id, "TaskStarted")["workdir"])
    pgid = int((workdir / "pgid").read_text())
    assert wait_for("the agent's process group to be gone", lambda: not group_members(pgid), 10)


def test_an_agent_that_exits_by_itself_once_timed_out_is_recorded_with_its_exit_code(tmp_path):
    """It traps SIGTERM and exits 3: neither a signal nor a code was recorded."""
    agents = [{"agentName": "ann", "agentType": "dev", "timeoutSeconds": 1,
               "command": ["sh", "-c", "trap 'exit 3' TERM; while :; do sleep 0.05; done"]}]
    ws = push_workspace(tmp_path, {}, agents, kill_grace_seconds=30)
    task_id = run_one(ws, max_attempts=1)
    failed = last_event(ws, task_id, "TaskFailed")
    assert failed["reason"] == "timeout" and (failed["exit_code"], failed["signal"]) == (3, None)


def test_a_killed_wrapper_is_noticed_and_a_later_attempt_completes(tmp_path):
    argv = agent_script(tmp_path, "slow_first", """
        import os, sys, time
        if os.environ["SCHED_ATTEMPT"] == "1":
            open("started", "w").close()
            time.sleep(120)  # the test kills the wrapper long before this ends
        print('{"attempt": %s}' % os.environ["SCHED_ATTEMPT"])
        """)
    ws = push_workspace(tmp_path, {"ann": argv}, backoff_base_seconds=0)
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    tick(ws)
    workdir = ws.settings.home / "work" / str(sub.task_id) / "1"
    wait_for("attempt 1 to start its agent", lambda: (workdir / "started").exists())
    wrapper = last_event(ws, sub.task_id, "TaskStarted")["pid"]
    os.kill(wrapper, signal.SIGKILL)
    report = wait_for("a tick to notice the dead wrapper", lambda: tick(ws).expired)
    assert report == [{"task_id": sub.task_id, "agent": "ann", "reason": "wrapper_gone"}]
    wait_for("attempt 2 to finish", finished(ws, sub.task_id))
    assert status_of(ws, sub.task_id) == "succeeded"
    assert last_event(ws, sub.task_id, "TaskSucceeded")["result"] == {"attempt": 2}
    assert queries.verify_log(ws).ok


def test_shell_metacharacters_reach_the_agent_as_inert_data(tmp_path):
    argv = agent_script(tmp_path, "inert", """
        import json, os, sys
        payload = json.load(open(os.environ["SCHED_PAYLOAD_FILE"]))
        print(json.dumps({"argv": sys.argv[1:], "payload": payload}))
        """)
    nasty_queue = "-rf; touch pwned-q"
    agents = [{"agentName": "--help", "agentType": nasty_queue, "command": [*argv, "{queue}", "{agent}"]}]
    ws = push_workspace(tmp_path, {}, agents)
    payload = {"text": "-x $(touch pwned-a) `touch pwned-b`; rm -rf / && echo >pwned-c | cat"}
    (sub,) = submit(ws, [TaskSpec(queue=nasty_queue, title="$(touch pwned-t)", payload=payload)])
    tick(ws)
    wait_for("the task to finish", finished(ws, sub.task_id))
    result = last_event(ws, sub.task_id, "TaskSucceeded")["result"]
    assert result == {"argv": [nasty_queue, "--help"], "payload": payload}
    workdir = Path(last_event(ws, sub.task_id, "TaskStarted")["workdir"])
    assert not [p for p in tmp_path.rglob("pwned*")], "a metacharacter was interpreted"
    assert sorted(p.name for p in workdir.iterdir()) == ["agent.log", "payload.json"]
    written = (workdir / "payload.json").read_text()  # one line: `cat` of it ends its line
    assert written.endswith("}\n") and written.count("\n") == 1 and json.loads(written) == payload


def test_the_agent_gets_only_allowlisted_variables_and_its_task(tmp_path, started_by, monkeypatch):
    argv = agent_script(tmp_path, "env", "import json, os\nprint(json.dumps(dict(os.environ)))\n")
    ws = push_workspace(tmp_path, {"ann": argv})
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    secrets = {"SCHED_TEST_SECRET": "hunter2", "AWS_SECRET_ACCESS_KEY": "k"}
    if started_by == "launcher":  # the daemon's environment has them
        for name, value in secrets.items():
            monkeypatch.setenv(name, value)
        tick(ws)
        wait_for("the task to finish", finished(ws, sub.task_id))
    else:  # the environment `sched exec` is started with has them
        ws.launcher = lambda settings, task_id: None  # the test starts the wrapper itself
        tick(ws)
        done = subprocess.run(exec_argv(ws.settings, sub.task_id), env={**os.environ, **secrets},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    seen = last_event(ws, sub.task_id, "TaskSucceeded")["result"]
    assert "SCHED_TEST_SECRET" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen
    assert seen["PATH"] == os.environ["PATH"]
    assert seen["SCHED_TASK_ID"] == str(sub.task_id) and seen["SCHED_ATTEMPT"] == "1"
    assert {"SCHED_QUEUE", "SCHED_AGENT", "SCHED_PAYLOAD_FILE", "SCHED_RESULT_FILE",
            "SCHED_LEASE_TOKEN"} <= set(seen)


def test_a_wrapper_started_by_hand_in_its_home_finds_the_database_from_the_attempts_directory(tmp_path):
    """`sched exec ID` run in the home without `--home` (relative paths): the wrapper
    works in the attempt's directory, and still writes to the home's database under its
    writers' lock, making no database or lock file where it works."""
    ws = push_workspace(tmp_path, {"w1": [sys.executable, "-c", "print('{}')"]})
    ws.launcher, ws.starter = (lambda settings, task_id: None), None  # started by hand below
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="by hand")])
    tick(ws)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    done = subprocess.run([sys.executable, "-m", "cli", "exec", str(sub.task_id), "--json"],
                          cwd=ws.settings.home, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    workdir = ws.settings.home / "work" / str(sub.task_id) / "1"
    assert not [p.name for p in workdir.iterdir() if p.name.startswith("sched.db")]


def test_an_orphan_that_keeps_the_output_pipe_leaves_no_descriptor_in_the_runner(tmp_path, started_by):
    """With no control group, an orphan in a session of its own with a cleared
    environment escaped the daemon's supervisor (which does not walk its tree) and kept
    the attempt's output pipe: the outcome was recorded once the output had had its
    time, but the supervisor kept the pipe and the log open for as long as the orphan
    lived (a review). A `sched exec` wrapper finds it among its descendants and stops it."""
    pid_file = tmp_path / "orphan.pid"
    argv = agent_script(tmp_path, "leaver", f"""
        import os, subprocess, time
        subprocess.Popen(["setsid", "env", "-i", "sh", "-c", "echo $$ > {pid_file}; exec sleep 120"])
        while not (os.path.exists({str(pid_file)!r}) and open({str(pid_file)!r}).read().strip()):
            time.sleep(0.01)  # (until it left: a session of its own, no environment)
        """)
    ws = push_workspace(tmp_path, {"ann": argv}, exec_cgroups=False)
    try:
        task_id = run_one(ws)
        assert status_of(ws, task_id) == "succeeded"
        started = last_event(ws, task_id, "TaskStarted")
        runner = LAUNCHERS[-1].pid if started_by == "launcher" else started["pid"]
        orphan = int(pid_file.read_text())
        try:
            pipe = os.readlink(f"/proc/{orphan}/fd/1")
        except FileNotFoundError:  # stopped with the attempt (a wrapper's descendant)
            assert started_by == "sched exec"
            return
        assert pipe.startswith("pipe:")  # (it holds the attempt's output)

        def holds_it() -> bool:
            try:
                fds = os.listdir(f"/proc/{runner}/fd")
                return any(os.readlink(f"/proc/{runner}/fd/{fd}") == pipe for fd in fds)
            except FileNotFoundError:  # (a wrapper that exited)
                return False

        wait_for("the runner to let the pipe go", lambda: not holds_it())
    finally:
        if pid_file.exists() and pid_file.read_text().strip():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_the_agent_starts_with_no_signal_ignored(tmp_path):
    """The daemon's supervisor ignored SIGINT, and an ignored signal stays ignored across
    exec: its agents could not be interrupted, nor trap INT (a review)."""
    argv = agent_script(tmp_path, "sigs", """
        import json, os
        mask = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("SigIgn:"))
        json.dump({"ignored": mask}, open(os.environ["SCHED_RESULT_FILE"], "w"))
        """)
    ws = push_workspace(tmp_path, {"ann": argv})
    task_id = run_one(ws)
    ignored = int(last_event(ws, task_id, "TaskSucceeded")["result"]["ignored"], 16)
    assert not ignored & (1 << (signal.SIGINT - 1))  # (Python itself ignores SIGPIPE and SIGXFSZ)


def test_the_agent_can_heartbeat_its_own_lease_with_the_token(tmp_path):
    argv = agent_script(tmp_path, "beat", f"""
        import json, os, subprocess
        done = subprocess.run([{sys.executable!r}, "-m", "cli", "worker", "heartbeat",
                               os.environ["SCHED_TASK_ID"], "--token", os.environ["SCHED_LEASE_TOKEN"],
                               "--db", os.environ["SCHED_DB"], "--json"],
                              capture_output=True, text=True, cwd={str(Path.cwd())!r})
        print(json.dumps({{"rc": done.returncode, "out": done.stdout.strip()}}))
        """)
    ws = push_workspace(tmp_path, {"ann": argv})
    task_id = run_one(ws)
    result = last_event(ws, task_id, "TaskSucceeded")["result"]
    assert result["rc"] == 0 and json.loads(result["out"])["task_id"] == task_id
    assert "LeaseRenewed" in [r.type for r in queries.show(ws, task_id)[1]]


def test_push_agents_do_not_claim(tmp_path):
    ws = push_workspace(tmp_path, {"ann": ["true"]})
    with pytest.raises(Exception, match="sched runs its tasks itself"):
        worker.claim(ws, "ann")


def test_cancelling_a_running_push_agent_stops_its_group_at_the_next_heartbeat(tmp_path):
    argv = agent_script(tmp_path, "long", """
        import time
        open("started", "w").close()
        time.sleep(120)  # the cancel stops it long before
        """)
    ws = push_workspace(tmp_path, {"ann": argv}, lease_seconds=1.5, kill_grace_seconds=0.5)
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    tick(ws)
    workdir = ws.settings.home / "work" / str(sub.task_id) / "1"
    wait_for("the agent to start", lambda: (workdir / "started").exists())
    assert operator.cancel(ws, sub.task_id, "tester") == "running"
    wait_for("the cancel to complete", lambda: status_of(ws, sub.task_id) == "cancelled")
    failed = last_event(ws, sub.task_id, "TaskFailed")
    assert failed["reason"] == "cancelled" and failed["signal"] == signal.SIGTERM


def test_a_cancel_reaches_a_push_agent_between_renewals(tmp_path):
    """With the default lease (300 s) the runner renews every 100 s, and a cancel
    waited for that renewal: the command ran on, or finished and succeeded. The runner
    asks about cancels every few seconds between renewals."""
    argv = agent_script(tmp_path, "long", """
        import time
        open("started", "w").close()
        time.sleep(120)  # the cancel stops it long before
        """)
    ws = push_workspace(tmp_path, {"ann": argv}, kill_grace_seconds=0.5)
    assert ws.settings.lease_seconds == 300
    (sub,) = submit(ws, [TaskSpec(queue="dev", title="t")])
    tick(ws)
    workdir = ws.settings.home / "work" / str(sub.task_id) / "1"
    wait_for("the agent to start", lambda: (workdir / "started").exists())
    asked = time.monotonic()
    assert operator.cancel(ws, sub.task_id, "tester") == "running"
    wait_for("the cancel to complete", lambda: status_of(ws, sub.task_id) == "cancelled",
             timeout=4 * supervisor.CANCEL_CHECK_SECONDS + 5)
    assert time.monotonic() - asked < 60  # (not the renewal's 100 s)
    assert last_event(ws, sub.task_id, "TaskFailed")["reason"] == "cancelled"


def test_an_exit_code_declared_non_retryable_dead_letters_at_once(tmp_path):
    argv = agent_script(tmp_path, "usage", 'import sys\nsys.exit(64)\n')
    agents = [{"agentName": "ann", "agentType": "dev", "command": argv, "nonRetryableExitCodes": [64]}]
    ws = push_workspace(tmp_path, {}, agents)
    task_id = run_one(ws, max_attempts=3)
    assert status_of(ws, task_id) == "dead"
    failed = last_event(ws, task_id, "TaskFailed")
    assert (failed["exit_code"], failed["retryable"]) == (64, False)
    assert "not retryable" in last_event(ws, task_id, "TaskDeadLettered")["reason"]


def test_the_runner_measures_when_the_command_ran_and_metrics_start_the_slot_then(tmp_path):
    # the agent's first statement notes the time: its command ran no earlier, and not
    # long before (an interpreter's start); the slot is busy from then, not from the record
    argv = agent_script(tmp_path, "clocked", "import json, time\nprint(json.dumps(time.time()))\n")
    ws = push_workspace(tmp_path, {"ann": argv})
    task_id = run_one(ws)
    records = queries.show(ws, task_id)[1]
    stamp = {r.type: datetime.fromisoformat(r.recorded_at).timestamp() for r in records}
    succeeded = last_event(ws, task_id, "TaskSucceeded")
    ran = stamp["TaskStarted"] + succeeded["start_delay_seconds"]
    assert ran <= succeeded["result"] < ran + 5
    latency = metrics(ws, timedelta(hours=1))["overall"]["start_latency_seconds"]
    assert latency["p50"] == pytest.approx(ran - stamp["TaskAssigned"], abs=1e-3)


def test_a_small_agents_memory_is_its_own_not_its_wrappers(tmp_path):
    """A shell line was recorded with the wrapper's 40 to 70 MB: `ru_maxrss` counts the
    memory the agent's process shared with the (Python) wrapper until its exec."""
    ws = push_workspace(tmp_path, {"ann": ["sh", "-c", "sleep 0.3"]}, exec_sample_seconds=0.05)
    succeeded = last_event(ws, run_one(ws), "TaskSucceeded")
    assert 0 < succeeded["peak_rss_bytes"] < 16 * 1024 * 1024, succeeded["peak_rss_bytes"]


def test_a_run_shorter_than_the_sampling_interval_has_no_memory_figure(tmp_path):
    """Not sampled, it is not measured: null, not the 0 that a metrics alert would read
    as a run that used no memory (its CPU is still counted, from the kernel)."""
    ws = push_workspace(tmp_path, {"ann": ["sh", "-c", "exit 0"]}, exec_sample_seconds=30)
    succeeded = last_event(ws, run_one(ws), "TaskSucceeded")
    assert succeeded["peak_rss_bytes"] is None and succeeded["cpu_seconds"] is not None
    overall = metrics(ws, timedelta(hours=1))["overall"]
    assert (overall["measured_runs"], overall["peak_rss_bytes"]) == (1, None)


def test_the_wrapper_measures_cpu_and_peak_memory_of_the_agent_tree(tmp_path):
    # the agent burns about 0.3 s of CPU in a child it waits for, and holds 64 MiB
    # for longer than the sampling interval
    argv = agent_script(tmp_path, "heavy", """
        import subprocess, sys, time
        subprocess.run([sys.executable, "-c",
                        "import time\\nend = time.process_time() + 0.3\\n"
                        "while time.process_time() < end: pass"], check=True)
        block = bytearray(64 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1  # touch every page so it is resident
        time.sleep(0.5)
        """)
    ws = push_workspace(tmp_path, {"ann": argv}, exec_sample_seconds=0.1)
    task_id = run_one(ws)
    succeeded = last_event(ws, task_id, "TaskSucceeded")
    assert succeeded["cpu_seconds"] >= 0.3
    assert succeeded["peak_rss_bytes"] >= 64 * 1024 * 1024
    overall = metrics(ws, timedelta(hours=1))["overall"]
    assert overall["measured_runs"] == 1
    assert overall["cpu_seconds"] == succeeded["cpu_seconds"]
    assert overall["peak_rss_bytes"] == succeeded["peak_rss_bytes"]
