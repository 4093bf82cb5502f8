"""The functional core does no I/O: its modules import only the standard library,
pydantic and other core modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
CORE = ["projections/fold.py", "projections/views.py", "projections/apply.py",
        "projections/figures.py", "scheduler/decisions/plan.py", "scheduler/decisions/ranking.py",
        "scheduler/decisions/fit.py", "scheduler/whatif/sketch.py",
        "scheduler/decisions/hours.py", "scheduler/decisions/policy.py", "eventlog/events.py",
        "eventlog/store.py", "eventlog/errors.py", "eventlog/timeutil.py", "eventlog/frozen.py"]
ALLOWED_THIRD_PARTY = {"pydantic"}
CORE_MODULES = {p.removesuffix(".py").replace("/", ".") for p in CORE}
FORBIDDEN_STDLIB = {"os", "sqlite3", "subprocess", "socket", "random", "time", "uuid", "secrets"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_modules_import_no_io():
    for rel in CORE:
        for name in imported_modules(ROOT / rel):
            top = name.split(".")[0]
            if name in CORE_MODULES or name == "__future__":
                continue
            assert top not in FORBIDDEN_STDLIB, f"{rel} imports {name}"
            assert top in ALLOWED_THIRD_PARTY or top in _stdlib(), f"{rel} imports {name}"


# the layers, lowest first; the front ends (the CLI, the HTTP API) share the top rank
LAYERS = [("eventlog",), ("projections",), ("scheduler",), ("cli", "server")]


def rank(package: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if package in layer), None)


def test_layers_point_down_only():
    for layer in (package for front in LAYERS for package in front):
        for path in (ROOT / layer).rglob("*.py"):
            for name in imported_modules(path):
                top = name.split(".")[0]
                if rank(top) is not None:
                    assert rank(top) <= rank(layer), f"{path.relative_to(ROOT)} imports {name}"


def test_the_http_api_does_not_lean_on_the_cli():
    """server/ calls what the CLI calls (scheduler/), never the CLI's own formatting."""
    for path in (ROOT / "server").rglob("*.py"):
        for name in imported_modules(path):
            assert name.split(".")[0] != "cli", f"{path.relative_to(ROOT)} imports {name}"


def test_the_core_never_reads_the_clock():
    for rel in CORE:
        text = (ROOT / rel).read_text()
        assert ".now(" not in text and "utcnow" not in text, rel


def _stdlib() -> set[str]:
    import sys

    return set(sys.stdlib_module_names)
