"""Where an attempt's wrapper runs, seen from the process that judges it: by its pid
only on the machine, boot and pid namespace that started it."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.machine import this_machine, where_started

MINE = "m1/b1/4026531836"


@pytest.mark.parametrize(("recorded", "mine", "where"), [
    (MINE, MINE, "here"),
    (None, MINE, "here"),  # recorded by a sched before machines were: judged by pid, as then
    (None, None, "here"),
    ("m1/b0/4026531836", MINE, "rebooted"),  # this machine, an earlier boot: nothing of it runs
    ("m1/b0/4026532999", MINE, "rebooted"),
    ("m2/b1/4026531836", MINE, "elsewhere"),  # another machine (a clone that kept the boot id: still)
    ("m2/b2/4026531836", MINE, "elsewhere"),
    ("m1/b1/4026532999", MINE, "elsewhere"),  # a container of this machine: its own pids
    ("/b0/4026531836", "/b1/4026531836", "elsewhere"),  # no machine id: a reboot cannot be told
    (MINE, None, "elsewhere"),  # started on a Linux machine, judged where none is known
])
def test_an_attempt_is_judged_by_its_pid_only_where_the_pid_means_something(recorded, mine, where):
    assert where_started(recorded, mine) == where


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="no /proc: not Linux")
def test_this_machine_names_its_machine_boot_and_pid_namespace():
    machine = this_machine()
    assert machine is not None
    _machine_id, boot, namespace = machine.split("/")
    assert boot and namespace.isdigit()
    assert where_started(machine, machine) == "here"
