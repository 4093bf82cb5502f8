"""Starting `sched exec TASK_ID` detached, after the tick that assigned the task has
committed, so a cron tick can exit while its agents run."""

from __future__ import annotations

import subprocess
import sys

from scheduler.settings import Settings

_children: list[subprocess.Popen[bytes]] = []


def exec_argv(settings: Settings, task_id: int) -> list[str]:
    """The wrapper's command line, with absolute paths so it finds the same files."""
    argv = [sys.executable, "-m", "cli", "exec", str(task_id),
            "--home", str(settings.home.resolve()), "--db", str(settings.db_path.resolve())]
    if settings.agent_control_file is not None:
        argv += ["--agents", str(settings.agent_control_file.resolve())]
    return argv


def spawn_exec(settings: Settings, task_id: int) -> int:
    """Start the wrapper in its own session (it outlives this process); its own
    output goes to `$SCHED_HOME/logs/exec.log`. Returns its pid."""
    reap_finished()
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "exec.log").open("ab") as log:
        child = subprocess.Popen(exec_argv(settings, task_id), stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, start_new_session=True)
    _children.append(child)
    return child.pid


def reap_finished() -> None:
    """Collect wrappers that have exited (a long-running daemon leaves no zombies)."""
    _children[:] = [c for c in _children if c.poll() is None]
