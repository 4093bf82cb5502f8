"""Use cases that look at the scheduler: status, metrics, health, explain, and the
audit trail (replay, verify, head)."""

# (no `from __future__ import annotations`: real annotations spare pydantic parsing
# strings when a quick command builds its request class)

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, NamedTuple, Self

from pydantic import model_validator

from eventlog.errors import BadInput
from eventlog.store import Recorded
from scheduler.reads import queries
from scheduler.usecases.base import Request
from scheduler.workspace import Workspace

# metrics, health and explain import their own modules when called: `status` loads
# none of them (issue 13: a quick CLI)


class Document(NamedTuple):
    """A result that is one JSON document already (status, metrics, explain: their
    keys are documented in docs/cli.md)."""

    document: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.document


def status(ws: Workspace, at: str | None = None) -> Document:
    """Queue depths and agent load from the projections; with `at` (a seq number or an
    ISO time), as they stood after that event, replayed."""
    return Document(queries.status(ws, queries.parse_position(at, "--at") if at is not None else None))


def metrics(ws: Workspace, since: str = "1h") -> Document:
    """Throughput, errors, waits, run times and utilization over the window that ends
    now (`since`: 1h, 24h, 7d, 30m...)."""
    from scheduler.reads.metrics import metrics as figures
    from scheduler.reads.metrics import parse_window

    return Document(figures(ws, parse_window(since)))


class HealthReport(NamedTuple):
    """The checks and the overall level (`healthy`, `degraded`, `unhealthy`), with the
    exit code the CLI ends with (0, 1, 2)."""

    document: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return int(self.document["exit_code"])

    def to_json(self) -> dict[str, Any]:
        return self.document


def health(ws: Workspace) -> HealthReport:
    """Run every check (a read: it waits for no writer)."""
    from scheduler.reads.health import health as checks

    return HealthReport(checks(ws))


def explain(ws: Workspace, task_id: int) -> Document:
    """Why a task went to its agent and why not earlier; for a waiting one, why no
    agent takes it now."""
    from scheduler.reads.explain import explain as why

    return Document(why(ws, task_id))


class ReplayRequest(Request):
    """The audit trail (of one task, between two seqs or times; at most `limit` events,
    then the answer names the seq the next page starts at), or `verify` it
    (`expect_head`: SEQ:HASH the head had earlier), or its `head`."""

    where = "replay"
    task: int | None = None
    since: str | None = None  # a seq number or an ISO time (inclusive)
    until: str | None = None
    verify: bool = False
    expect_head: str | None = None
    head: bool = False
    limit: int | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> Self:
        if self.limit is not None and self.limit < 1:
            raise BadInput(f"--limit must be at least 1, not {self.limit}")
        if self.expect_head is not None and not self.verify:
            raise BadInput("--expect-head goes with --verify")
        if self.head and self.verify:
            raise BadInput("give --head or --verify, not both (record the head once verify passed)")
        if self.head or self.verify:
            narrowed = [flag for flag, value in (("--task", self.task), ("--since", self.since),
                                                 ("--until", self.until), ("--limit", self.limit))
                        if value is not None]
            if narrowed:
                raise BadInput(f"--{'head' if self.head else 'verify'} is about the whole log: "
                               f"it takes no {', '.join(narrowed)}")
        return self


class Replayed(NamedTuple):
    """The events, in order, streamed from one read (iterate `documents()` once). The
    CLI prints one document per line; as one document it is `{"events": [...]}`."""

    records: Iterator[Recorded]
    limit: int | None = None  # a page: `to_json` says where the next one starts

    def documents(self) -> Iterator[dict[str, Any]]:
        return (queries.event_dict(rec) for rec in self.records)

    def to_json(self) -> dict[str, Any]:
        if self.limit is None:
            return {"events": list(self.documents())}
        page = list(islice(self.records, self.limit + 1))
        more = len(page) > self.limit
        events = [queries.event_dict(rec) for rec in page[:self.limit]]
        close = getattr(self.records, "close", None)
        if close is not None:
            close()  # (ends the read)
        return {"events": events, "next_since": str(page[self.limit].seq) if more else None}


class Verified(NamedTuple):
    """Whether the hash chain holds and the stored projections match a fresh fold."""

    ok: bool
    events: int
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "problems": self.problems}


class Head(NamedTuple):
    """The last seq and its hash (for a later `expect_head`)."""

    seq: int
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}


def replay(ws: Workspace, request: ReplayRequest,
           progress: Callable[[str, int, int], None] | None = None) -> "Replayed | Verified | Head":
    """The audit trail, its verification (`progress`: see `projections.rebuild.verify`),
    or its head, as the request asks."""
    if request.head:
        return Head(*queries.head(ws))
    if request.verify:
        done = queries.verify_log(ws, queries.parse_head(request.expect_head)
                                  if request.expect_head is not None else None, progress)
        return Verified(done.ok, done.events, list(done.problems))
    lower = queries.parse_position(request.since, "--since") if request.since is not None else None
    upper = queries.parse_position(request.until, "--until") if request.until is not None else None
    if lower is not None and upper is not None and type(lower) is type(upper) and upper < lower:  # type: ignore[operator]
        raise BadInput("--until is before --since: no event lies between")  # (it answered nothing, exit 0)
    return Replayed(queries.replay(ws, request.task, lower, upper), request.limit)
