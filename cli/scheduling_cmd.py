"""Commands about the scheduler as a whole: tick, status, replay."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import (
    AgentsOpt,
    DbOpt,
    HomeOpt,
    HostOpt,
    JsonOpt,
    ServerOpt,
    ServerTokenFileOpt,
    check_interval,
    console,
    emit_json,
    loaded_settings,
    message,
    parse_task_id,
    refresh,
    server_of,
    warn_if_fleet_unread,
    workspace,
)
from cli.text import literal, visible
from eventlog.errors import BadInput
from scheduler.usecases import observe
from scheduler.workspace import Workspace

if TYPE_CHECKING:
    from rich.table import Table

    from scheduler.daemon.log import LogFormat

# The daemon, the exec wrapper, the tick and the dashboard are imported by the commands
# that use them: `status` starts without them (issue 13: a quick CLI).


def run_daemon(*args: Any, **kwargs: Any) -> int:
    from scheduler.daemon.run import run_daemon as run

    return run(*args, **kwargs)


def exec_task(*args: Any, **kwargs: Any) -> Any:
    from scheduler.runner.exec import exec_task as run

    return run(*args, **kwargs)


def tick_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide, print, append nothing.")] = False,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None,
    host: HostOpt = None,
) -> None:
    """One scheduler pass: expire what is overdue, then assign queued tasks to agents."""
    from scheduler.tick import tick

    report = tick(workspace(home, db, agents, host=host), dry_run=dry_run)
    if json_out:
        emit_json(asdict(report))
        return
    assign, take_back, release, dead_letter = (
        ("would assign", "would take back", "would release", "would dead-letter") if dry_run
        else ("assigned", "took back", "released", "dead-lettered"))
    # in the order of the pass: take back, release, dead-letter, assign, start
    for item in report.expired:
        console().print(literal(f"{take_back} task {item['task_id']} from {item['agent']} "
                                f"({item['reason']})"))
    for item in report.released:
        console().print(literal(f"{release} task {item['task_id']} from {item['agent']} "
                                f"(it {item['why']})"))
    for task_id in report.cancelled:  # (its attempt taken back ended a cancel asked for while it ran)
        console().print(f"{'would cancel' if dry_run else 'cancelled'} task {task_id}")
    for task_id in report.dead_lettered:
        console().print(f"{dead_letter} task {task_id}")
    for item in report.assigned:
        console().print(literal(f"{assign} task {item['task_id']} -> {item['agent']}"))
    for task_id in report.spawned:
        console().print(f"started sched exec for task {task_id}")
    for error in report.errors:
        message(("error:", "red"), f" {error}")
    if report.paused:
        message(f"paused by {report.paused['by']}: assigning nothing")
    for queue in report.gates_closed:
        message(f"gate of queue {queue} closed: assigning nothing from it")
    if dry_run:
        message(f"tick: would assign {len(report.assigned)}, take back {len(report.expired)}, "
                f"dead-letter {len(report.dead_lettered)} ({report.duration_ms:.1f} ms; dry run: "
                "nothing appended)")
    else:
        message(f"tick: {len(report.assigned)} assigned, {len(report.expired)} expired, "
                f"{len(report.dead_lettered)} dead-lettered in {report.duration_ms:.1f} ms")


def watch(ws: Workspace, interval: float, json_out: bool) -> None:
    """Redraw the dashboard every `interval` seconds until Ctrl-C (with --json: print
    one snapshot per line instead)."""
    from rich.live import Live

    from cli.dashboard import render
    from scheduler.reads.dashboard import snapshot

    check_interval(interval)
    try:
        if json_out:
            def print_line() -> None:
                emit_json(snapshot(ws))
                sys.stdout.flush()

            refresh(print_line, interval, time.sleep)
            return
        out = console()
        with Live(render(snapshot(ws), out.size.height), console=out, auto_refresh=False,
                  vertical_overflow="crop") as live:
            refresh(lambda: live.update(render(snapshot(ws), out.size.height), refresh=True), interval,
                    time.sleep)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends: exit 0


def status_command(
    at: Annotated[str | None, typer.Option(
        "--at", help="As it stood after this event: a seq number or an ISO time.")] = None,
    watch_: Annotated[bool, typer.Option(
        "--watch", help="A live dashboard, redrawn every --interval seconds; Ctrl-C ends it.")] = False,
    interval: Annotated[float | None, typer.Option(
        help="Seconds between redraws with --watch (default 2).")] = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None,
) -> None:
    """Queue depths and agent load, read from the projections (or, with --at, replayed)."""
    if watch_:
        if at is not None:
            raise BadInput("give --watch or --at, not both")
        ws = workspace(home, db, agents)
        warn_if_fleet_unread(ws)
        watch(ws, 2.0 if interval is None else interval, json_out)
        return
    if interval is not None:
        raise BadInput("--interval goes with --watch")
    ws = workspace(home, db, agents)
    doc = observe.status(ws, at).to_json()
    if at is None:  # (a past state is folded from the log: the control file plays no part)
        warn_if_fleet_unread(ws)
    if json_out:
        emit_json(doc)
        return
    out = console()
    columns = ("awaiting_approval", "blocked", "queued", "assigned", "running", "succeeded",
               "dead", "cancelled")
    queues = compact_table("queue", "approval", *columns[1:], title="queues")
    for name, c in doc["queues"].items():
        queues.add_row(literal(name), *(str(c[k]) for k in columns))
    out.print(queues)
    agents = compact_table("agent", "type", "capacity", "assigned", "running", "free", "state",
                           title="agents")
    for name, a in doc["agents"].items():
        agents.add_row(literal(name), literal(a["type"]), str(a["capacity"]), str(a["assigned"]),
                       str(a["running"]), str(a["free"]), agent_state(a))
    out.print(agents)
    out.print(f"last seq: {doc['last_seq']}")
    for queue, gate in doc["gates_closed"].items():
        out.print(literal((f"queue {queue}: gate closed since {gate['since']} ({gate['detail']})", "yellow")))
    if doc["paused"]:
        why = f" ({doc['paused']['reason']})" if doc["paused"].get("reason") else ""
        out.print(literal((f"paused by {doc['paused']['by']}{why}: ticks assign nothing", "yellow")))


def compact_table(*headers: str, title: str) -> Table:
    """A table that keeps every header whole at 80 columns: light rules, one space
    between columns, counts right-aligned."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=0, show_edge=False)  # (the rule between columns is the one space)
    for index, header in enumerate(headers):
        table.add_column(header, justify="left" if index == 0 or header in ("type", "state") else "right",
                         no_wrap=index > 0, min_width=len(header), overflow="fold")
    return table


def agent_state(agent: dict[str, object]) -> str:
    """in service, drained, evicted, disabled, or gone (left the control file)."""
    if agent.get("out_of_service"):
        return str(agent["out_of_service"])
    if not agent["configured"]:
        return "gone"
    return "in service" if agent["enabled"] else "disabled"


def replay_command(
    task: Annotated[int | None, typer.Option(
        "--task", help="Only this task's events.", parser=parse_task_id)] = None,
    since: Annotated[str | None, typer.Option(help="From this seq or ISO time (inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this seq or ISO time (inclusive).")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Check the hash chain and compare the stored projections with a "
        "fresh fold of the log; exit 1 if anything disagrees.")] = False,
    expect_head: Annotated[str | None, typer.Option(
        "--expect-head", help="With --verify: also check that event SEQ has HASH (SEQ:HASH, "
        "as --head printed it earlier), which catches a truncated log.")] = None,
    head: Annotated[bool, typer.Option(
        "--head", help="Print the last seq and its hash, to keep for --expect-head.")] = False,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """The audit trail (with --json: one event per line), or --verify it, or its --head."""
    ws = workspace(home, db, as_found=True)  # (audited as it is: a backup is not upgraded)

    def progress(step: str, done: int, total: int) -> None:
        message(f"  {step}: {done} of {total} {'tables' if step == 'compared' else 'events'}")

    done = observe.replay(ws, observe.ReplayRequest(task=task, since=since, until=until, verify=verify,
                                                    expect_head=expect_head, head=head),
                          progress=None if json_out else progress)
    if isinstance(done, observe.Head):
        if json_out:
            emit_json(done.to_json())
        else:
            console().print(f"{done.seq}:{done.hash}")
        return
    if isinstance(done, observe.Verified):
        if json_out:
            emit_json(done.to_json())
        elif done.ok:
            console().print(f"verified: {done.events} events, hash chain intact, "
                            "projections match the log")
        else:
            for problem in done.problems:
                console().print(literal((problem, "red")))
        if not done.ok:
            raise typer.Exit(1)
        return
    if json_out:  # one event per line: a long log streams
        for doc in done.documents():
            emit_json(doc)
        return
    for rec in done.records:  # plain lines: no markup to misread, no rich layout for a long payload
        sys.stdout.write(f"{rec.seq:>6}  {rec.recorded_at}  {rec.type:<16} {visible(rec.data)}\n")


def rebuild_command(json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None) -> None:
    """Drop the projections and rebuild them from the event log (the log is the truth)."""
    from scheduler.rebuild import rebuild_projections

    count = rebuild_projections(
        workspace(home, db), progress=None if json_out else lambda n: message(f"  {n} events..."))
    if json_out:
        emit_json({"rebuilt": True, "events": count})
    else:
        message(f"rebuilt the projections from {count} events")


def run_command(
    interval: Annotated[float | None, typer.Option(
        help="Seconds between ticks (default: setting tick_interval_seconds).")] = None,
    log_format: Annotated[str, typer.Option(
        "--log-format", help="How the log on stderr is written: text (for people) or json "
        "(one JSON object per line, for a log pipeline).")] = "text",
    db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None, host: HostOpt = None,
    server: ServerOpt = None, server_token_file: ServerTokenFileOpt = None,
) -> None:
    """The daemon: tick on an interval until SIGINT/SIGTERM, then exit 0. With --server
    (on a host with no database access): run the push agents pinned to --host for that
    server instead, with a host token (`sched tokens create --host H`)."""
    from scheduler.daemon.log import LOG_FORMATS, DaemonLog

    if log_format not in LOG_FORMATS:
        raise BadInput(f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    remote = server_of(server, server_token_file)
    if remote is not None:
        raise typer.Exit(run_host_for(remote, home, host, db, agents, interval, log_format))
    ws = workspace(home, db, agents, host=host)
    # (the setting is checked with the settings: above 0, finite)
    every = check_interval(interval) if interval is not None else ws.settings.tick_interval_seconds
    # the health check's last_tick grades against the interval the daemon really uses
    ws.settings = ws.settings.model_copy(update={"tick_interval_seconds": every})
    if log_format == "json":
        log = DaemonLog(_stderr_line, "json", ws.settings.host_name, ws.clock.now)
    else:
        log = DaemonLog(message)
    ws.say = lambda text: log(text.strip(), event="projections.rebuild")  # (in the log's format)
    ws.db  # noqa: B018 - fail now, with one line, if the database is missing
    raise typer.Exit(run_daemon(ws, every, log))


def run_host_for(remote: Any, home: Path | None, host: str | None, db: str | None, agents: Path | None,
                 interval: float | None, log_format: LogFormat) -> int:
    """`sched run --server`: this host's push agents, run for the server, its log in
    `log_format` (JSON lines of event `host`)."""
    from scheduler.daemon.log import DaemonLog
    from scheduler.runner.agent_host import run_host

    for given, flag in ((db, "--db"), (agents, "--agents"), (interval, "--interval")):
        if given is not None:
            raise BadInput(f"{flag} cannot be used with --server: the server's database, control "
                           "file and daemon decide")
    settings = loaded_settings(home, host=host, create_home=True).settings
    if log_format == "json":
        log = DaemonLog(_stderr_line, "json", settings.host_name)
        with log.capturing():
            return run_host(remote, settings, settings.host_name, lambda line: log(line, event="host"))
    return run_host(remote, settings, settings.host_name, lambda line: message(f"sched run: {line}"))


def _stderr_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def exec_command(
    task_id: Annotated[int, typer.Argument(help="The assigned task to run.", parser=parse_task_id)],
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None,
    host: HostOpt = None,
    log_times: Annotated[bool, typer.Option("--log-times", hidden=True,
                                            help="Start each line with its time (a tick's wrappers, "
                                            "into logs/exec.log).")] = False,
) -> None:
    """Run one assigned attempt of a push agent's command (ticks start this themselves)."""
    from scheduler.runner.spawn import absolute

    given = workspace(home, db, agents, host=host)  # (nothing opened yet)
    if log_times:
        from scheduler.runner.exec_log import stamp_output

        stamp_output(given.clock.now)
    # the wrapper works in the attempt's directory: every path it uses must be absolute
    ws = Workspace(absolute(given.settings), clock=given.clock)
    outcome = exec_task(ws, task_id, os.environ, own_process=True)
    if json_out:
        from scheduler.runner.exec import outcome_json

        emit_json(outcome_json(task_id, outcome))
    else:
        message(f"task {task_id}: {outcome.status} ({outcome.detail})")
    if outcome.status == "lost":
        raise typer.Exit(1)
