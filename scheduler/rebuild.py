"""`sched rebuild`: the projection tables emptied and the whole log folded into them
again, in one write transaction (readers keep seeing the old tables until it commits)."""

from __future__ import annotations

from collections.abc import Callable

from eventlog.errors import LogTampered
from eventlog.store import BrokenChain
from projections.rebuild import refold
from scheduler.workspace import Workspace, all_tables


def rebuild_projections(ws: Workspace, progress: Callable[[int], None] | None = None) -> int:
    """Fold the whole log again into emptied projection tables; the number of events
    folded (`progress` is called with the count so far). A table gone from the
    database (dropped by hand, a damaged file) is made again first; the log's own
    is not (folding an empty one would empty the tables: its absence is an error that
    says to restore a backup). A log whose hash chain is broken is not folded: the
    tables would take in what was altered (they stay as they were; LogTampered, exit 1)."""
    from eventlog.storage.base import create_tables

    try:
        # (tables of another shape, even a newer sched's, are refolded here, once: going
        # back to this version is done on purpose)
        with ws.opened(rebuilding=True).write() as txn:
            create_tables(txn.session.connection(), [t for t in all_tables() if t.name != "events"])  # type: ignore[attr-defined]
            return refold(txn, progress, check_chain=True)
    except BrokenChain as e:
        raise LogTampered(f"{e.message}; nothing rebuilt (the tables would take in an altered log): "
                          "restore a backup that `sched replay --verify` passes") from e
