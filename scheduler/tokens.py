"""Lease tokens: random secrets handed to the runner; only their hash is stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def new_token() -> str:
    return secrets.token_urlsafe(32)


def derived_token(key: str, task_id: int, attempt: int) -> str:
    """The lease token of the attempt `attempt` of `task_id` started for a request
    whose caller chose the secret `key` (HMAC-SHA256, as long as a `new_token`): the
    caller can send that request again and be handed the same attempts, whose tokens
    the server cannot give twice otherwise (it keeps only their hashes)."""
    mac = hmac.new(key.encode(), f"{task_id}:{attempt}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str | None) -> bool:
    """Compare in constant time, so the hash cannot be guessed byte by byte."""
    return stored_hash is not None and hmac.compare_digest(hash_token(token), stored_hash)
