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


def test_a_presented_token_finds_its_own_live_record_only(engine_workspace):
    """Looked up by its hash among the live tokens (not every live token read and
    compared): each token finds its own record, and nothing else finds one."""
    ws = engine_workspace()
    made = [access.create_token(ws, f"t{i}", "kim", role="reader") for i in range(30)]
    box = access.create_token(ws, "box", "kim", agent="ann")
    for created in (*made, box):
        assert access.authenticate(ws, created.token).seq == created.view.seq
    for wrong in ("", "sched_", box.token + "x", box.token[:-1], box.token.upper(), "x" * 10_000,
                  made[0].view.token_hash):  # the stored hash is not the token
        assert access.authenticate(ws, wrong) is None
    assert access.still_live(ws, box.view)
    access.revoke_token(ws, "box", "lee")
    assert access.authenticate(ws, box.token) is None and not access.still_live(ws, box.view)
    again = access.create_token(ws, "box", "kim", agent="ann")  # the name again, another secret
    assert access.authenticate(ws, box.token) is None and not access.still_live(ws, box.view)
    assert access.authenticate(ws, again.token).seq == again.view.seq and access.still_live(ws, again.view)
