"""Commands that set sched up: init, agents validate/list, config show."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import (
    HELP_OPTIONS,
    AgentsOpt,
    DbOpt,
    DryRunOpt,
    HomeOpt,
    JsonOpt,
    console,
    emit_json,
    loaded_settings,
    message,
    place,
    show_dry_run,
    workspace,
)
from cli.operator_cmd import ByOpt, ReasonOpt, operator_name
from cli.text import literal
from eventlog.errors import ControlFileError
from eventlog.storage import redact
from scheduler.config.registry import find_control_file, load_control_file, write_default_control_file
from scheduler.usecases import fleet

agents_app = typer.Typer(
    context_settings=HELP_OPTIONS, help="Inspect the agent control file and the fleet.",
    no_args_is_help=True, rich_markup_mode=None)
config_app = typer.Typer(
    context_settings=HELP_OPTIONS, help="Inspect the effective settings.", no_args_is_help=True,
    rich_markup_mode=None)


def init_command(
    example: Annotated[bool, typer.Option(
        "--example", help="Also write an example agent control file if none is found.")] = False,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None,
) -> None:
    """Create the database (idempotent), and its home if missing."""
    ws = workspace(home, db, agents, create_home=True)
    created = ws.init_db()
    shown = redact(ws.settings.database)
    written = None
    if example:
        try:
            find_control_file(ws.control_paths())
        except ControlFileError:
            written = write_default_control_file(ws.control_paths()[0])
    if json_out:
        emit_json({"db": shown, "created": created,
                   "control_file_written": str(written) if written else None})
        return
    message(f"{'created' if created else 'database ready'} {shown}")
    if written:
        message(f"wrote example agent control file {written}")


@agents_app.command("validate")
def validate_command(
    fix: Annotated[bool, typer.Option(
        "--fix", help="Write a default control file if none is found (never overwrites).")] = False,
    json_out: JsonOpt = False, home: HomeOpt = None, agents: AgentsOpt = None,
) -> None:
    """Check the agent control file; exit 1 if it is missing or invalid."""
    ws = workspace(home, None, agents)
    written = None
    try:
        try:
            path = find_control_file(ws.control_paths())
        except ControlFileError:
            if not fix:
                raise
            path = written = write_default_control_file(ws.control_paths()[0])
        control = load_control_file(path)
    except ControlFileError as e:
        if json_out:
            emit_json({"valid": False, "error": e.message})
        else:
            message(("invalid:", "red"), f" {e.message}")
        raise typer.Exit(1) from e
    warnings = [*control.warnings, *ws.settings.queue_table_warnings(a.type for a in control.agents)]
    if json_out:
        emit_json({"valid": True, "path": str(path), "agents": len(control.agents),
                   "types": sorted({a.type for a in control.agents}),
                   "warnings": warnings,
                   "written": str(written) if written else None})
        return
    for warning in warnings:
        message(("warning:", "yellow"), f" {warning}")
    if written:
        message(f"wrote default control file {written}")
    console().print(literal(f"valid: {path} ({len(control.agents)} agents)"))


@agents_app.command("list")
def list_command(json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
                 agents: AgentsOpt = None) -> None:
    """Agents of the control file with type, capacity, load and free slots."""
    listed = fleet.list_agents(workspace(home, db, agents))
    if json_out:
        emit_json(listed.to_json())
        return
    from cli.text import fitted_table  # (only for people: --json needs no rich)

    rows = []
    for name, r in listed.agents.items():
        hours = "; ".join(r["hours"]) + ("" if r["available"] else " (off now)") if r["hours"] else "always"
        away = r["out_of_service"]
        enabled = ("yes" if r["enabled"] else "no") + (f" ({away})" if away else "")
        rows.append([literal(name), literal(r["type"]), str(r["capacity"]), enabled, str(r["assigned"]),
                     str(r["running"]), str(r["free"]), f"{r['weight']:g}",
                     literal(", ".join(r["capabilities"]) or "-"), literal(hours)])
    headers = ["agent", "type", "capacity", "enabled", "assigned", "running", "free", "weight",
               "capabilities", "hours"]
    out = console()  # a line an agent, its name whole; capabilities and hours cut first
    out.print(fitted_table(headers, rows, gives_way=("capabilities", "hours"), width=out.width))


def migrate_command(
    to: Annotated[str, typer.Option(
        "--to", help="The empty database to copy into: a postgresql:// URL, or a file.",
        show_default=False, metavar="<str>", parser=place("a database file or a postgresql:// URL", str))],
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Copy the log into an empty database (SQLite to PostgreSQL, or back), checking its
    hash chain, and rebuild the projections there. Stop every writer first."""
    from scheduler.migrate import migrate

    def progress(done: int, total: int) -> None:
        message(f"  {done} of {total} events copied")

    done = migrate(workspace(home, db, as_found=True), to, progress=None if json_out else progress)
    if json_out:
        emit_json({"source": done.source, "target": done.target, "events": done.events,
                   "head": {"seq": done.head_seq, "hash": done.head_hash}})
        return
    message(f"migrated {done.events} events from {done.source} to {done.target}")
    message(f"head on both: seq {done.head_seq} {done.head_hash}")


@config_app.command("show")
def config_show_command(json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
                        agents: AgentsOpt = None) -> None:
    """The effective settings and where each came from."""
    loaded = loaded_settings(home, db, agents)
    values = loaded.settings.model_dump(mode="json")
    values["db"] = redact(loaded.settings.database)  # never a password
    values["host"] = loaded.settings.host_name  # (unset: this machine's name, as every command uses)
    for name in ("database_url", "database_listen_url"):
        if values.get(name):
            values[name] = redact(values[name])
    try:
        served = [a.type for a in workspace(home, db, agents).registry().agents]
        warnings = loaded.settings.queue_table_warnings(served)
    except ControlFileError as e:
        warnings = [f"the control file cannot be checked against [queues.NAME]: {e.message}"]
    values.update(loaded.masked)  # a secret filled in from the environment shows as ***
    values["webhooks"] = [{**hook, "secret": "***"} if isinstance(hook, dict) and hook.get("secret") else hook
                          for hook in values["webhooks"]]  # (a webhook's secret, however given)
    doc = {"settings": {name: {"value": values[name], "source": loaded.sources[name]}
                        | ({"variables": loaded.variables[name]} if name in loaded.variables else {})
                        for name in values}, "warnings": warnings}
    if json_out:
        emit_json(doc)
        return
    for warning in warnings:
        message(("warning:", "yellow"), f" {warning}")
    from rich.table import Table  # (only for people: --json needs no rich)

    table = Table("setting", "value", "source")
    for name, item in doc["settings"].items():
        source = item["source"] + "".join(f" ${{{var}}}" for var in item.get("variables", ()))
        table.add_row(name, literal(setting_text(item["value"])), literal(source))
    console().print(table)


def setting_text(value: object) -> str:
    """A setting's value as the docs and sched.toml write it: `none`, `true`, a number or
    text as it is, a table or list as JSON (not Python's `None`, `True`, `{'a': 1}`)."""
    if value is None:
        return "none"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


AgentArg = Annotated[str, typer.Argument(help="The agent's name.")]


def _service_output(done: fleet.ServiceResult, json_out: bool, verb: str) -> None:
    if json_out:
        emit_json(done.to_json())
        return
    change, trial = done.change, done.dry_run
    would = "would be " if trial is not None else ""
    if not change.changed:
        message(f"agent {change.agent}: already {change.out_of_service or 'in service'}")
    else:
        message(f"agent {change.agent}: {would}{verb}")
    if change.released:
        message(f"  {would}back to the queue (not started): {' '.join(map(str, change.released))}")
    if change.stopped:
        message(f"  {would}stopped here and requeued: {' '.join(map(str, change.stopped))}")
    if fenced := [t for t in change.taken_back if t not in change.stopped]:
        # a pull worker's attempt, or one of another host: nothing of it runs here
        message(f"  {would}requeued, stopped by their runners at the next heartbeat: "
                f"{' '.join(map(str, fenced))}")
    show_dry_run(trial)


@agents_app.command("drain")
def drain_command(name: AgentArg, by: ByOpt = None, reason: ReasonOpt = None,
                  json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
                  agents: AgentsOpt = None) -> None:
    """Take an agent out of service gently: no new work; running attempts finish."""
    done = fleet.drain(workspace(home, db, agents),
                       fleet.ServiceRequest(agent=name, by=operator_name(by), reason=reason))
    _service_output(done, json_out, "drained: no new work; running attempts finish")


@agents_app.command("evict")
def evict_command(name: AgentArg, by: ByOpt = None, reason: ReasonOpt = None,
                  dry_run: DryRunOpt = False, json_out: JsonOpt = False, db: DbOpt = None,
                  home: HomeOpt = None, agents: AgentsOpt = None) -> None:
    """Take an agent out of service now: its attempts are stopped and retried elsewhere."""
    done = fleet.evict(workspace(home, db, agents), fleet.ServiceRequest(
        agent=name, by=operator_name(by), reason=reason, dry_run=dry_run))
    _service_output(done, json_out, "evicted: its attempts go to other agents")


@agents_app.command("restore")
def restore_command(name: AgentArg, by: ByOpt = None, json_out: JsonOpt = False,
                    db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None) -> None:
    """Put a drained or evicted agent back in service."""
    done = fleet.restore(workspace(home, db, agents),
                         fleet.ServiceRequest(agent=name, by=operator_name(by)))
    _service_output(done, json_out, "back in service")
