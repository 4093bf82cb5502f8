"""The documentation stays true to the code: the example control files load cleanly,
every command has help, the README's Quickstart is runnable, the docs' sched.toml
examples are valid settings, and the docs name only commands, events and settings that
exist (and name all of them, with the control file's fields, the exec wrapper's
placeholders and variables, the tick's JSON keys, the per-queue policy keys, the task
statuses and the failure and requeue reasons)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

import cli.main
from cli.main import main
from eventlog.events import EVENT_TYPES, FailureReason, RequeueReason
from projections.views import STATUSES
from scheduler.config.registry import AgentSpec, load_control_file
from scheduler.config.settings import ENV_PREFIX, Settings, load_settings
from scheduler.decisions.policy import QueuePolicy
from scheduler.runner.exec import PLACEHOLDERS
from scheduler.tick import TickReport

ROOT = Path(__file__).parents[3]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CLI_DOC = DOCS / "cli.md"
AGENT_CONTROL_DOC = DOCS / "agent-control.md"
EXAMPLES = sorted((ROOT / "examples" / "agent-control").glob("*.json"))
EXAMPLE_AGENTS = sorted((ROOT / "examples" / "agents").glob("*.py"))
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
TOML_FENCE = re.compile(r"^```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# `sched X [Y]` where a command starts: at the start of a line or code span, after a shell
# separator or `do`, behind an optional `$ ` prompt and VAR=value assignments.
SCHED_CALL = re.compile(r"(?:^|[;&|(]\s*|\bdo\s+)(?:\$\s+)?(?:[A-Z_]+=\S*\s+)*"
                        r"sched ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", re.MULTILINE)


def command_paths(command: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """Every command and group below `command`, with its path of names."""
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield (*path, name), sub
        yield from command_paths(sub, (*path, name))


ROOT_COMMAND = typer.main.get_command(cli.main.app)
COMMANDS = dict(command_paths(ROOT_COMMAND))


def section(text: str, heading: str) -> str:
    """The body of the markdown section titled exactly `heading`, up to the next heading
    of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    match = re.search(rf"^{re.escape(heading)}[ \t]*$", text, re.MULTILINE)
    assert match, f"no section {heading!r}"
    rest = text[match.end():]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: end.start() if end else len(rest)]


def sched_mentions(text: str) -> set[tuple[str, ...]]:
    """The `sched X [Y]` calls in the code blocks and code spans of a markdown text
    (headings of docs/cli.md are code spans too)."""
    pieces = FENCE.findall(text) + CODE_SPAN.findall(FENCE.sub("", text))
    return {tuple(m.split()) for piece in pieces for m in SCHED_CALL.findall(piece)}


def names_a_command(words: tuple[str, ...]) -> bool:
    """`sched X` names a command; `sched X Y` with X a group also needs Y to be one of its
    subcommands (after a plain command, Y is an argument)."""
    top = COMMANDS.get(words[:1])
    if top is None:
        return False
    return not hasattr(top, "commands") or len(words) < 2 or words in COMMANDS


# -- example control files ---------------------------------------------------------------

def test_there_are_at_least_three_example_control_files():
    assert len(EXAMPLES) >= 3, [p.name for p in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_control_file_loads_without_warnings(path: Path):
    control = load_control_file(path)
    assert control.agents, f"{path.name} declares no agent"
    assert control.warnings == ()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_control_file_passes_agents_validate(path: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, capsys):
    for name in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    assert main(["agents", "validate", "--agents", str(path)]) == 0
    assert "valid:" in capsys.readouterr().out


def test_every_example_is_described_in_agent_control_doc():
    text = AGENT_CONTROL_DOC.read_text()
    for path in EXAMPLES + EXAMPLE_AGENTS:
        assert path.name in text, f"docs/agent-control.md does not mention {path.name}"


# -- docs/agent-control.md --------------------------------------------------------------

def test_agent_control_doc_lists_every_field_of_the_control_file():
    table = section(AGENT_CONTROL_DOC.read_text(), "## Format")
    for name, field in AgentSpec.model_fields.items():
        assert f"| `{field.alias or name}` |" in table, f"control file field {field.alias or name} missing"


def test_agent_control_doc_lists_every_placeholder_and_task_variable():
    text = section(AGENT_CONTROL_DOC.read_text(), "## Push agents: the command")
    for name in PLACEHOLDERS:
        assert f"`{{{name}}}`" in text, f"placeholder {{{name}}} missing from docs/agent-control.md"
    runner = ROOT / "scheduler" / "runner"
    source = "".join((runner / name).read_text() for name in ("exec.py", "agent_host.py"))
    variables = set(re.findall(r'"(SCHED_[A-Z_]+)":', source))
    assert {"SCHED_TASK_ID", "SCHED_PAYLOAD_FILE", "SCHED_LEASE_TOKEN"} <= variables
    for name in sorted(variables):
        assert f"| `{name}` |" in text, f"variable {name} missing from docs/agent-control.md"


# -- help text --------------------------------------------------------------------------

def test_commands_were_found():
    assert {("init",), ("tick",), ("worker", "claim"), ("agents", "validate")} <= set(COMMANDS)


def test_every_command_has_a_help_text():
    assert (ROOT_COMMAND.help or "").strip()
    missing = [" ".join(path) for path, command in COMMANDS.items()
               if not (getattr(command, "help", None) or "").strip()]
    assert not missing, f"commands without help: {missing}"


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "sched")
def test_help_option_prints_help_and_exits_0(path: tuple[str, ...], capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.strip()
    assert "Usage" in out


# -- README -----------------------------------------------------------------------------

def test_readme_opens_with_the_quickstart():
    text = README.read_text()
    assert text.startswith("# sched\n")
    headings = re.findall(r"^## (.+)$", FENCE.sub("", text), re.MULTILINE)
    assert headings and headings[0].strip() == "Quickstart"


def test_quickstart_holds_exactly_make_demo_and_make_test():
    body = section(README.read_text(), "## Quickstart")
    blocks = FENCE.findall(body)
    assert len(blocks) == 1, "the Quickstart has one code block"
    commands = [line.split("#", 1)[0].strip() for line in blocks[0].splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_quickstart_commands_are_makefile_targets():
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", (ROOT / "Makefile").read_text(),
                             re.MULTILINE))
    assert {"demo", "test"} <= targets


def fresh_document(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                   command: str) -> dict:
    """`sched COMMAND --json` in a new workspace of default settings in `home`."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(home)
    assert main(["init"]) == 0
    capsys.readouterr()
    main([command, "--json"])
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_the_health_capture_and_table_show_the_checks_health_gives(tmp_path: Path, monkeypatch, capsys):
    """The README's `sched health` capture ("Both captures are real") kept the threshold
    wording of two checks after they changed, and operations.md's table of the checks
    listed them in another order: both are held to what `sched health` prints in a
    new workspace of default settings (the capture's)."""
    report = fresh_document(tmp_path, monkeypatch, capsys, "health")
    checks = [(c["name"], c["threshold"]) for c in report["checks"]]
    captured = re.findall(r"^ *(?:healthy|degraded|unhealthy) +(\w+) .*\n +threshold: (.+)$",
                          README.read_text(), re.MULTILINE)
    assert captured == checks
    table = section((DOCS / "operations.md").read_text(), "## Health")
    names = re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)
    assert [n for n in names if n != "database"] == [name for name, _ in checks]
    # and every page counts them as health does (a check added left "twelve" on four pages)
    reading = [name for name, _ in checks if name not in ("control_file", "files")]  # `database`'s stand-ins
    pages = " ".join(" ".join(page.read_text().split())
                     for page in (README, DOCS / "cli.md", DOCS / "operations.md"))
    said = re.findall(r"runs (\w+) checks|The (\w+) checks \(`|\| (\w+) checks with thresholds", pages)
    assert [next(filter(None, words)) for words in said] == [NUMBERS[len(checks)]] * 4
    stand_ins = re.findall(r"the (\w+)(?: checks)? that read (?:it|the database)", pages)
    assert stand_ins == [NUMBERS[len(reading)]] * 3


NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]


# -- docs/cli.md ------------------------------------------------------------------------

def test_every_sched_command_in_cli_doc_exists():
    mentions = sched_mentions(CLI_DOC.read_text())
    assert mentions, "docs/cli.md names no `sched ...` command"
    unknown = [" ".join(words) for words in mentions if not names_a_command(words)]
    assert not unknown, f"docs/cli.md names commands that do not exist: {sorted(unknown)}"


def test_every_sched_command_in_readme_and_docs_exists():
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        for words in sched_mentions(path.read_text()):
            assert names_a_command(words), f"{path.name} names `sched {' '.join(words)}`"


def test_cli_doc_has_a_section_for_every_command():
    headings = {h.strip("` ") for h in re.findall(r"^### (.+)$", CLI_DOC.read_text(), re.MULTILINE)}
    leaves = [path for path, command in COMMANDS.items() if not hasattr(command, "commands")]
    missing = [" ".join(p) for p in leaves if "sched " + " ".join(p) not in headings]
    assert not missing, f"docs/cli.md has no section for: {missing}"


def test_cli_doc_lists_every_tick_json_key():
    body = section(CLI_DOC.read_text(), "### `sched tick`")
    for field in dataclasses.fields(TickReport):
        assert f"| `{field.name}` |" in body, f"tick --json key {field.name} missing from docs/cli.md"


def test_cli_doc_lists_every_metrics_figure(tmp_path: Path, monkeypatch, capsys):
    figures = fresh_document(tmp_path, monkeypatch, capsys, "metrics")["overall"]
    body = section(CLI_DOC.read_text(), "### `sched metrics`")
    text = body[body.index("where FIGURES has"):body.index("defines each figure")].replace("\n", " ")
    assert sorted(name for name in CODE_SPAN.findall(text) if not name.startswith("{")) == sorted(figures)


def test_cli_doc_lists_every_setting():
    table = section(CLI_DOC.read_text(), "## Settings")
    for name in Settings.model_fields:
        assert f"`{name}`" in table, f"setting {name} missing from docs/cli.md"
        assert f"`{ENV_PREFIX}{name.upper()}`" in table, f"{ENV_PREFIX}{name.upper()} missing"


def test_cli_doc_names_every_key_of_a_queue_table():
    row = next(line for line in section(CLI_DOC.read_text(), "## Settings").splitlines()
               if line.startswith("| `queues` |"))
    for name in QueuePolicy.model_fields:
        assert f"`{name}`" in row, f"[queues.NAME] key {name} missing from the queues row"
        if not name.startswith("gate") and name != "retry_spawn_errors":  # per queue only
            assert name in Settings.model_fields, f"[queues.NAME] key {name} has no top-level setting"


TOML_EXAMPLES = [(f"{path.name}-{number}", block)
                 for path in [README, *sorted(DOCS.glob("*.md"))]
                 for number, block in enumerate(TOML_FENCE.findall(path.read_text()), start=1)]


def test_docs_have_a_queue_table_example():
    assert any("[queues." in block for _, block in TOML_EXAMPLES)


@pytest.mark.parametrize("block", [pytest.param(block, id=name) for name, block in TOML_EXAMPLES])
def test_toml_example_is_valid_settings(block: str, tmp_path: Path):
    """Every sched.toml example loads: known keys, valid values, valid [queues.NAME] tables."""
    (tmp_path / "sched.toml").write_text(block)
    load_settings(environ={}, flags={"home": tmp_path})


# -- docs/architecture.md ---------------------------------------------------------------

def test_event_catalogue_covers_every_event_and_field():
    catalogue = section((DOCS / "architecture.md").read_text(), "## Event catalogue")
    for name, event in EVENT_TYPES.items():
        body = section(catalogue, f"### {name}")
        for field in event.model_fields:
            if field in ("type", "schema_version"):
                continue
            assert f"`{field}`" in body, f"{name}.{field} missing from the event catalogue"


def test_event_catalogue_gives_every_types_current_schema_version():
    catalogue = section((DOCS / "architecture.md").read_text(), "## Event catalogue")
    bullet = " ".join(catalogue[catalogue.index("- `schema_version`:"):].split("\n- ")[0].split())
    said: dict[str, int] = {}
    for version, names in re.findall(r"`(\d+)` for ((?:`[A-Z]\w+`(?:, | and )?)+)", bullet):
        said |= dict.fromkeys(re.findall(r"`(\w+)`", names), int(version))
    assert "`1` for every other type" in bullet
    for name, event in EVENT_TYPES.items():
        assert said.get(name, 1) == event.model_fields["schema_version"].default, name


def test_lifecycle_table_lists_every_status():
    table = section((DOCS / "architecture.md").read_text(), "## Task lifecycle")
    for status in STATUSES:
        assert f"| `{status}` |" in table, f"status {status} missing from the lifecycle table"


@pytest.mark.parametrize("event, field, values", [
    ("TaskFailed", "reason", typing.get_args(FailureReason)),
    ("TaskRequeued", "reason", typing.get_args(RequeueReason)),
])
def test_event_catalogue_lists_every_reason(event: str, field: str, values: tuple[str, ...]):
    body = section(section((DOCS / "architecture.md").read_text(), "## Event catalogue"),
                   f"### {event}")
    row = next(line for line in body.splitlines() if line.startswith(f"| `{field}` |"))
    for value in values:
        assert f"`{value}`" in row, f"{event}.{field} value {value} missing from the catalogue"


# -- links ------------------------------------------------------------------------------

def test_relative_links_point_to_existing_files():
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            resolved = (path.parent / target.split("#", 1)[0]).resolve()
            assert resolved.exists(), f"{path.name} links to missing {target}"


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of `path` (lower case, punctuation dropped,
    spaces as hyphens, `-1`, `-2` for repeats), outside fenced blocks."""
    anchors: set[str] = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        if heading := re.match(r"#{1,6} (.*)", line):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            repeat = 0
            while (anchor := slug if repeat == 0 else f"{slug}-{repeat}") in anchors:
                repeat += 1
            anchors.add(anchor)
    return anchors


def test_links_to_a_section_find_its_heading():
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target) or "#" not in target:
                continue
            file, anchor = target.split("#", 1)
            linked = (path.parent / file).resolve() if file else path
            assert anchor in heading_anchors(linked), f"{path.name} links to a missing section: {target}"
