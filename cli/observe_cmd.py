"""Commands that watch the scheduler: metrics, health, explain."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cli.common import (
    AgentsOpt,
    DbOpt,
    HomeOpt,
    JsonOpt,
    console,
    emit_json,
    human_duration,
    parse_task_id,
    warn_if_fleet_unread,
    workspace,
)
from cli.text import literal
from eventlog.errors import BadInput
from scheduler.usecases import observe

# each use case imports its own module (and each view rich, for the tables): `metrics`
# then loads neither the health checks nor the webhooks they read (issue 13: a quick CLI)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)


def metrics_command(
    since: Annotated[str, typer.Option(help="The window, ending now: 1h, 24h, 7d (or 30m, 2d...).")] = "1h",
    prometheus: Annotated[bool, typer.Option(
        "--prometheus", help="Print the Prometheus text exposition format instead.")] = False,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Throughput, errors, queue wait, start latency, run time and utilization over a window."""
    if prometheus and json_out:
        raise BadInput("give --prometheus or --json, not both (each is a whole format)")
    ws = workspace(home, db)
    report = observe.metrics(ws, since).to_json()
    if prometheus:
        from scheduler.reads.metrics import prometheus_text

        sys.stdout.write(prometheus_text(ws, report))
        return
    if json_out:
        emit_json(report)
        return
    out = console()
    out.print(literal(f"window: {report['window']['start']} .. {report['window']['end']} ({since})"))
    from cli.text import fitted_table

    rows: list[tuple[str, dict[str, Any]]] = [("all", report["overall"])]
    rows += [(f"queue {q}", f) for q, f in report["queues"].items()]
    rows += [(f"agent {a}", f) for a, f in report["agents"].items()]
    counts, waits, runs = [], [], []
    for label, f in rows:
        wait, run, per_hour = f["queue_wait_seconds"], f["run_seconds"], f["throughput_per_hour"]
        start, name = f["start_latency_seconds"], literal(label)
        counts.append([name, str(f["completed"]), str(f["failed"]), str(f["dead_lettered"]),
                       "-" if per_hour is None else f"{per_hour:.1f}", _percent(f["error_rate"]),
                       _percent(f["utilization"])])
        waits.append([name, human_duration(wait["p50"]), human_duration(wait["p95"]),
                      human_duration(start["p50"]), human_duration(start["p95"])])
        runs.append([name, human_duration(run["p50"]), human_duration(run["p95"]),
                     human_duration(f["cpu_seconds"]) if f["measured_runs"] else "-",
                     _bytes(f["peak_rss_bytes"])])
    # a line a scope, its figures whole at 80 columns: only a long name is cut
    for title, headers, table_rows in (
            ("counts", ("done", "failed", "dead", "per hour", "errors", "utilization"), counts),
            ("waits", ("wait p50", "wait p95", "start p50", "start p95"), waits),
            ("runs and resources", ("run p50", "run p95", "cpu", "peak mem"), runs)):
        out.print(fitted_table(["scope", *headers], table_rows, gives_way=("scope",), width=out.width,
                               title=title))
    if report["hourly"]:
        hours = [[hour[:13] + ":00Z", str(c["completed"]), str(c["failed"]), str(c["dead_lettered"])]
                 for hour, c in report["hourly"].items()]
        out.print(fitted_table(["hour", "completed", "failed", "dead-lettered"], hours, gives_way=("hour",),
                               width=out.width, title="per hour"))


HEALTH_STYLES = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}


def health_command(json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
                   agents: AgentsOpt = None) -> None:
    """Check ticks, backlog, error rate, progress, leases, the control file and the
    database; exit 0 healthy, 1 degraded, 2 unhealthy."""
    done = observe.health(workspace(home, db, agents))
    report = done.to_json()
    if json_out:
        emit_json(report)
    else:
        out = console()
        for check in report["checks"]:
            style = HEALTH_STYLES[check["status"]]
            out.print(literal((f"{check['status']:>9}", style), f"  {check['name']:<15} {check['saw']}"))
            out.print(literal(f"{'':>11}  {'':<15} ", (f"threshold: {check['threshold']}", "dim")))
        style = HEALTH_STYLES[report["status"]]
        out.print(literal("overall: ", (report["status"], style)))
    raise typer.Exit(done.exit_code)


def explain_command(
    task_id: Annotated[int, typer.Argument(help="Task id.", parser=parse_task_id)],
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None, agents: AgentsOpt = None,
) -> None:
    """Why a task went to its agent, and why not earlier, from the decisions in the log;
    for a task still waiting, which agents cannot take it now and why."""
    ws = workspace(home, db, agents)
    doc = observe.explain(ws, task_id).to_json()
    warn_if_fleet_unread(ws)
    if json_out:
        emit_json(doc)
        return
    out = console()
    out.print(literal((f"task {doc['task_id']}", "bold"), f" (queue {doc['queue']})"))
    for item in doc["timeline"]:
        out.print(literal(f"  {item['seq']:>6}  {item['at']}  {item['what']}"))
    for a in doc["assignments"]:
        out.print()
        out.print(literal((f"attempt {a['attempt']} -> {a['agent']}", "bold"),
                          f" at {a['at']} (seq {a['seq']})"))
        out.print(literal(f"  why {a['agent']}: {a['why_this_agent']}"))
        decision = a["decision"]
        if decision:
            shown = ", ".join(f"{c['agent']} ({c['free']} free, load {c['load']}, weight "
                              f"{c.get('weight', 1):g}, record {c['success_rate']:.2f})"
                              for c in decision["candidates"])
            more = decision["candidates_total"] - len(decision["candidates"])
            out.print(literal(f"  candidates: {shown}" + (f" and {more} more" if more > 0 else "")))
            for p in decision["passed_over"]:
                out.print(literal(f"  passed over {p['agent']}: {p['why']}"))
            more = decision["passed_over_total"] - len(decision["passed_over"])
            if more > 0:
                out.print(f"  passed over {more} more")
            out.print(f"  policy {decision['policy_hash']}, control file {decision['config_hash'][:16]}")
        for reason in a["why_not_earlier"]:
            out.print(literal(f"  not earlier: {reason}"))
    if not doc["assignments"]:  # (`now` only for a task still waiting: one that ended never will be)
        out.print("never assigned yet" if doc["now"] is not None else "never assigned")
    now = doc["now"]
    if now is not None:
        out.print()
        needs = f", requires {', '.join(now['requires'])}" if now["requires"] else ""
        out.print(literal((f"now: {now['status']}", "bold"), needs))
        if now["unplaceable"]:
            out.print(literal(("  can never be taken: ", "red"), now["unplaceable"]))
        for held in now["held"]:  # (then no agent takes it, whatever they could)
            out.print(literal(("  held: ", "yellow"), held))
        for a in now["agents"]:
            hours = f"; hours {'; '.join(a['hours'])}" if a["hours"] else ""
            out.print(literal(f"  {a['agent']} (weight {a['weight']:g}{hours}): "
                              f"{a['why_not'] or 'could take it'}"))
