"""Dry runs of the commands that change state (`cancel`, `requeue`, `agents evict`,
`submit`): the command decides and records exactly as it would, in a write transaction
that is then rolled back, and reports the events it would have appended. So what a dry
run says is what the real run does, as long as nothing else writes in between."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventlog.storage.port import Read
    from projections.recorder import Recorder
    from scheduler.workspace import Workspace


@dataclass
class DryRun:
    """Passed to a use case instead of None: nothing is committed, and `changes` then
    holds the events the command would have appended, in order."""

    changes: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def writing(ws: Workspace, dry_run: DryRun | None, prefetch: Sequence[Read] = ()) -> Iterator[Recorder]:
    """`ws.write()`, or with `dry_run` the same transaction rolled back at the end, its
    appended events noted in `dry_run.changes` first."""
    with ws.write(commit=dry_run is None, prefetch=prefetch) as recorder:
        last = recorder.log.last()
        yield recorder
        if dry_run is not None:
            dry_run.changes = [{"seq": rec.seq, "type": rec.type, "stream_id": rec.stream_id,
                                "data": rec.fields()}
                               for rec in recorder.log.read(after=last.seq if last else 0)]
