"""Starting push agents' wrappers: `sched exec TASK_ID` detached, after the tick that
assigned the task has committed, so a cron tick can exit while its agents run; and
what a tick asks of the daemon's supervisor, which runs them (`Starter`, implemented
by `scheduler.runner.launcher.Launcher`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from eventlog.storage import DATABASE_URL_VARIABLE, is_url
from scheduler.config.settings import Settings
from scheduler.runner.exec_log import exec_log_path

if TYPE_CHECKING:
    from projections.recorder import Recorder
    from projections.sql import SqlProjection
    from scheduler.runner.exec import Attempt
    from scheduler.workspace import Workspace

_children: list[subprocess.Popen[bytes]] = []
Handover = list[tuple[int, "Attempt"]]  # (pid of the supervisor, an attempt it is to run)


class LauncherGone(OSError):
    """The daemon's supervisor process is not there any more."""


class Starter(Protocol):
    """What a daemon's tick asks of its supervisor."""

    @property
    def alive(self) -> bool: ...

    def start_in(self, ws: Workspace, recorder: Recorder, task_ids: Sequence[int],
                 granted_at: float) -> Handover:
        """Inside the tick's write transaction: start these assigned attempts (their
        `TaskStarted` recorded, naming the supervisor); they run after `go`. Raises
        `LauncherGone` (nothing started) when the supervisor is gone."""
        ...

    def go(self, handover: Handover) -> None:
        """After the commit: hand the attempts to the supervisor, which runs them."""
        ...

    def unsure(self, handover: Handover) -> None:
        """The transaction that started these attempts failed, perhaps in its COMMIT, which
        may have landed: the next tick asks the log (`landed`)."""
        ...

    def landed(self, views: SqlProjection) -> Handover:
        """Inside the next tick's write transaction: those of the `unsure` attempts that
        the log shows started, to hand over after this commit (else nobody would run them
        and their leases would run out); the others are forgotten."""
        ...


@contextmanager
def unsure_if_failed(starter: Starter | None, handover: Handover) -> Iterator[None]:
    """Around a tick's write transaction: if it fails, perhaps in a COMMIT that landed,
    the attempts it started (`handover`, filled meanwhile) go to `starter.unsure`, and
    the next tick asks the log whether they started."""
    try:
        yield
    except BaseException:
        if handover and starter is not None:
            starter.unsure(list(handover))
        raise


def lease_clock() -> float:
    """Seconds on the clock leases are measured with: one that keeps counting while
    the machine is suspended (CLOCK_BOOTTIME on Linux), so a wrapper that wakes up past
    its lease's expiry knows it at once; elsewhere the monotonic clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def absolute(settings: Settings) -> Settings:
    """The same settings with every path absolute: a wrapper works in its attempt's
    directory, and must still find the files."""
    update: dict[str, object] = {"home": settings.home.resolve()}
    if not is_url(settings.database):
        update["db"] = str(settings.db_path.resolve())
    if settings.agent_control_file is not None:
        update["agent_control_file"] = settings.agent_control_file.resolve()
    return settings.model_copy(update=update)


def exec_argv(settings: Settings, task_id: int) -> list[str]:
    """The wrapper's command line, with absolute paths so it finds the same files."""
    argv = [sys.executable, "-m", "cli", "exec", str(task_id), "--home", str(settings.home.resolve()),
            "--host", settings.host_name]  # the wrapper acts for the host that started it
    if not is_url(settings.database):  # a URL goes in the environment (`exec_env`): no password in argv
        argv += ["--db", str(settings.db_path.resolve())]
    if settings.agent_control_file is not None:
        argv += ["--agents", str(settings.agent_control_file.resolve())]
    return argv


def exec_env(settings: Settings) -> dict[str, str]:
    """The wrapper's environment: this process's, with the database URL if there is one."""
    env = dict(os.environ)
    if is_url(settings.database):
        env[DATABASE_URL_VARIABLE] = str(settings.database)
    return env


def spawn_exec(settings: Settings, task_id: int) -> int:
    """Start the wrapper in its own session (it outlives this process); its own
    output goes to `$SCHED_HOME/logs/exec.log`. Returns its pid."""
    reap_finished()
    path = exec_log_path(settings.home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as log:
        child = subprocess.Popen([*exec_argv(settings, task_id), "--log-times"], env=exec_env(settings),
                                 stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, start_new_session=True)
    _children.append(child)
    return child.pid


def reap_finished() -> None:
    """Collect wrappers that have exited (a long-running daemon leaves no zombies)."""
    _children[:] = [c for c in _children if c.poll() is None]
