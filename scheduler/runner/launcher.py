"""The daemon's supervisor process: push agents started by a fork, not an interpreter.

`sched run` forks one supervisor process when it starts, before it starts any thread: a
copy of the daemon with sched imported, the event models built and the statements
compiled, which runs every attempt the daemon's ticks start on this host
(`scheduler.runner.supervisor.Supervisor`). A tick that assigns work to push agents of this
host records each attempt's `TaskStarted` with the supervisor's pid inside its write
transaction, commits, and hands the attempts over (`go`); the supervisor starts their
commands at once, each in its directory and control group, made then. If the
transaction fails, nothing was made or handed over then; if it failed in a COMMIT
that landed (its answer lost), the next tick hands those attempts over (`landed`). So
an attempt is assigned and started in one commit, and its command runs a `vfork`
later: no interpreter starts, no second transaction waits for the write lock, and no
file is made while the lock is held.

The supervisor renews the leases of all its attempts in one transaction per renewal
interval and records their outcomes in batches; it writes a byte to the daemon for each
attempt that ended (a slot is free), so the daemon ticks at once. Its own output goes
to `logs/exec.log`, a line per attempt as `sched exec` prints it. If the supervisor is
gone, ticks start `sched exec` processes instead (`spawn.spawn_exec`); when the daemon
goes, the supervisor sees its connection close, runs its attempts to their ends and
exits: running attempts outlive the daemon, as `sched exec` wrappers do. SIGTERM to
the supervisor stops its attempts and records them as failed (retryable); it takes no
new ones meanwhile (its connection closed, the daemon's ticks start `sched exec`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path

from eventlog.errors import SchedError
from projections.recorder import Recorder
from projections.sql import SqlProjection
from scheduler.clock import Clock
from scheduler.config.settings import Settings
from scheduler.runner import containment
from scheduler.runner.exec import StopRequest, start_in, take_role, warm_up
from scheduler.runner.exec_log import exec_log_path, stamp_output
from scheduler.runner.spawn import Handover, LauncherGone, absolute
from scheduler.runner.supervisor import DatabaseLedger, Supervisor, log_line, signals_wake
from scheduler.tokens import hash_token
from scheduler.workspace import Workspace

EXITED = b"x"  # one byte to the daemon per attempt that ended
SUPERVISOR_NAME = "sched-supervise"  # the supervisor process's name (comm)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Launcher:
    """The daemon's side of its supervisor process (a `spawn.Starter`). `start()` forks
    the supervisor (call it before any thread is started); a tick calls `start_in`,
    then, after its commit, `go`; `close()` lets it go (it finishes its attempts on its own).
    `on_exit` runs, on a thread of its own, when attempts ended (once for several that
    ended together)."""

    def __init__(self, settings: Settings, clock: Clock, on_exit: Callable[[], None] | None = None) -> None:
        self._settings, self._clock, self._on_exit = absolute(settings), clock, on_exit
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.pid: int | None = None
        self._unsure: Handover = []  # started by a transaction whose outcome is unknown

    @property
    def alive(self) -> bool:
        return self._conn is not None

    def start(self) -> None:
        ours, theirs = Pipe()
        exits_r, exits_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the supervisor: never returns
            code = 1
            try:
                ours.close()
                os.close(exits_r)
                _serve(self._settings, self._clock, theirs, exits_w)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        theirs.close()
        os.close(exits_w)
        self.pid, self._conn = pid, ours
        threading.Thread(target=self._read_exits, args=(exits_r,), name="supervisor-exits",
                         daemon=True).start()

    def start_in(self, ws: Workspace, recorder: Recorder, task_ids: Sequence[int],
                 granted_at: float) -> Handover:
        """Inside the tick's write transaction: start each assigned attempt with the
        supervisor as its wrapper (`exec.start_in`), all recorded at once; the
        supervisor makes their directories and control groups after `go`."""
        self._check_alive()
        assert self.pid is not None
        started = start_in(ws, recorder, task_ids, self.pid, os.environ, granted_at)
        recorder.record([event for event, _ in started])
        return [(self.pid, attempt) for _, attempt in started]

    def _check_alive(self) -> None:
        """Raise `LauncherGone` if the supervisor is gone: it has exited (its pid says so:
        a copy of its end of the connection may outlive it in a process forked meanwhile)
        or its end of the connection is closed (it never writes: readable means closed)."""
        with self._lock:
            if self._conn is not None and (self._exited() or self._conn.poll()):
                self._gone()
            if self._conn is None:
                raise LauncherGone(f"the sched supervisor (pid {self.pid}) is gone")

    def _exited(self) -> bool:
        """Whether the supervisor has exited, by the test a tick uses for a dead wrapper
        (`containment.alive`: a zombie is gone). A killed process with several threads
        shows as a zombie while its last threads still end, its connection still open:
        a tick that took its attempts back must not hand it new ones then."""
        if self.pid is None or not containment.alive(self.pid):
            if self.pid is not None:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, os.WNOHANG)  # collected here once it has fully ended
            return True
        return False

    def go(self, handover: Handover) -> None:
        """Hand the attempts over; not waiting for the supervisor, which may be busy
        starting the last batch (a supervisor gone fails the send)."""
        with self._lock:
            if self._conn is None:
                raise LauncherGone("the sched supervisor is gone")
            try:
                self._conn.send([attempt for _, attempt in handover])
            except OSError as e:
                self._gone()
                raise LauncherGone(f"the sched supervisor (pid {self.pid}) is gone: {e}") from e

    def _gone(self) -> None:
        """Let go of a supervisor found gone, and collect it once it has ended (it may
        still be ending: a zombie left uncollected stayed under the daemon until it
        stopped, as the daemon goes on with `sched exec` wrappers)."""
        assert self._conn is not None
        self._conn.close()
        self._conn = None
        if self.pid is not None:
            threading.Thread(target=_collect, args=(self.pid,), name="supervisor-wait", daemon=True).start()

    def unsure(self, handover: Handover) -> None:
        with self._lock:
            self._unsure.extend(handover)

    def landed(self, views: SqlProjection) -> Handover:
        """(`spawn.Starter.landed`.) An attempt is known by its lease token: a failed
        commit's attempt number may be started again, by a later tick, with a new token."""
        with self._lock:
            unsure, self._unsure = self._unsure, []
        return [(pid, attempt) for pid, attempt in unsure
                if (task := views.get_task(attempt.task_id)) is not None and task.status == "running"
                and task.token_hash == hash_token(attempt.token)]

    def close(self) -> None:
        """Close the connection: the supervisor runs its attempts to their ends, then
        exits (collected by a thread of ours, or by init once the daemon is gone)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self.pid is not None:
            threading.Thread(target=_collect, args=(self.pid,), name="supervisor-wait",
                             daemon=True).start()
            self.pid = None

    def _read_exits(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as exits:
            while chunk := exits.read(4096):
                if self._on_exit is not None and EXITED in chunk:  # once for the ends read together
                    self._on_exit()


def _collect(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _serve(settings: Settings, clock: Clock, conn: Connection, exits: int) -> None:
    """The supervisor's loop: take the attempts the daemon hands over, supervise them,
    tell the daemon of each end; once the daemon closed the connection, return when
    the last attempt has ended."""
    # a Ctrl-C in the terminal is the daemon's: noted and let go, not ignored (an ignored
    # signal stays ignored across exec: the agents got no SIGINT at all, a review)
    signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    os.setsid()
    take_role(SUPERVISOR_NAME)  # orphans of the agents come to us, and are reaped
    _log_to(exec_log_path(settings.home), clock)
    ws = Workspace(settings, clock=clock)
    with contextlib.suppress(SchedError):  # an attempt's end will say what is wrong
        warm_up(ws)
    stop = StopRequest()

    def note(signum: int, _frame: object) -> None:
        stop.signum = stop.signum or signum

    for sig in STOP_SIGNALS:
        signal.signal(sig, note)
    supervisor = Supervisor(ws.settings, DatabaseLedger(ws), stop, subreaper=True)
    listening = True
    try:
        with signals_wake(supervisor):
            while listening or supervisor.busy:
                ready = supervisor.step(supervisor.next_timeout(), [conn.fileno()] if listening else [])
                if ready:
                    listening = _answer(conn, supervisor)
                ended = supervisor.finished()
                for run in ended:
                    assert run.outcome is not None
                    detail = json.dumps(run.outcome.detail, ensure_ascii=False)[1:-1]  # controls escaped
                    log_line(f"task {run.attempt.task_id}: {run.outcome.status} ({detail})", sys.stdout)
                if ended:
                    with contextlib.suppress(OSError):
                        os.write(exits, EXITED * len(ended))
                if stop.signum is not None and listening:
                    # no more attempts: the daemon sees the connection closed at its next
                    # tick and starts `sched exec` wrappers, rather than hand attempts to
                    # a supervisor that would never start them (each then taken back as
                    # its wrapper gone, an attempt used)
                    listening = False
                    conn.close()
    finally:
        supervisor.close()
        ws.close()


def _log_to(path: Path, clock: Clock) -> None:
    """This process's stdout and stderr to `path` (appended, each line starting with its
    time by `clock`), its stdin from /dev/null.
    A log that cannot be opened (a read-only home) is said once, on the daemon's stderr,
    and the lines go nowhere: the attempts are supervised all the same."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as e:
        log_line(f"sched supervisor: cannot write {path} ({e.strerror or e}): its lines are dropped")
        log = os.dup(devnull)
    for fd, to in ((devnull, 0), (log, 1), (log, 2)):
        os.dup2(fd, to)
    os.close(log)
    os.close(devnull)
    stamp_output(clock.now, reopen=True)


def _answer(conn: Connection, supervisor: Supervisor) -> bool:
    """Take the attempts the daemon handed over and start them; False once the daemon
    closed the connection."""
    try:
        attempts = conn.recv()
    except (EOFError, OSError):
        return False
    supervisor.add(attempts)
    return True
