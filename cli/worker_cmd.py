"""The runner protocol for pull workers: claim, heartbeat, complete, fail; against the
database, or against a `sched serve` (`--server`) for a worker with no database access."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cli.common import (
    HELP_OPTIONS,
    AgentsOpt,
    DbOpt,
    HomeOpt,
    JsonOpt,
    ServerOpt,
    ServerTokenFileOpt,
    console,
    emit_json,
    message,
    parse_json_option,
    parse_task_id,
    server_of,
    workspace,
)
from eventlog.errors import BadInput, Refused
from scheduler.usecases import work

worker_app = typer.Typer(
    context_settings=HELP_OPTIONS, help="The runner protocol for pull workers.", no_args_is_help=True,
    rich_markup_mode=None)
TokenOpt = Annotated[str, typer.Option(
    "--token", envvar="SCHED_LEASE_TOKEN", show_envvar=True,
    help="The lease token the claim printed (default $SCHED_LEASE_TOKEN, as a push agent has it: "
         "out of the command line, where other users of the machine can read it).")]
TaskArg = Annotated[int, typer.Argument(help="Task id.", parser=parse_task_id)]
@worker_app.command("claim")
def claim_command(
    agent: Annotated[str, typer.Option("--agent", "-a", help="The claiming agent.")],
    wait: Annotated[int, typer.Option(
        "--wait", min=0, max=20, help="With --server: wait up to this many seconds for work "
        "(woken at once when some comes).")] = 0,
    server: ServerOpt = None, server_token_file: ServerTokenFileOpt = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None,
) -> None:
    """Start the best task for AGENT; when there is none, says so on stderr (--json:
    prints {"task": null})."""
    remote = server_of(server, server_token_file)
    if remote is None and wait:
        raise BadInput("--wait needs --server (a claim against the database answers at once)")
    if remote is not None:
        doc = remote.claim(agent, wait)
        claimed = None
    else:
        ws = workspace(home, db, agents)
        claimed = work.claim(ws, agent)
        doc = claimed.to_json()
    task = doc["task"]
    if task is None:
        if json_out:
            emit_json(doc)
        else:
            message(f"no task for {agent}")
        return
    try:
        if json_out:
            emit_json(doc)
        else:
            console().print(f"task {task['task_id']} attempt {task['attempt']} token {task['token']}")
            message(f"lease until {task['lease_expires_at']}: {task['title']}")
        sys.stdout.flush()
    except BaseException as e:  # the worker never saw its token: give the attempt back now
        # (a full disk or a broken pipe raise OSError; rich ends on a broken pipe with
        # SystemExit; a closed stdout is None; Ctrl-C meanwhile)
        why = f"the claim could not be printed: {e if isinstance(e, OSError) else type(e).__name__}"
        if claimed is not None:
            work.release(ws, claimed, why)
        elif remote is not None:
            remote.release(task["task_id"], task["token"], why)
        if isinstance(e, OSError | KeyboardInterrupt | SystemExit):
            raise
        raise Refused(f"{why}; the attempt was given back") from e


PercentOpt = Annotated[float | None, typer.Option(
    "--percent", help="How far the attempt got, from 0 to 100.", show_default=False)]
ProgressMessageOpt = Annotated[str | None, typer.Option(
    "--message", "-m", help="What the attempt is doing now.", show_default=False)]


@worker_app.command("heartbeat")
def heartbeat_command(task_id: TaskArg, token: TokenOpt, percent: PercentOpt = None,
                      progress_message: ProgressMessageOpt = None, server: ServerOpt = None,
                      server_token_file: ServerTokenFileOpt = None, json_out: JsonOpt = False,
                      db: DbOpt = None, home: HomeOpt = None) -> None:
    """Extend the lease of the current attempt (and report progress with it)."""
    remote = server_of(server, server_token_file)
    if remote is not None:
        doc = remote.heartbeat(task_id, token, percent, progress_message)
    else:
        doc = work.heartbeat(workspace(home, db), work.HeartbeatRequest(
            task_id=task_id, token=token, percent=percent, message=progress_message)).to_json()
    if json_out:
        emit_json(doc)
    else:
        message(f"task {task_id}: lease until {doc['lease_expires_at']}"
                + ("; CANCELLED: stop and report `sched worker fail`" if doc["cancel"] else ""))


@worker_app.command("progress")
def progress_command(task_id: TaskArg, token: TokenOpt, percent: PercentOpt = None,
                     progress_message: ProgressMessageOpt = None, server: ServerOpt = None,
                     server_token_file: ServerTokenFileOpt = None, json_out: JsonOpt = False,
                     db: DbOpt = None, home: HomeOpt = None) -> None:
    """Report how far the current attempt got (shown by show, the dashboard and webhooks;
    reports closer together than progress_min_interval_seconds are not recorded)."""
    remote = server_of(server, server_token_file)
    if remote is not None:
        doc = remote.progress(task_id, token, percent, progress_message)
    else:
        doc = work.progress(workspace(home, db), work.ProgressRequest(
            task_id=task_id, token=token, percent=percent, message=progress_message)).to_json()
    if json_out:
        emit_json(doc)
    else:
        message(f"task {task_id}: progress " + ("recorded" if doc["recorded"] else
                                                 "not recorded (the last report is too recent)"))


@worker_app.command("complete")
def complete_command(
    task_id: TaskArg, token: TokenOpt,
    result: Annotated[str | None, typer.Option(help="JSON result to record.")] = None,
    server: ServerOpt = None, server_token_file: ServerTokenFileOpt = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Record that the current attempt succeeded."""
    value = parse_json_option(result, "--result")
    remote = server_of(server, server_token_file)
    doc: dict[str, Any]
    if remote is not None:
        doc = remote.complete(task_id, token, value)
    else:
        doc = work.complete(workspace(home, db), work.CompleteRequest(
            task_id=task_id, token=token, result=value)).to_json()
    if json_out:
        emit_json(doc)
    else:
        message(f"task {task_id}: succeeded")


@worker_app.command("fail")
def fail_command(
    task_id: TaskArg, token: TokenOpt,
    error: Annotated[str, typer.Option("--error", help="What went wrong.")],
    no_retry: Annotated[bool, typer.Option(
        "--no-retry", help="Dead-letter now instead of retrying.")] = False,
    server: ServerOpt = None, server_token_file: ServerTokenFileOpt = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Record that the current attempt failed; the task is retried or dead-lettered."""
    request = work.FailRequest(task_id=task_id, token=token, error=error, retry=not no_retry)
    remote = server_of(server, server_token_file)
    doc: dict[str, Any]
    if remote is not None:
        doc = remote.fail(task_id, token, request.error, request.retry)
    else:
        doc = work.fail(workspace(home, db), request).to_json()
    if json_out:
        emit_json(doc)
    else:
        message(f"task {task_id}: failed, now {doc['status']}")
