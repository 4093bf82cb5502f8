"""Supervising attempts of push agents: one process runs many.

A `Supervisor` starts each attempt's command (`subprocess.Popen` with no code run
between fork and exec, so Python takes the `vfork` fast path; a batch two at a time),
copies every agent's output into its capped `agent.log` from one `select` loop, reaps
the agents (their own CPU use from `wait4`), samples their memory, and ends each
attempt on its exit, its timeout, a cancel, a refused or expiring lease, or a stop
signal. Whatever ends an attempt, every process of it is stopped before its outcome is
recorded: agents that exited are looked for leftovers together, in one pass over /proc
(`containment.left_nothing`); the others are stopped (`containment.stop_attempt`) each
on a thread of its own, so a grace period holds up no other attempt.

One bookkeeping thread talks to the ledger: per turn, one call renews every lease that
is due (a third of `lease_seconds` after its last renewal) and records every outcome
that is ready. So N running attempts cost one write transaction per renewal interval,
not N, and a batch of attempts that end together is recorded at once. Between turns it
asks every `CANCEL_CHECK_SECONDS` which running attempts have a cancel pending (a read),
so that a cancel does not wait for a renewal. The ledger is the database
(`DatabaseLedger`), or a server for a host with no database access
(`agent_host.HttpLedger`, one request per turn; the cancels come with the answers to
the runner's long poll for work).

The daemon runs one supervisor process for all the attempts its ticks start
(`scheduler.runner.launcher`); `sched exec` runs one for a single attempt (`exec.run`);
`sched run --server` runs one for its host (`scheduler.runner.agent_host`): one runner, the
same rules.

The agent is started through `setpriv --pdeathsig KILL` where util-linux has it, so
an agent dies with the process supervising it (a SIGKILLed supervisor leaves nothing
running unwatched); it joins the attempt's control group as soon as it is started,
from here (the agent's program has not yet been executed by then in practice; if it
forked first, its environment marks and process group still find the rest).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TextIO

from eventlog.errors import SchedError, TokenRejected, problem_kind
from eventlog.faults import fault_point
from scheduler import worker
from scheduler.config.settings import Settings
from scheduler.runner import containment
from scheduler.runner.exec import (
    LINE_KEEP_FACTOR,
    LOG_DRAIN_SECONDS,
    READ_CHUNK,
    AgentLog,
    Attempt,
    Ending,
    Outcome,
    StopRequest,
    ending_of,
    forget_result,
    prepare_workdir,
    record_ending,
    spawn_error_ending,
    unprepared_ending,
)
from scheduler.runner.spawn import lease_clock
from scheduler.runner.usage import Usage, UsageMeter
from scheduler.workspace import Workspace

POLL_SECONDS = 0.05  # the longest the loop sleeps while attempts run
START_THREADS = 2  # the commands of a batch started at once
FENCE_MARGIN_SECONDS = 1.0  # a stop that must be over by the lease's expiry starts this much earlier
# after a turn that failed (the database or the server away, or busy), outcomes wait
# this long before the next try, and are tried while their leases hold (then the task
# is taken back anyway, and an outcome recorded late would be refused)
RETRY_SECONDS = 1.0
# how often the bookkeeper asks the ledger whether a running attempt was cancelled, between
# renewals (which say so too, but only every third of a lease)
CANCEL_CHECK_SECONDS = 2.0
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")


@dataclass(eq=False)
class Running:
    """One attempt being supervised."""

    attempt: Attempt
    expires: float  # on lease_clock: until when the lease surely holds
    next_beat: float  # when its lease is next renewed
    child: subprocess.Popen[bytes] | None = None
    deadline: float = 0.0  # time.monotonic() of its timeout
    log: AgentLog | None = None
    log_fd: int | None = None
    meter: UsageMeter = field(default_factory=UsageMeter)
    next_sample: float = 0.0
    cancel: bool = False
    lost: str | None = None  # why the lease was refused
    returncode: int | None = None
    cpu_seconds: float = 0.0
    start_delay: float | None = None  # seconds from its start being recorded to its command running
    ending: str | None = None  # exit, timeout, cancelled, signal, lost, fenced
    reaped: threading.Event = field(default_factory=threading.Event)
    drained: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None

    def fence_at(self, kill_grace: float, lease_seconds: float) -> float:
        """When to start stopping the agent for the stop to be over by the lease's
        expiry (self-fencing): `kill_grace_seconds` and a margin before it, but never
        before two thirds of the lease have passed without a renewal."""
        return self.expires - min(kill_grace + FENCE_MARGIN_SECONDS, lease_seconds / 3)


class Ledger(Protocol):
    """Where a supervisor renews leases and records outcomes: the database here; a
    server, for a host with no database access."""

    @property
    def lease_seconds(self) -> float: ...

    def turn(self, renew: Sequence[Attempt], record: Sequence[tuple[Attempt, Ending]]
             ) -> tuple[list[worker.Beat | str], list[str]]:
        """Renew these attempts' leases and record these endings, all at once: per
        renewal its `Beat`, or why it was refused (the attempt was taken back); per
        ending the task's new status, or "lost" (refused). Raises `SchedError` when
        nothing could be done (the database busy or away)."""
        ...

    def cancelled(self, attempts: Sequence[tuple[int, int]]) -> set[int]:
        """The tasks among these (task id, attempt) whose running attempt is that one and
        has a cancel pending: nothing written."""
        ...


class DatabaseLedger:
    """The ledger of a supervisor with the database at hand: one write transaction per
    turn, through the same functions as `sched worker`."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws

    @property
    def lease_seconds(self) -> float:
        return self._ws.settings.lease_seconds

    def turn(self, renew: Sequence[Attempt], record: Sequence[tuple[Attempt, Ending]]
             ) -> tuple[list[worker.Beat | str], list[str]]:
        ws = self._ws
        beats: list[worker.Beat | str] = []
        statuses: list[str] = []
        with ws.write() as recorder:
            for attempt in renew:
                try:
                    beats.append(worker.renew_in(ws, recorder, attempt.task_id, attempt.token))
                except TokenRejected as e:  # taken back: this run no longer counts
                    beats.append(e.message)
            for attempt, ending in record:
                try:
                    statuses.append(record_ending(ws, recorder, attempt, ending))
                except TokenRejected:
                    statuses.append("lost")
        return beats, statuses

    def cancelled(self, attempts: Sequence[tuple[int, int]]) -> set[int]:
        with self._ws.read() as (_log, views):
            return {task_id for task_id, attempt in attempts
                    if (task := views.get_task(task_id)) is not None and task.cancelling
                    and task.status == "running" and task.attempt == attempt}


def log_line(text: str, out: TextIO | None = None) -> None:
    """One line of a runner's log (stderr, or `out`; a daemon's supervisor writes both
    into `logs/exec.log`). A line that cannot be written (a full disk) is dropped: a log
    write that failed ended the supervisor, or its bookkeeper's thread, and with it the
    recording of every outcome and the renewal of every lease."""
    with contextlib.suppress(OSError, ValueError):  # (ValueError: the file was closed)
        stream = out or sys.stderr
        stream.write(text + "\n")  # one write: a line of another thread comes before or after it
        stream.flush()


def renewed_together(leases: Sequence[Running], now: float, every: float) -> list[Running]:
    """The leases to renew at `now` (renewed every `every` seconds): none unless one is
    due; then with it every one due within half an interval more. Each attempt kept a
    beat of its own from its start: N attempts started apart cost N write transactions
    an interval (a review); renewed early together, they come to share one."""
    if not any(r.next_beat <= now for r in leases):
        return []
    return [r for r in leases if r.next_beat <= now + every / 2]


class Bookkeeper:
    """The thread that renews leases and records outcomes, one `Ledger.turn` (one write
    transaction) per turn for all of them. `wake` is called when an outcome was recorded or a lease
    refused, so the supervising loop looks at once."""

    def __init__(self, ledger: Ledger, wake: Callable[[], None],
                 retry_seconds: float = RETRY_SECONDS, check_seconds: float = CANCEL_CHECK_SECONDS,
                 name: str = "sched supervisor") -> None:
        self._ledger, self._wake, self._retry_seconds = ledger, wake, retry_seconds
        self._name = name  # what its lines on stderr start with
        self._check_seconds = check_seconds
        self._check_at = 0.0  # (lease_clock) when running attempts are next asked about a cancel
        self._cond = threading.Condition()
        self._leases: list[Running] = []
        self._endings: list[tuple[Running, Ending]] = []
        self._retry_at = 0.0  # (lease_clock) the outcomes of a failed turn wait until then
        self._failing = ""  # the kind of problem the last turn met ("": it worked)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="bookkeeper", daemon=True)
        self._thread.start()

    def watch(self, run: Running) -> None:
        with self._cond:
            self._leases.append(run)
            self._cond.notify()

    def unwatch(self, run: Running) -> None:
        with self._cond, contextlib.suppress(ValueError):
            self._leases.remove(run)

    def record(self, run: Running, ending: Ending) -> None:
        with self._cond:
            with contextlib.suppress(ValueError):
                self._leases.remove(run)
            self._endings.append((run, ending))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _next_turn(self) -> tuple[list[Running], list[tuple[Running, Ending]], list[Running]] | None:
        """Wait for work: the leases due, the outcomes ready, and the attempts to ask
        about a cancel (None: closed)."""
        with self._cond:
            while True:
                if self._closing and not self._endings:
                    return None
                now = lease_clock()
                due = renewed_together(self._leases, now, self._ledger.lease_seconds / 3)
                endings_due = bool(self._endings) and (now >= self._retry_at or self._closing)
                check = list(self._leases) if self._leases and now >= self._check_at else []
                if due or endings_due or check:
                    endings, self._endings = (self._endings, []) if endings_due else ([], self._endings)
                    if check:
                        self._check_at = now + self._check_seconds
                    return due, endings, check
                wait = min([r.next_beat for r in self._leases] + ([self._retry_at] if self._endings else [])
                           + ([self._check_at] if self._leases else []), default=now + 3600) - now
                self._cond.wait(max(wait, 0.001))

    def _run(self) -> None:
        while (turn := self._next_turn()) is not None:
            due, endings, check = turn
            if check and self._check_cancels(check):
                self._wake()
            if not (due or endings):
                continue
            try:
                self._turn(due, endings)
            except Exception as e:  # (an answer that does not fit the asking) the loop goes on,
                # not at once; the lease covers a lost outcome
                log_line(f"{self._name}: recording failed: {e}")
                with self._cond:
                    for run in due:
                        run.next_beat = max(run.next_beat, lease_clock() + 1.0)
                    for run, _ending in endings:
                        run.outcome = Outcome("lost", f"not recorded: {e}")
            self._wake()

    def _check_cancels(self, watched: list[Running]) -> bool:
        """Mark the attempts whose cancel was requested, so that the supervising loop
        stops them now rather than at their next renewal; whether any was. A failed read
        is no loss: the renewal says it anyway."""
        try:
            cancelled = self._ledger.cancelled([(r.attempt.task_id, r.attempt.attempt) for r in watched])
        except Exception:  # (the database away or busy: the turns say so)
            return False
        with self._cond:
            for run in watched:
                run.cancel = run.cancel or run.attempt.task_id in cancelled
        return bool(cancelled)

    def _turn(self, due: list[Running], endings: list[tuple[Running, Ending]]) -> None:
        every = self._ledger.lease_seconds / 3
        asked = lease_clock()
        try:
            beats, statuses = self._ledger.turn([run.attempt for run in due],
                                                [(run.attempt, ending) for run, ending in endings])
        except Exception as e:  # a long writer held the lock, the database or the server is
            # away (a restart) or answered nonsense: renew again soon, record at a later
            # turn while the lease holds (not when closing: the lease covers it)
            why = e.message if isinstance(e, SchedError) else f"{type(e).__name__}: {e}"
            kind = problem_kind(why)
            if kind != self._failing:  # once per problem, not every second of an outage
                log_line(f"{self._name}: {why} (retrying every {self._retry_seconds:g} s)")
            self._failing = kind
            with self._cond:
                for run in due:
                    run.next_beat = lease_clock() + min(every, self._retry_seconds)
                self._retry_at = lease_clock() + self._retry_seconds
                for run, ending in endings:
                    if asked < run.expires and not self._closing:
                        self._endings.append((run, ending))
                    else:
                        run.outcome = Outcome("lost", f"not recorded: {why}")
            return
        if self._failing:
            log_line(f"{self._name}: recording works again")
            self._failing = ""
        with self._cond:
            for run, beat in zip(due, beats, strict=True):
                if isinstance(beat, str):
                    run.lost = beat
                    with contextlib.suppress(ValueError):
                        self._leases.remove(run)
                else:
                    run.expires = asked + self._ledger.lease_seconds
                    run.cancel = run.cancel or beat.cancel
                    run.next_beat = lease_clock() + every
            for (run, ending), status in zip(endings, statuses, strict=True):
                run.outcome = Outcome(status, ending.detail)


class Supervisor:
    """Runs attempts: `add` starts one; `step` supervises for a while; `finished`
    hands back the attempts whose outcome is recorded. `subreaper`: this process is
    the reaper of the agents' orphaned descendants (a process that only supervises).
    `ledger`: where leases and outcomes go (default: the workspace's database)."""

    def __init__(self, settings: Settings, ledger: Ledger, stop: StopRequest | None = None, *,
                 subreaper: bool = False, name: str = "sched supervisor") -> None:
        self._settings, self._stop, self._subreaper = settings, stop or StopRequest(), subreaper
        self._name = name  # what its lines on stderr start with (a `sched exec` says so)
        self._lease_seconds = ledger.lease_seconds
        self._runs: list[Running] = []
        self._by_pid: dict[int, Running] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._book = Bookkeeper(ledger, self.wake, name=name)
        self._exited: list[Running] = []  # agents that exited, to be looked for leftovers
        self._exited_cond = threading.Condition()
        self._closing = False
        self._sweeper = threading.Thread(target=self._sweep, name="sweeper", daemon=True)
        self._sweeper.start()
        self._starters = ThreadPoolExecutor(START_THREADS, thread_name_prefix="start")

    @property
    def wake_fd(self) -> int:
        """Readable when the loop should look (a signal's wake-up fd may point here)."""
        return self._wake_w

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"w")

    @property
    def busy(self) -> int:
        """How many attempts are not finished (running, stopping or being recorded)."""
        return len(self._runs)

    # -- starting --------------------------------------------------------------------

    def add(self, attempts: Sequence[Attempt]) -> list[Running]:
        """Start these attempts' commands now, a few at once (a start waits on the
        kernel: the directory, the exec, the move into the control group), or end those
        that cannot start."""
        settings, lease = self._settings, self._lease_seconds
        if settings.exec_cgroups and any(a.payload is not None for a in attempts):
            containment.sweep_cgroups()  # (once per batch: the groups of wrappers gone)
        runs = [Running(attempt, expires=attempt.granted_at + lease, next_beat=attempt.granted_at + lease / 3)
                for attempt in attempts]
        self._runs.extend(runs)
        if self._stop.signum is not None:  # asked to stop before the agents were started
            for run in runs:
                containment.stop_attempt(run.attempt.ref)
                self._end(run, "signal")
            return runs
        launched = (list(self._starters.map(_launch, attempts)) if len(attempts) > 1
                    else [_launch(attempt) for attempt in attempts])
        for run, (attempt, got) in zip(runs, launched, strict=True):
            run.attempt = attempt
            if isinstance(got, Unprepared):
                run.ending = "exit"
                self._book.record(run, unprepared_ending(settings, attempt, got.error))
                continue
            if isinstance(got, OSError):
                containment.stop_attempt(attempt.ref)  # nothing ran; removes its control group
                run.ending = "exit"
                self._book.record(run, spawn_error_ending(settings, attempt, got))
                continue
            child, read_fd, ran_at = got
            if attempt.recorded_at is not None:
                run.start_delay = round(max(ran_at - attempt.recorded_at, 0.0), 6)
            # the command leads a session of its own: its process group is its pid
            run.attempt = replace(attempt, ref=replace(attempt.ref, process_group=child.pid))
            run.child, run.log_fd = child, read_fd
            run.deadline = time.monotonic() + attempt.timeout
            run.next_sample = time.monotonic() + settings.exec_sample_seconds  # a quick agent costs no scan
            run.log = AgentLog(attempt.log_path, settings.agent_log_max_bytes,
                               max(LINE_KEEP_FACTOR * settings.max_payload_bytes, settings.max_message_bytes))
            self._by_pid[child.pid] = run
            self._book.watch(run)
            fault_point("mid_exec")
        return runs

    # -- supervising -----------------------------------------------------------------

    def step(self, timeout: float, also: Sequence[int] = ()) -> list[int]:
        """Supervise for up to `timeout` seconds (less when something happens): copy
        output, reap, sample, end what must end. Returns which of `also` (the caller's
        own file descriptors) became readable."""
        logs = {run.log_fd: run for run in self._runs if run.log_fd is not None}
        ready = readable([self._wake_r, *logs, *also], timeout)
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 4096)
        for fd in ready:
            if fd in logs:
                self._copy(logs[fd])
        self._reap()
        self._check(time.monotonic())
        return [fd for fd in ready if fd in also]

    def next_timeout(self) -> float:
        """How long the loop may sleep: `POLL_SECONDS` while attempts run (an agent's
        exit, its output or a recorded outcome wakes it sooner), longer when idle."""
        if not self._runs:
            return POLL_SECONDS * 20
        return POLL_SECONDS

    def finished(self) -> list[Running]:
        """The attempts whose outcome is known, taken off the supervisor. An output pipe
        still open then (a process that escaped the stop still holds it: an orphan in a
        session of its own, with no control group) is let go with its log: the copy
        ended with the attempt, and the descriptors were kept for as long as that
        process lived (a review)."""
        done = [run for run in self._runs if run.outcome is not None]
        if done:
            self._runs = [run for run in self._runs if run.outcome is None]
        for run in done:
            if run.log_fd is not None:
                os.close(run.log_fd)
                run.log_fd = None
                if run.log is not None:
                    run.log.close()
        return done

    def close(self) -> None:
        with self._exited_cond:
            self._closing = True
            self._exited_cond.notify()
        self._sweeper.join()
        self._starters.shutdown()
        self._book.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _copy(self, run: Running) -> None:
        assert run.log_fd is not None and run.log is not None
        try:
            chunk = os.read(run.log_fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            run.log.write(chunk)
            return
        os.close(run.log_fd)  # every writer is gone
        run.log_fd = None
        run.log.close()
        run.drained.set()

    def _reap(self) -> None:
        """Collect exited processes: the agents (their exit status and CPU use), and,
        as subreaper, orphaned descendants handed to us."""
        if self._subreaper:
            while True:
                try:
                    info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    return
                if info is None:
                    return
                self._collect(info.si_pid)
        else:
            for pid in list(self._by_pid):
                self._collect(pid, os.WNOHANG)

    def _collect(self, pid: int, flags: int = 0) -> None:
        try:
            got, status, usage = os.wait4(pid, flags)
        except ChildProcessError:
            run = self._by_pid.pop(pid, None)
            if run is not None:  # reaped elsewhere: its status is lost
                _set_exit(run, -signal.SIGKILL, 0.0)
            return
        if got == 0:
            return
        run = self._by_pid.pop(got, None)
        if run is not None:
            # (not its `ru_maxrss`: Linux counts in it the wrapper's memory, which the agent's
            # process held until its exec; the tree's samples are the agent's own)
            _set_exit(run, os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime)

    def _check(self, now: float) -> None:
        settings = self._settings
        grace, lease = settings.kill_grace_seconds, self._lease_seconds
        for run in self._runs:
            if run.ending is not None or run.child is None:
                continue
            if now >= run.next_sample:
                run.meter.sample(run.child.pid)
                run.next_sample = now + settings.exec_sample_seconds
            if run.returncode is not None:
                self._end(run, "exit")
            elif self._stop.signum is not None:
                self._end(run, "signal")
            elif run.lost is not None:
                self._end(run, "lost")
            elif run.cancel:
                self._end(run, "cancelled")
            elif now >= run.deadline:
                self._end(run, "timeout")
            elif lease_clock() >= run.fence_at(grace, lease):
                self._end(run, "fenced")

    def _end(self, run: Running, ending: str) -> None:
        """Stop every process of the attempt, then record how it ended. An agent that
        exited is looked for leftovers together with the others that exited meanwhile
        (`containment.left_nothing`: one pass over /proc for all); the rest are stopped
        each on a thread of its own, so a grace period holds up no other attempt."""
        run.ending = ending
        self._book.unwatch(run)
        if ending == "exit":
            with self._exited_cond:
                self._exited.append(run)
                self._exited_cond.notify()
        else:
            _thread(self._stop_and_settle, run)

    def _sweep(self) -> None:
        """The thread that settles attempts whose agent exited, in batches."""
        while True:
            with self._exited_cond:
                while not self._exited and not self._closing:
                    self._exited_cond.wait()
                if not self._exited:
                    return
                batch, self._exited = self._exited, []
            try:
                quiet = containment.left_nothing([run.attempt.ref for run in batch])
            except Exception as e:  # /proc unreadable: each is stopped the long way
                log_line(f"{self._name}: looking for leftovers failed: {e}")
                quiet = [False] * len(batch)
            for run, nothing_left in zip(batch, quiet, strict=True):
                if nothing_left:
                    self._settle(run)
                else:
                    _thread(self._stop_and_settle, run)

    def _stop_and_settle(self, run: Running) -> None:
        attempt = run.attempt
        try:
            left = containment.stop_attempt(attempt.ref, self._settings.kill_grace_seconds)
        except Exception as e:  # the lease covers an attempt whose end was not recorded
            run.outcome = Outcome("lost", f"not stopped: {e}")
            self.wake()
            return
        if left:
            log_line(f"task {attempt.task_id}: processes {left} survived SIGKILL")
        self.wake()  # the loop reaps what the stop killed
        self._settle(run)

    def _settle(self, run: Running) -> None:
        """With every process of the attempt gone: hand how it ended to the bookkeeper."""
        attempt = run.attempt
        try:
            returncode = None
            if run.child is not None:
                returncode = run.returncode if run.reaped.wait(1.0) else -signal.SIGKILL
                run.drained.wait(LOG_DRAIN_SECONDS)
            usage = Usage(round(run.cpu_seconds, 6), run.meter.peak, run.start_delay)
            if run.ending == "lost":
                run.outcome = Outcome("lost", f"lease lost: {run.lost}")
            elif run.ending == "fenced":
                run.outcome = Outcome("lost", "stopped at the lease's expiry: it could not be renewed "
                                              "in time")
            else:
                self._book.record(run, ending_of(self._settings, attempt, returncode, run.ending or "exit",
                                                 usage, run.log, self._stop))
                return
        except Exception as e:  # the lease covers an attempt whose end was not recorded
            run.outcome = Outcome("lost", f"not recorded: {e}")
        self.wake()


def readable(fds: Sequence[int], timeout: float) -> list[int]:
    """Which of `fds` have something to read, or are at their end, within `timeout`
    seconds. `poll`, not `select`: a supervisor of hundreds of attempts (a pipe and a
    log each) holds descriptors past 1023, which `select` refuses."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return [fd for fd, _events in poller.poll(max(timeout, 0.0) * 1000)]


def _thread(target: Callable[[Running], None], run: Running) -> None:
    """`target(run)` on a thread of its own; here and now when no thread can be started
    (the processes of the user or unit used up, by an agent that forked to the limit:
    the error ended the supervising loop, and every attempt with it, a review), holding
    up the caller for the stop's grace period rather than ending it."""
    try:
        threading.Thread(target=target, args=(run,), name=f"stop-{run.attempt.task_id}", daemon=True).start()
    except RuntimeError:  # can't start new thread
        target(run)


def _set_exit(run: Running, returncode: int, cpu_seconds: float) -> None:
    run.returncode, run.cpu_seconds = returncode, cpu_seconds
    if run.child is not None:
        run.child.returncode = returncode  # so Popen does not wait for it again
    run.reaped.set()


@dataclass(frozen=True)
class Unprepared:
    """The attempt's directory could not be made: not the program's fault."""

    error: OSError


# the command, its output pipe, and lease_clock() once it ran
Launched = tuple[subprocess.Popen[bytes], int, float]


def _launch(attempt: Attempt) -> tuple[Attempt, Launched | OSError | Unprepared]:
    """Make the attempt's directory and control group if that is left to us (its
    `payload` is given), start the agent's command and move it into the group at once
    (before it can have done much: see the module's note). The attempt as it runs (no
    group where none could be made), and the command (with the `lease_clock()` once it
    runs) or why it could not be started."""
    if attempt.payload is not None:
        try:
            if prepare_workdir(attempt.workdir, attempt.payload):  # (its start is recorded: ours)
                forget_result(attempt.workdir)
        except OSError as e:
            return attempt, Unprepared(e)
        group = attempt.ref.cgroup
        if group is not None and not containment.make_cgroup(Path(group)):
            group = None  # (its processes are still found by their marks and process group)
        attempt = replace(attempt, payload=None, ref=replace(attempt.ref, cgroup=group))
    try:
        child, read_fd = _spawn(attempt)
    except OSError as e:
        return attempt, e
    ran_at = lease_clock()  # Popen returns once the program is executed
    if attempt.ref.cgroup is not None:
        with contextlib.suppress(OSError):
            containment.join_cgroup(attempt.ref.cgroup, child.pid)
    return attempt, (child, read_fd, ran_at)


def _spawn(attempt: Attempt) -> tuple[subprocess.Popen[bytes], int]:
    """Start the agent's command in its own session, its output into a pipe: the
    Popen and the pipe's reading end. Raises OSError as Popen does when the program
    cannot be started (checked here when `setpriv` stands in front of it)."""
    argv = attempt.argv
    if SETPRIV is not None:
        _check_program(argv[0], attempt.env.get("PATH", os.defpath), str(attempt.workdir))
        argv = [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
    read_fd, write_fd = os.pipe()
    try:
        child = subprocess.Popen(argv, cwd=attempt.workdir, env=attempt.env, stdin=subprocess.DEVNULL,
                                 stdout=write_fd, stderr=write_fd, start_new_session=True)
    except OSError:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    os.set_blocking(read_fd, False)
    return child, read_fd


def _check_program(program: str, path: str, cwd: str) -> None:
    """Raise the OSError exec would give for `program` (looked up in `path`, relative
    to `cwd`), so it is the agent's spawn error and not setpriv's exit status."""
    if "/" in program:
        candidates = [os.path.join(cwd, program)]
    else:
        candidates = [os.path.join(d or ".", program) for d in path.split(os.pathsep)]
    denied: str | None = None
    for candidate in candidates:
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                _check_format(candidate, program)
                return
            denied = candidate
        elif os.path.isdir(candidate) and "/" in program:
            raise PermissionError(13, "Permission denied", program)
    if denied is not None:
        raise PermissionError(13, "Permission denied", program)
    raise FileNotFoundError(2, "No such file or directory", program)


def _check_format(path: str, program: str) -> None:
    """A program the kernel can execute starts with `#!` or is an ELF binary (setpriv's
    exec would hand anything else to /bin/sh; exec from Python refuses it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return  # readable by exec, perhaps, but not by us: exec says
    if not (head.startswith(b"#!") or head == b"\x7fELF"):
        raise OSError(errno.ENOEXEC, "Exec format error", program)


def run_all(ws: Workspace, attempts: Sequence[Attempt], stop: StopRequest | None = None, *,
            subreaper: bool = False, name: str = "sched supervisor") -> list[Outcome]:
    """Run these attempts to their ends; their outcomes, in order."""
    supervisor = Supervisor(ws.settings, DatabaseLedger(ws), stop, subreaper=subreaper, name=name)
    with signals_wake(supervisor):
        try:
            runs = supervisor.add(attempts)
            while supervisor.busy:
                supervisor.step(supervisor.next_timeout())
                supervisor.finished()
        finally:
            supervisor.close()
    return [run.outcome or Outcome("lost", "not recorded") for run in runs]


@contextlib.contextmanager
def signals_wake(supervisor: Supervisor) -> Iterator[None]:
    """On the main thread, a signal (SIGCHLD above all: an agent exited) wakes the
    supervisor's loop at once; elsewhere it looks every `POLL_SECONDS`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_fd = signal.set_wakeup_fd(supervisor.wake_fd, warn_on_full_buffer=False)
    previous = signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)
        signal.set_wakeup_fd(previous_fd)
