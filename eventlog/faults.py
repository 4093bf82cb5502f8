"""Fault points for crash tests: `SCHED_FAULT=NAME` makes the process SIGKILL itself
when it reaches the point NAME, so a test can prove that a crash exactly there loses
nothing. Unset (always, in production), a fault point costs one dictionary lookup.

Points: `after_append` (events sealed and inserted, projections not yet updated),
`before_commit` (everything written, the transaction not committed),
`after_commit_before_spawn` (a tick committed its assignments, no wrapper started
yet), `mid_exec` (the exec wrapper started the agent and has not recorded anything
since)."""

from __future__ import annotations

import os
import signal

FAULT_POINTS = ("after_append", "before_commit", "after_commit_before_spawn", "mid_exec")


def fault_point(name: str) -> None:
    """Die here, by SIGKILL, if `SCHED_FAULT` names this point."""
    if os.environ.get("SCHED_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
