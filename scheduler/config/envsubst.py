"""`${VAR}` and `${VAR:-default}` in the string values of `sched.toml`, filled from the
environment, so that secrets (a webhook's token, a database password) stay out of the
file. `$${` is a literal `${`; any other `$` is kept as written. As for the `SCHED_*`
variables, an empty variable counts as unset. Pure: the environment is an argument."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from eventlog.errors import BadInput

MASK = "***"
# `$${` (a literal), `${NAME}` or `${NAME:-default}` (no `${` inside the default), or a
# `${` that is neither (refused rather than guessed at)
_TOKEN = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:(?!\$\{)[^}])*))?\}|\$\{")


@dataclass
class Expanded:
    """A value with its variables filled in; `masked` is the same with each value taken
    from the environment shown as `***` (what `config show` may print of a secret)."""

    value: object
    masked: object
    variables: list[str] = field(default_factory=list)  # names filled in, in order, each once


def expand(value: object, environ: Mapping[str, str], where: str) -> Expanded:
    """Fill in every string inside `value` (tables and arrays too); `where` names the
    value in errors (`/srv/sched/sched.toml: webhooks #1 url`)."""
    names: dict[str, None] = {}
    value, masked = _walk(value, environ, where, names)
    return Expanded(value, masked, list(names))


def _walk(value: object, environ: Mapping[str, str], where: str,
          names: dict[str, None]) -> tuple[object, object]:
    if isinstance(value, str):
        return _expand_text(value, environ, where, names)
    if isinstance(value, dict):
        pairs = {key: _walk(item, environ, f"{where} {key}", names) for key, item in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, {k: m for k, (_, m) in pairs.items()}
    if isinstance(value, list):
        items = [_walk(item, environ, f"{where} #{n}", names) for n, item in enumerate(value, start=1)]
        return [v for v, _ in items], [m for _, m in items]
    return value, value


def _expand_text(text: str, environ: Mapping[str, str], where: str,
                 names: dict[str, None]) -> tuple[str, str]:
    if "${" not in text:
        return text, text
    out: list[str] = []
    masked: list[str] = []
    end = 0
    for match in _TOKEN.finditer(text):
        literal = text[end:match.start()]
        out.append(literal)
        masked.append(literal)
        end = match.end()
        name, default = match.group(1), match.group(2)
        if match.group(0) == "$${":
            out.append("${")
            masked.append("${")
        elif name is None:
            raise BadInput(f"{where}: cannot read {_shown(text, match.start())!r}: write ${{NAME}} or "
                           "${NAME:-default} for a variable, $${ for a literal ${")
        elif environ.get(name):
            names[name] = None
            out.append(environ[name])
            masked.append(MASK)
        elif default is not None:
            out.append(default)
            masked.append(default)
        else:
            raise BadInput(f"{where}: environment variable {name} is not set (write ${{{name}:-default}} "
                           "to give a default)")
    out.append(text[end:])
    masked.append(text[end:])
    return "".join(out), "".join(masked)


def _shown(text: str, start: int) -> str:
    """The bad `${...` as written, cut short."""
    piece = text[start:]
    close = piece.find("}")
    piece = piece[: close + 1] if close != -1 else piece
    return piece if len(piece) <= 40 else piece[:37] + "..."
