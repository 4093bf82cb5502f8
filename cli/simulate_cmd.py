"""`sched simulate`: what-if questions answered from the recorded workload."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cli.common import DbOpt, HomeOpt, JsonOpt, console, emit_json, human_duration, message, place, workspace
from cli.text import literal
from scheduler.whatif.capacity import COUNTS
from scheduler.whatif.figures import sparkline
from scheduler.whatif.simulate import Request, run_simulation

_QUEUE_ROWS = (("succeeded", "succeeded", False), ("dead-lettered", "dead_lettered", False),
               ("cancelled", "cancelled", False), ("doomed", "doomed", False), ("wait p50", "wait_p50", True),
               ("wait p95", "wait_p95", True), ("wait max", "wait_max", True),
               ("run p50", "run_p50", True), ("run p95", "run_p95", True))


def simulate_command(
    since: Annotated[str | None, typer.Option(help="Tasks submitted from this ISO time on.")] = None,
    until: Annotated[str | None, typer.Option(help="Tasks submitted up to this ISO time.")] = None,
    agents: Annotated[Path | None, typer.Option(
        "--agents", help="The what-if's agent control file (the baseline keeps the one in force).",
        show_default=False, metavar="<path>", parser=place("a control file"))] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="A what-if setting, KEY=VALUE: age_boost_seconds=300, "
        "queues.dev.max_attempts=5, tick_interval_seconds=2 (repeatable).", show_default=False)] = None,
    workload: Annotated[Path | None, typer.Option(
        help="Arrivals from this JSONL file instead of the log.", show_default=False)] = None,
    generate: Annotated[list[str] | None, typer.Option(
        help="A synthetic load instead of the log: QUEUE:rate=N/h,run=DURATION[,fail=SHARE]"
        "[,priority=N] (repeatable).", show_default=False)] = None,
    duration: Annotated[str | None, typer.Option(
        help="How long the generated load runs (90s, 5m, 2h, 1d; default 1d).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generator and the backoff jitter.")] = 0,
    interval: Annotated[float | None, typer.Option(
        help="The daemon's tick interval in seconds (sched run --interval), for both sides "
        "(default: setting tick_interval_seconds).", show_default=False)] = None,
    find: Annotated[str | None, typer.Option(
        help="'capacity': the smallest capacity of --queue's agents meeting --target.")] = None,
    queue: Annotated[str | None, typer.Option(help="With --find: the queue to size.")] = None,
    target: Annotated[str | None, typer.Option(
        help="With --find: METRIC<=VALUE, e.g. wait_p95<=5m or dead_lettered<=0.")] = None,
    json_out: JsonOpt = False, db: DbOpt = None, home: HomeOpt = None,
) -> None:
    """Replay the recorded workload (or a synthetic one) under another fleet or policy:
    the baseline and the what-if side by side. Appends nothing."""
    request = Request(since=since, until=until, agents_file=agents, settings=tuple(set_ or ()),
                      workload_file=workload, generate=tuple(generate or ()), duration=duration,
                      seed=seed, interval=interval, find=find, queue=queue, target=target)
    document = run_simulation(workspace(home, db), request, progress=message)  # (stderr, as every message)
    if json_out:
        emit_json(document)
    else:
        _print(document)


def _cell(value: Any, duration: bool) -> str:
    if value is None:
        return "-"
    return human_duration(value) if duration else str(value)


def _change(value: Any, duration: bool) -> str:
    if value is None or value == 0:
        return ""
    sign = "+" if value > 0 else "-"
    return sign + (human_duration(abs(value)) if duration else str(abs(value)))  # (1234567, not 1.23457e+06)


def _print(doc: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    source = {"log": "the log", "workload": "the workload file", "generate": "the generated load"}
    out.print(literal(f"simulated {doc['tasks']} tasks from {source[doc['source']]}, seed {doc['seed']}"))
    fidelity = (doc.get("fidelity") or {}).get("all")
    if fidelity and fidelity["wait_mean_recorded"] is not None:
        off = fidelity["difference_percent"]
        out.print(literal(f"fidelity: mean wait recorded {human_duration(fidelity['wait_mean_recorded'])}, "
                          f"baseline simulated {human_duration(fidelity['wait_mean_simulated'])}"
                          + (f" ({'+' if off > 0 else ''}{off:g}%)" if off is not None else "")))
    sides = [("baseline", doc["baseline"])] + ([("what-if", doc["whatif"])] if doc["whatif"] else [])
    table = Table(box=None, pad_edge=False)
    table.add_column("")
    for name, _ in sides:
        table.add_column(name, justify="right")
    if len(sides) == 2:
        table.add_column("change", justify="right")
    diff = doc["difference"] or {}
    for queue in doc["baseline"]["queues"]:
        table.add_row(literal((f"queue {queue}", "bold")))
        for label, key, duration in _QUEUE_ROWS:
            row = [f"  {label}"] + [_cell(side["queues"].get(queue, {}).get(key), duration)
                                    for _, side in sides]
            if len(sides) == 2:
                row.append(_change(diff.get("queues", {}).get(queue, {}).get(key), duration))
            table.add_row(*row)
    table.add_row(literal(("utilization", "bold")))
    names = sorted({n for _, side in sides for n in side["agents"]})
    for name in names:
        cells = []
        for _, side in sides:
            agent = side["agents"].get(name)
            cells.append("-" if agent is None else f"{agent['utilization']:.0%} of {agent['capacity']}")
        row = [f"  {name}", *cells] + ([""] if len(sides) == 2 else [])
        table.add_row(*row)
    drain = ["never" if side["time_to_drain_seconds"] is None else _cell(side["time_to_drain_seconds"], True)
             for _, side in sides]
    table.add_row("time to drain", *drain,
                  *([_change(diff.get("time_to_drain_seconds"), True)] if len(sides) == 2 else []))
    table.add_row("unfinished", *(str(side["unfinished"]) for _, side in sides),
                  *([_change(diff.get("unfinished"), False)] if len(sides) == 2 else []))
    out.print(table)
    depth = doc["depth"]
    if depth["queues"]:
        out.print()
        out.print(literal(f"queue depth over time (a column per {human_duration(depth['every_seconds'])})"))
        for queue, series in depth["queues"].items():
            top = max((max(s, default=0) for s in series), default=0)
            for (name, _), values in zip(sides, series, strict=False):
                label = f"{queue:>10} {name:<8}" if name == "baseline" else f"{'':>10} {name:<8}"
                out.print(literal(f"{label} {sparkline(values, top)}  max {max(values, default=0)}"))
    search = doc.get("search")
    if search:
        out.print()
        out.print(literal(f"capacity for {search['queue']} to meet {search['target']}: "
                          + (f"{search['capacity']} slots" if search["capacity"] is not None
                             else "not met by any capacity tried")))
        counts = search["metric"] in COUNTS  # else seconds, shown as the target writes them
        for point in search["curve"]:
            value = point["value"]
            shown = "-" if value is None else str(value) if counts else human_duration(value)
            if not counts and value is not None and shown == human_duration(search["threshold"]) \
                    and value != search["threshold"]:  # rounded, it would read as the target itself
                shown = f"{value:.3f}".rstrip("0").rstrip(".") + "s"
            out.print(literal(f"  {point['capacity']:>6} slots: {shown}  {'met' if point['met'] else ''}"))
