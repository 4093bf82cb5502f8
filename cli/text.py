"""User text in the views: always data, never rich markup or terminal control.

Every text view passes strings that may come from users (titles, payloads, errors,
agent and queue names, reasons, paths, ...) through `visible`, or builds its output with
`literal`, which does so and never parses markup."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is loaded by the views that print text, not by --json
    from rich.table import Table
    from rich.text import Text

# C0 controls, DEL, C1 controls (U+009B is CSI, U+009D OSC), the bidirectional marks,
# embeddings, overrides and isolates (a title holding U+202E shows the rest of its line,
# the columns after it included, reversed) and lone surrogates, which a damaged database
# can hand back and which no encoder writes. (Zero-width joiners stay: emoji need them.)
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                        "\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(text: str) -> str:
    """`text` with each control character, bidirectional control (`\\u202e`) and lone
    surrogate replaced by its Python backslash escape (`\\x1b`, `\\x07`, `\\n`, `\\t`,
    `\\x9b`, `\\udc80`), so none reaches the terminal raw, a line stays one line and
    nothing reorders the rest of it. A backslash already in the text stays a
    single backslash, so `\\x1b` typed by a user and a real ESC look alike: a view is
    for reading, and `--json` tells them apart."""
    return _INVISIBLE.sub(_escape, text)


def literal(*parts: str | tuple[str, str] | Text) -> Text:
    """A rich Text of `parts` joined, never parsed as markup: a part is text (made
    `visible`), a (text, style) pair for sched's own styling of it, or a Text already
    built this way."""
    from rich.text import Text

    return Text.assemble(*(part if isinstance(part, Text)
                           else visible(part) if isinstance(part, str)
                           else (visible(part[0]), part[1]) for part in parts))


GIVING_WAY_CELLS = 12  # the least room a column that gives way keeps (`(OVERDUE) Imp…`)


def fitted_table(headers: Sequence[str], rows: Sequence[Sequence[str | Text]], *,
                 gives_way: Collection[str], width: int | None = None, title: str | None = None) -> Table:
    """A compact table that fits the terminal (light rules, every cell on one line):
    only the columns `gives_way` (a title, a detail) are cut, with an ellipsis, when the
    terminal is narrow, and they share the room the others leave; the others keep the
    width of their content, so ids, names, states and times stay whole. With `width`
    (the terminal's), a table whose other columns leave less than `GIVING_WAY_CELLS` to
    each that gives way is made wider than that instead: what does not fit on the
    screen is wrapped or cropped by it, never squeezed out of an id or a name."""
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 1, 0, 0), show_edge=False, expand=True)
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ellipsis", ratio=1 if header in gives_way else None)
    for row in rows:
        table.add_row(*row)
    if width is not None:
        def cells(index: int) -> int:  # the widest of the column's header and cells
            column = (row[index] for row in rows)
            return max([cell_len(headers[index]),
                        *(c.cell_len if isinstance(c, Text) else cell_len(c) for c in column)])

        giving = sum(header in gives_way for header in headers)
        needed = (sum(cells(i) for i, header in enumerate(headers) if header not in gives_way)
                  + giving * GIVING_WAY_CELLS + 2 * (len(headers) - 1))  # (two spaces between columns)
        if needed > width:
            table.width = needed
    return table
