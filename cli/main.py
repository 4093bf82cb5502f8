"""The `sched` command: wiring of the subcommands and the one place that turns
errors into a line on stderr and an exit code (never a traceback)."""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import version
from typing import Annotated

import typer

from cli import common
from cli.common import HELP_OPTIONS
from cli.observe_cmd import explain_command, health_command, metrics_command
from cli.operator_cmd import (
    approve_command,
    cancel_command,
    pause_command,
    reject_command,
    requeue_command,
    resume_command,
)
from cli.scheduling_cmd import (
    exec_command,
    rebuild_command,
    replay_command,
    run_command,
    status_command,
    tick_command,
)
from cli.setup_cmd import agents_app, config_app, init_command, migrate_command
from cli.tasks_cmd import show_command, submit_command, tasks_command
from cli.text import visible
from cli.webhooks_cmd import webhooks_app
from cli.worker_cmd import worker_app
from eventlog.errors import BadInput, SchedError
from eventlog.values import text_problem
from scheduler.clock import Clock, SystemClock

app = typer.Typer(context_settings=HELP_OPTIONS,
    name="sched", help="An event-sourced scheduler for fleets of AI agents, on SQLite.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    rich_markup_mode=None)  # help as written: `[queues.NAME]` is text, not rich markup


def show_version(value: bool) -> None:
    if value:
        print(f"sched {version('sched')}")
        raise typer.Exit(0)


@app.callback()
def sched_options(
    _version: Annotated[bool, typer.Option(
        "--version", help="Print the version of sched and exit.", callback=show_version,
        is_eager=True)] = False,
) -> None:
    """An event-sourced scheduler for fleets of AI agents, on SQLite."""


app.command("init")(init_command)
app.command("submit")(submit_command)
app.command("tick")(tick_command)
app.command("status")(status_command)
app.command("tasks")(tasks_command)
app.command("show")(show_command)
app.command("replay")(replay_command)
app.command("rebuild")(rebuild_command)
app.command("migrate")(migrate_command)
app.command("run")(run_command)
app.command("exec")(exec_command)
app.command("metrics")(metrics_command)
app.command("health")(health_command)
app.command("explain")(explain_command)
app.command("pause")(pause_command)
app.command("resume")(resume_command)
app.command("requeue")(requeue_command)
app.command("cancel")(cancel_command)
app.command("approve")(approve_command)
app.command("reject")(reject_command)
app.add_typer(agents_app, name="agents")
app.add_typer(config_app, name="config")
app.add_typer(worker_app, name="worker")
app.add_typer(webhooks_app, name="webhooks")


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run one command; returns its exit code: 0 done, 1 check failed or refused,
    2 bad input or usage. An error is one line on stderr: messages may quote user input,
    whose control characters are shown (`visible`), never sent."""
    common.CLOCK[0] = clock or SystemClock()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        check_arguments(args)
        result = app(args=args, prog_name="sched", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except SchedError as e:
        print(f"sched: {visible(e.message)}", file=sys.stderr)
        return e.exit_code
    except OverflowError:  # an id or number beyond SQLite's 64-bit integers
        print("sched: a number is too large (at most 2**63 - 1)", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except typer.TyperException as e:  # usage errors: unknown flag, missing argument
        if e.format_message():  # empty when the help was just printed for a bare group
            print(f"sched: {visible(e.format_message())}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("sched: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # typer ends a command whose reader went away (EPIPE) this way
        return e.code if isinstance(e.code, int) else 1
    except OSError as e:  # a file of sched's home: where, and what the system said
        where = f"{e.filename}: " if e.filename else ""
        print(f"sched: {visible(where + (e.strerror or str(e)))}", file=sys.stderr)
        return 1 if e.errno in MACHINE_FAULTS else 2
    except Exception as e:
        if os.environ.get("SCHED_DEBUG"):
            traceback.print_exc()
        print(f"sched: internal error: {type(e).__name__}: {visible(str(e))} "
              "(set SCHED_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


# errors of the machine (exit 1: the request could not be met now), as opposed to a
# path that cannot be used as given (exit 2: permission, missing, read-only, not a dir)
MACHINE_FAULTS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ENOMEM, errno.EAGAIN})


def check_arguments(args: Sequence[str]) -> None:
    """Refuse an argument that is not valid Unicode text (an undecodable byte reaches
    Python as a lone surrogate): sched could neither store nor print it. Named by the
    option it belongs to."""
    for index, arg in enumerate(args):
        problem = text_problem(arg)
        if problem is None:
            continue
        flag, _, _ = arg.partition("=")
        if arg.startswith("--") and "=" in arg and text_problem(flag) is None:
            raise BadInput(f"{flag}: {problem}")
        if index > 0 and args[index - 1].startswith("-"):
            raise BadInput(f"{args[index - 1]}: {problem}")
        raise BadInput(f"argument {index + 1}: {problem}")

