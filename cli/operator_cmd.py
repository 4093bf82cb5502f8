"""Operator actions, each recorded as an event: pause, resume, requeue, cancel,
approve, reject."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cli.common import (
    DbOpt,
    DryRunOpt,
    HomeOpt,
    JsonOpt,
    emit_json,
    message,
    parse_task_id,
    show_dry_run,
    workspace,
)
from eventlog.errors import BadInput
from eventlog.values import text_problem
from scheduler.usecases import actions, fleet


def operator_name(by: str | None) -> str:
    """Who acts: --by, else $USER, else "operator". A $USER that is not text (a byte
    that is not UTF-8) is named as itself, not as a bad --by nobody gave."""
    if by is not None:
        return by
    user = os.environ.get("USER")
    if user and (problem := text_problem(user)) is not None:
        raise BadInput(f"$USER (who acts when --by is not given) {problem}: give --by NAME")
    return user or "operator"


ByOpt = Annotated[str | None, typer.Option("--by", help="Who does it (default $USER).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why, recorded in the event.")]


def pause_command(
    by: Annotated[str | None, typer.Option(help="Who pauses (default $USER).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why, shown by status.")] = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Stop assigning work (leases still expire; running agents go on)."""
    done = fleet.pause(workspace(home, db), fleet.PauseRequest(by=operator_name(by), reason=reason))
    if json_out:
        emit_json(done.to_json())
    else:
        message("paused" if done.changed else "already paused")


def resume_command(
    by: Annotated[str | None, typer.Option(help="Who resumes (default $USER).")] = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Assign work again after `sched pause` (a stop file still stops it while present)."""
    ws = workspace(home, db)
    done = fleet.resume(ws, fleet.ResumeRequest(by=operator_name(by)))
    if json_out:
        emit_json(done.to_json())
        return
    message("resumed" if done.changed else "was not paused")
    if done.stop_file:
        message(f"note: {ws.stop_file} exists; remove it to let ticks assign work")


def requeue_command(
    task_ids: Annotated[list[int] | None, typer.Argument(
        help="Dead tasks to requeue.", parser=parse_task_id)] = None,
    all_dead: Annotated[bool, typer.Option("--all", help="Every dead task of --queue.")] = False,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="The queue, with --all.")] = None,
    by: ByOpt = None, dry_run: DryRunOpt = False, json_out: JsonOpt = False, db: DbOpt = None,
    home: HomeOpt = None,
) -> None:
    """Put dead-lettered tasks back in their queue with fresh attempts."""
    request = actions.RequeueRequest(task_ids=task_ids or [], all=all_dead, queue=queue,
                                     by=operator_name(by), dry_run=dry_run)
    done = actions.requeue(workspace(home, db), request)
    if json_out:
        emit_json(done.to_json())
        return
    message(("would requeue" if done.dry_run else "requeued") + f" {len(done.task_ids)} task(s)"
            + (f": {' '.join(map(str, done.task_ids))}" if done.task_ids else ""))
    show_dry_run(done.dry_run)


def cancel_command(
    task_id: Annotated[int, typer.Argument(help="The task to cancel.", parser=parse_task_id)],
    reason: Annotated[str | None, typer.Option(help="Why, recorded in the event.")] = None,
    by: ByOpt = None, dry_run: DryRunOpt = False, json_out: JsonOpt = False, db: DbOpt = None,
    home: HomeOpt = None,
) -> None:
    """Cancel a task: at once unless it runs; a running one stops within about 2 s (a
    pull worker's, at its next heartbeat)."""
    done = actions.cancel(workspace(home, db), actions.CancelRequest(
        task_id=task_id, by=operator_name(by), reason=reason, dry_run=dry_run))
    if json_out:
        emit_json(done.to_json())
        return
    would = "would be " if done.dry_run else ""
    if done.status == "running":
        message(f"task {task_id}: {would}cancelling; a push agent's runner stops it within about 2 s, a "
                "pull worker at its next heartbeat")
    else:
        message(f"task {task_id}: {would}cancelled")
    show_dry_run(done.dry_run)


def approve_command(
    task_ids: Annotated[list[int], typer.Argument(help="Tasks awaiting approval.", parser=parse_task_id)],
    by: ByOpt = None, json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Approve tasks submitted with --requires-approval: they join their queue."""
    done = actions.approve(workspace(home, db),
                           actions.ApprovalRequest(task_ids=task_ids, by=operator_name(by)))
    if json_out:
        emit_json(done.to_json())
    else:
        message(f"approved {' '.join(map(str, done.task_ids))}")


def reject_command(
    task_ids: Annotated[list[int], typer.Argument(help="Tasks awaiting approval.", parser=parse_task_id)],
    reason: Annotated[str | None, typer.Option(help="Why, recorded in the event.")] = None,
    by: ByOpt = None, json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Reject tasks awaiting approval: they end cancelled."""
    done = actions.reject(workspace(home, db), actions.ApprovalRequest(
        task_ids=task_ids, by=operator_name(by), reason=reason))
    if json_out:
        emit_json(done.to_json())
    else:
        message(f"rejected {' '.join(map(str, done.task_ids))}")
