"""One `[[webhooks]]` table of sched.toml: a URL and the events it receives."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

WebhookEvent = Literal["task.failed", "task.dead_lettered", "task.progress", "scheduler.paused",
                       "health.changed", "task.due_missed", "daemon.started", "daemon.stopped"]


class WebhookConfig(BaseModel):
    """A URL that receives a JSON POST for each of the chosen events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    events: list[WebhookEvent] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url!r}: only http and https URLs are allowed")
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host")
        return url
