"""Who may do what: roles, agent tokens, and the rule that keeps an API without tokens off the network."""

from __future__ import annotations

import pytest

from projections.views import TokenView
from scheduler.access import bind_refusal, is_loopback, refusal
from scheduler.tokens import hash_token


def view(name: str, role: str, secret: str, agent: str | None = None, seq: int = 1) -> TokenView:
    return TokenView(seq=seq, name=name, role=role, agent=agent, token_hash=hash_token(secret),
                     created_at="2026-01-01T00:00:00.000000Z", created_by="kim")


LIVE = [view("ops", "operator", "sched_o", seq=1), view("ci", "submitter", "sched_s", seq=2),
        view("dash", "reader", "sched_r", seq=3), view("box", "agent", "sched_a", agent="ann", seq=4)]


@pytest.mark.parametrize("name, action, allowed", [
    ("ops", "operate", True), ("ops", "read", True), ("ops", "submit", True), ("ops", "work", False),
    ("ci", "submit", True), ("ci", "read", True), ("ci", "operate", False),
    ("dash", "read", True), ("dash", "submit", False), ("dash", "operate", False),
    ("box", "work", True), ("box", "read", False), ("box", "operate", False),
])
def test_each_role_may_do_its_own_actions_only(name, action, allowed):
    token = next(t for t in LIVE if t.name == name)
    assert (refusal(token, action) is None) is allowed


def test_an_agent_token_acts_only_for_its_agent():
    box = LIVE[3]
    assert refusal(box, "work", "ann") is None
    assert "acts only for agent 'ann', not 'bob'" in refusal(box, "work", "bob")


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.org", False),
])
def test_only_loopback_addresses_may_serve_without_a_token(address, loopback):
    assert is_loopback(address) is loopback
    assert (bind_refusal(address, live_tokens=0) is None) is loopback
    assert bind_refusal(address, live_tokens=1) is None
