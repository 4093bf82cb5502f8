"""The daemon's log: one line for each thing worth saying, written for people (`text`,
the default) or for a log pipeline (`json`: one JSON object per line with `time`,
`level`, `event`, `host` and `message`, plus `task_id` and `seq` on the lines about one
task or one event, so a task's lines can be followed by its id)."""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Literal

from eventlog.store import Recorded
from eventlog.timeutil import to_text

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")


class DaemonLog:
    """Where the daemon says what it does. `write` takes one line (without its newline);
    `now` stamps JSON lines. Safe to call from the daemon's job threads."""

    def __init__(self, write: Callable[[str], None], log_format: LogFormat = "text",
                 host: str = "", now: Callable[[], datetime] | None = None) -> None:
        if log_format not in LOG_FORMATS:
            raise ValueError(f"log format {log_format!r}")
        self._write, self.log_format, self.host = write, log_format, host
        self._now = now or _utc_now
        self._lock = threading.Lock()

    @property
    def structured(self) -> bool:
        return self.log_format == "json"

    def __call__(self, text: str, *, event: str = "daemon", level: str = "info",
                 task_id: int | None = None, seq: int | None = None, **fields: object) -> None:
        """One line: `text` as it is, or as JSON with the other arguments."""
        if not self.structured:
            line = text
        else:
            record: dict[str, object] = {"time": to_text(self._now()), "level": level, "event": event,
                                         "host": self.host}
            if task_id is not None:
                record["task_id"] = task_id
            if seq is not None:
                record["seq"] = seq
            record["message"] = text
            record.update(fields)
            line = json.dumps(record, default=str, ensure_ascii=False)
        with self._lock:
            self._write(line)

    def events(self, records: Iterable[Recorded]) -> None:
        """JSON only: a line for each event the daemon appended, with its seq and, for a
        task's event, the task id (text keeps one summary line per tick)."""
        if not self.structured:
            return
        for rec in records:
            data = rec.fields()
            task_id, agent = data.get("task_id"), data.get("agent")
            text = rec.type + (f" task {task_id}" if task_id is not None else "") + (
                f" agent {agent}" if isinstance(agent, str) and agent else "")
            extra = {"agent": agent} if isinstance(agent, str) and agent else {}
            self(text, event=rec.type, task_id=task_id if isinstance(task_id, int) else None,
                 seq=rec.seq, **extra)

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """JSON only: while inside, Python's own log records and warnings (APScheduler's
        errors, a library's warning) become lines of this log too, so that every line
        on stderr is one JSON object."""
        if not self.structured:
            yield
            return
        handler = _Forward(self)
        root = logging.getLogger()
        root.addHandler(handler)
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)
            root.removeHandler(handler)


class _Forward(logging.Handler):
    def __init__(self, log: DaemonLog) -> None:
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, object] = {"logger": record.name}
            if record.exc_info:
                fields["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            self.log(record.getMessage(), event="python.log", level=record.levelname.lower(), **fields)
        except Exception:  # a log line must never take the daemon down
            self.handleError(record)


def _utc_now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)
