"""The HTTP API (`sched serve`, issue 12 item 7): claim + complete round trips from
several clients against the same work done through the Python API, the latency of one
claim, and what 200 idle long polls cost the server.

The server is a real one, in its own process on 127.0.0.1 (so its CPU time and threads
are read from /proc/PID apart from the clients'), serving a fresh SQLite workspace of
pull agents (no command: their work is taken by claim). The clients speak plain
`http.client` over keep-alive connections: the cheapest honest client, so the figures
are the server's, not a client library's.

Run as `python -m benchmarks.bench_http serve HOME PORT --claim-burst N
--claims-per-second R [--workers W]`, this module serves HOME as `sched serve
[--workers W]` does, with the per-token claim rate of `ServerLimits` raised
(docs/performance.md says why)."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_cli import sched_argv
from benchmarks.bench_submit import record_fleet
from benchmarks.build import load_queued
from benchmarks.common import Context, fleet, new_workspace, open_workspace, result, stop_process
from projections.figures import percentile
from scheduler import access
from scheduler.usecases import work

HOST = "127.0.0.1"
WARM_ROUNDS = 3  # claim + complete rounds each client makes before the clock starts
# the per-token claim bucket of the throughput servers: high enough never to refuse a
# benchmark's claim (the limiter still runs on each one); the defaults are 30 and 5/s
BENCH_CLAIM_BURST = 1_000_000
BENCH_CLAIMS_PER_SECOND = 1_000_000.0
# the throughput servers run as `sched serve --workers N` with two workers per core, the
# setting docs/http.md gives for a busy server (a worker waiting for the writers' turn
# leaves its core to another)
BENCH_WORKERS = 2 * (os.cpu_count() or 1)


# -- the server ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SCHED_")}


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/health")
        conn.getresponse().read()  # 200 or 503: either way it serves
        return True
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def serving(home: Path, *, bench_limits: bool) -> Iterator[tuple[int, int]]:
    """A server over `home` in its own process: yields (pid, port); stopped (SIGTERM,
    then waited for) at the end. `bench_limits`: this module's entry with the claim
    rate raised; else `sched serve` itself, with every default."""
    port = _free_port()
    if bench_limits:
        argv = [sys.executable, "-m", "benchmarks.bench_http", "serve", str(home), str(port),
                "--claim-burst", str(BENCH_CLAIM_BURST),
                "--claims-per-second", str(BENCH_CLAIMS_PER_SECOND), "--workers", str(BENCH_WORKERS)]
    else:
        argv = [*sched_argv(), "serve", "--port", str(port), "--home", str(home)]
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                      env.get("PYTHONPATH")]))
    log_path = home / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=home, env=env)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start (exit {proc.poll()}): "
                                   f"{log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        yield proc.pid, port
    finally:
        stop_process(proc, 30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its running children (a server's
    workers; /proc/PID/stat, clock ticks)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return ((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            + sum(cpu_seconds(int(child)) for child in children))


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no thread count for process {pid}")


def _serve(argv: Sequence[str]) -> int:
    """`sched serve` (cli/serve_cmd.py) with the claim limits given: the same workspace,
    app and runner."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_http serve")
    parser.add_argument("home", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--claim-burst", type=int, required=True)
    parser.add_argument("--claims-per-second", type=float, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    from cli.common import workspace
    from server.app import create_app
    from server.limits import ServerLimits
    from server.runner import run

    ws = workspace(args.home)
    limits = ServerLimits(claim_burst=args.claim_burst, claims_per_second=args.claims_per_second)
    settings, clock = ws.settings, ws.clock
    ws.close()
    run(lambda peers: create_app(settings, clock, limits, peers), HOST, args.port, args.workers)
    return 0


# -- clients ---------------------------------------------------------------------------

class Client:
    """One keep-alive connection acting for one agent with its token."""

    def __init__(self, port: int, agent: str, token: str, timeout: float = 60.0) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.agent = agent
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.conn.request("POST", path, json.dumps(body).encode(), self.headers)
        answer = self.conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"POST {path}: {answer.status} {data[:300]!r}")
        return json.loads(data)  # type: ignore[no-any-return]

    def claim(self, wait_seconds: int = 0) -> dict[str, Any] | None:
        body = {"wait_seconds": wait_seconds} if wait_seconds else {}
        return self.post(f"/api/v1/agents/{self.agent}/claim", body)["task"]  # type: ignore[no-any-return]

    def complete(self, task: dict[str, Any]) -> None:
        self.post(f"/api/v1/tasks/{task['task_id']}/complete", {"token": task["token"]})

    def close(self) -> None:
        self.conn.close()


def _http_rounds(client: Client, rounds: int) -> list[float]:
    """`rounds` claims, each completed; the seconds from each claim's send to its parsed
    answer."""
    latencies = []
    for _ in range(rounds):
        began = time.perf_counter()
        task = client.claim()
        latencies.append(time.perf_counter() - began)
        if task is None:
            raise RuntimeError(f"agent {client.agent}: no task to claim")
        client.complete(task)
    return latencies


def _python_rounds(ws: Any, agent: str, rounds: int) -> list[float]:
    """The same through the use cases `sched worker claim` and `complete` call."""
    latencies = []
    for _ in range(rounds):
        began = time.perf_counter()
        claimed = work.claim(ws, agent)
        latencies.append(time.perf_counter() - began)
        if claimed.claim is None:
            raise RuntimeError(f"agent {agent}: no task to claim")
        work.complete(ws, work.CompleteRequest(task_id=claimed.claim.task.task_id, token=claimed.claim.token))
    return latencies


def _http_worker(port: int, agents: list[tuple[str, str]], rounds: int, barrier: Any, out: Any) -> None:
    """One process's clients (one per agent, each its keep-alive connection): each
    agent's warm-up rounds, the release, then each agent's `rounds` in turn."""
    name = ",".join(agent for agent, _t in agents)
    try:
        clients = [Client(port, agent, token) for agent, token in agents]
        for client in clients:
            _http_rounds(client, WARM_ROUNDS)
        barrier.wait()
        latencies = [x for client in clients for x in _http_rounds(client, rounds)]
        out.put((name, len(latencies), time.monotonic(), latencies, None))
        for client in clients:
            client.close()
    except Exception as e:
        barrier.abort()
        out.put((name, 0, time.monotonic(), [], repr(e)))


def _python_worker(home: str, agents: list[tuple[str, str]], rounds: int, barrier: Any, out: Any) -> None:
    """The same through the Python API: one workspace per process, its agents' rounds
    in turn."""
    name = ",".join(agent for agent, _t in agents)
    try:
        ws = open_workspace(Path(home))
        for agent, _token in agents:
            _python_rounds(ws, agent, WARM_ROUNDS)
        barrier.wait()
        latencies = [x for agent, _token in agents for x in _python_rounds(ws, agent, rounds)]
        out.put((name, len(latencies), time.monotonic(), latencies, None))
        ws.close()
    except Exception as e:
        barrier.abort()
        out.put((name, 0, time.monotonic(), [], repr(e)))


def _groups(agents: list[tuple[str, str]], processes: int) -> list[list[tuple[str, str]]]:
    """`agents` dealt to `processes` processes (at most one process per agent: an agent
    of one slot claims from one process at a time)."""
    n = max(1, min(processes, len(agents)))
    return [agents[i::n] for i in range(n)]


def _race(target: Any, first: Any, groups: list[list[tuple[str, str]]], rounds: int
          ) -> tuple[float, int, list[float]]:
    """One process per group of agents running `target(first, group, rounds, ...)`,
    released together after their warm-up rounds: the seconds from the release until
    the last one finished, the rounds they made and every claim's latency."""
    mp = multiprocessing.get_context("spawn")
    barrier, out = mp.Barrier(len(groups) + 1), mp.Queue()
    procs = [mp.Process(target=target, args=(first, group, rounds, barrier, out)) for group in groups]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=300)
        released = time.monotonic()
        finished = [out.get(timeout=600) for _ in procs]
    except threading.BrokenBarrierError:
        finished = [out.get(timeout=60)]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    errors = [f"{agent}: {error}" for agent, _n, _end, _lat, error in finished if error]
    if errors:
        raise RuntimeError("; ".join(errors))
    latencies = sorted(x for *_rest, lat, _e in finished for x in lat)
    seconds = max(end for _a, _n, end, _l, _e in finished) - released
    return seconds, sum(n for _a, n, *_r in finished), latencies


# -- workspaces ------------------------------------------------------------------------

def _pull_workspace(home: Path, agents: int, tasks: int, prefix: str) -> list[tuple[str, str]]:
    """A fresh workspace of `agents` pull agents of one slot, `tasks` queued tasks and a
    token per agent; returns (agent, token) pairs."""
    ws = new_workspace(home, fleet(agents, 1, prefix=prefix))
    if tasks:
        load_queued(ws, tasks, ws.clock.now())
    record_fleet(ws)
    pairs = [(name, access.create_token(ws, f"{name}-box", "bench", agent=name).token)
             for name in (f"{prefix}{i:03d}" for i in range(agents))]
    ws.close()
    return pairs


def _ms(seconds: float | None) -> float:
    return (seconds or 0.0) * 1000


# -- the figures -----------------------------------------------------------------------

def http_claims(ctx: Context) -> dict[str, Any]:
    clients, rounds = ctx.params["http_clients"], ctx.params["http_rounds"]
    tasks = clients * (rounds + WARM_ROUNDS)
    http_home = ctx.dir("http-claims-http")
    http_agents = _pull_workspace(http_home, clients, tasks, "w")
    # the ceiling, on identical fresh workspaces: the same agents and rounds from as many
    # processes as there are clients, and from as many as the server has writers (each
    # process then works through its share of the agents in turn); writers contend for
    # sched's write turn, so fewer of them may go faster: the better of the two is the
    # ceiling
    py_runs: dict[int, tuple[float, int, list[float]]] = {}
    for processes in dict.fromkeys([clients, min(BENCH_WORKERS, clients)]):
        py_home = ctx.dir(f"http-claims-python-{processes}")
        py_agents = _pull_workspace(py_home, clients, tasks, "w")
        py_runs[processes] = _race(_python_worker, str(py_home), _groups(py_agents, processes), rounds)
    with serving(http_home, bench_limits=True) as (pid, port):
        cpu_before = cpu_seconds(pid)
        seconds, done, lat = _race(_http_worker, port, _groups(http_agents, clients), rounds)
        server_cpu = cpu_seconds(pid) - cpu_before
    best = max(py_runs, key=lambda k: py_runs[k][1] / py_runs[k][0])
    py_seconds, py_rounds, py_lat = py_runs[best]
    value, ceiling = done / seconds, py_rounds / py_seconds
    processes_what = (f"from {clients} processes and from {min(BENCH_WORKERS, clients)} (as many as "
                      "the server's writers, each process taking its share of the agents in turn): "
                      "the better of the two" if len(py_runs) > 1 else
                      f"from {clients} processes (no more than the server's {BENCH_WORKERS} writers)")
    return result(
        "http_claims", value=value, unit="rounds/s", ceiling=ceiling, ratio=value / ceiling,
        target=">= 0.5",
        what=f"{clients} client processes, each with a keep-alive connection and its agent's token, "
             f"{rounds} rounds each of POST /api/v1/agents/A/claim + POST /api/v1/tasks/ID/complete "
             f"against `sched serve --workers {BENCH_WORKERS}` (its own processes, SQLite)",
        ceiling_what=f"the same {clients} x {rounds} rounds through the Python API (work.claim + "
                     "work.complete, what `sched worker claim/complete` call) on an identical fresh "
                     f"workspace, {processes_what}",
        details={"rounds": done, "seconds": seconds, "python_rounds": py_rounds, "python_seconds": py_seconds,
                 "python_processes": best,
                 "python_runs": {str(k): {"processes": k, "rounds": n, "seconds": secs,
                                          "rounds_per_second": n / secs,
                                          "claim_p50_ms": _ms(percentile(lt, 50)),
                                          "claim_p99_ms": _ms(percentile(lt, 99))}
                                 for k, (secs, n, lt) in py_runs.items()},
                 "server_cpu_seconds": server_cpu, "server_cpu_ms_per_round": server_cpu / done * 1000,
                 "claim_p50_ms": _ms(percentile(lat, 50)), "claim_p99_ms": _ms(percentile(lat, 99)),
                 "python_claim_p50_ms": _ms(percentile(py_lat, 50)),
                 "python_claim_p99_ms": _ms(percentile(py_lat, 99)),
                 "server_workers": BENCH_WORKERS,
                 "claim_limits": {"claim_burst": BENCH_CLAIM_BURST,
                                  "claims_per_second": BENCH_CLAIMS_PER_SECOND}},
        ok=done == clients * rounds and all(n == clients * rounds for _s, n, _l in py_runs.values()))


LATENCY_P99_MS = 50.0


def http_claim_latency(ctx: Context) -> dict[str, Any]:
    n = ctx.params["latency_claims"]
    py_home, http_home = ctx.dir("http-latency-python"), ctx.dir("http-latency-http")
    ((agent, _t),) = _pull_workspace(py_home, 1, n + WARM_ROUNDS, "l")
    ((_a, token),) = _pull_workspace(http_home, 1, n + WARM_ROUNDS, "l")

    ws = open_workspace(py_home)
    _python_rounds(ws, agent, WARM_ROUNDS)
    py_lat = sorted(_python_rounds(ws, agent, n))
    ws.close()
    with serving(http_home, bench_limits=True) as (pid, port):
        client = Client(port, agent, token)
        _http_rounds(client, WARM_ROUNDS)
        cpu_before = cpu_seconds(pid)
        lat = sorted(_http_rounds(client, n))
        server_cpu = cpu_seconds(pid) - cpu_before
        client.close()
    p50, p99 = _ms(percentile(lat, 50)), _ms(percentile(lat, 99))
    py_p50 = _ms(percentile(py_lat, 50))
    return result(
        "http_claim_latency", value=p50, unit="ms", ceiling=py_p50, ratio=p50 / py_p50, target="<= 2",
        what=f"median of {n} claims (POST /api/v1/agents/A/claim) by one client, each completed "
             "before the next, from the send to the parsed answer, keep-alive connection "
             f"(p99 <= {LATENCY_P99_MS:g} ms too)",
        ceiling_what="median of the same claims through the Python API (work.claim, in one warm "
                     "process), on an identical fresh workspace",
        details={"p50_ms": p50, "p99_ms": p99, "max_ms": _ms(lat[-1]), "python_p50_ms": py_p50,
                 "python_p99_ms": _ms(percentile(py_lat, 99)), "claims": len(lat),
                 "server_cpu_ms_per_round": server_cpu / n * 1000, "p99_bound_ms": LATENCY_P99_MS},
        ok=len(lat) == n and p99 <= LATENCY_P99_MS)


IDLE_CPU_SHARE = 2.0  # % of one core


def _window(pid: int, seconds: float) -> tuple[float, int, int]:
    """The CPU share (% of one core) of `pid` over `seconds`, and the least and most
    threads it had (sampled every 0.25 s)."""
    counts = [threads(pid)]
    began, cpu = time.monotonic(), cpu_seconds(pid)
    while (left := began + seconds - time.monotonic()) > 0:
        time.sleep(min(0.25, left))
        counts.append(threads(pid))
    share = (cpu_seconds(pid) - cpu) / (time.monotonic() - began) * 100
    return share, min(counts), max(counts)


def http_idle_polls(ctx: Context) -> dict[str, Any]:
    n, window, wait = ctx.params["idle_clients"], ctx.params["idle_window"], ctx.params["idle_wait"]
    if window >= wait - 2:
        raise ValueError("the measured window must end before the long polls do")
    home = ctx.dir("http-idle")
    agents = _pull_workspace(home, n + 1, 0, "p")  # nothing queued: every claim waits
    marker, agents = agents[0], agents[1:]
    outcomes: list[tuple[float, Any]] = []
    sent = threading.Semaphore(0)

    def poll(port: int, agent: str, token: str) -> None:
        client = Client(port, agent, token, timeout=wait + 30)
        began = time.monotonic()
        try:
            client.conn.request("POST", f"/api/v1/agents/{agent}/claim",
                                json.dumps({"wait_seconds": wait}).encode(), client.headers)
            sent.release()
            answer = client.conn.getresponse()
            body = answer.read()
            task = json.loads(body)["task"] if answer.status == 200 else f"{answer.status} {body!r}"
            outcomes.append((time.monotonic() - began, task))
        except Exception as e:
            sent.release()
            outcomes.append((time.monotonic() - began, repr(e)))
        finally:
            client.close()

    with serving(home, bench_limits=False) as (pid, port):  # `sched serve`, every default limit
        probe = Client(port, *marker)
        for _ in range(WARM_ROUNDS):
            probe.claim()  # (nothing queued: answers null at once)
        probe.close()
        idle_share, _least, idle_max = _window(pid, window)
        pollers = [threading.Thread(target=poll, args=(port, agent, token), daemon=True)
                   for agent, token in agents]
        cpu_sent = cpu_seconds(pid)
        began = time.monotonic()
        for t in pollers:
            t.start()
        for _ in pollers:
            sent.acquire()
        sent_in = time.monotonic() - began
        # a claim sent after all of them is answered after their first looks (each a write
        # transaction: the thread pool takes calls in turn), then the waits are all that is left
        probe = Client(port, *marker)  # (a new connection: uvicorn closes one idle for 5 s)
        probe.claim()
        first_looks_in = time.monotonic() - began
        probe.close()
        time.sleep(1.0)
        first_looks = cpu_seconds(pid) - cpu_sent
        # the window ends a second before the first poll sent could end (a shorter one when
        # the first looks took long: it says so in the details)
        measured = min(window, wait - (time.monotonic() - began) - 1.0)
        if measured < min(2.0, window):
            raise RuntimeError(f"the first looks of {n} claims took {first_looks_in:.1f} s: no time "
                               "left to measure their wait")
        share, least, most = _window(pid, measured)
        measured_by = time.monotonic() - began
        for t in pollers:
            t.join(timeout=wait + 60)
    early = [o for o in outcomes if o[0] < measured_by]
    answered_null = sum(1 for _s, task in outcomes if task is None)
    return result(
        "http_idle_polls", value=share, unit="% of a core", ceiling=idle_share,
        ratio=share / idle_share if idle_share > 0 else None,
        target=f"<= {IDLE_CPU_SHARE:g} % of a core", absolute=True,
        what=f"CPU time of `sched serve` (its own process, /proc/PID/stat) over {measured:.3g} s while "
             f"{n} clients, each with its own agent and token, wait in a long-poll claim "
             f"(wait_seconds {wait}) on a queue with no work; and no thread per waiting claim "
             "(the server's threads grow by less than a quarter of the clients)",
        ceiling_what=f"the same server over {window:g} s with no client",
        details={"clients": n, "window_seconds": measured, "threads_idle": idle_max,
                 "threads_waiting_min": least, "threads_waiting_max": most, "thread_growth": most - idle_max,
                 "sent_seconds": sent_in, "first_looks_seconds": first_looks_in,
                 "first_looks_cpu_seconds": first_looks,
                 "answered_null": answered_null, "answered_before_window_end": len(early),
                 "answers": [o for o in outcomes if o[1] is not None][:5],
                 "median_wait_seconds": statistics.median(s for s, _t in outcomes) if outcomes else None},
        ok=answered_null == n and not early and most - idle_max < max(n // 4, 4))


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
