"""Lease tokens: random secrets handed to the runner; only their hash is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str | None) -> bool:
    """Compare in constant time, so the hash cannot be guessed byte by byte."""
    return stored_hash is not None and hmac.compare_digest(hash_token(token), stored_hash)
