"""`sched serve`: refuses the network while no token exists, says in one line when the
address cannot be used, and (smoke tests with a real server) answers /health, stops
cleanly on SIGTERM, and behind a TLS-terminating proxy on its host sets Secure cookies."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


@pytest.mark.parametrize("address", ["999.1.1.1", "10.0.0", "::g"])
def test_text_written_as_an_ip_address_that_is_none_is_said_first(ready: InProcess, address: str):
    assert one_line(ready("serve", "--bind", address, "--port", "1"), 2).endswith(
        f"cannot listen on {address}: not an IP address")


def test_host_is_the_same_option_as_bind(ready: InProcess):
    """`sched serve --host H`, as the design's command contract names it."""
    line = one_line(ready("serve", "--host", "192.0.2.7", "--port", "1"), 2)
    assert "refusing to listen on 192.0.2.7" in line


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


@contextmanager
def serving(home: Path, *flags: str, environment: dict[str, str] | None = None
            ) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`sched serve` on a free port, in a process of its own, once it answers; killed
    at the end if the test did not stop it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port), *flags], cwd=home,
                              env=cli_env(home, environment or {}), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        def up() -> bool:
            try:
                return request(port, "GET", "/health", {})[0] in (200, 503)
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                return False

        wait_for("the server to answer", up)
        yield server, port
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_a_real_server_answers_health_and_stops_on_sigterm(ready: InProcess, home: Path):
    with serving(home) as (server, port):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                status, report = answer.status, json.load(answer)
        except urllib.error.HTTPError as e:
            status, report = e.code, json.load(e)
        assert status in (200, 503) and report["status"] in ("healthy", "degraded", "unhealthy")
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "Traceback" not in err and "sched serve: stopped (SIGTERM)" in err
    assert out == "" and "GET /health" in err  # the request log goes to stderr: stdout is for documents


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def request(port: int, method: str, path: str, headers: dict[str, str],
            form: dict[str, str] | None = None, json_body: object = None) -> tuple[int, str, list[str]]:
    """One request as a proxy (or a browser) sends it, no redirect followed: the status,
    the body and the Set-Cookie headers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = urllib.parse.urlencode(form) if form is not None else None
        if body is not None:
            headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        if json_body is not None:
            body, headers = json.dumps(json_body), {**headers, "Content-Type": "application/json"}
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read().decode(), answer.headers.get_all("set-cookie") or []
    finally:
        connection.close()


def cookie(set_cookies: list[str], name: str) -> str:
    return next(v for v in set_cookies if v.startswith(name + "="))


@pytest.mark.parametrize(("environment", "trusted"), [
    ({}, True),  # the proxy on this host (127.0.0.1, ::1): uvicorn's default FORWARDED_ALLOW_IPS
    ({"FORWARDED_ALLOW_IPS": "192.0.2.1"}, False),  # only a proxy at another address is trusted
], ids=["proxy-on-this-host", "proxy-not-trusted"])
def test_behind_a_tls_proxy_the_cookies_are_secure_and_the_log_names_the_client(
        ready: InProcess, home: Path, environment: dict[str, str], trusted: bool):
    """What docs/http.md says of a TLS-terminating proxy: from a trusted address,
    X-Forwarded-Proto: https makes the dashboard's cookies Secure and X-Forwarded-For
    names the client in the request log; from any other, both headers are ignored."""
    token = ready("tokens", "create", "--name", "ops", "--role", "operator").stdout.strip()
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    with serving(home, environment=environment) as (server, port):
        _, page, cookies = request(port, "GET", "/signin", proxied)
        signin = cookie(cookies, "sched_signin")
        status, _, cookies = request(port, "POST", "/signin", {**proxied, "Cookie": signin.split(";")[0]},
                                     {"csrf": CSRF.search(page).group(1), "token": token})
        assert status == 303
        session = cookie(cookies, "sched_session")
        direct = cookie(request(port, "GET", "/signin", {})[2], "sched_signin")  # no proxy: plain HTTP
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert ("; secure" in session.lower(), "; secure" in signin.lower()) == (trusted, trusted)
    assert "; secure" not in direct.lower()
    assert ("203.0.113.9" in err) == trusted and "Traceback" not in err


def children_of(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("stop", ["SIGTERM", "a worker killed"])
def test_two_workers_start_the_port_answers_and_they_stop_together(ready: InProcess, home: Path, stop: str):
    """`--workers 2`: two worker processes start and the port answers (which worker took
    each connection is the kernel's choice: not checked); SIGTERM stops both and exits 0;
    a worker that dies unasked stops the other and the command exits 1 in one line."""
    with serving(home, "--workers", "2") as (server, port):
        workers = wait_for("both workers", lambda: len(found := children_of(server.pid)) == 2 and found)
        for _ in range(10):  # a connection each
            assert request(port, "GET", "/health", {})[0] in (200, 503)
        if stop == "SIGTERM":
            server.send_signal(signal.SIGTERM)
        else:
            os.kill(workers[0], signal.SIGKILL)  # type: ignore[index]
        _, err = server.communicate(timeout=30)
    assert all(gone(pid) for pid in workers)  # type: ignore[union-attr]
    assert "Traceback" not in err
    if stop == "SIGTERM":
        assert server.returncode == 0 and "sched serve: stopped (SIGTERM)" in err
    else:
        assert server.returncode == 1
        assert re.fullmatch(rf"sched: worker [12] of 2 \(pid {workers[0]}\) ended: killed by "  # type: ignore[index]
                            "SIGKILL; the other workers were stopped", err.splitlines()[-1]), err


@pytest.mark.parametrize(("workers", "path", "body"), [
    ("1", "/api/v1/pause", None), ("2", "/api/v1/pause", None),
    ("1", "/api/v1/tasks/cancel", {"ids": [1]}),  # (a route that answers each id's error in its result)
], ids=["pause", "pause-2-workers", "bulk-cancel"])
def test_a_server_stops_exit_1_once_another_version_of_sched_changed_the_database(
        ready: InProcess, home: Path, workers: str, path: str, body: dict | None):
    """A server left running while a newer sched rebuilt the projection tables answered
    every write 503 "retry" for as long as it ran, and its remote runners retried for
    ever: no retry could mend it. It answers why, then stops (exit 1), as the daemon does,
    so that a service manager starts the version installed."""
    import sqlite3
    from contextlib import closing

    from projections.views import PROJECTION_SCHEMA, SHAPE_KEY

    made = ready("tokens", "create", "--name", "ops", "--role", "operator", "--json")
    token = json.loads(made.stdout)["token"]
    with serving(home, "--workers", workers) as (server, port):
        with closing(sqlite3.connect(home / "sched.db")) as conn, conn:  # (a newer sched's refold)
            conn.execute("UPDATE projection_meta SET value = ? WHERE key = ?",
                         (str(PROJECTION_SCHEMA + 1), SHAPE_KEY))
        status, answer, _ = request(port, "POST", path, {"Authorization": f"Bearer {token}"}, json_body=body)
        _, err = server.communicate(timeout=30)  # (no signal: it stops by itself)
    # (the bulk cancel answers 200, each id with its result: the error is task 1's)
    assert status == (503 if path.endswith("pause") else 200), answer
    assert "not of this sched's shape" in answer, answer
    assert server.returncode == 1 and "Traceback" not in err, err
    lines = err.splitlines()
    said = "stopped: this server can record nothing more: "
    if workers == "1":
        assert lines[-1].startswith("sched: " + said), err
    else:  # (the worker that met it says why; the command, that it ended)
        assert any(said in line for line in lines), err
        assert re.fullmatch(r"sched: worker [12] of 2 \(pid \d+\) ended: exit 1; the other workers were "
                            "stopped", lines[-1]), err
