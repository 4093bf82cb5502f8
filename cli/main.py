"""The `sched` command: wiring of the subcommands and the one place that turns
errors into a line on stderr and an exit code (never a traceback)."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from copy import copy
from importlib import import_module
from typing import Annotated

import typer
from typer.core import TyperCommand

from cli import common
from cli.common import HELP_OPTIONS
from cli.text import visible
from eventlog.errors import BadInput, SchedError
from eventlog.values import text_problem
from scheduler.clock import Clock, SystemClock

# name -> (module, attribute): each command, and each group of subcommands, in the
# order of the help. Only the module of the command run is imported, so that a quick
# command (status, tasks, the worker protocol) loads no more than it needs.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("cli.setup_cmd", "init_command"),
    "submit": ("cli.tasks_cmd", "submit_command"),
    "tick": ("cli.scheduling_cmd", "tick_command"),
    "status": ("cli.scheduling_cmd", "status_command"),
    "tasks": ("cli.tasks_cmd", "tasks_command"),
    "show": ("cli.tasks_cmd", "show_command"),
    "replay": ("cli.scheduling_cmd", "replay_command"),
    "rebuild": ("cli.scheduling_cmd", "rebuild_command"),
    "migrate": ("cli.setup_cmd", "migrate_command"),
    "run": ("cli.scheduling_cmd", "run_command"),
    "exec": ("cli.scheduling_cmd", "exec_command"),
    "metrics": ("cli.observe_cmd", "metrics_command"),
    "health": ("cli.observe_cmd", "health_command"),
    "explain": ("cli.observe_cmd", "explain_command"),
    "simulate": ("cli.simulate_cmd", "simulate_command"),
    "pause": ("cli.operator_cmd", "pause_command"),
    "resume": ("cli.operator_cmd", "resume_command"),
    "requeue": ("cli.operator_cmd", "requeue_command"),
    "cancel": ("cli.operator_cmd", "cancel_command"),
    "approve": ("cli.operator_cmd", "approve_command"),
    "reject": ("cli.operator_cmd", "reject_command"),
    "serve": ("cli.serve_cmd", "serve_command"),
}
GROUPS: dict[str, tuple[str, str]] = {
    "agents": ("cli.setup_cmd", "agents_app"),
    "config": ("cli.setup_cmd", "config_app"),
    "worker": ("cli.worker_cmd", "worker_app"),
    "webhooks": ("cli.webhooks_cmd", "webhooks_app"),
    "tokens": ("cli.tokens_cmd", "tokens_app"),
}


def show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"sched {version('sched')}")
        raise typer.Exit(0)


def sched_options(
    _version: Annotated[bool, typer.Option(
        "--version", help="Print the version of sched and exit.", callback=show_version,
        is_eager=True)] = False,
) -> None:
    """An event-sourced scheduler for fleets of AI agents, on SQLite or PostgreSQL."""


def build_app(only: str | None = None, sub: str | None = None) -> typer.Typer:
    """The `sched` command with every subcommand, or with `only` that one (and of a
    group, with `sub` its one subcommand): what a run of it needs, whose usage errors
    and help are the same either way."""
    built = typer.Typer(context_settings=HELP_OPTIONS,
        name="sched", help="An event-sourced scheduler for fleets of AI agents, on SQLite or PostgreSQL.",
        no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
        rich_markup_mode=None)  # help as written: `[queues.NAME]` is text, not rich markup
    built.callback()(sched_options)
    for name, (module, attribute) in COMMANDS.items():
        if only in (None, name):
            built.command(name, cls=OnceEach)(getattr(import_module(module), attribute))
    for name, (module, attribute) in GROUPS.items():
        if only in (None, name):
            group = getattr(import_module(module), attribute)
            if sub is not None and any(c.name == sub for c in group.registered_commands):
                group = copy(group)  # only the subcommand run: typer converts less
                group.registered_commands = [c for c in group.registered_commands if c.name == sub]
            for command in group.registered_commands:
                command.cls = OnceEach
            built.add_typer(group, name=name)
    return built


class OnceEach(TyperCommand):
    """A command whose options that take a value may each be given once. Click keeps
    the last of two silently: `tokens create --role reader --role operator` would make
    an operator's token, `cancel 5 --reason a --reason b` record `b`. A usage error
    (exit 2) instead, before anything is read. Flags (`--json`) and options meant to be
    given again (`--queue`, `--set`) are free to repeat."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if any(arg in ctx.help_option_names for arg in args):  # (help first, as without the check)
            return super().parse_args(ctx, args)
        _, _, order = self.make_parser(ctx).parse_args(args=list(args))
        seen: set[str | None] = set()
        for param in order:
            if param.param_type_name == "option" and not (param.is_flag or param.multiple or param.count):
                if param.name in seen:
                    raise typer.BadParameter("given twice: give it once", ctx, param)
                seen.add(param.name)
        return super().parse_args(ctx, args)


def __getattr__(name: str) -> object:
    if name == "app":  # the whole command, for its documentation and tests
        return build_app()
    raise AttributeError(name)


INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT)


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run one command; returns its exit code: 0 done, 1 check failed or refused,
    2 bad input or usage. An error is one line on stderr: messages may quote user input,
    whose control characters are shown (`visible`), never sent."""
    common.CLOCK[0] = clock or SystemClock()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        check_arguments(args)
        chosen = args[0] if args and (args[0] in COMMANDS or args[0] in GROUPS) else None
        sub = args[1] if chosen in GROUPS and len(args) > 1 else None
        result = build_app(chosen, sub)(args=args, prog_name="sched", standalone_mode=False)
        if result == INTERRUPTED:  # Ctrl-C inside a command: typer returns its exit code
            print("sched: interrupted", file=sys.stderr)
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
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare `sched` or group: its help, as
            print(e.format_message(), file=sys.stderr)  # written (typer tells it by name too)
        elif e.format_message():
            print(f"sched: {visible(e.format_message())}", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("sched: interrupted", file=sys.stderr)
        return INTERRUPTED
    except SystemExit as e:  # typer ends a command whose reader went away (EPIPE) this way
        return e.code if isinstance(e.code, int) else 1
    except OSError as e:  # a file of sched's home: where, and what the system said
        where = f"{e.filename}: " if e.filename else ""
        print(f"sched: {visible(where + (e.strerror or str(e)))}", file=sys.stderr)
        return 1 if e.errno in MACHINE_FAULTS else 2
    except Exception as e:
        if os.environ.get("SCHED_DEBUG"):
            import traceback

            traceback.print_exc()
        print(f"sched: internal error: {type(e).__name__}: {visible(str(e))} "
              "(set SCHED_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


# errors of the machine (exit 1: the request could not be met now; a read-only file
# system too, as a database on read-only media is), as opposed to a path that cannot be
# used as given (exit 2: permission, missing, not a directory)
MACHINE_FAULTS = frozenset({errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ENOMEM, errno.EAGAIN, errno.EROFS})


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

