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
from eventlog.errors import BadInput
from eventlog.timeutil import to_text
from eventlog.values import INT64_MAX
from scheduler import worker

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
    claimed = worker.claim(ws, agent)
    if claimed is None:
        if json_out:
            emit_json({"task": None})
        else:
            message(f"no task for {agent}")
        return
    doc = claimed.document
    try:
        if json_out:
            emit_json({"task": doc})
        else:
            console().print(f"task {doc['task_id']} attempt {doc['attempt']} token {doc['token']}")
            message(f"lease until {doc['lease_expires_at']}: {doc['title']}")
        sys.stdout.flush()
    except OSError as e:  # the worker never saw its token: give the attempt back now
        worker.release_undelivered(ws, claimed, f"the claim could not be printed: {e}")
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
    report = (worker.Progress(percent, progress_message)
              if percent is not None or progress_message is not None else None)
    beat = worker.heartbeat(workspace(home, db), task_id, token, report)
    expires = to_text(beat.lease_expires_at)
    if json_out:
        emit_json({"task_id": task_id, "lease_expires_at": expires, "cancel": beat.cancel,
                   "progress_recorded": beat.progress_recorded})
    else:
        message(f"task {task_id}: lease until {expires}"
                + ("; CANCELLED: stop and report `sched worker fail`" if beat.cancel else ""))


@worker_app.command("progress")
def progress_command(task_id: TaskArg, token: TokenOpt, percent: PercentOpt = None,
                     progress_message: ProgressMessageOpt = None, json_out: JsonOpt = False,
                     db: DbOpt = None, home: HomeOpt = None) -> None:
    """Report how far the current attempt got (shown by show, the dashboard and webhooks;
    reports closer together than progress_min_interval_seconds are not recorded)."""
    recorded = worker.progress(workspace(home, db), task_id, token,
                               worker.Progress(percent, progress_message))
    if json_out:
        emit_json({"task_id": task_id, "recorded": recorded})
    else:
        message(f"task {task_id}: progress " + ("recorded" if recorded else
                                                 "not recorded (the last report is too recent)"))


@worker_app.command("complete")
def complete_command(
    task_id: TaskArg, token: TokenOpt,
    result: Annotated[str | None, typer.Option(help="JSON result to record.")] = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Record that the current attempt succeeded."""
    value = parse_json_option(result, "--result")
    worker.complete(workspace(home, db), task_id, token, value)
    if json_out:
        emit_json({"task_id": task_id, "status": "succeeded"})
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
    if not error.strip():
        raise BadInput("--error must say what went wrong")
    status = worker.fail(workspace(home, db), task_id, token, error, retry=not no_retry)
    if json_out:
        emit_json({"task_id": task_id, "status": status})
    else:
        message(f"task {task_id}: failed, now {status}")
