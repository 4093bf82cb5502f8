"""The listening socket `sched serve` makes: connections accepted on it get TCP_NODELAY.

asyncio sets TCP_NODELAY on an accepted connection only when the socket's `proto` is
IPPROTO_TCP (`asyncio.base_events._set_nodelay`); a socket made with proto 0 leaves
Nagle's algorithm on, and a keep-alive client then waits for its own delayed ACK (40 ms
on Linux) before the body that follows the response's headers arrives (found by
`benchmarks/bench_http.py`: a claim took 48 ms, 6 ms with the flag)."""

from __future__ import annotations

import asyncio
import socket

from server.runner import listening_socket


def test_connections_accepted_on_the_listening_socket_have_tcp_nodelay():
    async def accept_one() -> int:
        sock = listening_socket("127.0.0.1", 0)
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=sock)
        _reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(accepted, 10)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(accept_one()) != 0
