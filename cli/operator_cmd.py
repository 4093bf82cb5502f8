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
    dry_run_doc,
    emit_json,
    message,
    show_dry_run,
    workspace,
)
from eventlog.errors import BadInput
from eventlog.values import INT64_MAX
from scheduler import operator
from scheduler.dryrun import DryRun


def operator_name(by: str | None) -> str:
    return by or os.environ.get("USER") or "operator"


ByOpt = Annotated[str | None, typer.Option("--by", help="Who does it (default $USER).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why, recorded in the event.")]


def pause_command(
    by: Annotated[str | None, typer.Option(help="Who pauses (default $USER).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why, shown by status.")] = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Stop assigning work (leases still expire; running agents go on)."""
    changed = operator.pause(workspace(home, db), operator_name(by), reason)
    if json_out:
        emit_json({"paused": True, "changed": changed})
    else:
        message("paused" if changed else "already paused")


def resume_command(
    by: Annotated[str | None, typer.Option(help="Who resumes (default $USER).")] = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Assign work again after `sched pause` (a stop file still stops it while present)."""
    ws = workspace(home, db)
    changed = operator.resume(ws, operator_name(by))
    if json_out:
        emit_json({"paused": ws.stop_file.exists(), "changed": changed,
                   "stop_file": ws.stop_file.exists()})
        return
    message("resumed" if changed else "was not paused")
    if ws.stop_file.exists():
        message(f"note: {ws.stop_file} exists; remove it to let ticks assign work")


def requeue_command(
    task_ids: Annotated[list[int] | None, typer.Argument(
        help="Dead tasks to requeue.", min=1, max=INT64_MAX)] = None,
    all_dead: Annotated[bool, typer.Option("--all", help="Every dead task of --queue.")] = False,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="The queue, with --all.")] = None,
    dry_run: DryRunOpt = False, json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Put dead-lettered tasks back in their queue with fresh attempts."""
    if all_dead != (queue is not None) or (all_dead and task_ids):
        raise BadInput("give task ids, or --all --queue Q")
    if not all_dead and not task_ids:
        raise BadInput("give task ids, or --all --queue Q")
    trial = DryRun() if dry_run else None
    done = operator.requeue(workspace(home, db), task_ids or (), queue, trial)
    if json_out:
        emit_json(dry_run_doc({"requeued": done}, trial))
        return
    message(("would requeue" if trial else "requeued") + f" {len(done)} task(s)"
            + (f": {' '.join(map(str, done))}" if done else ""))
    show_dry_run(trial)


def cancel_command(
    task_id: Annotated[int, typer.Argument(help="The task to cancel.", min=1, max=INT64_MAX)],
    reason: Annotated[str | None, typer.Option(help="Why, recorded in the event.")] = None,
    by: ByOpt = None, dry_run: DryRunOpt = False, json_out: JsonOpt = False, db: DbOpt = None,
    home: HomeOpt = None,
) -> None:
    """Cancel a task: at once unless it runs; a running one stops at its next heartbeat."""
    trial = DryRun() if dry_run else None
    status = operator.cancel(workspace(home, db), task_id, operator_name(by), reason, trial)
    if json_out:
        emit_json(dry_run_doc({"task_id": task_id, "status": status,
                               "cancelling": status == "running"}, trial))
        return
    would = "would be " if trial else ""
    if status == "running":
        message(f"task {task_id}: {would}cancelling; its runner stops at its next heartbeat")
    else:
        message(f"task {task_id}: {would}cancelled")
    show_dry_run(trial)


def approve_command(
    task_ids: Annotated[list[int], typer.Argument(help="Tasks awaiting approval.", min=1, max=INT64_MAX)],
    by: ByOpt = None, json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Approve tasks submitted with --requires-approval: they join their queue."""
    done = operator.decide_approval(workspace(home, db), task_ids, operator_name(by), approve=True)
    if json_out:
        emit_json({"approved": done})
    else:
        message(f"approved {' '.join(map(str, done))}")


def reject_command(
    task_ids: Annotated[list[int], typer.Argument(help="Tasks awaiting approval.", min=1, max=INT64_MAX)],
    reason: Annotated[str | None, typer.Option(help="Why, recorded in the event.")] = None,
    by: ByOpt = None, json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Reject tasks awaiting approval: they end cancelled."""
    done = operator.decide_approval(workspace(home, db), task_ids, operator_name(by),
                                    approve=False, reason=reason)
    if json_out:
        emit_json({"rejected": done})
    else:
        message(f"rejected {' '.join(map(str, done))}")

