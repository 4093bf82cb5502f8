"""Tokens on every storage engine: created, found by the token alone, revoked at once,
and rebuilt from the log column for column."""

from __future__ import annotations

import pytest

from eventlog.errors import BadInput, NotFound
from scheduler import access
from scheduler.reads.queries import verify_log


def test_tokens_live_and_die_by_their_events(engine_workspace):
    ws = engine_workspace()
    ops = access.create_token(ws, "ops", "kim", role="operator")
    box = access.create_token(ws, "box", "kim", agent="ann")
    assert access.authenticate(ws, ops.token).name == "ops"
    assert access.authenticate(ws, box.token).agent == "ann"
    with pytest.raises(BadInput, match="already named 'ops'"):
        access.create_token(ws, "ops", "kim", role="reader")
    access.revoke_token(ws, "ops", "lee")
    assert access.authenticate(ws, ops.token) is None
    with pytest.raises(NotFound):
        access.revoke_token(ws, "ops", "lee")
    again = access.create_token(ws, "ops", "kim", role="reader")
    assert access.authenticate(ws, again.token).role == "reader"
    assert [(t.name, t.revoked_by) for t in access.list_tokens(ws, include_revoked=True)] == [
        ("ops", "lee"), ("box", None), ("ops", None)]
    assert verify_log(ws).ok, verify_log(ws).problems
