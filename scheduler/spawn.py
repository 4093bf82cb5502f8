"""Starting `sched exec TASK_ID` detached, after the tick that assigned the task has
committed, so a cron tick can exit while its agents run."""

from __future__ import annotations

import os
import subprocess
import sys

from eventlog.storage import DATABASE_URL_VARIABLE, is_url
from scheduler.settings import Settings

_children: list[subprocess.Popen[bytes]] = []


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
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "exec.log").open("ab") as log:
        child = subprocess.Popen(exec_argv(settings, task_id), env=exec_env(settings),
                                 stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, start_new_session=True)
    _children.append(child)
    return child.pid


def reap_finished() -> None:
    """Collect wrappers that have exited (a long-running daemon leaves no zombies)."""
    _children[:] = [c for c in _children if c.poll() is None]
