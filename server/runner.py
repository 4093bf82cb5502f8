"""Running the app on uvicorn, in one process or in several forked workers: sched binds
the listening socket itself, so an address that cannot be used is one line and exit 2,
before any server starts; SIGINT and SIGTERM stop it gracefully and the command then
exits 0."""

from __future__ import annotations

import copy
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from eventlog.errors import BadInput, Refused
from server.calls import Peers

GRACEFUL_SECONDS = 5  # open event streams are cut after this at shutdown
STOPS = (signal.SIGINT, signal.SIGTERM)


def listening_socket(bind: str, port: int) -> socket.socket:
    address = bind.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for that
    # proto, and without it a keep-alive client waits 40 ms (its delayed ACK) per answer
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
    except OSError as e:
        sock.close()
        raise BadInput(f"cannot listen on {bind} port {port}: {e.strerror or e}") from e
    return sock


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """While uvicorn runs, SIGINT and SIGTERM are its own (a graceful shutdown); it then
    sends the signal again to the handler it found, which is this quiet one: the
    command ends normally instead of dying of the signal."""
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _f: caught.append(s))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(make_app: Callable[[Peers | None], Any], bind: str, port: int, workers: int = 1) -> str | None:
    """Serve the app that `make_app` builds on `bind`:`port` until stopped; returns the
    name of the signal that stopped it, if one did. With `workers` > 1, that many
    processes are forked, each with its own app over the one listening socket (the
    kernel hands each new connection to one of them) and a doorbell the others ring
    (`Peers`); the parent only waits for them and passes on SIGINT and SIGTERM. A worker
    that dies unasked stops the others: `Refused`, exit 1 (a service manager restarts
    the whole server)."""
    sock = listening_socket(bind, port)
    try:
        if workers == 1:
            with stop_signals() as caught:
                _serve(make_app(None), sock)
        else:
            caught = _run_workers(make_app, sock, workers)
    finally:
        sock.close()
    return signal.Signals(caught[0]).name if caught else None


def _serve(app: Any, sock: socket.socket) -> bool:
    """Run uvicorn over `sock` until it stops; whether it started. A request that found
    the database changed by another version of sched (`OutOfDate`) stops it: raised
    here once the server has shut down."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    logging = copy.deepcopy(LOGGING_CONFIG)
    logging["handlers"]["access"]["stream"] = "ext://sys.stderr"  # stdout is for documents only
    config = uvicorn.Config(app, timeout_graceful_shutdown=GRACEFUL_SECONDS, log_level="info",
                            log_config=logging, server_header=False)
    server = stopping_server(config)
    app.state.stop = lambda: setattr(server, "should_exit", True)
    server.run(sockets=[sock])
    error = getattr(app.state, "out_of_date", None)
    if error is not None:
        raise type(error)(f"stopped: this server can record nothing more: {error.message}")
    return bool(server.started)


def stopping_server(config: Any) -> Any:
    """uvicorn's server of `config`, whose shutdown first has every waiting long poll
    answer (`Doorbell.close`): none is still waiting when the grace runs out, to be
    cut with a 500 and a traceback in the log."""
    import uvicorn

    class StoppingServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            bell = getattr(getattr(config.app, "state", None), "doorbell", None)
            if bell is not None:
                bell.close()
            await super().shutdown(sockets)

    return StoppingServer(config)


def _run_workers(make_app: Callable[[Peers | None], Any], sock: socket.socket, workers: int) -> list[int]:
    """Fork `workers` servers over `sock` and wait for them all; the signals that stopped them."""
    children: dict[int, int] = {}  # pid -> worker number
    caught: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        caught.append(signum)
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in STOPS}
    died: str | None = None
    try:
        for number, peers in enumerate(Peers.for_workers(workers)):
            if caught:  # stopped while starting
                break
            signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)  # (the child must not run `stop`)
            pid = os.fork()
            if pid == 0:
                _worker(make_app, peers, sock)
            children[pid] = number
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
        while children:
            pid, status = os.wait()
            number = children.pop(pid)
            if not caught and died is None:  # unasked: stop the others
                died = f"worker {number + 1} of {workers} (pid {pid}) ended: {_ending(status)}"
                for other in children:
                    os.kill(other, signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if died is not None:
        raise Refused(f"{died}; the other workers were stopped")
    return caught


def _worker(make_app: Callable[[Peers | None], Any], peers: Peers, sock: socket.socket) -> NoReturn:
    """A forked worker: its own app and event loop over the shared socket. Never returns
    into the parent's code."""
    code = 0
    try:
        for sig in STOPS:  # not the parent's handler: uvicorn's, then the quiet one
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)
        with stop_signals():
            if not _serve(make_app(peers), sock):
                code = 3  # (uvicorn logged why: the app's start-up failed)
    except BaseException as e:  # (one line, not a traceback, from a child)
        print(f"sched serve: worker {os.getpid()}: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _ending(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.waitstatus_to_exitcode(status)}"
