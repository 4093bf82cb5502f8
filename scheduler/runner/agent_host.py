"""Running the push agents pinned to this host for a server, on a machine with no
database access (`sched run --server URL --host H`).

The same supervisor as the daemon's (`scheduler.runner.supervisor`) runs the attempts; only
its ledger differs: leases are renewed and outcomes recorded by one call to the server
per turn (`HttpLedger`), which a network failure sends again with backoff and which
never records an outcome twice. A thread asks the server for work (`host_start`, a
long poll woken at once by new assignments): every assignment to an agent pinned to
this host is started there, recorded as run by this process on this host. An ask whose
answer was lost is sent again as it was, and its answer hands over what the lost one
carried. Then, here, its working directory is made under this host's `SCHED_HOME` with
`payload.json`, its control group where the host allows one, and its command is
started with the environment allowlist of this host's settings, plus `SCHED_SERVER`. A
directory that cannot be made fails the attempt (retryable: the task goes back to its
queue).

Its agents are assigned by a daemon or tick with the database (`sched run` elsewhere),
as any pinned agent's are. SIGTERM or SIGINT stops the attempts running here, records
them `interrupted`, gives back (`interrupted` too) what the server started for it as it
stopped, and exits 0; a runner that dies loses its leases, and its tasks go elsewhere
or wait for it.
"""

from __future__ import annotations

import math
import os
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from eventlog.errors import BadInput, SchedError, TokenRefused
from eventlog.timeutil import from_text
from scheduler import worker
from scheduler.config.settings import Settings
from scheduler.machine import this_machine
from scheduler.runner import containment
from scheduler.runner.exec import (
    Attempt,
    Ending,
    StopRequest,
    child_environment,
    stop_on_signals,
    take_role,
)
from scheduler.runner.remote import (
    TIMEOUT_SECONDS,
    TOKEN_FILE_VARIABLE,
    TOKEN_VARIABLE,
    Abort,
    Aborted,
    Server,
)
from scheduler.runner.spawn import lease_clock
from scheduler.runner.supervisor import Supervisor, signals_wake
from scheduler.tokens import new_token

RUNNER_NAME = "sched-host"  # the runner's process name (comm)
WAIT_SECONDS = 20  # each ask for work waits this long for some
RETRY_SECONDS = 5.0  # after the server could not be reached (the client's own retries spent)
WITHHELD = (TOKEN_VARIABLE, TOKEN_FILE_VARIABLE)  # the runner's own token never reaches an agent


class HttpLedger:
    """A supervisor's ledger on a host with no database: one `turn` call to the server
    per turn. `lease_seconds` is the server's. The cancels pending come with the
    answers to the runner's asks for work (`heard`): no request of their own."""

    def __init__(self, server: Server, host: str, lease_seconds: float, tells_cancels: bool = True) -> None:
        self._server, self._host, self._lease_seconds = server, host, lease_seconds
        self.heard: frozenset[int] = frozenset()  # the tasks running here whose cancel is pending
        # False: a server from before `cancelling`, which refuses it (its turns tell of cancels)
        self.tells_cancels = tells_cancels

    @property
    def lease_seconds(self) -> float:
        return self._lease_seconds

    def turn(self, renew: Sequence[Attempt], record: Sequence[tuple[Attempt, Ending]]
             ) -> tuple[list[worker.Beat | str], list[str]]:
        answer = self._server.host_turn(
            self._host, [{"task_id": a.task_id, "token": a.token} for a in renew],
            [ending_document(a.task_id, a.token, e) for a, e in record])
        beats: list[worker.Beat | str] = [
            str(b["refused"]) if "refused" in b
            else worker.Beat(from_text(b["lease_expires_at"]), bool(b["cancel"])) for b in answer["beats"]]
        return beats, [str(s["status"]) for s in answer["statuses"]]

    def cancelled(self, attempts: Sequence[tuple[int, int]]) -> set[int]:
        heard = self.heard
        return {task_id for task_id, _attempt in attempts if task_id in heard}

    def hear(self, answer: dict[str, Any]) -> None:
        """Take the cancels pending from an answer to an ask for work (a server older
        than them sends none): the supervisor's bookkeeper asks `cancelled` every
        `CANCEL_CHECK_SECONDS`."""
        cancel = answer.get("cancel")
        self.heard = frozenset(t for t in cancel if isinstance(t, int)) if isinstance(cancel, list) else \
            frozenset()

    def heard_of(self) -> list[int] | None:
        """What an ask for work says it heard of (`cancelling`; None to an older server)."""
        return sorted(self.heard) if self.tells_cancels else None


def ending_document(task_id: int, token: str, ending: Ending) -> dict[str, Any]:
    """How the attempt ended, as a turn sends it."""
    usage = ending.usage
    return {"task_id": task_id, "token": token, "succeeded": ending.succeeded,
            "result": ending.result, "error": ending.error, "reason": ending.reason, "retry": ending.retry,
            "exit_code": ending.exit_code, "signal": ending.signal,
            "cpu_seconds": usage.cpu_seconds if usage is not None else None,
            "peak_rss_bytes": usage.peak_rss_bytes if usage is not None else None,
            # only when measured: a server older than the field refuses any key it does not know
            **({"start_delay_seconds": usage.start_delay_seconds}
               if usage is not None and usage.start_delay_seconds is not None else {})}


def runner_settings(settings: Settings, started: dict[str, Any]) -> Settings:
    """This host's settings, with the limits of the server that records the outcomes."""
    return settings.model_copy(update={key: started[key] for key in
                                       ("lease_seconds", "max_message_bytes", "max_payload_bytes")})


def attempt_of(doc: dict[str, Any], settings: Settings, server_url: str, granted_at: float,
               environ: dict[str, str], arrived_at: float) -> Attempt:
    """The attempt the server started, as the supervisor runs it here (which makes
    its directory with the payload, and its control group where this host has cgroup v2).
    `arrived_at`: `lease_clock()` when the server's answer came (it recorded the start
    before: the start delay counts from then)."""
    workdir = Path(doc["workdir"])
    ref = replace(containment.AttemptRef.of(doc["task_id"], doc["attempt"], server_url, os.getpid(),
                                            workdir=str(workdir)), db_variable="SCHED_SERVER")
    group = containment.cgroup_for(ref) if settings.exec_cgroups else None
    ref = replace(ref, cgroup=str(group) if group is not None else None)
    variables = {**doc["variables"], "SCHED_HOME": str(settings.home.resolve()), "SCHED_SERVER": server_url}
    env = child_environment({k: v for k, v in environ.items() if k not in WITHHELD},
                            settings.exec_env_allowlist, variables)
    return Attempt(doc["task_id"], doc["attempt"], doc["queue"], doc["token"], list(doc["argv"]), workdir,
                   env, float(doc["timeout_seconds"]), Path(doc["log_path"]), ref, granted_at,
                   frozenset(doc["non_retryable_exit_codes"]), bool(doc["retry_spawn_errors"]),
                   payload=doc["payload"], recorded_at=arrived_at)


class Asker:
    """The thread that asks the server for work, one long poll after another, and hands
    each answer to the supervising loop (which it wakes through `wake`)."""

    def __init__(self, server: Server, host: str, home: str, wake: Callable[[], None],
                 say: Callable[[str], None], ledger: HttpLedger) -> None:
        # (before the request, when its answer came, the answer)
        self.answers: queue.SimpleQueue[tuple[float, float, dict[str, Any]]] = queue.SimpleQueue()
        self.fatal: SchedError | None = None
        self._server, self._host, self._home, self._wake, self._say = server, host, home, wake, say
        self._ledger = ledger
        self._stopping = threading.Event()
        self._abort = Abort()
        self.cut_ask: str | None = None  # the request id of the ask cut short, if one was
        self._thread = threading.Thread(target=self._run, name="asker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask for no more work, and end the ask that is out: the server would start work
        in it until its wait ran out (the attempts this runner sends back as it stops,
        given to its host again by a tick), for a runner gone."""
        self._stopping.set()
        self._abort()

    def finish(self) -> list[dict[str, Any]]:
        """Once stopped, and its thread ended: the answers that came and that no one
        started; and, when an ask was cut, what the server started in it all the same
        (it may have been granting them as the connection went): the same ask sent again,
        without a wait, hands them over (and starts what waits for this host now)."""
        self.stop()
        self._thread.join(TIMEOUT_SECONDS)
        late = []
        while True:
            try:
                late.append(self.answers.get_nowait()[2])
            except queue.Empty:
                break
        if self.cut_ask is not None:
            try:
                late.append(self._server.host_start(self._host, os.getpid(), self._home, self.cut_ask, 0,
                                                    this_machine(), self._ledger.heard_of()))
            except SchedError as e:
                self._say(f"could not ask again what the ask cut short started ({e.message}): what it "
                          "started runs out its lease")
        return late

    def _run(self) -> None:
        request_id = new_token()  # kept until an answer comes: see `Server.host_start`
        while not self._stopping.is_set():
            sent = lease_clock()  # before the server grants the leases
            try:
                answer = self._server.host_start(self._host, os.getpid(), self._home, request_id,
                                                 WAIT_SECONDS, this_machine(), self._ledger.heard_of(),
                                                 abort=self._abort)
            except TokenRefused as e:  # asking again will not help
                self.fatal = e
                self._wake()
                return
            except Aborted:  # (stopping)
                self.cut_ask = request_id if self._abort.cut else None
                return
            except Exception as e:  # unreachable, failing, or refusing for now (a control file
                # being edited): ask again later; this thread must not end while the runner runs
                why = e.message if isinstance(e, SchedError) else f"{type(e).__name__}: {e}"
                self._say(f"asking for work: {why}; again in {RETRY_SECONDS:g} s")
                self._stopping.wait(RETRY_SECONDS)
                continue
            arrived = lease_clock()
            request_id = new_token()
            self._ledger.hear(answer)
            if answer.get("attempts"):  # (put even when stopping: `finish` gives them back)
                self.answers.put((grant_time(sent, arrived, answer), arrived, answer))
                self._wake()


def grant_time(sent: float, arrived: float, answer: dict[str, Any]) -> float:
    """When the server granted the leases of `answer`, on this host's lease clock, at the
    earliest: its request left at `sent` and the server held it `held_seconds` (a long
    poll waits up to 20 s) before the transaction that granted them. (Counted from
    `sent`, a lease granted late in a long poll looked that much older here: a short one
    was fenced before its first renewal.)"""
    held = answer.get("held_seconds")
    if isinstance(held, bool) or not isinstance(held, int | float) or not math.isfinite(held):
        return sent
    return sent + min(max(float(held), 0.0), arrived - sent)


def run_host(server: Server, settings: Settings, host: str, say: Callable[[str], None],
             environ: dict[str, str] | None = None) -> int:
    """Run this host's push agents until SIGTERM or SIGINT (then 0), or until the server
    refuses the token (then 2, after the attempts running here ended)."""
    environ = dict(os.environ if environ is None else environ)
    home = str(settings.home.resolve())
    with stop_on_signals() as stop:  # (from the start: a stop asked for while it starts is one too)
        # what a runner of this home that died left running: its leases cannot be renewed
        # now (they run out, and the tasks go back), so nothing of it may run beside a retry
        for ref in containment.left_by_the_dead(server.url, "SCHED_SERVER", home, RUNNER_NAME):
            containment.stop_attempt(ref)
            say(f"task {ref.task_id} attempt {ref.attempt}: stopped what a runner gone left running")
        sent = lease_clock()  # before the server grants the leases of what waits already
        first, tells = first_start(server, host, home)  # its limits, and the cancels pending on this host
        arrived_at = lease_clock()  # the attempts' starts were recorded before: their delay counts from here
        granted_at = grant_time(sent, arrived_at, first)
        settings = runner_settings(settings, first)
        take_role(RUNNER_NAME)
        ledger = HttpLedger(server, host, settings.lease_seconds, tells)
        ledger.hear(first)
        if not tells:
            say("the server is older than this runner: cancels reach it at its turns, every "
                f"{settings.lease_seconds / 3:g} s (upgrade the server)")
        supervisor = Supervisor(settings, ledger, stop, subreaper=True, name=f"sched run --server ({host})")
        asker = Asker(server, host, home, supervisor.wake, say, ledger)
        say(f"running the push agents of host {host} for {server.url}")
        late: list[dict[str, Any]] = []
        try:
            with signals_wake(supervisor):
                _start(supervisor, first, granted_at, arrived_at, settings, server.url, environ, say)
                asker.start()
                late = _supervise(supervisor, asker, stop, settings, server.url, environ, say)
        finally:
            asker.stop()
            supervisor.close()
    if asker.fatal is not None:
        raise asker.fatal
    give_back(server, host, [*late, *asker.finish()], say)
    say(f"stopped ({signal.Signals(stop.signum).name})" if stop.signum else "stopped")
    return 0


def first_start(server: Server, host: str, home: str) -> tuple[dict[str, Any], bool]:
    """The first ask for work, and whether the server tells of cancels in its answers:
    one from before `cancelling` refuses it, and is then asked as an older runner asks
    (its turns tell of cancels)."""
    try:
        return server.host_start(host, os.getpid(), home, new_token(), 0, this_machine(), []), True
    except BadInput as e:
        if not e.message.startswith("start: cancelling: "):  # (how a server refuses a field it lacks)
            raise
    return server.host_start(host, os.getpid(), home, new_token(), 0, this_machine()), False


def _supervise(supervisor: Supervisor, asker: Asker, stop: StopRequest, settings: Settings, url: str,
               environ: dict[str, str], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Start what the asker brings until a stop, then let the attempts end; the answers
    that came after the stop, not started."""
    late: list[dict[str, Any]] = []
    while True:
        supervisor.step(supervisor.next_timeout())
        stopping = stop.signum is not None or asker.fatal is not None
        while True:
            try:
                granted_at, arrived_at, answer = asker.answers.get_nowait()
            except queue.Empty:
                break
            if stopping:
                late.append(answer)
            else:
                _start(supervisor, answer, granted_at, arrived_at, settings, url, environ, say)
        for run in supervisor.finished():
            outcome = run.outcome
            if outcome is not None:
                say(f"task {run.attempt.task_id} attempt {run.attempt.attempt}: {outcome.status} "
                    f"({outcome.detail})")
        if stopping:
            asker.stop()
            if not supervisor.busy:
                return late


def give_back(server: Server, host: str, answers: Sequence[dict[str, Any]],
              say: Callable[[str], None]) -> None:
    """Hand back the attempts the server started for this runner after it was asked to
    stop: recorded `interrupted` (not counted; the task goes back to its queue), where
    they were left to run out their leases, each a counted attempt (the last one: dead)."""
    # (an attempt handed over twice, in an answer and again by the ask sent again, once)
    documents = list({doc["token"]: doc for answer in answers for doc in answer["attempts"]}.values())
    if not documents:
        return
    ending = Ending("not started", error="not started: its runner was stopping", reason="interrupted")
    try:
        server.host_turn(host, [], [ending_document(d["task_id"], d["token"], ending) for d in documents])
    except SchedError as e:
        say(f"could not give back what was started as it stopped ({e.message}): their leases run out")
        return
    for doc in documents:
        say(f"task {doc['task_id']} attempt {doc['attempt']}: given back, not started (stopping)")


def _start(supervisor: Supervisor, answer: dict[str, Any], granted_at: float, arrived_at: float,
           settings: Settings, url: str, environ: dict[str, str], say: Callable[[str], None]) -> None:
    attempts = [attempt_of(doc, settings, url, granted_at, environ, arrived_at) for doc in answer["attempts"]]
    for doc in answer["attempts"]:
        say(f"task {doc['task_id']} attempt {doc['attempt']}: started for agent {doc['agent']}")
    if attempts:
        supervisor.add(attempts)  # (which makes their directories and control groups here)
