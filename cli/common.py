"""What every command shares: the options that locate sched's files, the workspace
built from them, and output (one JSON document on stdout with --json; messages on
stderr)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.text import literal, visible
from eventlog.errors import BadInput, ControlFileError, OutputLost
from eventlog.values import digits_value, parse_json, task_id_problem
from scheduler.clock import Clock, SystemClock
from scheduler.config.settings import LoadedSettings, load_settings
from scheduler.dryrun import DryRun
from scheduler.workspace import Workspace

if TYPE_CHECKING:  # rich is loaded by the views that print for people, not by --json
    from typing import TextIO

    from rich.console import Console
    from rich.text import Text

    from scheduler.runner.remote import Server

def place(what: str, kind: type = Path) -> Any:
    """The parser of an option that names a file, a directory or a database (its value
    as `kind`): an empty or blank value would be '.', the current directory (or a
    directory named ' '), which is what `--home "$DIR"` gives when DIR is unset, not a
    choice: refused (exit 2) before anything is read or made."""
    def parse(value: str) -> Any:
        if not value.strip():
            raise typer.BadParameter(f"{'blank' if value else 'empty'}; give {what} (is a variable unset?)")
        return kind(value)
    return parse


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
DbOpt = Annotated[str | None, typer.Option(
    "--db", help="Database file, or a postgresql:// URL (default $SCHED_DB, else "
    "$SCHED_HOME/sched.db).",
    show_default=False, metavar="<str>", parser=place("a database file or a postgresql:// URL", str))]
HostOpt = Annotated[str | None, typer.Option(
    "--host", help="The host this process acts for: it starts the commands of agents pinned "
    "to it (default $SCHED_HOST, else the machine's name).", show_default=False)]
ServerOpt = Annotated[str | None, typer.Option(
    "--server", help="Talk to this `sched serve` (http://HOST:PORT) instead of the database "
    "(default $SCHED_SERVER); its token from $SCHED_TOKEN, $SCHED_TOKEN_FILE or "
    "--server-token-file.", show_default=False, metavar="<url>",
    parser=place("the server's http:// or https:// URL", str))]
ServerTokenFileOpt = Annotated[Path | None, typer.Option(
    "--server-token-file", help="A file holding the server's token (from `sched tokens create`).",
    show_default=False, metavar="<path>", parser=place("a file"))]
HomeOpt = Annotated[Path | None, typer.Option(
    "--home", help="Working directory of sched (default $SCHED_HOME, else the current one).",
    show_default=False, metavar="<path>", parser=place("a directory"))]
AgentsOpt = Annotated[Path | None, typer.Option(
    "--agents", help="Agent control file (default: $SCHED_AGENT_CONTROL_FILE, else searched "
    "under SCHED_HOME).", show_default=False, metavar="<path>", parser=place("a control file"))]

DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Say what would change (the events it would append); append nothing.")]

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


def parse_task_id(text: str) -> int:
    """A task id argument or option (`task_id_problem`: digits only)."""
    problem = task_id_problem(text)
    if problem is not None:
        raise typer.BadParameter(problem)
    return digits_value(text)  # (zeros before it: 5,000 of them are past what int() reads)

# main() may inject a clock (tests do); commands read it through `workspace()`.
CLOCK: list[Clock] = [SystemClock()]


def console() -> Console:
    return _console(sys.stdout)


def err_console() -> Console:
    return _console(sys.stderr)


def _console(file: TextIO) -> Console:
    from rich.console import Console

    out = Console(file=file, highlight=False, soft_wrap=True)
    if out.width < 1:  # COLUMNS=0, as some CI runners set it: rich would print nothing at all
        out.width = shutil.get_terminal_size().columns  # (which reads 0 as unset: else 80)
    # COLUMNS=2147483648 padded each table row to that width, until the memory ran out;
    # no screen is wider than this
    out.width = min(out.width, MAX_COLUMNS)
    return out


MAX_COLUMNS = 1000


def message(*parts: str | tuple[str, str] | Text) -> None:
    """A human message: always on stderr, so stdout stays parseable. The parts are
    joined as `literal` text: shown as written, a (text, style) pair styled by sched."""
    err_console().print(literal(*parts))


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout. Written at once: if it cannot be (a full
    disk), the line says that what the command did stands (a submit is recorded: run
    again, it would submit twice), not only what the system said."""
    try:
        sys.stdout.write(json.dumps(document, default=str) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # (its reader went away: it asked for no more)
    except OSError as e:
        raise OutputLost(f"cannot write the output ({e.strerror or e}): what the command did stands, "
                         "a write it made is recorded (look with `sched status` or `sched show` before "
                         "running it again)") from e


def loaded_settings(home: Path | None = None, db: str | None = None,
                    agents: Path | None = None, *, create_home: bool = False,
                    host: str | None = None) -> LoadedSettings:
    """The settings of a command. Its home must exist (only `init` creates it)."""
    loaded = load_settings(os.environ, {"home": home, "db": db, "agent_control_file": agents,
                                        "host": host})
    if create_home:
        from eventlog.storage.sqlite import make_directory  # (only `init` makes a home)

        make_directory(loaded.settings.home, f"the home {loaded.settings.home}")
    elif not loaded.settings.home.is_dir():
        given = "--home" if home is not None else "SCHED_HOME" if os.environ.get("SCHED_HOME") else "the home"
        raise BadInput(f"{given} {loaded.settings.home} does not exist or is not a directory "
                       "(`sched init` creates it)")
    return loaded


def workspace(home: Path | None = None, db: str | None = None,
              agents: Path | None = None, *, create_home: bool = False,
              host: str | None = None, as_found: bool = False) -> Workspace:
    """`as_found`: the database read as it is (`Workspace.as_found`)."""
    return Workspace(loaded_settings(home, db, agents, create_home=create_home, host=host).settings,
                     clock=CLOCK[0], say=message, as_found=as_found)


def warn_if_fleet_unread(ws: Workspace) -> None:
    """A read that shows the fleet (`status`, `tasks`, `explain`) shows the one last
    recorded when the control file cannot be read now; this says so, in one line on
    stderr (the output stays what it was: a broken file must not blind the operator,
    nor be passed over in silence)."""
    try:
        ws.registry()
    except ControlFileError as e:
        print(f"sched: warning: {visible(e.message)}; showing the fleet as last recorded", file=sys.stderr)


def server_of(url: str | None, token_file: Path | None) -> Server | None:
    """The server to talk to (`--server`, else `$SCHED_SERVER`), or None: the database
    (the HTTP client is loaded only when one is given)."""
    if url is None and not os.environ.get("SCHED_SERVER"):
        if token_file is not None:
            raise BadInput("--server-token-file needs --server (or $SCHED_SERVER)")
        return None
    from scheduler.runner.remote import from_environment

    return from_environment(url, token_file)


def show_dry_run(dry_run: DryRun | None) -> None:
    """In a dry run, the events the command would append (stdout), then a note (stderr)."""
    if dry_run is None:
        return
    for change in dry_run.changes:
        console().print(literal(f"would append {change['type']} ({change['stream_id']})"))
    message(f"dry run: nothing appended ({len(dry_run.changes)} event(s) would be)")


MAX_INTERVAL_SECONDS = 86400.0  # a day: longer is a typo (and more than a sleep can wait)


def check_interval(seconds: float) -> float:
    """An `--interval` (of a daemon's ticks, or a watch's redraws): a number > 0, at most
    a day; anything else is refused before the first tick or frame."""
    if math.isnan(seconds) or seconds <= 0:
        raise BadInput("--interval must be a number greater than 0")
    if seconds > MAX_INTERVAL_SECONDS:
        raise BadInput(f"--interval must be at most {MAX_INTERVAL_SECONDS:.0f} seconds (a day), "
                       f"not {seconds:g}")
    return seconds


def refresh(show: Callable[[], None], interval: float, pause: Callable[[float], None],
            rounds: int | None = None) -> int:
    """The loop of a watch (`status --watch`, `tasks --watch`): call `show` now, then
    again after each `interval` (waited with `pause`), `rounds` times in all, or until
    interrupted (Ctrl-C: KeyboardInterrupt goes to the caller). Returns how many times
    it showed."""
    shown = 0
    while rounds is None or shown < rounds:
        if shown:
            pause(interval)
        show()
        shown += 1
    return shown


def parse_json_option(text: str | None, flag: str) -> Any:
    """Parse a JSON-valued flag, or fail with a one-line error naming it."""
    if text is None:
        return None
    return parse_json(text, flag)


def human_duration(seconds: float | None) -> str:
    """`35ms`, `4.2s`, `45s`, `12m`, `3.5h`: short enough for a table cell ("-" for none)."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
