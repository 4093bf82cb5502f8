"""`sched exec TASK_ID`: run one assigned attempt of a push agent's command.

Starting an attempt: its private working directory, its `TaskStarted` (holding the
lease, naming the attempt's control group if one could be made), the agent's argv --
never through a shell -- and its explicit environment (`start`, or `start_in` inside a
daemon's tick). The wrapper (`sched exec`, one attempt) then runs it under a
`scheduler.runner.supervisor.Supervisor` of its own, the same runner a daemon's supervisor
process uses for all its attempts; this module also says how a stopped attempt ended
(`ending_of`) and records it through the protocol a pull worker uses (`complete` /
`fail`).

Whatever ends the attempt (the agent's exit, its timeout, a cancel, a lost or expiring
lease, a SIGTERM to the wrapper), every process of the attempt is stopped first
(`containment.stop_attempt`) and only then is its end recorded, so a retry never runs
beside a leftover of this attempt. If the wrapper itself is SIGKILLed, the agent dies
with it (`setpriv --pdeathsig`) and the next tick on this host stops the rest and takes
the task back.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path, PurePath
from typing import Any, BinaryIO

from eventlog.errors import BadInput, NotFound, Refused
from eventlog.events import RunnerFailure, TaskRequeued, TaskStarted
from eventlog.storage import DATABASE_URL_VARIABLE
from eventlog.values import MAX_DEPTH, fit_text, parse_json
from projections.recorder import Recorder
from projections.sql import SqlProjection
from projections.views import AgentView, TaskView
from scheduler import worker
from scheduler.config.settings import Settings
from scheduler.machine import this_machine
from scheduler.runner import containment
from scheduler.runner.spawn import lease_clock
from scheduler.runner.usage import Usage
from scheduler.tokens import hash_token, new_token
from scheduler.workspace import Workspace

PLACEHOLDERS = ("task_id", "queue", "agent", "attempt", "workdir")
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NAME = 15
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
READ_CHUNK = 64 * 1024
LINE_KEEP_FACTOR = 4  # the last output line is kept up to this many times max_payload_bytes
LOG_DRAIN_SECONDS = 5.0  # after the stop, how long the output may take to reach agent.log


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
    env = {name: parent[name] for name in allowlist if name in parent and name != DATABASE_URL_VARIABLE}
    env.update(task_vars)
    return env


@dataclass(frozen=True)
class Attempt:
    """A started attempt, as the wrapper needs it."""

    task_id: int
    attempt: int
    queue: str
    token: str
    argv: list[str]
    workdir: Path
    env: dict[str, str]
    timeout: float
    log_path: Path
    ref: containment.AttemptRef  # finds and stops every process of the attempt
    granted_at: float  # lease_clock() before the lease was granted (it runs from then, at the latest)
    non_retryable: frozenset[int] = frozenset()  # exit codes that dead-letter at once
    retry_spawn_errors: bool = False  # its queue's policy: a program that cannot start is retried
    reap_orphans: bool = False  # the wrapper is subreaper of the agent's descendants
    # the payload to write into `workdir` (made then, with the control group that `ref`
    # names) just before the command starts; None: made already (`sched exec`)
    payload: str | None = None
    # lease_clock() when the time its TaskStarted records was read (`Recorder.now_mark`; on
    # a host runner, when the server's answer came): its command's start delay counts from then
    recorded_at: float | None = None

    @property
    def result_file(self) -> Path:
        return self.workdir / "result.json"


@dataclass(frozen=True)
class Outcome:
    """How the attempt ended, as recorded."""

    status: str  # the task's status afterwards (succeeded, queued, dead), or "lost" (lease gone)
    detail: str


# -- starting ----------------------------------------------------------------------------

def _assignment(views: SqlProjection, task_id: int) -> tuple[TaskView, AgentView]:
    """The task, waiting to be started, and its agent (which has a command)."""
    task = views.get_task(task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if task.status != "assigned" or task.agent is None:
        raise Refused(f"task {task_id} is not waiting to be started (it is {task.status})")
    agent = views.get_agent(task.agent)
    if agent is None or agent.command is None:
        raise Refused(f"task {task_id} is assigned to {task.agent}, which has no command")
    return task, agent


def warm_up(ws: Workspace) -> None:
    """Open the database and run, once, the reads of a wrapper (finding nothing; no
    write lock taken: the daemon's tick may hold it while it waits for this process),
    and build the event models: wrappers forked from this process then start with the
    database checked, the statements compiled and the validators built (a wrapper
    building them took 3 ms per event type while it held the write lock)."""
    from eventlog.events import build_models

    build_models()
    with ws.read() as (_log, views):
        views.get_task(0)
        views.get_agent("")


def prepare_workdir(workdir: Path, payload: str) -> bool:
    """Make `work/TASK/ATTEMPT/` (private to the owner) and write the payload into it
    (as few directory calls as can be: a supervisor makes one per attempt it starts).
    Whether the directory was there already: a run of this attempt number before (a
    database restored from a backup), whose `result.json` the attempt's starter then
    removes (`forget_result`), or a wrapper of the same attempt that got its start
    recorded first (two overlapping cron ticks), whose agent may be reading the payload
    and writing its result: so nothing is removed here, and the payload is replaced
    whole (a rename), never seen half written."""
    existed = False
    try:
        os.mkdir(workdir, 0o700)
    except FileNotFoundError:  # the task's first attempt: work/TASK/ first (work/ too, the first time)
        try:
            os.mkdir(workdir.parent, 0o700)
        except FileNotFoundError:
            workdir.parent.parent.mkdir(exist_ok=True, mode=0o700)
            os.mkdir(workdir.parent, 0o700)
        except FileExistsError:
            pass
        os.mkdir(workdir, 0o700)
    except FileExistsError:
        if not workdir.is_dir():
            raise
        existed = True
    written = workdir / f".payload.json.{os.getpid()}"
    try:
        with open(written, "w", encoding="utf-8") as f:  # (whatever the locale)
            f.write(payload + "\n")  # (a line: `cat` of it does not run into what follows)
        os.replace(written, workdir / "payload.json")
    except OSError:  # (a full disk: no half-written file left for the agent to find)
        written.unlink(missing_ok=True)
        raise
    return existed


def forget_result(workdir: Path) -> None:
    """Remove the `result.json` an earlier run of this attempt number left (its result is
    not this run's): only once this attempt's start is certain to be ours. (Not a file,
    it stays: a result that is not a regular file is never read as one.)"""
    with contextlib.suppress(FileNotFoundError, IsADirectoryError):
        (workdir / "result.json").unlink()


def _workdir(ws: Workspace, task_id: int, attempt: int) -> Path:
    return Path(_places(ws.settings)[0], "work", str(task_id), str(attempt))


def _places(settings: Settings) -> tuple[str, str]:
    """The resolved home and the database's label (`SCHED_HOME`, `SCHED_DB`) of these
    settings, worked out once per settings (each resolve walks the path)."""
    last = _LAST_PLACES[0]
    if last is None or last[0] is not settings:
        last = (settings, str(settings.home.resolve()), settings.database_label)
        _LAST_PLACES[0] = last
    return last[1], last[2]


_LAST_PLACES: list[tuple[Settings, str, str] | None] = [None]


def _attempt_ref(ws: Workspace, task: TaskView, pid: int, workdir: Path) -> containment.AttemptRef:
    return containment.AttemptRef.of(task.task_id, task.attempt + 1, _places(ws.settings)[1], pid,
                                     workdir=str(workdir))


def _make_cgroup(ws: Workspace, ref: containment.AttemptRef) -> Path | None:
    """The attempt's control group, where the host allows one (`forget_cgroups` removes
    it if the attempt's start is not recorded after all)."""
    return containment.create_cgroup(ref) if ws.settings.exec_cgroups else None


def _start_event(ws: Workspace, recorder: Recorder, task: TaskView, agent: AgentView,
                 parent_env: Mapping[str, str], granted_at: float, workdir: Path,
                 ref: containment.AttemptRef, group: Path | None) -> tuple[TaskStarted, Attempt]:
    """The attempt's `TaskStarted` (the wrapper's pid and host, the argv, the directory
    `workdir`, the control group `group`, a fresh lease from the transaction's time),
    for the caller to record, and the attempt as its wrapper runs it. `granted_at`: `lease_clock()` before the
    transaction began (the lease runs from then, at the latest)."""
    ref = replace(ref, cgroup=str(group) if group is not None else None)
    event, token = started_event(ws, recorder, task, agent, ref.wrapper_pid or 0, ws.settings.host_name,
                                 workdir, ref.cgroup, machine=this_machine())
    task_vars = {**task_variables(event, task.queue, token),
                 "SCHED_HOME": _places(ws.settings)[0], "SCHED_DB": ref.db}
    return event, Attempt(task.task_id, event.attempt, task.queue, token, list(event.argv), workdir,
                          child_environment(parent_env, ws.settings.exec_env_allowlist, task_vars),
                          agent.timeout_seconds or ws.settings.exec_timeout_seconds, workdir / "agent.log",
                          ref, granted_at, frozenset(json.loads(agent.non_retryable_exit_codes)),
                          ws.settings.queue_policy(task.queue).retry_spawn_errors,
                          recorded_at=recorder.now_mark)


def started_event(ws: Workspace, recorder: Recorder, task: TaskView, agent: AgentView, pid: int,
                  host: str, workdir: PurePath, cgroup: str | None,
                  by: str | None = None, token: str | None = None, *,
                  machine: str | None) -> tuple[TaskStarted, str]:
    """The `TaskStarted` of the assigned `task`'s next attempt, run by process `pid` on
    `host` (`machine`: its machine, boot and pid namespace) in `workdir` (its log
    beside), with a fresh lease from the transaction's time; and the attempt's lease
    token (only its hash is recorded): `token`, else a new one. `by`: the HTTP API
    token that started it (a host runner's)."""
    attempt = task.attempt + 1
    token = token or new_token()
    values = {"task_id": str(task.task_id), "queue": task.queue, "agent": agent.name,
              "attempt": str(attempt), "workdir": str(workdir)}
    argv = expand_argv(json.loads(agent.command or "[]"), values)
    event = TaskStarted(
        task_id=task.task_id, agent=agent.name, attempt=attempt, token_hash=hash_token(token),
        lease_expires_at=recorder.now + timedelta(seconds=ws.settings.lease_seconds),
        runner="exec", pid=pid, host=host, argv=tuple(argv),
        workdir=str(workdir), log_path=str(workdir / "agent.log"), cgroup=cgroup, by=by,
        machine=machine)
    return event, token


def task_variables(started: TaskStarted, queue: str, token: str) -> dict[str, str]:
    """The variables that tell an agent its attempt (the runner adds where it reports:
    `SCHED_HOME` and `SCHED_DB`, or `SCHED_SERVER`)."""
    workdir = PurePath(started.workdir or "")
    return {
        "SCHED_TASK_ID": str(started.task_id), "SCHED_QUEUE": queue, "SCHED_AGENT": started.agent,
        "SCHED_ATTEMPT": str(started.attempt), "SCHED_WORKDIR": str(workdir),
        "SCHED_PAYLOAD_FILE": str(workdir / "payload.json"),
        "SCHED_RESULT_FILE": str(workdir / "result.json"), "SCHED_LEASE_TOKEN": token,
    }


def sweep_cgroups(ws: Workspace) -> None:
    """Before attempts start (once per batch): remove the empty control groups that
    wrappers gone before their end left behind."""
    if ws.settings.exec_cgroups:
        containment.sweep_cgroups()


def forget_cgroups(attempts: Iterable[Attempt]) -> None:
    """Remove the control groups of attempts whose start was not recorded."""
    for attempt in attempts:
        if attempt.ref.cgroup is not None:
            containment.remove_cgroup(Path(attempt.ref.cgroup))


def start(ws: Workspace, task_id: int, parent_env: Mapping[str, str]) -> Attempt | Outcome:
    """Prepare the working directory, then start the assigned attempt, with this
    process as its wrapper, in a write transaction of its own (`_start_event`). A
    directory that cannot be prepared is not the program's fault: the assignment goes
    back to the queue (`not_started`, after the queue's `backoff_base_seconds`) without
    using up an attempt, and the `Outcome` says so."""
    with ws.read() as (_log, views):
        task, _agent = _assignment(views, task_id)
    attempt = task.attempt + 1
    workdir = _workdir(ws, task_id, attempt)
    try:
        existed = prepare_workdir(workdir, task.payload)
    except OSError as e:
        return _not_started(ws, task_id, attempt, f"cannot prepare the working directory {workdir}: "
                            f"{e.strerror or e}")
    sweep_cgroups(ws)
    granted_at = lease_clock()
    with ws.write() as recorder:
        task, agent = _assignment(recorder.views, task_id)
        if task.attempt + 1 != attempt:
            raise Refused(f"task {task_id}: attempt {attempt} was started by another wrapper")
        if existed:  # (the start is ours: no other wrapper's agent writes its result there)
            forget_result(workdir)
        ref = _attempt_ref(ws, task, os.getpid(), workdir)
        event, started = _start_event(ws, recorder, task, agent, parent_env, granted_at, workdir, ref,
                                      _make_cgroup(ws, ref))
        try:
            recorder.record([event])
        except BaseException:
            forget_cgroups([started])
            raise
    return started


def start_in(ws: Workspace, recorder: Recorder, task_ids: Sequence[int], pid: int,
             parent_env: Mapping[str, str], granted_at: float) -> list[tuple[TaskStarted, Attempt]]:
    """Start assigned attempts inside the caller's write transaction (the daemon's
    tick, for its supervisor `pid`, which is handed the attempts after the commit): per
    task the event to record, and the attempt. Nothing is made here: the supervisor
    makes each attempt's directory and control group (the one the event names, where
    the host has cgroup v2) just before its command starts, and fails the attempt
    (retried) if the directory cannot be made."""
    started = []
    for task_id in task_ids:
        task, agent = _assignment(recorder.views, task_id)
        workdir = _workdir(ws, task_id, task.attempt + 1)
        ref = _attempt_ref(ws, task, pid, workdir)
        group = containment.cgroup_for(ref) if ws.settings.exec_cgroups else None
        event, attempt = _start_event(ws, recorder, task, agent, parent_env, granted_at, workdir, ref, group)
        started.append((event, replace(attempt, payload=task.payload)))
    return started


def _not_started_event(ws: Workspace, recorder: Recorder, task: TaskView, why: str) -> TaskRequeued:
    delay = ws.settings.queue_policy(task.queue).backoff_base_seconds
    return TaskRequeued(task_id=task.task_id, reason="not_started",
                        detail=fit_text(why, ws.settings.max_message_bytes),
                        not_before=recorder.now + timedelta(seconds=delay))


def _not_started(ws: Workspace, task_id: int, attempt: int, why: str) -> Outcome:
    with ws.write() as recorder:
        task = recorder.views.get_task(task_id)
        if task is None or task.status != "assigned" or task.attempt + 1 != attempt:
            return Outcome("lost", f"not started ({fit_text(why, ws.settings.max_message_bytes)}), "
                                   "and meanwhile taken back")
        event = _not_started_event(ws, recorder, task, why)
        recorder.record([event])
    return Outcome("queued", f"not started: {event.detail}")


# -- the agent's process ---------------------------------------------------------------

@functools.cache
def _prctl_function() -> Callable[..., int] | None:
    """libc's prctl, looked up once; None where there is none."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def _prctl(option: int, value: int | ctypes.c_char_p) -> None:
    """Linux process controls; elsewhere a no-op (the lease still covers a lost run)."""
    function = _prctl_function()
    if function is not None:
        function(option, value, 0, 0, 0)


class AgentLog:
    """The agent's stdout and stderr, as the supervisor reads them from a pipe, written
    to `agent.log`, which is rotated to `agent.log.1` when it reaches `max_bytes` (so
    an attempt keeps at most twice that). The last non-empty line is kept (its first
    `keep` bytes, and its length) for the error message and the result. A write that
    fails (disk full, say) is noted in `error`; the output is still read, so the agent
    never blocks on the pipe."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path, self._max, self._keep = path, max_bytes, keep
        self._line = bytearray()  # the line being written (its first `keep` bytes)
        self._line_length = 0
        self._last, self._last_length = b"", 0  # the last complete non-empty line
        self.error: str | None = None
        self._out: BinaryIO | None = None
        self._size = 0
        try:
            self._out = path.open("ab", buffering=0)
            self._size = self._out.tell()
        except OSError as e:
            self.error = str(e)

    def write(self, chunk: bytes) -> None:
        self._note(chunk)
        if self._out is None:
            return
        try:
            view = memoryview(chunk)
            while view:
                if self._size >= self._max:
                    self._out.close()
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                    self._out = self.path.open("ab", buffering=0)
                    self._size = 0
                written = self._out.write(view[: self._max - self._size]) or 0
                self._size += written
                view = view[written:]
        except OSError as e:
            self.error = str(e)
            self.close()

    def close(self) -> None:
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.close()
            self._out = None

    def last_line(self) -> tuple[bytes, int]:
        """The last non-empty line (a final line without a newline counts), stripped,
        as kept, and its full length: that of the stripped line when the whole line was
        kept (so that blanks around it, a CR, never read as a line cut short)."""
        raw, length = ((bytes(self._line), self._line_length) if bytes(self._line).strip()
                       else (self._last, self._last_length))
        stripped = raw.strip()
        return stripped, len(stripped) if length == len(raw) else length

    def _extend(self, part: bytes) -> None:
        self._line_length += len(part)
        room = self._keep - len(self._line)
        if room > 0:
            self._line += part[:room]

    def _end_line(self) -> None:
        if bytes(self._line).strip():
            self._last, self._last_length = bytes(self._line), self._line_length
        self._line, self._line_length = bytearray(), 0

    def _note(self, chunk: bytes) -> None:
        parts = chunk.split(b"\n")
        self._extend(parts[0])
        if len(parts) == 1:
            return
        self._end_line()
        for part in reversed(parts[1:-1]):  # of the lines complete within the chunk, only the last one
            if part.strip():                # that is not blank matters
                self._extend(part)
                self._end_line()
                break
        self._extend(parts[-1])


@dataclass
class StopRequest:
    """The signal that asked the wrapper to stop (SIGTERM, SIGINT, SIGHUP), if one did."""

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While the wrapper runs, SIGTERM, SIGINT and SIGHUP only note the request; the
    wrapper then stops the attempt and records it before it exits. (Off the main
    thread, where Python cannot handle signals, nothing changes.)"""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def note(signum: int, _frame: object) -> None:
        request.signum = request.signum or signum

    previous = {sig: signal.signal(sig, note) for sig in STOP_SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(ws: Workspace, attempt: Attempt, stop: StopRequest | None = None) -> Outcome:
    """Run the agent command under a supervisor of its own (`scheduler.runner.supervisor`,
    the daemon's runner with one attempt); whatever ends it, every process of the
    attempt is stopped, then how it ended is recorded."""
    from scheduler.runner.supervisor import run_all

    # (its lines go to logs/exec.log, where a cron tick's wrappers are the only runners)
    return run_all(ws, [attempt], stop, subreaper=attempt.reap_orphans,
                   name=f"sched exec {attempt.task_id}")[0]


# -- recording the outcome -------------------------------------------------------------

@dataclass(frozen=True)
class Ending:
    """What is recorded for a stopped attempt: a success with its result, or a failure
    with its error; `detail` is the outcome's description for the wrapper's log."""

    detail: str
    succeeded: bool = False
    result: object = None
    error: str = ""
    reason: RunnerFailure = "exit_code"
    retry: bool = True
    exit_code: int | None = None
    signal: int | None = None
    usage: Usage | None = None


def record_ending(ws: Workspace, recorder: Recorder, attempt: Attempt, ending: Ending) -> str:
    """Record the ending in the caller's write transaction; the task's new status.
    Raises `TokenRejected` (nothing recorded) when the attempt is no longer current."""
    log = str(attempt.log_path)
    if ending.succeeded:
        worker.complete_in(recorder, attempt.task_id, attempt.token, ending.result, log_path=log,
                           usage=ending.usage)
        return "succeeded"
    return worker.fail_in(ws, recorder, attempt.task_id, attempt.token, ending.error, retry=ending.retry,
                          reason=ending.reason, exit_code=ending.exit_code, signal=ending.signal,
                          log_path=log, usage=ending.usage)


# errors of a start that say the machine ran short, not that the program is wrong
MACHINE_LIMITS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


def spawn_error_ending(settings: Settings, attempt: Attempt, error: OSError) -> Ending:
    """The program could not be started (missing, not executable, not a program): that
    will not get better by itself, so the task is dead-lettered at once unless its
    queue has `retry_spawn_errors`. A working directory that vanished meanwhile, or a
    machine out of descriptors, processes or memory, is not the program's fault:
    retried."""
    if error.filename is not None and os.fsdecode(error.filename) == str(attempt.workdir):
        why, retry = f"cannot enter the working directory: {error.strerror or error}", True
    elif error.errno in MACHINE_LIMITS:  # no descriptor, process or memory left: the host's
        why = f"cannot start {attempt.argv[0]!r}: {error.strerror or error} (this machine's limits)"
        retry = True  # (it dead-lettered healthy tasks at once: a review)
    else:
        why = f"cannot start {attempt.argv[0]!r}: {error.strerror or error}"
        retry = attempt.retry_spawn_errors
    return Ending(f"spawn error: {error.strerror or error}",
                  error=fit_text(why, settings.max_message_bytes), reason="spawn_error", retry=retry)


def unprepared_ending(settings: Settings, attempt: Attempt, error: OSError) -> Ending:
    """The attempt's directory could not be made: not the program's fault, retried (a
    failed attempt: unlike `sched exec`, which finds it before the attempt starts)."""
    why = f"cannot prepare the working directory {attempt.workdir}: {error.strerror or error}"
    return Ending(f"failed before its command started: {why}",
                  error=fit_text(why, settings.max_message_bytes), reason="spawn_error")


def keep_limit(max_payload_bytes: int) -> int:
    """The longest result text read: its JSON may be written less compactly than the
    log stores it (spaces, escapes), so some room above the limit."""
    return LINE_KEEP_FACTOR * max_payload_bytes


def _carried(text: str, where: str, max_bytes: int) -> object:
    """The JSON value of `text` if the log can carry it unchanged; else ValueError
    naming `where` and the problem (the agent's failure, not bad input of a user)."""
    try:
        return parse_json(text, where, max_bytes)
    except BadInput as e:
        raise ValueError(e.message) from e


def _result_file(path: Path, limit: int) -> bytes | None:
    """The first `limit` + 1 bytes of the result file, None if there is none. Only a
    regular file is read, never through a link: a FIFO there blocked the read for ever,
    and a link to /dev/zero read without end, on the supervisor's one thread that settles
    every attempt's end (a review)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:  # (ELOOP: a symbolic link)
        why = "a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise ValueError(f"result.json: cannot be read ({why})") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("result.json: is not a regular file")
        return f.read(limit + 1)


def read_result(result_file: Path, last_line: bytes, line_length: int, max_bytes: int) -> object:
    """The attempt's result: the JSON of the result file if the agent wrote one; else
    its last output line, if Python's lenient parser reads it as JSON; else None. A
    result the log cannot carry unchanged (NaN or Infinity, a number that overflows,
    a lone surrogate, nesting deeper than 64, more than `max_bytes`) raises ValueError
    naming the problem, as does a result file that is not JSON."""
    data = _result_file(result_file, keep_limit(max_bytes))
    if data is not None:
        if len(data) > keep_limit(max_bytes):
            raise ValueError(f"result.json: is over the limit of {max_bytes} bytes")
        return _carried(data.decode("utf-8", "surrogateescape"), "result.json", max_bytes)
    where = "the last output line"
    if line_length > len(last_line) and last_line[:1] in (b"{", b"["):
        raise ValueError(f"{where}: is {line_length} bytes, over the limit of {max_bytes}")
    text = last_line.decode("utf-8", "surrogateescape")
    try:
        json.loads(text)  # lenient: NaN, Infinity and 1e400 are JSON here
    except RecursionError:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        return None  # not JSON: not a result
    return _carried(text, where, max_bytes)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # real-time signals have no name
        return f"signal {number}"


def ending_of(settings: Settings, attempt: Attempt, returncode: int | None, ending: str, usage: Usage,
              output: AgentLog | None, stop: StopRequest) -> Ending:
    """How the stopped attempt ended, as it is to be recorded (`TaskSucceeded` or
    `TaskFailed`)."""
    limit = settings.max_message_bytes
    killed_by = -returncode if returncode is not None and returncode < 0 else None

    def failed(detail: str, error: str, **fields: Any) -> Ending:
        return Ending(detail, error=fit_text(error, limit), usage=usage, **fields)

    if ending == "signal":
        assert stop.signum is not None
        name = _signal_name(stop.signum)
        return failed(f"stopped by {name}", f"stopped: its runner received {name}", reason="interrupted",
                      signal=stop.signum)
    # stopped by sched: the signal that ended it, or the code it exited with by itself
    # once asked to stop (an agent that traps SIGTERM)
    exited = returncode if returncode is not None and returncode >= 0 else None
    if ending == "cancelled":
        return failed("cancelled", "cancelled while running: stopped", reason="cancelled", retry=False,
                      signal=killed_by, exit_code=exited)
    if ending == "timeout":
        return failed("timeout", f"timed out after {attempt.timeout:g} s", reason="timeout",
                      signal=killed_by, exit_code=exited)
    assert returncode is not None and output is not None
    line, length = output.last_line()
    if returncode == 0:
        try:
            result = read_result(attempt.result_file, line, length, settings.max_payload_bytes)
        except (OSError, ValueError) as e:
            return failed("result cannot be recorded", f"exited 0 but its result cannot be recorded: {e}",
                          exit_code=0)
        return Ending("exit 0", succeeded=True, result=result, usage=usage)
    last = line.decode("utf-8", "replace")
    suffix = f": {last}" if last else ""
    if killed_by is not None:
        name = _signal_name(killed_by)
        return failed(name, f"killed by {name}{suffix}", signal=killed_by)
    return failed(f"exit {returncode}", f"exited with {returncode}{suffix}", exit_code=returncode,
                  retry=returncode not in attempt.non_retryable)


def take_role(name: str) -> None:
    """This process supervises agents and does nothing else: orphaned descendants of
    its agents become its to reap (and to find), and it names itself `name`."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()))


def _become_wrapper(attempt: Attempt) -> None:
    """This process is the attempt's wrapper and nothing else (`take_role`), named
    `containment.WRAPPER_NAME` and working in the attempt's directory (how a tick tells
    it from a process that got its pid later; every path it uses is absolute)."""
    os.chdir(attempt.workdir)
    take_role(containment.WRAPPER_NAME)


def exec_task(ws: Workspace, task_id: int, parent_env: Mapping[str, str], *,
              own_process: bool = False) -> Outcome:
    """Start and run one attempt. `own_process`: this process is the wrapper and
    nothing else (`sched exec`; see `_become_wrapper`). SIGTERM, SIGINT and SIGHUP stop
    the attempt and record it as failed (retryable) before returning."""
    with stop_on_signals() as stop:
        started = start(ws, task_id, parent_env)
        if isinstance(started, Outcome):
            return started
        if own_process:
            _become_wrapper(started)
        return run(ws, replace(started, reap_orphans=own_process), stop)


def outcome_json(task_id: int, outcome: Outcome) -> dict[str, object]:
    """How a wrapper reports its attempt (`sched exec --json`, and the supervisor's
    wrappers in exec.log)."""
    return {"task_id": task_id, "status": outcome.status, "detail": outcome.detail}
