"""Running the app on uvicorn: sched binds the listening socket itself, so an address
that cannot be used is one line and exit 2, before any server starts; SIGINT and
SIGTERM stop it gracefully and the command then exits 0."""

from __future__ import annotations

import copy
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventlog.errors import BadInput

GRACEFUL_SECONDS = 5  # open event streams are cut after this at shutdown


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


def run(app: Any, bind: str, port: int) -> str | None:
    """Serve `app` on `bind`:`port` until stopped; returns the name of the signal that
    stopped it, if one did."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    sock = listening_socket(bind, port)
    logging = copy.deepcopy(LOGGING_CONFIG)
    logging["handlers"]["access"]["stream"] = "ext://sys.stderr"  # stdout is for documents only
    config = uvicorn.Config(app, timeout_graceful_shutdown=GRACEFUL_SECONDS, log_level="info",
                            log_config=logging, server_header=False)
    with stop_signals() as caught:
        uvicorn.Server(config).run(sockets=[sock])
    sock.close()
    return signal.Signals(caught[0]).name if caught else None
