"""Nothing of an attempt outlives it, with real processes: `containment.stop_attempt`
stops every process of an attempt, even one that forks while it is being killed. Each
case runs with the attempt's processes in a control group (where cgroup v2 is writable)
and without one (found by their environment marks and process groups).

The processes append "PID TIME" to a file every few milliseconds until they are
killed: a line written after the stop returned would be a leftover."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler import containment
from tests.conftest import wait_for

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc")


def cgroups_work() -> bool:
    group = containment.create_cgroup(containment.AttemptRef.of(1, 1, Path("probe.db")))
    if group is None:
        return False
    group.rmdir()
    return True


CONTAINMENT = [
    pytest.param("cgroup", marks=pytest.mark.skipif(not cgroups_work(), reason="no writable cgroup v2")),
    "fallback",
]


def beats_of(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [(int(p), float(t)) for p, t in lines if p and t]  # a line cut by SIGKILL is skipped


def attempt_processes(db: Path, task_id: int, attempt: int) -> list[int]:
    """Live processes whose environment marks them as this attempt's (scanned here,
    independently of the code under test)."""
    marks = {b"SCHED_DB=" + str(db.resolve()).encode(), f"SCHED_TASK_ID={task_id}".encode(),
             f"SCHED_ATTEMPT={attempt}".encode()}
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = set((proc / "environ").read_bytes().split(b"\0"))
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marks <= env and state not in ("Z", "X"):
            found.append(int(proc.name))
    return found


# A process that forks and exits over and over: a new pid every few milliseconds, so a
# kill aimed at the pid just found misses its successor, and a scan of /proc hardly
# ever sees one alive. With "setsid", each one also leaves its process group (only a
# control group holds it then). (Each exited one is a zombie until init collects it:
# a few dozen here.)
EVADER = """
import os, sys, time
beats, setsid = sys.argv[1], sys.argv[2] == "setsid"
while True:
    if os.fork():
        os._exit(0)
    if setsid:
        os.setsid()
    with open(beats, "a") as f:
        f.write(f"{os.getpid()} {time.time()!r}\\n")
    time.sleep(0.003)
"""


@pytest.mark.parametrize("contained", CONTAINMENT)
def test_stop_attempt_catches_a_process_that_forks_while_it_is_killed(tmp_path, contained):
    db = tmp_path / "sched.db"
    ref = containment.AttemptRef.of(7, 1, db)
    group = containment.create_cgroup(ref) if contained == "cgroup" else None
    ref = containment.AttemptRef.of(7, 1, db, cgroup=str(group) if group else None)
    beats = tmp_path / "beats"
    script = tmp_path / "evader.py"
    script.write_text(EVADER)
    env = {**os.environ, **ref.marks()}

    def join() -> None:
        if group is not None:
            containment.join_cgroup(str(group))

    first = subprocess.Popen([sys.executable, str(script), str(beats),
                              "setsid" if group is not None else "stay"],
                             env=env, start_new_session=True, preexec_fn=join)
    first.wait()  # it forked and left at once
    if group is None:  # the wrapper knows its agent's process group (its child's pid)
        ref = containment.AttemptRef.of(7, 1, db, process_group=first.pid)
    wait_for("the evader to go through a few pids", lambda: len({p for p, _ in beats_of(beats)}) > 10)
    began = time.monotonic()
    assert containment.stop_attempt(ref) == []
    took = time.monotonic() - began
    stopped_at = time.time()
    assert attempt_processes(db, 7, 1) == []
    assert max(t for _, t in beats_of(beats)) < stopped_at
    assert took < 2.0, f"the stop took {took:.2f} s"
    if group is not None:
        assert not group.exists()
