"""Who may do what through the HTTP API: bearer tokens, their roles, and the check of a
token a request presents.

A token is created for a role (operator, submitter, reader), for one agent, or for the
runner of one host's push agents (`sched run --server URL --host H`); only its
SHA-256 hash is recorded (`TokenCreated`), and the token is shown once. Every request
looks its token up among the live tokens anew, so a revoke (`TokenRevoked`) takes
effect at once. The name of the token is the actor of every event a request causes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal

from eventlog.errors import BadInput, ControlFileError, NotFound
from eventlog.events import TokenCreated, TokenRevoked
from eventlog.values import check_actor, check_text, checked_host_name
from projections.sql import live_token_read, task_read
from projections.views import TaskView, TokenView
from scheduler.config.settings import MAX_HOST_CHARS
from scheduler.tokens import hash_token, new_token
from scheduler.workspace import Workspace

ROLES: tuple[str, ...] = ("operator", "submitter", "reader")
Action = Literal["read", "submit", "operate", "work", "host"]
# what each kind of token may do: `read` status, events and the like; `submit` tasks;
# `operate` (pause, resume, cancel, requeue, drain, ...); `work` the runner protocol,
# which an agent token may do only for its own agent; `host` start and run the
# attempts of the push agents pinned to its own host
PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": frozenset({"read", "submit", "operate"}),
    "submitter": frozenset({"read", "submit"}),
    "reader": frozenset({"read"}),
    "agent": frozenset({"work"}),
    "host": frozenset({"host"}),
}
TOKEN_PREFIX = "sched_"  # so a leaked token is recognisable (and secret scanners can match it)
MAX_TOKEN_CHARS = 200  # a presented token longer than this is not one of ours: not even hashed
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class CreatedToken:
    """A new token: the secret (shown once, never stored) and its record."""

    token: str
    view: TokenView


def token_dict(view: TokenView) -> dict[str, Any]:
    """A token's JSON document (never its hash)."""
    return {"name": view.name, "role": view.role, "agent": view.agent, "host": view.host,
            "created_at": view.created_at, "created_by": view.created_by,
            "revoked_at": view.revoked_at, "revoked_by": view.revoked_by}


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise BadInput(f"--name {name!r}: a token name is 1 to 64 letters, digits and . _ @ - "
                       "(starting with a letter or digit)")
    return name


def check_grant(role: str | None, agent: str | None, host: str | None = None) -> str:
    """The role a token is created with: `role`, `agent` for an agent's token, `host`
    for a host's runner."""
    if [role, agent, host].count(None) != 2:
        raise BadInput("give one of --agent A, --host H or --role operator|submitter|reader")
    if role is not None and role not in ROLES:
        raise BadInput(f"--role {role!r}: choose operator, submitter or reader")
    return role or ("agent" if agent is not None else "host")


def create_token(ws: Workspace, name: str, by: str, role: str | None = None,
                 agent: str | None = None, host: str | None = None) -> CreatedToken:
    """Create a token for `role`, for one `agent` (known to the log or the control
    file), or for the runner of `host`'s push agents. Its name must not be taken by a
    live token. Nothing is appended on bad input."""
    check_name(name)
    granted = check_grant(role, agent, host)
    check_actor(by, "--by", ws.settings.max_title_bytes)
    if agent is not None:
        check_text(agent, "--agent", ws.settings.max_title_bytes)
    if host is not None:
        check_text(host, "--host", ws.settings.max_title_bytes)
        if not 1 <= len(host) <= MAX_HOST_CHARS:
            raise BadInput(f"--host {host[:40]!r}: a host name is 1 to {MAX_HOST_CHARS} characters, "
                           f"not {len(host)}")
        try:  # (as `tick --host` and the control file's `host`: a token no runner could act under)
            checked_host_name(host)
        except ValueError as e:
            raise BadInput(f"--host: {e}") from None
    token = TOKEN_PREFIX + new_token()
    with ws.write() as recorder:
        views = recorder.views
        if views.live_token(name) is not None:
            raise BadInput(f"a live token is already named {name!r}: revoke it first, or choose "
                           "another name")
        if agent is not None and views.get_agent(agent) is None and not _in_control_file(ws, agent):
            raise BadInput(f"unknown agent {agent!r}")
        recorder.record([TokenCreated(name=name, role=granted, agent=agent,  # type: ignore[arg-type]
                                      host=host, token_hash=hash_token(token), by=by)])
        view = views.live_token(name)
    assert view is not None
    return CreatedToken(token, view)


def _in_control_file(ws: Workspace, name: str) -> bool:
    with contextlib.suppress(ControlFileError):
        return any(a.name == name for a in ws.registry().control.agents)
    return False


def revoke_token(ws: Workspace, name: str, by: str) -> TokenView:
    """Revoke the live token `name`: refused from now on. Returns its record."""
    check_actor(by, "--by", ws.settings.max_title_bytes)
    with ws.write() as recorder:
        if recorder.views.live_token(name) is None:
            raise NotFound(f"no live token named {name!r}")
        recorder.record([TokenRevoked(name=name, by=by)])
        revoked = recorder.views.tokens(name=name, revoked=True)[-1]
    return revoked


def list_tokens(ws: Workspace, include_revoked: bool = False) -> list[TokenView]:
    """The live tokens (with `include_revoked`, every token ever created), oldest first."""
    with ws.read() as (_log, views):
        return views.tokens(revoked=include_revoked)


def authenticate(ws: Workspace, presented: str) -> TokenView | None:
    """The live token a request presents (read anew: a revoke counts at once), or None.
    Looked up by the SHA-256 of what is presented: the database compares hashes, not
    secrets, so the time a lookup takes can tell a guesser at most how much of a stored
    hash the hash of their guess shares, which brings them no nearer a token (they
    would need the preimage of a hash). The database filters the live rows: 0.24 ms a
    request with a thousand live tokens (4.7 ms when each was read and compared here)."""
    return authenticate_on_task(ws, presented)[0]


def authenticate_on_task(ws: Workspace, presented: str,
                         task_id: int | None = None) -> tuple[TokenView | None, TaskView | None]:
    """`authenticate`, and the task `task_id` as it stands (who holds it), in the same
    read (None for a token not live: the task is not read)."""
    if not presented or len(presented) > MAX_TOKEN_CHARS:
        return None, None
    token_hash = hash_token(presented)
    reads = [live_token_read(token_hash), *([task_read(task_id)] if task_id is not None else [])]
    with ws.read(prefetch=reads) as (_log, views):  # (PostgreSQL: with the BEGIN)
        token = views.live_token_hashed(token_hash)
        return token, views.get_task(task_id) if token is not None and task_id is not None else None


def still_live(ws: Workspace, token: TokenView) -> bool:
    """Whether `token` (found live when a request began) is live still: a long request,
    such as an event stream, asks this now and then, so a revoke ends it too."""
    with ws.read() as (_log, views):
        live = views.live_token(token.name)
    return live is not None and live.seq == token.seq


def refusal(token: TokenView, action: Action, agent: str | None = None,
            host: str | None = None) -> str | None:
    """Why `token` may not do `action` (for `agent`, where the action is an agent's; on
    `host`, where it is a host's), or None when it may."""
    if action not in PERMISSIONS.get(token.role, frozenset()):
        return f"token {token.name!r} ({token.role}) may not {action}"
    if token.role == "agent" and agent is not None and agent != token.agent:
        return f"token {token.name!r} acts only for agent {token.agent!r}, not {agent!r}"
    if token.role == "host" and host is not None and host != token.host:
        return f"token {token.name!r} acts only for host {token.host!r}, not {host!r}"
    return None


def is_loopback(address: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to anything


def bind_refusal(address: str, live_tokens: int) -> str | None:
    """Why the server may not listen on `address` (None: it may): text written as an IP
    address must be one (said first: no token would help); an address reachable from
    other machines needs a token to exist, so the API is never open to the network."""
    bare = address.strip("[]")
    if ":" in bare or bare.replace(".", "").isdigit():  # (not a host name)
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            return f"cannot listen on {address}: not an IP address"
    if live_tokens or is_loopback(address):
        return None
    return (f"refusing to listen on {address}, reachable from other machines, while no token "
            "exists: create one first (`sched tokens create`), or bind 127.0.0.1")
