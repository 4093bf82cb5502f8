"""`sched serve`: refuses the network while no token exists, says in one line when the
address cannot be used, and (one smoke test with a real server) answers /health and
stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cli.conftest import InProcess, cli_env
from tests.conftest import wait_for


@pytest.fixture
def ready(cli: InProcess, home: Path) -> InProcess:
    assert cli("init").returncode == 0
    return cli


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
def test_a_network_address_is_refused_while_no_token_exists(ready: InProcess, address: str):
    line = one_line(ready("serve", "--bind", address, "--port", "1"), 2)
    assert f"refusing to listen on {address}" in line and "sched tokens create" in line


def test_a_revoked_token_does_not_count(ready: InProcess):
    ready("tokens", "create", "--name", "t", "--role", "reader")
    ready("tokens", "revoke", "t")
    assert "refusing to listen" in one_line(ready("serve", "--bind", "0.0.0.0", "--port", "1"), 2)


def test_an_address_in_use_is_one_line_exit_2(ready: InProcess):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(ready("serve", "--port", str(port)), 2)
    assert f"cannot listen on 127.0.0.1 port {port}" in line


def test_serve_needs_a_database(cli: InProcess, home: Path):
    assert "sched init" in one_line(cli("serve", "--port", "1"), 2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_real_server_answers_health_and_stops_on_sigterm(ready: InProcess, home: Path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)], cwd=home,
                              env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def health() -> tuple[int, dict] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                    return answer.status, json.load(answer)
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                return None

        status, report = wait_for("the server to answer", health)  # type: ignore[misc]
        assert status in (200, 503) and report["status"] in ("healthy", "degraded", "unhealthy")
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, err
    assert "Traceback" not in err and "sched serve: stopped (SIGTERM)" in err
    assert out == "" and "GET /health" in err  # the request log goes to stderr: stdout is for documents
