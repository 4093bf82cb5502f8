"""A host that vanishes from the network while it holds the writers' lock on PostgreSQL.

Nothing tells the server such a host is gone: no packet comes back. Its transaction, and
the writers' lock with it, would stay until the server's TCP keepalive gave up on it
(two hours by default), and no write of the fleet could be made until then. Here the
second host is a network namespace joined to this one by a veth pair, and "vanishing" is
its link cut, then its process killed.

Needs root (network namespaces) and the PostgreSQL server binaries: skipped without them,
a failure when SCHED_REQUIRE_POSTGRES=1 (CI runs as root and sets it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from tests.conftest import new_workspace
from tests.pgcluster import REQUIRE_ENV, PgCluster, unavailable_reason

REPO = Path(__file__).parents[3]


@dataclass
class FarHost:
    """A network namespace (the other host) with a link to this one: `far_address` there,
    `near_address` here, where the cluster listens."""

    namespace: str
    link: str
    near_address: str
    far_address: str
    cluster: PgCluster

    def run(self, argv: list[str], **popen: object) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.namespace, *argv], text=True, **popen)  # type: ignore[call-overload,no-any-return]

    def cut(self) -> None:
        """Its link goes down: every packet between the hosts is lost, none refused."""
        _ip("link", "set", self.link, "down")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _unavailable() -> str | None:
    if (reason := unavailable_reason()) is not None:
        return reason
    if os.geteuid() != 0:
        return "vanished-host test skipped: network namespaces need root"
    if shutil.which("ip") is None:
        return "vanished-host test skipped: no `ip` command (apt-get install -y iproute2)"
    return None


@pytest.fixture
def far_host(tmp_path: Path) -> Iterator[FarHost]:
    reason = _unavailable()
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    tag = os.getpid() % 10_000
    net = f"10.213.{tag % 250}"
    namespace, link, peer = f"sched{tag}", f"sched{tag}n", f"sched{tag}f"
    _remove(namespace, link)  # (what a killed run of the same tag left)
    _ip("netns", "add", namespace)
    cluster = None
    try:
        _ip("link", "add", link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", namespace)
        _ip("addr", "add", f"{net}.1/30", "dev", link)
        _ip("link", "set", link, "up")
        _ip("netns", "exec", namespace, "ip", "addr", "add", f"{net}.2/30", "dev", peer)
        _ip("netns", "exec", namespace, "ip", "link", "set", peer, "up")
        cluster = PgCluster(listen=f"{net}.1", clients=f"{net}.0/30").start(tmp_path / "pg")
        yield FarHost(namespace, link, f"{net}.1", f"{net}.2", cluster)
    finally:
        if cluster is not None:
            cluster.stop()
        _remove(namespace, link)


def _remove(namespace: str, link: str) -> None:
    subprocess.run(["ip", "link", "del", link], capture_output=True, check=False, timeout=30)
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False, timeout=30)


# on the far host: a sched writer that holds the writers' lock (its transaction open,
# an event appended) until it is killed
_HOLDER = """
import sys
from eventlog.events import SchedulerPaused
from scheduler.config.settings import load_settings
from scheduler.workspace import Workspace
ws = Workspace(load_settings().settings)
with ws.write() as recorder:
    recorder.record([SchedulerPaused(by="the vanished host")])
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_a_host_that_vanishes_holding_the_writers_lock_stops_the_fleet_for_seconds(tmp_path, far_host):
    """The server probes a writer's connection while it holds the lock and ends it about
    10 s after its host went silent (`WRITER_LIVENESS`); the next writer, waiting up to
    its busy timeout (30 s), then goes on. Before, that wait ran out and so did every
    other for two hours. What the vanished writer appended was never committed."""
    cluster = far_host.cluster
    name = "vanished"
    cluster.create_database(name)
    ws = new_workspace(tmp_path / "home", database=cluster.url(name))  # here: the unix socket
    assert ws.settings.busy_timeout_ms == 30_000
    env = {**os.environ, "PYTHONPATH": str(REPO), "SCHED_HOME": str(ws.settings.home),
           "SCHED_DATABASE_URL": f"postgresql://postgres@{far_host.near_address}:{cluster.port}/{name}"}
    holder = far_host.run([sys.executable, "-c", _HOLDER], env=env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n", holder.communicate()
        far_host.cut()
        holder.kill()  # (its connection's end is lost with the link)
        holder.communicate(timeout=30)
        submit(ws, [TaskSpec(queue="dev", title="after")])  # waits for the lock, then writes
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate(timeout=30)
    assert [t.title for t in queries.list_tasks(ws)] == ["after"]
    assert [rec.type for rec in queries.replay(ws)] == ["TaskSubmitted"]
    assert queries.verify_log(ws).ok
    ws.close()
