"""Above the storage port there is no SQL dialect: only `eventlog/storage/` (the port
and its adapters) may name an engine, its driver or its syntax. Everything else writes
statements with SQLAlchemy's expression language, which each adapter compiles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("eventlog", "projections", "scheduler", "cli", "server")
SEAM = ROOT / "eventlog" / "storage"

FORBIDDEN_MODULES = ("sqlite3", "psycopg", "psycopg2", "sqlalchemy.dialects")
FORBIDDEN_NAMES = {  # what only an adapter may touch
    "exec_driver_sql": "raw SQL on the connection",
    "driver_connection": "the raw driver connection",
    "dbapi_connection": "the raw driver connection",
}
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|PRAGMA|BEGIN)\b")
PLACEHOLDER = re.compile(r"(=|\(|,)\s*(\?|%s)")  # ?-style or %s-style parameters
INDEX_HINT = re.compile(r"^\+\w+(\.\w+)?$")  # SQLite's `+column`


def dialect_found(source: str) -> list[str]:
    """What in `source` belongs below the port (empty: nothing)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith(FORBIDDEN_MODULES)]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(FORBIDDEN_MODULES):
                found.append(f"from {node.module} import ...")
            if node.module == "sqlalchemy" and any(a.name == "text" for a in node.names):
                found.append("sqlalchemy.text (a raw SQL string)")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_NAMES:
            found.append(f".{node.attr}: {FORBIDDEN_NAMES[node.attr]}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if "PRAGMA" in text:
                found.append(f"a PRAGMA: {text[:40]!r}")
            elif SQL.search(text) and PLACEHOLDER.search(text):
                found.append(f"a driver placeholder in SQL: {text[:40]!r}")
            elif INDEX_HINT.match(text):
                found.append(f"an index hint: {text!r}")
    return found


def sources_above_the_port() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
                  if SEAM not in p.parents)


def test_no_module_above_the_port_speaks_a_dialect():
    problems = {str(p.relative_to(ROOT)): found for p in sources_above_the_port()
                if (found := dialect_found(p.read_text()))}
    assert problems == {}


def test_the_check_sees_each_kind_of_dialect():
    cases = {
        "import sqlite3": "import sqlite3",
        "from sqlalchemy.dialects.sqlite import insert": "from sqlalchemy.dialects.sqlite",
        "from sqlalchemy import text": "sqlalchemy.text",
        "c.exec_driver_sql('x')": ".exec_driver_sql",
        "s.connection().connection.driver_connection": ".driver_connection",
        "q = 'PRAGMA quick_check'": "a PRAGMA",
        "q = 'SELECT a FROM t WHERE b = ?'": "a driver placeholder",
        "q = 'INSERT INTO t (a) VALUES (%s)'": "a driver placeholder",
        "literal_column('+tasks.status')": "an index hint",
    }
    for source, expected in cases.items():
        assert any(expected in f for f in dialect_found(source)), source
    assert dialect_found("from sqlalchemy import select\nselect(T.a).where(T.b == 1)") == []


def test_the_walk_covers_every_layer_above_the_port():
    walked = {p.relative_to(ROOT).parts[0] for p in sources_above_the_port()}
    assert walked == set(PACKAGES)
    assert not any(SEAM in p.parents for p in sources_above_the_port())
    assert (SEAM / "sqlite.py").is_file() and (SEAM / "postgres.py").is_file()
