"""`sched exec TASK_ID`: run one assigned attempt of a push agent's command.

The wrapper starts the attempt (`TaskStarted`, holding the lease), runs the agent's
argv -- never through a shell -- in a private working directory, with an explicit
environment and in its own process group, heartbeats the lease while it runs, stops
the whole group on timeout (SIGTERM, a grace period, SIGKILL), and records the
outcome through the same protocol a pull worker uses (`complete` / `fail`). If the
wrapper itself dies, nobody renews the lease and the next tick takes the task back.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from eventlog.errors import DatabaseBusy, NotFound, Refused, TokenRejected
from eventlog.events import TaskStarted
from eventlog.faults import fault_point
from scheduler import worker
from scheduler.tokens import hash_token, new_token
from scheduler.usage import Usage, UsageMeter
from scheduler.workspace import Workspace

PLACEHOLDERS = ("task_id", "queue", "agent", "attempt", "workdir")
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.05
REPORT_TRIES = 3


def expand_argv(command: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Fill `{task_id}`, `{queue}`, `{agent}`, `{attempt}` and `{workdir}` wherever they
    appear in an argument. Nothing else is interpreted: other braces stay as written."""
    argv = []
    for arg in command:
        for name in PLACEHOLDERS:
            arg = arg.replace("{" + name + "}", values[name])
        argv.append(arg)
    return argv


def child_environment(parent: Mapping[str, str], allowlist: Sequence[str],
                      task_vars: Mapping[str, str]) -> dict[str, str]:
    """The agent's whole environment: allowlisted variables of the caller plus the
    task's own; every other variable of the scheduler's environment is withheld."""
    env = {name: parent[name] for name in allowlist if name in parent}
    env.update(task_vars)
    return env


@dataclass(frozen=True)
class Attempt:
    """A started attempt, as the wrapper needs it."""

    task_id: int
    attempt: int
    token: str
    argv: list[str]
    workdir: Path
    payload: str
    env: dict[str, str]
    timeout: float
    log_path: Path
    non_retryable: frozenset[int] = frozenset()  # exit codes that dead-letter at once
    reap_orphans: bool = False  # the wrapper is subreaper of the agent's descendants

    @property
    def result_file(self) -> Path:
        return self.workdir / "result.json"


@dataclass(frozen=True)
class Outcome:
    """How the attempt ended, as recorded."""

    status: str  # the task's status afterwards (succeeded, queued, dead), or "lost" (lease gone)
    detail: str


def start(ws: Workspace, task_id: int, parent_env: Mapping[str, str]) -> Attempt:
    """Start the assigned attempt in one write transaction: `TaskStarted` with the
    wrapper's pid and host, the argv, the working directory and a fresh lease."""
    with ws.write() as recorder:
        now, views = recorder.now, recorder.views
        task = views.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        if task.status != "assigned" or task.agent is None:
            raise Refused(f"task {task_id} is not waiting to be started (it is {task.status})")
        agent = views.get_agent(task.agent)
        if agent is None or agent.command is None:
            raise Refused(f"task {task_id} is assigned to {task.agent}, which has no command")
        attempt = task.attempt + 1
        workdir = (ws.settings.home / "work" / str(task_id) / str(attempt)).resolve()
        values = {"task_id": str(task_id), "queue": task.queue, "agent": task.agent,
                  "attempt": str(attempt), "workdir": str(workdir)}
        argv = expand_argv(json.loads(agent.command), values)
        token = new_token()
        log_path = workdir / "agent.log"
        recorder.record([TaskStarted(
            task_id=task_id, agent=task.agent, attempt=attempt, token_hash=hash_token(token),
            lease_expires_at=now + timedelta(seconds=ws.settings.lease_seconds), runner="exec",
            pid=os.getpid(), host=socket.gethostname(), argv=tuple(argv), workdir=str(workdir),
            log_path=str(log_path))])
    task_vars = {
        "SCHED_TASK_ID": str(task_id), "SCHED_QUEUE": task.queue, "SCHED_AGENT": task.agent,
        "SCHED_ATTEMPT": str(attempt), "SCHED_WORKDIR": str(workdir),
        "SCHED_PAYLOAD_FILE": str(workdir / "payload.json"),
        "SCHED_RESULT_FILE": str(workdir / "result.json"), "SCHED_LEASE_TOKEN": token,
        "SCHED_HOME": str(ws.settings.home.resolve()), "SCHED_DB": str(ws.settings.db_path.resolve()),
    }
    return Attempt(task_id, attempt, token, argv, workdir, task.payload,
                   child_environment(parent_env, ws.settings.exec_env_allowlist, task_vars),
                   agent.timeout_seconds or ws.settings.exec_timeout_seconds, log_path,
                   frozenset(json.loads(agent.non_retryable_exit_codes)))


def _prctl(option: int, value: int) -> None:
    """Linux process controls; elsewhere a no-op (the lease still covers a lost run)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _die_with_wrapper() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _reap(child: subprocess.Popen[bytes], orphans: bool) -> None:
    """Collect exited processes: the agent itself through its Popen (so its exit
    status is kept), and, as subreaper, orphaned descendants handed to us."""
    child.poll()
    while orphans:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None:
            return
        if info.si_pid == child.pid:
            child.poll()
        else:
            os.waitpid(info.si_pid, 0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_group(child: subprocess.Popen[bytes], grace: float, orphans: bool = False) -> None:
    """SIGTERM the agent's whole process group, wait up to `grace`, then SIGKILL what
    is left; reap all of it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(child, orphans)
            if not _group_alive(child.pid):
                return
            time.sleep(POLL_SECONDS)


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 4096, 0))
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def read_result(result_file: Path, log_path: Path) -> object:
    """The result file's JSON if the agent wrote one, else the last line of its output
    if that is JSON, else None."""
    if result_file.exists():
        return json.loads(result_file.read_text())  # a broken result file is the agent's failure
    with contextlib.suppress(ValueError):
        return json.loads(_last_line(log_path))
    return None


def run(ws: Workspace, attempt: Attempt) -> Outcome:
    """Run the agent command and record how it ended."""
    task_id, token, log = attempt.task_id, attempt.token, str(attempt.log_path)
    try:
        for level in (*reversed(attempt.workdir.parents[:2]), attempt.workdir):
            level.mkdir(parents=True, exist_ok=True, mode=0o700)  # work/, work/TASK/, the attempt
        (attempt.workdir / "payload.json").write_text(attempt.payload)
        meter = UsageMeter()
        with attempt.log_path.open("ab") as out:
            child = subprocess.Popen(
                attempt.argv, cwd=attempt.workdir, env=attempt.env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_wrapper)
    except OSError as e:
        status = worker.fail(ws, task_id, token, f"cannot start {attempt.argv[0]!r}: {e.strerror or e}",
                             reason="spawn_error", log_path=log)
        return Outcome(status, f"spawn error: {e}")
    fault_point("mid_exec")
    returncode, ending = _supervise(ws, attempt, child, meter)
    stop_group(child, ws.settings.kill_grace_seconds, attempt.reap_orphans)  # nothing outlives it
    if returncode is None:
        return Outcome("lost", "lease lost: the task was taken back while it ran")
    usage = meter.finish()
    tries = REPORT_TRIES
    while True:
        try:
            return _report(ws, attempt, returncode, ending, usage)
        except TokenRejected as e:
            return Outcome("lost", e.message)
        except DatabaseBusy:  # the outcome is worth another wait for the write lock
            tries -= 1
            if not tries:
                raise


def _supervise(ws: Workspace, attempt: Attempt, child: subprocess.Popen[bytes],
               meter: UsageMeter) -> tuple[int | None, str]:
    """Wait for the agent, sampling its memory every `exec_sample_seconds` and renewing
    the lease every third of its length; stop the group on timeout or when a heartbeat
    says the task was cancelled. Returns (exit status, how it ended: "exit", "timeout"
    or "cancelled"); status None if the lease was lost."""
    started = time.monotonic()
    beat_every = ws.settings.lease_seconds / 3
    next_beat = started + beat_every
    next_sample = started
    while True:
        now = time.monotonic()
        if now >= next_sample:
            meter.sample(child.pid)
            next_sample = now + ws.settings.exec_sample_seconds
        until = min(next_beat, next_sample, started + attempt.timeout)
        try:
            return child.wait(timeout=max(until - time.monotonic(), 0.0)), "exit"
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() < next_beat and time.monotonic() < started + attempt.timeout:
            continue  # woke up to sample
        if time.monotonic() >= started + attempt.timeout:
            stop_group(child, ws.settings.kill_grace_seconds, attempt.reap_orphans)
            return child.wait(), "timeout"
        try:
            beat = worker.heartbeat(ws, attempt.task_id, attempt.token)
        except TokenRejected:  # the task was taken back: this run no longer counts
            stop_group(child, ws.settings.kill_grace_seconds, attempt.reap_orphans)
            child.wait()
            return None, "lost"
        except DatabaseBusy:  # a long writer held the lock: try again soon, the lease has slack
            next_beat = time.monotonic() + min(beat_every, 1.0)
            continue
        if beat.cancel:
            stop_group(child, ws.settings.kill_grace_seconds, attempt.reap_orphans)
            return child.wait(), "cancelled"
        next_beat = time.monotonic() + beat_every


def _report(ws: Workspace, attempt: Attempt, returncode: int, ending: str, usage: Usage) -> Outcome:
    task_id, token, log = attempt.task_id, attempt.token, str(attempt.log_path)
    if ending == "cancelled":
        status = worker.fail(ws, task_id, token, "cancelled while running: stopped",
                             reason="cancelled", retry=False,
                             signal=-returncode if returncode < 0 else None, log_path=log, usage=usage)
        return Outcome(status, "cancelled")
    if ending == "timeout":
        status = worker.fail(ws, task_id, token, f"timed out after {attempt.timeout:g} s",
                             reason="timeout", signal=-returncode if returncode < 0 else None,
                             log_path=log, usage=usage)
        return Outcome(status, "timeout")
    if returncode == 0:
        try:
            result = read_result(attempt.result_file, attempt.log_path)
        except (OSError, ValueError) as e:
            status = worker.fail(ws, task_id, token, f"exited 0 but its result file is unreadable: {e}",
                                 reason="exit_code", exit_code=0, log_path=log, usage=usage)
            return Outcome(status, "bad result file")
        worker.complete(ws, task_id, token, result, log_path=log, usage=usage)
        return Outcome("succeeded", "exit 0")
    last = _last_line(attempt.log_path)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:  # real-time signals have no name
            name = f"signal {-returncode}"
        status = worker.fail(ws, task_id, token, f"killed by {name}" + (f": {last}" if last else ""),
                             reason="exit_code", signal=-returncode, log_path=log, usage=usage)
        return Outcome(status, name)
    status = worker.fail(ws, task_id, token, f"exited with {returncode}" + (f": {last}" if last else ""),
                         reason="exit_code", exit_code=returncode, log_path=log,
                         retry=returncode not in attempt.non_retryable, usage=usage)
    return Outcome(status, f"exit {returncode}")


def exec_task(ws: Workspace, task_id: int, parent_env: Mapping[str, str], *,
              subreaper: bool = False) -> Outcome:
    """Start and run one attempt. `subreaper` (the `sched exec` process sets it) makes
    orphaned grandchildren of the agent ours to reap."""
    if subreaper:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    attempt = start(ws, task_id, parent_env)
    return run(ws, replace(attempt, reap_orphans=subreaper))
