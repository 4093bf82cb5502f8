"""One `[[webhooks]]` table of sched.toml: a URL, the events it receives, and the secret
that signs its POSTs."""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

WebhookEvent = Literal["task.failed", "task.dead_lettered", "task.progress", "scheduler.paused",
                       "health.changed", "task.due_missed", "daemon.started", "daemon.stopped"]


class WebhookConfig(BaseModel):
    """A URL that receives a JSON POST for each of the chosen events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    events: list[WebhookEvent] = Field(min_length=1)
    # signs each POST (`X-Sched-Signature`), so that the receiver can tell it came from
    # sched; never printed (`config show` says `***`): give it as `${VAR}`
    secret: str | None = Field(default=None, min_length=16)
    # the URL as sched.toml wrote it, each `${VAR}` filled in shown as `***` (set by
    # `load_settings` when the URL took a variable): what messages and listings print
    _written: str | None = PrivateAttr(default=None)

    @property
    def shown(self) -> str:
        """The URL as it may be printed: without what came from the environment."""
        return self._written or self.url

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        # the URL itself is not in the line: a part of it may have come from the
        # environment (a secret in its path), and the validator cannot tell which
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"the scheme {parts.scheme[:20]!r} is not http or https")
        if not parts.hostname:
            raise ValueError("the URL names no host")
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):  # (every delivery failed)
            raise ValueError("the URL holds a space or a control character (percent-encode it: %20)")
        return url


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`X-Sched-Signature` of a POST: `sha256=` and the hex HMAC-SHA256, keyed by the
    webhook's secret, of `TIMESTAMP.BODY` (`X-Sched-Timestamp`, a dot, the body's bytes),
    as a receiver computes it to check the POST came from sched (and recently: the
    timestamp is in what is signed)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def shown_url(hooks: list[WebhookConfig], url: str) -> str:
    """How to print `url`, a delivery's URL: as its configured webhook shows it; a URL
    no longer configured only by its scheme and host (its path and query may hold a
    secret that came from the environment)."""
    for hook in hooks:
        if hook.url == url:
            return hook.shown
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    rest = "/***" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{rest}"
