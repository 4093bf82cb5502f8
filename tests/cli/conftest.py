"""Fixtures for the CLI tests: `sched` run in a temporary SCHED_HOME, in this process
(`cli`, `sched_here`: fast, most tests) or as a real subprocess (`run`, `sched`: the
smoke tests of a real start, exit and output), plus small helpers that look at its
output and at the database file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from scheduler.clock import Clock

FLEET: list[dict[str, object]] = [
    {"agentName": "ann", "agentType": "dev", "maxConcurrency": 2},
    {"agentName": "bob", "agentType": "dev", "maxConcurrency": 1},
    {"agentName": "qin", "agentType": "qa", "maxConcurrency": 1},
]
CONTROL_NAME = "agent-control.json"
Run = Callable[..., subprocess.CompletedProcess[str]]


def cli_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one `sched` run: this one, without any SCHED_* setting of
    the caller (SCHED_DB, SCHED_AGENT_CONTROL_FILE, ...), with SCHED_HOME=home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}
    env["SCHED_HOME"] = str(home)
    env.update(extra or {})
    return env


def sched(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m cli ARGS` in `home` (also its SCHED_HOME)."""
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=home, env=cli_env(home, env),
                          capture_output=True, text=True, timeout=60, check=False)


def sched_here(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`sched ARGS` in `home` as `sched` does, but run in this process (no interpreter
    start-up): for fixtures that build a home once; tests take the `cli` fixture."""
    from cli.main import main

    saved, cwd = dict(os.environ), Path.cwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(cli_env(home, env))
        os.chdir(home)
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["sched", *args], code, out.getvalue(), err.getvalue())


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The result of a run that must have succeeded (the failure shows its stderr)."""
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def one_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The single JSON document a `--json` run printed on stdout."""
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON document on stdout, got: {result.stdout!r}"
    return json.loads(result.stdout)


def json_lines(result: subprocess.CompletedProcess[str]) -> list[Any]:
    """One JSON object per non-empty stdout line (`replay --json`)."""
    docs = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert all(isinstance(d, dict) for d in docs)
    return docs


def one_error_line(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """Assert a refused run: `exit_code`, exactly one non-empty line on stderr and no
    traceback; returns that line."""
    assert result.returncode == exit_code, (
        f"expected exit {exit_code}, got {result.returncode}; stderr: {result.stderr!r}")
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line, got {result.stderr!r}"
    return lines[0]


def event_count(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_control(home: Path, content: object) -> Path:
    """Write the agent control file of `home` (a JSON value, or raw text)."""
    path = home / CONTROL_NAME
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SCHED_HOME built once through the CLI: the FLEET control file, an initialized
    database and one submitted dev task (so the log is not empty). Tests copy it."""
    home = tmp_path_factory.mktemp("seeded")
    write_control(home, FLEET)
    ok(sched_here(home, "init"))
    ok(sched_here(home, "submit", "--queue", "dev", "--title", "seed task"))
    return home


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty SCHED_HOME holding only the FLEET control file."""
    write_control(tmp_path, FLEET)
    return tmp_path


@pytest.fixture
def seeded(tmp_path: Path, seeded_template: Path) -> Path:
    """This test's own copy of the seeded SCHED_HOME (tmp_path)."""
    shutil.copytree(seeded_template, tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """`run(*args, env=None)`: sched in this test's SCHED_HOME (tmp_path)."""

    def runner(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return sched(tmp_path, *args, env=env)

    return runner


InProcess = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> InProcess:
    """`cli(*args, env=None, stdin=None, clock=None)`: `sched ARGS` run in this process
    (fast: no interpreter start-up) in this test's SCHED_HOME (tmp_path), as a
    CompletedProcess; `clock`: the clock it runs on (default the system's)."""
    from cli.main import main

    def runner(*args: str, env: dict[str, str] | None = None,
               stdin: bytes | None = None, clock: Clock | None = None) -> subprocess.CompletedProcess[str]:
        with monkeypatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("SCHED_")]:
                patch.delenv(key)
            patch.setenv("SCHED_HOME", str(tmp_path))
            patch.chdir(tmp_path)
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            if stdin is not None:
                patch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
            capsys.readouterr()
            code = main(list(args), clock=clock)
            out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["sched", *args], code, out, err)

    return runner
