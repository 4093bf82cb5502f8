"""Starting push agents' wrappers by a fork, not a new interpreter.

`sched run` forks one launcher process when it starts, before it starts any thread:
a copy of the daemon with sched imported and the database opened once (its statements
compiled), which does nothing but fork wrappers when asked. A tick that assigns work
to push agents of this host asks the launcher, inside its write transaction, for one
forked wrapper per attempt (`fork`: their pids), records each attempt's `TaskStarted`
with its wrapper's pid, commits, and hands each wrapper its attempt (`go`); if the
transaction fails, the wrappers are let go unused (`abort`). So an attempt is assigned
and started in one commit, and its command runs a fork later: no interpreter starts,
no second transaction waits for the write lock.

A wrapper then is what `sched exec` is (`exec.run_as_wrapper`): in its own session, its
output in `logs/exec.log`, it renews its own lease, stops its own processes, records
the outcome, and outlives the daemon. The launcher keeps a few wrappers forked ahead
(as many as the largest batch asked for so far), so that a tick holding the write lock
does not wait for forks. The launcher tells the daemon when a wrapper has
exited (a slot is free), so the daemon ticks at once. If the launcher is gone, ticks
start `sched exec` processes instead (`spawn.spawn_exec`); when the daemon goes, the
launcher sees its connection close and exits, leaving the running wrappers be.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import pickle
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from eventlog.errors import SchedError
from projections.recorder import Recorder
from scheduler.clock import Clock
from scheduler.exec import Attempt, forget_cgroups, run_as_wrapper, start_in, sweep_cgroups, warm_up
from scheduler.settings import Settings
from scheduler.spawn import Handover, LauncherGone, absolute
from scheduler.workspace import Workspace

EXITED = b"x"  # one byte to the daemon per wrapper that exited
MIN_SPARES = 2  # wrappers forked ahead of need, at least
MAX_SPARES = 64


class Launcher:
    """The daemon's side (a `spawn.Starter`). `start()` forks the launcher (call it
    before any thread is started); a tick calls `start_in`, then `go` or `abort`;
    `close()` lets it go.
    `on_exit` runs, on a thread of its own, each time a wrapper it forked has exited.
    `spares`: how many wrappers to keep forked ahead from the start (the push slots of
    this host: the first batch then waits for no fork; at least MIN_SPARES, at most
    MAX_SPARES; a waiting wrapper costs about a megabyte of private memory)."""

    def __init__(self, settings: Settings, clock: Clock, on_exit: Callable[[], None] | None = None,
                 spares: int = MIN_SPARES) -> None:
        self._settings, self._clock, self._on_exit = absolute(settings), clock, on_exit
        self._spares = min(max(spares, MIN_SPARES), MAX_SPARES)
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.pid: int | None = None

    @property
    def alive(self) -> bool:
        return self._conn is not None

    def start(self) -> None:
        ours, theirs = Pipe()
        exits_r, exits_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the launcher: never returns
            code = 1
            try:
                ours.close()
                os.close(exits_r)
                _serve(self._settings, self._clock, theirs, exits_w, self._spares)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        os.close(exits_w)
        self.pid, self._conn = pid, ours
        threading.Thread(target=self._read_exits, args=(exits_r,), name="launcher-exits",
                         daemon=True).start()

    def start_in(self, ws: Workspace, recorder: Recorder, task_ids: Sequence[int],
                 granted_at: float) -> Handover:
        """Inside the tick's write transaction: fork a wrapper for each assigned task,
        then start its attempt with that wrapper's pid (`exec.start_in`), all recorded at
        once. A task whose directory could not be made went back to the queue: its
        wrapper is let go."""
        pids: list[int] = self._ask(("fork", len(task_ids)))  # type: ignore[assignment]
        sweep_cgroups(ws)
        handover: Handover = []
        unused: list[int] = []
        try:
            events = []
            for task_id, pid in zip(task_ids, pids, strict=True):
                event, attempt = start_in(ws, recorder, task_id, pid, os.environ, granted_at)
                events.append(event)
                if attempt is None:
                    unused.append(pid)
                else:
                    handover.append((pid, attempt))
            recorder.record(events)
        except BaseException:
            forget_cgroups(attempt for _, attempt in handover)
            unused = pids
            raise
        finally:
            if unused:
                self._ask(("abort", unused))
        return handover

    def go(self, handover: Handover) -> None:
        self._ask(("go", handover))

    def abort(self, handover: Handover) -> None:
        forget_cgroups(attempt for _, attempt in handover)
        self._ask(("abort", [pid for pid, _ in handover]))

    def _ask(self, request: tuple[str, object]) -> object:
        with self._lock:
            if self._conn is None:
                raise LauncherGone("the sched launcher is gone")
            try:
                self._conn.send(request)
                return self._conn.recv()
            except (OSError, EOFError) as e:
                self._conn.close()
                self._conn = None
                raise LauncherGone(f"the sched launcher (pid {self.pid}) is gone: {e}") from e

    def close(self) -> None:
        """Close the connection (the launcher exits) and collect it."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None

    def _read_exits(self, fd: int) -> None:
        with os.fdopen(fd, "rb", buffering=0) as exits:
            while chunk := exits.read(64):
                if self._on_exit is not None:
                    for _ in range(chunk.count(EXITED)):
                        self._on_exit()


def _serve(settings: Settings, clock: Clock, conn: Connection, exits: int, want: int) -> None:
    """The launcher's loop: answer the daemon's requests; report each wrapper's exit;
    return when the daemon closes the connection."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is the daemon's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below
    ws = Workspace(settings, clock=clock)  # the wrappers' own, shared warm
    with contextlib.suppress(SchedError):  # a wrapper will say what is wrong
        warm_up(ws)
        ws.db.close()  # no connection shared by the children: each opens its own
    gc.freeze()  # the wrappers share this process's objects without copying their pages
    waiting: dict[int, int] = {}  # pid of a forked wrapper -> the pipe its attempt goes down
    spares: list[int] = []  # forked ahead, waiting to be asked for
    # `want` spares: as many as asked for at start (the push slots of this host), or as
    # the largest request so far (up to MAX_SPARES)
    own = (conn.fileno(), exits, wake_r, wake_w)
    while True:
        # a request is answered first; while none waits, one more spare is forked
        idle = None if len(spares) >= want else 0.0
        ready = select.select([conn, wake_r], [], [], idle)[0]
        if wake_r in ready:
            os.read(wake_r, 512)
        _reap(exits)
        if conn not in ready:
            if len(spares) < want:
                spares.append(_fork_wrapper(ws, waiting, own))
            continue
        try:
            kind, arg = conn.recv()
        except EOFError:  # the daemon is gone; wrappers still waiting see their pipe close
            return
        if kind == "fork":
            want = min(max(want, arg), MAX_SPARES)
            taken, spares[:] = spares[:arg], spares[arg:]
            conn.send(taken + [_fork_wrapper(ws, waiting, own) for _ in range(arg - len(taken))])
        elif kind == "go":
            for pid, attempt in arg:
                _hand_over(waiting.pop(pid), pickle.dumps(attempt))
            conn.send(None)
        elif kind == "abort":
            for pid in arg:
                os.close(waiting.pop(pid))
            conn.send(None)


def _hand_over(pipe: int, data: bytes) -> None:
    with contextlib.suppress(OSError), os.fdopen(pipe, "wb") as out:  # a wrapper gone says so by its exit
        out.write(data)


def _fork_wrapper(ws: Workspace, waiting: dict[int, int], own: tuple[int, ...]) -> int:
    job_r, job_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(job_w)
        _wrapper(ws, job_r, (*own, *waiting.values()))
    os.close(job_r)
    waiting[pid] = job_w
    return pid


def _reap(exits: int) -> None:
    """Collect exited wrappers and tell the daemon how many."""
    count = 0
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        count += 1
    if count:
        with contextlib.suppress(OSError):
            os.write(exits, EXITED * count)


def _wrapper(ws: Workspace, job: int, inherited: tuple[int, ...]) -> None:
    """In a forked wrapper: wait for the attempt (none: exit), run it as `sched exec`
    would, exit. Never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in inherited:
            os.close(fd)
        os.setsid()
        logs = ws.settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = os.open(logs / "exec.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(devnull)
        with os.fdopen(job, "rb") as pipe:
            data = pipe.read()
        if not data:  # not needed after all
            code = 0
            return
        attempt: Attempt = pickle.loads(data)  # from the launcher, our parent
        try:
            outcome = run_as_wrapper(ws, attempt)
            detail = json.dumps(outcome.detail, ensure_ascii=False)[1:-1]  # controls escaped
            # the line `sched exec` prints
            print(f"task {attempt.task_id}: {outcome.status} ({detail})", flush=True)
            code = 1 if outcome.status == "lost" else 0
        except SchedError as e:
            print(f"task {attempt.task_id}: {e.message}", file=sys.stderr, flush=True)
            code = e.exit_code
        finally:
            ws.close()
    except BaseException:  # the wrapper's log says what went wrong
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
