"""Read-side answers for the CLI: status, task lists, one task, the audit trail."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from eventlog.errors import BadInput, ControlFileError, DatabaseFault, NotFound
from eventlog.store import GENESIS_HASH, Recorded
from eventlog.timeutil import from_text, to_text
from eventlog.values import INT64_MAX, digits_value
from projections.sql import ALL_AGENTS, COUNTS, META, SqlProjection
from projections.views import (
    FINAL_STATUSES,
    VISIBLE_STATUSES,
    WAITING_STATUSES,
    AgentView,
    TaskView,
)
from scheduler.decisions.fit import never_fits
from scheduler.decisions.plan import effective_priority, most_gained, pick_order, waited_seconds
from scheduler.gates import closed_gates, gates_now
from scheduler.planning import ordering_policy
from scheduler.workspace import Workspace, describe_pause

if TYPE_CHECKING:
    from projections.rebuild import Verification

# what a status reads, asked for with its BEGIN (PostgreSQL: one round trip for all)
STATUS_READS = (COUNTS, ALL_AGENTS, META)

# what only some answers need (folds, verify, the estimates) is imported by them:
# `status` and `tasks` start quickly (issue 13: a quick CLI)


TASK_FIELDS = tuple(f.name for f in fields(TaskView))


def task_dict(task: TaskView) -> dict[str, Any]:
    """A task's JSON document (without `payload` when the view did not load it)."""
    values = {name: getattr(task, name) for name in TASK_FIELDS}  # (`asdict` copies deeply: 15 x slower)
    if task.payload is None:
        del values["payload"]
    else:
        values["payload"] = json.loads(task.payload)
    for name in ("excluded", "waiting_on", "blocks", "requires"):
        values[name] = list(getattr(task, name))
    values.pop("token_hash")
    return values


def result_of(events: list[Recorded]) -> Any:
    """The result the task's last successful attempt reported (None if none did)."""
    for rec in reversed(events):
        if rec.type == "TaskSucceeded":
            return rec.fields().get("result")
    return None


def agent_dict(agent: AgentView) -> dict[str, Any]:
    return {"type": agent.type, "capacity": agent.capacity, "enabled": agent.enabled,
            "configured": agent.configured, "assigned": agent.assigned,
            "running": agent.running, "free": agent.free, "out_of_service": agent.out_of_service,
            "capabilities": list(agent.capabilities), "weight": agent.weight, "hours": list(agent.hours)}


def event_dict(rec: Recorded) -> dict[str, Any]:
    return {"seq": rec.seq, "type": rec.type, "stream_id": rec.stream_id,
            "schema_version": rec.schema_version, "recorded_at": rec.recorded_at,
            "data": rec.fields(), "hash": rec.hash}


def current_fleet(ws: Workspace, views: SqlProjection) -> list[AgentView]:
    """The agents as the projections have them, updated with the control file as it is
    now when that differs from the one last recorded (what the next tick will record:
    so the fleet shows before the first tick, and right after an edit). An invalid
    control file leaves the recorded fleet."""
    agents = views.all_agents()
    try:
        control = ws.registry().control
    except ControlFileError:
        return agents
    if views.meta().get("config_hash") == control.content_hash:
        return agents
    from projections.fold import evolve_fleet

    return sorted(evolve_fleet(agents, control.configured_event()), key=lambda a: a.name)


def check_known_queue(queue: str, fleet: Sequence[AgentView], views: SqlProjection) -> None:
    """BadInput for a queue no agent serves (`fleet`: `current_fleet` and the recorded
    agents) and no task was ever in: a misspelt name is said, never read as an empty
    queue."""
    queues = {a.type for a in fleet} | {q for q, _ in views.counts()}
    if queue not in queues:
        raise BadInput(f"unknown queue {queue!r} (known queues: {', '.join(sorted(queues)) or 'none'})")


def status(ws: Workspace, at: int | str | None = None) -> dict[str, Any]:
    """Queue depths and agent load, from the projection tables only; or, with `at` (a
    seq, or fixed-width UTC text), as they stood after that event, folded in memory
    from the log (the stop file, a present-day fact, is then not consulted)."""
    if at is None:
        with ws.read(prefetch=STATUS_READS) as (_log, views):
            return status_of(ws, views.counts(), current_fleet(ws, views), views.meta(),
                             gates=gates_now(views))
    from projections.apply import fold

    if isinstance(at, int):
        with ws.read() as (log, _views):
            head = log.last()
        if at > (head.seq if head is not None else 0):
            raise BadInput(f"--at {at}: the log ends at seq {head.seq if head is not None else 0}")
    past = fold(replay(ws, until=at))
    return status_of(ws, past.counts, sorted(past.agents.values(), key=lambda a: a.name),
                     past.meta, present=False)


def status_of(ws: Workspace, counts: dict[tuple[str, str], int], agents: list[AgentView],
              meta: dict[str, str], present: bool = True,
              gates: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The status document of some projected state (`present`: consult the stop file;
    `gates`: the closed gates with their last checks, else as the projection has them)."""
    last_seq = int(meta.get("last_seq", 0))
    queues: dict[str, dict[str, int]] = {}
    for name in sorted({q for q, _ in counts} | {a.type for a in agents if a.configured}):
        queues[name] = {s: counts.get((name, s), 0) for s in VISIBLE_STATUSES}
    shown = [a for a in agents if a.configured or a.load]
    paused = describe_pause(meta.get("paused"), ws.stop_file if present else None)
    return {"queues": queues, "agents": {a.name: agent_dict(a) for a in shown},
            "last_seq": last_seq, "paused": paused,
            "gates_closed": gates if gates is not None else closed_gates(meta)}


def list_tasks(ws: Workspace, queue: str | None = None, status_: str | None = None,
               limit: int | None = None, title: str | None = None) -> list[TaskView]:
    """Tasks in the order they will be picked: effective priority (with ageing), then
    how many tasks run after them, then submission. With `title`, only those whose
    title holds that text (ASCII letters in any case), selected by the read itself.
    With `limit`, the first `limit` in that order: the read takes the best by base
    priority, and reads further while a task not read yet could have gained enough
    points (by waiting, or as its due time nears) to rank among them."""
    if status_ is not None and status_ not in VISIBLE_STATUSES:
        raise BadInput(f"unknown status {status_!r} (one of: {', '.join(VISIBLE_STATUSES)})")
    now, policy = ws.clock.now(), ordering_policy(ws.settings)
    reach, gained = limit, None
    with ws.read() as (_log, views):
        while True:  # the best `limit` by base priority, and more while a boost could reorder them
            found = views.tasks(queue=queue, status=status_, limit=reach, title=title)
            ranked = sorted(found, key=lambda t: pick_order(t, now, policy))
            if limit is None or reach is None or len(found) < reach:
                return ranked[:limit]
            if gained is None:
                gained = most_gained(now, policy, queue, *views.listing_bounds(queue, status_, title))
            # a task not read comes after `found[-1]` by base priority, then by (unblocks,
            # id): it ranks after the last one kept if it cannot reach its points, or
            # can only tie them from the same base and so loses the tie
            last, kept = found[-1], ranked[limit - 1]
            reached, points = last.priority + gained, effective_priority(kept, now, policy)
            if reached < points or (reached == points and _tie_order(kept) <= _tie_order(last)):
                return ranked[:limit]
            reach *= 2


def _tie_order(task: TaskView) -> tuple[int, int]:
    """How `pick_order` orders tasks of the same points (the read's order for the same
    base priority: more unblocked first, then by id)."""
    return -len(task.blocks), task.submitted_seq


def task_listing(ws: Workspace, queue: str | None = None, statuses: Sequence[str] | None = None,
                 limit: int | None = None, agent: str | None = None,
                 unassigned: bool = False,
                 title: str | None = None) -> tuple[list[TaskView], dict[int, dict[str, Any]]]:
    """Tasks in pick order with their figures (`pick_figures`): of one queue or all, of
    some statuses or all; with `agent`, only those it holds or that are directed at it;
    with `unassigned`, only those directed at no agent (open to any of their queue's);
    with `title`, only those whose title holds that text (ASCII letters in any case: the
    one title search, of `sched tasks --title`, `GET /api/v1/tasks?title=` and the
    dashboard's task list).
    The figures (places in the queues, estimates) are worked out over the listing
    before those filters, so a filtered task keeps the place it has in its queue;
    `limit` then keeps the first ones (without the agent filters it limits the read
    itself, and the estimates count only the tasks it keeps). The title is a term of
    the read (only matching rows are read, never the whole history); a matching task
    that is queued is placed among all the queued tasks of its queue, read beside it
    (at most the queue's `max_queue_depth` of them)."""
    if agent is not None and unassigned:
        raise BadInput("give --agent or --unassigned, not both")
    if agent is not None or queue is not None:
        with ws.read() as (_log, views):
            fleet = current_fleet(ws, views) + views.all_agents()
            if queue is not None:
                check_known_queue(queue, fleet, views)
        if agent is not None and agent not in {a.name for a in fleet}:
            raise BadInput(f"unknown agent {agent!r}")
    filtered = agent is not None or unassigned
    cut = None if filtered else limit
    now, policy = ws.clock.now(), ordering_policy(ws.settings)
    if statuses is None:
        found = list_tasks(ws, queue, None, cut, title)
    else:
        found = sorted((t for s in statuses for t in list_tasks(ws, queue, s, cut, title)),
                       key=lambda t: pick_order(t, now, policy))[:cut]
    if title is None:
        figures = pick_figures(ws, found)
    else:  # the queued tasks of the matches' queues too: a match keeps its place among them
        beside = {t.task_id: t for q in sorted({t.queue for t in found if t.status == "queued"})
                  for t in list_tasks(ws, q, "queued")}
        beside.update((t.task_id, t) for t in found)
        figures = pick_figures(ws, sorted(beside.values(), key=lambda t: pick_order(t, now, policy)))
    if agent is not None:
        found = [t for t in found if agent in (t.agent, t.assignee)]
    elif unassigned:
        found = [t for t in found if t.assignee is None]
    return found[:limit] if filtered else found, figures


THROUGHPUT_WINDOW_SECONDS = 3600.0
# the ends that free a slot for the next task in line (an assignment taken back unstarted
# frees one too, but its task goes back to the queue and needs a slot again: it moves
# nobody forward, and a fleet thrashing on a broken agent would look quick)
SLOT_FREEING = ("succeeded", "failed", "expired", "cancelled")


RUN_TIME_WINDOW_SECONDS = 24 * 3600.0


def estimated_starts(ws: Workspace, tasks: list[TaskView],
                     fleet: list[AgentView] | None = None) -> dict[int, str | None]:
    """When each queued task may start (`estimates.estimate_starts`): the rate of a
    queue is how often its attempts ended over the last hour (each frees a slot);
    `fleet`: the agents, if the caller has them already."""
    from scheduler.decisions.estimates import estimate_starts

    now = ws.clock.now()
    queues = sorted({t.queue for t in tasks if t.status == "queued"})
    with ws.read() as (_log, views):
        meta, agents = views.meta(), fleet if fleet is not None else current_fleet(ws, views)
        rates = {q: views.count_outcomes(now.timestamp() - THROUGHPUT_WINDOW_SECONDS, SLOT_FREEING, q)
                 / THROUGHPUT_WINDOW_SECONDS for q in queues}
    stopped = describe_pause(meta.get("paused"), ws.stop_file) is not None
    return estimate_starts(tasks, agents, rates, now, stopped, closed_gates(meta))


def recorded_run_seconds(ws: Workspace) -> dict[str, float]:
    """Each queue's median run time over its attempts that succeeded in the last
    `RUN_TIME_WINDOW_SECONDS` (24 h)."""
    from scheduler.decisions.estimates import run_seconds_by_queue

    since = ws.clock.now().timestamp() - RUN_TIME_WINDOW_SECONDS
    with ws.read() as (_log, views):
        return run_seconds_by_queue(views.outcomes(since, ("succeeded",)))


def pick_figures(ws: Workspace, tasks: list[TaskView]) -> dict[int, dict[str, Any]]:
    """Per task (in pick order): its place in its queue, what decides it (effective
    priority and time waited), when it may start (`estimated_starts`) and finish
    (`estimates.estimate_completions`), whether it is overdue, and why no agent of the
    control file can ever take it (`never_fits`; None for a task that is final or held,
    or that some agent can take)."""
    from scheduler.decisions.estimates import estimate_completions, queue_positions

    now, policy = ws.clock.now(), ordering_policy(ws.settings)
    with ws.read() as (_log, views):
        fleet = current_fleet(ws, views)
    starts = estimated_starts(ws, tasks, fleet)
    done = estimate_completions(tasks, starts, recorded_run_seconds(ws), now)
    positions = queue_positions(tasks, to_text(now))
    return {t.task_id: {"position": positions[t.task_id],
                        "effective_priority": effective_priority(t, now, policy),
                        "waited_seconds": round(waited_seconds(t, now), 3),
                        "estimated_start": starts[t.task_id],
                        "estimated_completion": done[t.task_id],
                        "overdue": is_overdue(t, to_text(now)),
                        "unplaceable": never_fits(fleet, t) if t.status in WAITING_STATUSES else None}
            for t in tasks}


def is_overdue(task: TaskView, now_text: str) -> bool:
    """Whether a task is still open (not succeeded, dead or cancelled) past its due time."""
    return task.due is not None and task.status not in FINAL_STATUSES and task.due <= now_text


def small_payloads(ws: Workspace, tasks: list[TaskView], limit: int) -> dict[int, str]:
    """The payload JSON of the listed tasks whose payload is at most `limit` bytes (the
    big ones are not read)."""
    small = [t.task_id for t in tasks if t.payload_bytes <= limit]
    with ws.read() as (_log, views):
        return views.payloads(small)


def show(ws: Workspace, task_id: int) -> tuple[TaskView, list[Recorded]]:
    with ws.read() as (log, views):
        task = views.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        return task, log.read_stream(f"task-{task_id}")


def parse_position(text: str, flag: str) -> int | str:
    """A `--since`/`--until` bound: a seq number, or an ISO time as fixed-width text."""
    if text.isascii() and text.isdigit():
        if (seq := digits_value(text)) > INT64_MAX:
            raise BadInput(f"{flag}: {text[:40]} is not a seq (at most 2**63 - 1)")
        return seq
    try:
        return to_text(from_text(text))
    except ValueError as e:
        raise BadInput(f"{flag}: expected a seq number or an ISO time with offset (within the years "
                       f"1 to 9999 in UTC), got {text!r}") from e


def _within(rec: Recorded, since: int | str | None, until: int | str | None) -> bool:
    for bound, after in ((since, True), (until, False)):
        if bound is None:
            continue
        value: int | str = rec.seq if isinstance(bound, int) else rec.recorded_at
        if (after and value < bound) or (not after and value > bound):  # type: ignore[operator]
            return False
    return True


REPLAY_PAGE = 1_000  # events a replay reads in one short read


def replay(ws: Workspace, task_id: int | None = None, since: int | str | None = None,
           until: int | str | None = None) -> Iterator[Recorded]:
    """The audit trail, in order, filtered; streamed from the log a page at a time, each
    page in a read of its own: a reader that took its time (`replay --json | less`) held
    one read open, and with it SQLite's checkpoints (the WAL grew) or a PostgreSQL
    snapshot. The log only grows at its end, so the pages join into one prefix of it."""
    if task_id is not None:
        with ws.read() as (log, _views):  # (the log alone: a database read as it is may hold
            records = log.read_stream(f"task-{task_id}")  # tables of another shape)
        if not records:
            raise NotFound(f"no task {task_id}")
        yield from (rec for rec in records if _within(rec, since, until))
        return
    after = since - 1 if isinstance(since, int) else 0
    while True:
        with ws.read() as (log, _views):
            page = list(log.read(after=after, limit=REPLAY_PAGE))
        for rec in page:
            if isinstance(until, int) and rec.seq > until:
                return  # (a time is no such bound: the times of a log written before 2026-12-02,
            if _within(rec, since, until):  # when they were taken outside the writers' lock,
                yield rec  # may run backwards, and an event past `until` be followed by one within)
        if len(page) < REPLAY_PAGE:
            return
        after = page[-1].seq


def verify_log(ws: Workspace, expect_head: tuple[int, str] | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> Verification:
    from projections.rebuild import verify

    try:
        with ws.read() as (log, views):
            result = verify(log, views, expect_head=expect_head, progress=progress)
    except DatabaseFault as e:  # a table that cannot be read (a damaged page, a table dropped):
        result = verify_chain(ws, expect_head, e)  # what of the log can be told, is
    try:
        engine = ws.db.integrity_check()  # (pages no read above touched: an index, free pages)
    except DatabaseFault as e:  # (it too can stop at a damaged page: said once)
        if not any(e.message in problem for problem in result.problems):
            result.problems.append(e.message)
        return result
    if engine != "ok":
        result.problems.append(f"the engine's integrity check: {engine}: the database file is damaged "
                               "(docs/operations.md, A damaged database file)")
    return result


def verify_chain(ws: Workspace, expect_head: tuple[int, str] | None, fault: DatabaseFault) -> Verification:
    """The log's own check when the projections cannot be read (`fault`): whether its
    hash chain is intact says which way a damaged file is mended (docs/operations.md, A
    damaged database file). Raises `fault` again when the log cannot be read either."""
    from projections.rebuild import Verification, chain_problems

    try:
        with ws.read() as (log, _views):
            total, problems = log.last_position(), chain_problems(log, expect_head)
    except DatabaseFault:
        raise fault from None
    return Verification(events=total, problems=[
        f"the projections cannot be read: {fault.message}",
        *(problems or [f"the log's hash chain is intact ({total} events): `sched migrate` can copy it into "
                       "a new file (docs/operations.md, A damaged database file, step 2)"])])


def head(ws: Workspace) -> tuple[int, str]:
    """The last seq and its hash: record them somewhere else, and `--expect-head` can
    later tell whether the log lost its tail."""
    with ws.read() as (log, _views):
        return log.head()


def parse_head(text: str) -> tuple[int, str]:
    """`SEQ:HASH` as printed by `replay --head` (`0:000...0` for an empty log); the hash's
    letters in either case (a collector may have stored it upper-cased)."""
    seq, _, digest = text.partition(":")
    digest = digest.lower()
    if not (seq.isascii() and seq.isdigit() and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)
            and (digits_value(seq) >= 1 or digest == GENESIS_HASH)):
        raise BadInput(f"--expect-head: expected SEQ:HASH (a seq and 64 hex digits, as "
                       f"`sched replay --head` prints), got {text!r}")
    if digits_value(seq) > INT64_MAX:
        raise BadInput(f"--expect-head: {seq[:40]} is not a seq (at most 2**63 - 1)")
    return digits_value(seq), digest
