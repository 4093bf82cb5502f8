"""Which machine, boot and process namespace a process runs in.

A wrapper's `TaskStarted` records it beside the host name and the pid, so that a
running attempt is judged by its pid only where that pid means something: on the
machine and boot that started it, in the same pid namespace. Two machines given one
host name (a cloned VM, containers with a fixed hostname) would otherwise take each
other's running attempts for dead, and run the work twice.

The text is `MACHINE_ID/BOOT_ID/PID_NAMESPACE`: `/etc/machine-id` (empty where there is
none), the kernel's boot id and the inode of this process's pid namespace. Where there
is no boot id (not Linux) the machine is unknown (None), and attempts are judged by pid
as before this was recorded.
"""

from __future__ import annotations

import functools
import os
from typing import Literal

Where = Literal["here", "rebooted", "elsewhere"]


def _first_line(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.readline().strip().replace("/", "")
    except OSError:
        return ""


@functools.cache
def this_machine() -> str | None:
    """This process's machine, boot and pid namespace (None: not known here)."""
    boot = _first_line("/proc/sys/kernel/random/boot_id")
    if not boot:
        return None
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{_first_line('/etc/machine-id')}/{boot}/{namespace}"


def where_started(recorded: str | None, mine: str | None) -> Where:
    """Where an attempt whose wrapper recorded `recorded` runs, seen from `mine`:
    `here` (its pid can be looked at: the same machine, boot and namespace, or an
    attempt recorded before machines were: None), `rebooted` (this machine, an earlier
    boot: none of its processes is left) or `elsewhere` (another machine or namespace:
    only its lease tells)."""
    if recorded is None or recorded == mine:
        return "here"
    if mine is None:
        return "elsewhere"
    (their_id, their_boot), (my_id, my_boot) = _id_and_boot(recorded), _id_and_boot(mine)
    if their_id and their_id == my_id and their_boot != my_boot:
        return "rebooted"
    return "elsewhere"


def _id_and_boot(machine: str) -> tuple[str, str]:
    machine_id, _, rest = machine.partition("/")
    return machine_id, rest.partition("/")[0]
