"""A cold command line call: a new interpreter that imports sched, opens the database
and prints `status --json`."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.build import full_fleet_db
from benchmarks.common import Context, result


def sched_argv() -> list[str]:
    """The installed `sched` script beside this interpreter, else `python -m cli`."""
    script = Path(sys.executable).with_name("sched")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cli"]


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return seconds, done.stdout


def cold_cli(ctx: Context) -> dict[str, Any]:
    """Median wall time of `sched status --json` against a small workspace, beside the
    median of `python -c pass` (the same interpreter), measured in turns."""
    home = full_fleet_db(ctx, ctx.params["idle_small"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    sched = [*sched_argv(), "status", "--json", "--home", str(home)]
    bare = [sys.executable, "-c", "pass"]
    _, out = _run(sched, env, home)  # warm the page cache; check the output once
    assert "queues" in json.loads(out)
    _run(bare, env, home)
    times, bare_times = [], []
    for _ in range(ctx.params["cli_repeat"]):
        times.append(_run(sched, env, home)[0])
        bare_times.append(_run(bare, env, home)[0])
    value, ceiling = statistics.median(times), statistics.median(bare_times)
    return result(
        "cold_cli", value=value * 1000, unit="ms", ceiling=ceiling * 1000, ratio=value / ceiling,
        target="<= 10",
        what=f"`sched status --json` in a new process (median of {len(times)})",
        ceiling_what="`python -c pass` with the same interpreter, measured in turns",
        details={"argv": [*sched[:-1], "HOME"], "seconds": times, "bare_seconds": bare_times})
