"""Limits of the server: the size of request bodies (413 past it, before the body is
read when the request says its length, else as soon as the stream passes it), the pace
of the event stream and of a claim's long poll, page sizes, the rates at which one
token may claim and heartbeat (429 with `Retry-After` past them), and URLs that are
text (400 for a byte that is not UTF-8)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import HTTPException

from server.errors import error_response

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True)
class ServerLimits:
    # None: the largest payload the settings allow (`max_payload_bytes`) and 64 KiB for the rest
    max_body_bytes: int | None = None
    poll_seconds: float = 0.5  # how often an event stream looks for new events
    recheck_seconds: float = 5.0  # how often an event stream looks whether its token was revoked
    health_cache_seconds: float = 2.0  # GET /health answers a report this recent again
    keepalive_seconds: float = 15.0  # a comment line on an idle event stream, so proxies keep it open
    stream_batch: int = 500  # events read per look
    claim_poll_seconds: float = 1.0  # how often the server looks at the log head while claims wait
    max_wait_seconds: int = 20  # the longest `wait_seconds` a claim may ask for
    max_page: int = 1000  # the most tasks, events or ids one request lists or names
    default_page: int = 100  # a page when the request gives no `limit`
    # per token: a burst of this many, refilled at this rate (per second)
    claim_burst: int = 30
    claims_per_second: float = 5.0
    heartbeat_burst: int = 60
    heartbeats_per_second: float = 10.0


@dataclass
class RateLimit:
    """A token bucket per key (a token's name): `burst` at once, refilled at `rate` per
    second by `now` (seconds; the app's clock, so tests drive it)."""

    burst: int
    rate: float
    now: Callable[[], float]
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (level, at)
    # the routes check rates in worker threads: one spend at a time
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, key: str) -> float | None:
        """Spend one for `key`: None when allowed, else the seconds until one is there."""
        with self._lock:
            at = self.now()
            level, then = self.buckets.get(key, (float(self.burst), at))
            level = min(float(self.burst), level + max(at - then, 0.0) * self.rate)
            if level >= 1.0:
                self.buckets[key] = (level - 1.0, at)
                return None
            self.buckets[key] = (level, at)
            return (1.0 - level) / self.rate if self.rate > 0 else math.inf

    def check(self, key: str, what: str) -> None:
        """Raise 429 (with `Retry-After`, whole seconds) when `key` is over its rate."""
        wait = self.take(key)
        if wait is not None:
            seconds = max(1, math.ceil(wait)) if math.isfinite(wait) else 3600
            raise HTTPException(429, f"too many {what} for token {key!r}: retry in {seconds} s",
                                headers={"Retry-After": str(seconds)})


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


class UrlText:
    """ASGI middleware: refuse (400) a path or query string whose bytes, percent-decoded,
    are not UTF-8 text (`/agents/%ff/drain`), as the CLI refuses such an argument: the
    server would otherwise read them as U+FFFD and answer about a name nobody sent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for part, raw in (("path", scope.get("raw_path") or b""),
                              ("query string", scope.get("query_string") or b"")):
                if b"%" not in raw and raw.isascii():
                    continue  # (most requests: nothing to decode)
                try:
                    unquote_to_bytes(raw).decode("utf-8")
                except UnicodeDecodeError:
                    await error_response(400, f"the request's {part} holds a byte that is not UTF-8 text "
                                              "(once %-decoded)")(scope, receive, send)
                    return
        await self.app(scope, receive, send)
