"""Starting push agents' wrappers by a fork, not a new interpreter.

`sched run` forks one launcher process when it starts, before it starts any thread:
a copy of the daemon with sched already imported, which does nothing but wait for task
ids on a pipe. For each it forks the attempt's wrapper, which runs exactly what `sched
exec TASK_ID` runs (`exec.exec_task`, in its own session, its output in
`logs/exec.log`), so an attempt started this way behaves as one started by a cron tick:
it outlives the daemon, renews its own lease, stops its own processes. What it saves is
the interpreter start and the imports: a fork of a prepared process instead.

The launcher tells the daemon when a wrapper has exited (the task ended: a slot is free),
so the daemon ticks at once instead of at its next interval. If the launcher is gone,
a task is started the cold way (`spawn.spawn_exec`); when the daemon goes, the launcher
sees its pipe close and exits, leaving the running wrappers be.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable

from eventlog.errors import SchedError
from scheduler.clock import Clock
from scheduler.exec import exec_task
from scheduler.settings import Settings
from scheduler.spawn import absolute, spawn_exec
from scheduler.workspace import Workspace

EXITED = b"x"  # one byte to the daemon per wrapper that exited


class Launcher:
    """The daemon's side: `start()` forks the launcher (call it before any thread is
    started), `launch` asks it for a wrapper, `close()` lets it go. `on_exit` runs, on
    a thread of its own, each time a wrapper it started has exited."""

    def __init__(self, settings: Settings, clock: Clock, on_exit: Callable[[], None] | None = None) -> None:
        self._settings, self._clock, self._on_exit = absolute(settings), clock, on_exit
        self._requests: int | None = None  # write end: task ids, one per line
        self._lock = threading.Lock()
        self.pid: int | None = None

    def start(self) -> None:
        requests_r, requests_w = os.pipe()
        exits_r, exits_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the launcher: never returns
            code = 1
            try:
                os.close(requests_w)
                os.close(exits_r)
                _serve(self._settings, self._clock, requests_r, exits_w)
                code = 0
            finally:
                os._exit(code)
        os.close(requests_r)
        os.close(exits_w)
        self.pid, self._requests = pid, requests_w
        threading.Thread(target=self._read_exits, args=(exits_r,), name="launcher-exits",
                         daemon=True).start()

    def launch(self, settings: Settings, task_id: int) -> int | None:
        """Have the launcher fork the wrapper of `task_id`; the cold way if it is gone."""
        with self._lock:
            if self._requests is not None:
                try:
                    os.write(self._requests, f"{task_id}\n".encode())
                    return None
                except OSError:  # the launcher died: start wrappers the cold way from now on
                    print(f"sched launcher (pid {self.pid}) is gone: starting sched exec "
                          "processes instead", file=sys.stderr)
                    os.close(self._requests)
                    self._requests = None
        return spawn_exec(settings, task_id)

    def close(self) -> None:
        """Close the pipe (the launcher exits) and collect it."""
        with self._lock:
            if self._requests is not None:
                os.close(self._requests)
                self._requests = None
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


def _serve(settings: Settings, clock: Clock, requests: int, exits: int) -> None:
    """The launcher's loop: fork a wrapper for each task id read; report each wrapper's
    exit; return when the daemon closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is the daemon's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below
    gc.freeze()  # the wrappers share this process's objects without copying their pages
    pending = b""
    while True:
        ready = select.select([requests, wake_r], [], [])[0]
        if wake_r in ready:
            os.read(wake_r, 512)
        _reap(exits)
        if requests not in ready:
            continue
        chunk = os.read(requests, 4096)
        if not chunk:  # the daemon is gone
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            pid = os.fork()
            if pid == 0:
                _wrapper(settings, clock, int(line), (requests, exits, wake_r, wake_w))


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


def _wrapper(settings: Settings, clock: Clock, task_id: int, inherited: tuple[int, ...]) -> None:
    """In the forked wrapper: become what `sched exec TASK_ID` is, run the attempt,
    exit. Never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in inherited:
            os.close(fd)
        os.setsid()
        logs = settings.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = os.open(logs / "exec.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(devnull)
        ws = Workspace(settings, clock=clock)
        try:
            outcome = exec_task(ws, task_id, os.environ, own_process=True)
            detail = json.dumps(outcome.detail, ensure_ascii=False)[1:-1]  # controls escaped
            print(f"task {task_id}: {outcome.status} ({detail})", flush=True)  # as `sched exec` says it
            code = 1 if outcome.status == "lost" else 0
        except SchedError as e:
            print(f"task {task_id}: {e.message}", file=sys.stderr, flush=True)
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
