"""`logs/exec.log`: where the lines of a daemon's supervisor and of `sched exec` wrappers
(a cron tick's, or a daemon's whose supervisor is gone) go. Each line starts with the
time it was written (`TIME task 3: succeeded (exit 0)`): the file outlives every process
that writes to it, and a line without its time could not be set beside the daemon's log
or the events (a recovery drill)."""

from __future__ import annotations

import io
import os
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from eventlog.timeutil import to_text


def exec_log_path(home: Path) -> Path:
    return home / "logs" / "exec.log"


def stamp_output(now: Callable[[], datetime], *, reopen: bool = False) -> None:
    """This process's stdout and stderr, each line stamped with its time by `now`;
    `reopen`: on descriptors 1 and 2 anew (a forked supervisor, whose Python streams
    are the daemon's, which may have been replaced)."""
    if reopen:
        streams = [os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
                   for fd in (1, 2)]
    else:
        streams = [sys.stdout, sys.stderr]
    sys.stdout, sys.stderr = (Stamped(stream, now) for stream in streams)


class Stamped(io.TextIOBase):
    """A text stream that starts each line written to `out` with the time (`now`, as
    event times are written) and a space. Lines written in pieces are stamped once."""

    def __init__(self, out: TextIO, now: Callable[[], datetime]) -> None:
        super().__init__()
        self._out, self._now = out, now
        self._at_start = True
        self._lock = threading.Lock()  # (a supervisor's threads share one stream)

    def write(self, text: str) -> int:
        with self._lock:
            pieces, start = [], 0
            while start < len(text):
                end = text.find("\n", start) + 1 or len(text)
                if self._at_start:
                    pieces.append(to_text(self._now()) + " ")
                pieces.append(text[start:end])
                self._at_start = text[end - 1] == "\n"
                start = end
            self._out.write("".join(pieces))
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._out.encoding
