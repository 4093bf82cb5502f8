"""Limits of the server: the size of request bodies (413 past it, before the body is
read when the request says its length, else as soon as the stream passes it) and the
pace of the event stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

from server.errors import error_response

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class ServerLimits:
    # None: the largest payload the settings allow (`max_payload_bytes`) and 64 KiB for the rest
    max_body_bytes: int | None = None
    poll_seconds: float = 0.5  # how often an event stream looks for new events
    keepalive_seconds: float = 15.0  # a comment line on an idle event stream, so proxies keep it open
    stream_batch: int = 500  # events read per look


class BodySizeLimit:
    """ASGI middleware: refuse a request body over `max_bytes` with 413."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def too_large(self) -> str:
        return f"the request body is over the limit of {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "Content-Length is not a number")(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await error_response(413, self.too_large())(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body, without a declared length
                    raise HTTPException(413, self.too_large())
            return message

        await self.app(scope, limited, send)
