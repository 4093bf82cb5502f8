"""`make demo` is the first thing a newcomer runs: it must keep working end to end (it
once broke unnoticed when listings stopped carrying payloads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the demo's push agents use process groups and /proc")
def test_the_demo_runs_to_the_end():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    done = subprocess.run([sys.executable, "-m", "examples.demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    out = done.stdout
    for step in ("sched requeue", "sched explain", "sched metrics", "sched health", "sched simulate"):
        assert step in out, f"the demo did not reach {step}"
    assert "simulated 32 tasks from the log" in out
    assert "verified:" in out and "hash chain intact" in out
