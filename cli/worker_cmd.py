"""The runner protocol for pull workers: claim, heartbeat, complete, fail."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli.common import (
    HELP_OPTIONS,
    AgentsOpt,
    DbOpt,
    HomeOpt,
    JsonOpt,
    console,
    emit_json,
    message,
    parse_json_option,
    workspace,
)
from eventlog.values import INT64_MAX
from scheduler.usecases import work

worker_app = typer.Typer(
    context_settings=HELP_OPTIONS, help="The runner protocol for pull workers.", no_args_is_help=True,
    rich_markup_mode=None)
TokenOpt = Annotated[str, typer.Option("--token", help="The lease token the claim printed.")]
TaskArg = Annotated[int, typer.Argument(help="Task id.", min=1, max=INT64_MAX)]


@worker_app.command("claim")
def claim_command(
    agent: Annotated[str, typer.Option("--agent", "-a", help="The claiming agent.")],
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None,
) -> None:
    """Start the best task for AGENT; prints {"task": null} when there is none."""
    ws = workspace(home, db, agents)
    claimed = work.claim(ws, agent)
    if claimed.claim is None:
        if json_out:
            emit_json(claimed.to_json())
        else:
            message(f"no task for {agent}")
        return
    doc = claimed.claim.document
    try:
        if json_out:
            emit_json(claimed.to_json())
        else:
            console().print(f"task {doc['task_id']} attempt {doc['attempt']} token {doc['token']}")
            message(f"lease until {doc['lease_expires_at']}: {doc['title']}")
        sys.stdout.flush()
    except OSError as e:  # the worker never saw its token: give the attempt back now
        work.release(ws, claimed, f"the claim could not be printed: {e}")
        raise


PercentOpt = Annotated[float | None, typer.Option(
    "--percent", help="How far the attempt got, from 0 to 100.", show_default=False)]
ProgressMessageOpt = Annotated[str | None, typer.Option(
    "--message", "-m", help="What the attempt is doing now.", show_default=False)]


@worker_app.command("heartbeat")
def heartbeat_command(task_id: TaskArg, token: TokenOpt, percent: PercentOpt = None,
                      progress_message: ProgressMessageOpt = None, json_out: JsonOpt = False,
                      db: DbOpt = None, home: HomeOpt = None) -> None:
    """Extend the lease of the current attempt (and report progress with it)."""
    ws = workspace(home, db)
    beat = work.heartbeat(ws, work.ProgressRequest(task_id=task_id, token=token, percent=percent,
                                                    message=progress_message))
    doc = beat.to_json()
    if json_out:
        emit_json(doc)
    else:
        message(f"task {task_id}: lease until {doc['lease_expires_at']}"
                + ("; CANCELLED: stop and report `sched worker fail`" if beat.beat.cancel else ""))


@worker_app.command("progress")
def progress_command(task_id: TaskArg, token: TokenOpt, percent: PercentOpt = None,
                     progress_message: ProgressMessageOpt = None, json_out: JsonOpt = False,
                     db: DbOpt = None, home: HomeOpt = None) -> None:
    """Report how far the current attempt got (shown by show, the dashboard and webhooks;
    reports closer together than progress_min_interval_seconds are not recorded)."""
    ws = workspace(home, db)
    noted = work.progress(ws, work.ProgressRequest(task_id=task_id, token=token, percent=percent,
                                                   message=progress_message))
    if json_out:
        emit_json(noted.to_json())
    else:
        message(f"task {task_id}: progress " + ("recorded" if noted.recorded else
                                                 "not recorded (the last report is too recent)"))


@worker_app.command("complete")
def complete_command(
    task_id: TaskArg, token: TokenOpt,
    result: Annotated[str | None, typer.Option(help="JSON result to record.")] = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Record that the current attempt succeeded."""
    value = parse_json_option(result, "--result")
    ended = work.complete(workspace(home, db), work.CompleteRequest(task_id=task_id, token=token,
                                                                    result=value))
    if json_out:
        emit_json(ended.to_json())
    else:
        message(f"task {task_id}: succeeded")


@worker_app.command("fail")
def fail_command(
    task_id: TaskArg, token: TokenOpt,
    error: Annotated[str, typer.Option("--error", help="What went wrong.")],
    no_retry: Annotated[bool, typer.Option(
        "--no-retry", help="Dead-letter now instead of retrying.")] = False,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Record that the current attempt failed; the task is retried or dead-lettered."""
    request = work.FailRequest(task_id=task_id, token=token, error=error, retry=not no_retry)
    ended = work.fail(workspace(home, db), request)
    if json_out:
        emit_json(ended.to_json())
    else:
        message(f"task {task_id}: failed, now {ended.status}")
