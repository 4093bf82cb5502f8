"""`sched tokens`: the bearer tokens of the HTTP API (`sched serve`), each change an event."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli.common import HELP_OPTIONS, DbOpt, HomeOpt, JsonOpt, console, emit_json, message, workspace
from cli.operator_cmd import ByOpt, operator_name
from cli.text import literal
from scheduler import access

tokens_app = typer.Typer(
    context_settings=HELP_OPTIONS, no_args_is_help=True, rich_markup_mode=None,
    help="Bearer tokens of the HTTP API: per role (operator, submitter, reader), per agent, or per host.")


@tokens_app.command("create")
def create_command(
    name: Annotated[str, typer.Option("--name", help="The token's name: the actor of what it does.")],
    agent: Annotated[str | None, typer.Option("--agent", help="A token acting only for this agent.")] = None,
    role: Annotated[str | None, typer.Option(
        "--role", help="A token of this role: operator, submitter or reader.")] = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="A token for `sched run --server URL --host H`: it runs the push agents "
        "pinned to this host.")] = None,
    by: ByOpt = None, json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Create a token and print it, once: only its hash is kept."""
    created = access.create_token(workspace(home, db), name, operator_name(by), role=role, agent=agent,
                                  host=host)
    if json_out:
        emit_json({**access.token_dict(created.view), "token": created.token})
        return
    sys.stdout.write(created.token + "\n")
    who = (f"agent {created.view.agent}" if created.view.agent else
           f"host {created.view.host}" if created.view.host else created.view.role)
    message(f"created token {name!r} ({who}); it is shown only now: keep it somewhere safe")


@tokens_app.command("list")
def list_command(
    all_: Annotated[bool, typer.Option("--all", help="Revoked tokens too.")] = False,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """The live tokens (never the tokens themselves: only names, roles and who made them)."""
    tokens = access.list_tokens(workspace(home, db), include_revoked=all_)
    if json_out:
        emit_json({"tokens": [access.token_dict(t) for t in tokens]})
        return
    if not tokens:
        message("no tokens (`sched tokens create` makes one)")
        return
    from rich.table import Table

    table = Table("name", "role", "for", "created", "by", *(("revoked",) if all_ else ()))
    for t in tokens:
        table.add_row(literal(t.name), t.role, literal(t.agent or t.host or "-"), t.created_at,
                      literal(t.created_by), *((literal(t.revoked_at or "-"),) if all_ else ()))
    console().print(table)


@tokens_app.command("revoke")
def revoke_command(
    name: Annotated[str, typer.Argument(help="The live token to revoke.")],
    by: ByOpt = None, json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Revoke a token: every request presenting it is refused from now on."""
    revoked = access.revoke_token(workspace(home, db), name, operator_name(by))
    if json_out:
        emit_json(access.token_dict(revoked))
    else:
        message(f"revoked token {name!r}")
