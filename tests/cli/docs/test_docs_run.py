"""The shell examples of README.md and docs/*.md run as written.

The convention for fenced code blocks (the info string after the opening fence):

- ```sh: a runnable example. This test runs every ```sh block of a file, in the file's
  order, as one bash script (`set -euo pipefail`) in a fresh, empty SCHED_HOME that is
  also the current directory, with this checkout's `sched` console script (and its
  venv's `python`) first on PATH, REPO set to the checkout (for files such as
  examples/agents/*.py) and TMPDIR inside the home (so `cd "$(mktemp -d)"` stays in
  it). Variables, functions, background jobs and the current directory carry over from
  one block to the next, as in one terminal session. Nothing else is skipped or
  rewritten: a block that waits for an agent says how (a loop with a deadline).
- ```console: shell commands a person types but this test cannot run: the setup of a
  session in the repository root (`export PATH="$PWD/.venv/bin:$PATH" REPO=$PWD`: the
  test gives the same PATH and REPO), the repository's make targets, commands that run
  until stopped (`--watch`, `tail -f`, a daemon in the foreground), or a deployment's
  own paths (`/srv/sched`, `/var/log`). Every `sched` command in them must exist.
- anything else (```text or a bare fence for output and diagrams, ```toml, ```json,
  ```ini, ```cron, ```python, ```yaml for files): not run. Other info strings (```bash,
  ```shell, ...) are refused, so that no shell example is skipped by a spelling.

A command meant to fail says so as a person would type it, `sched show 99 || echo
"exit $?"`, which also keeps the script going. Two trailing comments of a ```sh line are
checked as well as shown:

- `sched submit ...   # 3`: the command prints the task id 3;
- `... || echo "exit $?"   # exit 2: ...`: the command exits 2 (without the comment,
  any exit code is accepted: e.g. `sched health`, whose level depends on timing).

A failure names the file, the line of the block and of the failing command, and shows
the output of that block. Every selected file runs at once, each in its own home.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.conftest import cli_env
from tests.cli.docs.test_docs import SCHED_CALL, names_a_command

ROOT = Path(__file__).parents[3]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = "sh"
NOT_RUN = {"console", "text", "", "toml", "json", "ini", "cron", "python", "yaml"}
TIMEOUT_SECONDS = 900
MARK = "@@docs-run"

OPEN_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
SUBMIT_ID = re.compile(r"^(?P<cmd>\s*sched submit\b.*\S)\s+#\s*(?P<id>\d+)\s*$")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<word>\w+)\1")
EXPECT_EXIT = re.compile(r'^(?P<cmd>.*\S)\s*\|\|\s*echo "exit \$\?"\s*#\s*exit (?P<code>\d+)\b.*$')


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    info: str
    lines: tuple[str, ...]  # the body, without the fence's indentation

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a markdown file, indented ones (in list items) too."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = OPEN_FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        assert end is not None, f"{path.name}:{i + 1}: code block never closed"
        body = tuple(line[len(indent):] if line.startswith(indent) else line.lstrip()
                     for line in lines[i + 1:end])
        blocks.append(Block(path, i + 1, opening["info"].strip(), body))
        i = end + 1
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in fenced_blocks(path)]
RUN_FILES = [path for path in DOC_FILES if any(b.info == RUNNABLE for b in fenced_blocks(path))]


def script_line(line: str) -> str:
    """A line of a ```sh block as the script runs it: the same command, plus the check
    of a shown task id or exit code (on the same line, so line numbers still match)."""
    if match := EXPECT_EXIT.match(line):
        return (f'{match["cmd"]} && __rc=0 || __rc=$?; echo "exit $__rc"; '
                f'__expect_exit {match["code"]} "$__rc"')
    if match := SUBMIT_ID.match(line):
        return (f'__out=$({match["cmd"]}); printf "%s\\n" "$__out"; '
                f'__expect_id {match["id"]} "$__out"')
    return line


PREAMBLE = f"""\
set -Eeuo pipefail
trap '__rc=$?; echo "{MARK} failed at line $LINENO with exit $__rc: $BASH_COMMAND" >&2' ERR
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
__expect_id() {{
  [ "$2" = "$1" ] || {{ echo "{MARK} printed task id '$2', the doc shows $1" >&2; return 1; }}; }}
__expect_exit() {{
  [ "$2" = "$1" ] || {{ echo "{MARK} exited $2, the doc shows exit $1" >&2; return 1; }}; }}
"""


def build_script(blocks: list[Block]) -> tuple[str, dict[int, int]]:
    """The bash script of a file's ```sh blocks, and script line -> doc line."""
    lines = PREAMBLE.splitlines()
    where: dict[int, int] = {}
    for block in blocks:
        lines.append(f"echo '{MARK} block {block.line}'")
        heredoc_end = None  # the lines of a here-document are data: kept as they are
        for offset, line in enumerate(block.lines, start=1):
            if heredoc_end is not None:
                heredoc_end = None if line == heredoc_end else heredoc_end
                lines.append(line)
            else:
                lines.append(script_line(line))
                if heredoc := HEREDOC.search(line):
                    heredoc_end = heredoc["word"]
            where[len(lines)] = block.line + offset
    lines.append(f"echo '{MARK} done'")
    return "\n".join(lines) + "\n", where


@dataclass
class DocRun:
    """The ```sh blocks of one file, running as one bash script in a fresh home. Every
    selected file starts at once (most of the time goes to starting `sched`, so two
    cores halve it), each writing its output to a file of its own."""

    path: Path
    proc: subprocess.Popen[bytes]
    output: Path
    where: dict[int, int]  # script line -> doc line
    started: float

    @classmethod
    def start(cls, path: Path, base: Path) -> DocRun:
        script, where = build_script([b for b in fenced_blocks(path) if b.info == RUNNABLE])
        (base / "run.sh").write_text(script)
        home = base / "home"
        (home / "tmp").mkdir(parents=True)
        bin_dir = Path(sys.executable).parent
        assert (bin_dir / "sched").exists(), f"no sched console script beside {sys.executable}"
        env = cli_env(home, {"REPO": str(ROOT), "TMPDIR": str(home / "tmp"),
                             "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
        output = base / "output.txt"
        with output.open("wb") as out:
            proc = subprocess.Popen(["bash", str(base / "run.sh")], cwd=home, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        return cls(path, proc, output, where, time.monotonic())

    def finish(self, deadline: float) -> tuple[int | None, str, float]:
        """Wait for the script (until `deadline`, a monotonic time), then stop whatever
        it left behind; returns (exit code or None on a timeout, output, seconds)."""
        try:
            code: int | None = self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None
        self.stop()
        took = time.monotonic() - self.started
        return code, self.output.read_text(errors="replace"), took

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # a background job the doc left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def failure_report(run: DocRun, code: int | None, out: str) -> str:
    """Which block and command failed, and the output of that block, with the script's
    line numbers turned into the doc's."""
    name = str(run.path.relative_to(ROOT))

    def doc_line(number: str) -> str:
        line = run.where.get(int(number))
        return f"{name}:{line}" if line else f"script line {number}"

    out = re.sub(r"\S+\.sh: line (\d+)", lambda m: doc_line(m[1]), out)
    out = re.sub(rf"{MARK} failed at line (\d+)", lambda m: f"{MARK} failed at {doc_line(m[1])}", out)
    blocks = list(re.finditer(rf"^{MARK} block (\d+)$", out, re.MULTILINE))
    failed = re.search(rf"{MARK} failed at (\S+)", out)
    how = f"timed out after {TIMEOUT_SECONDS} s" if code is None else f"exit {code}"
    return (f"{name}: the ```sh block at line {blocks[-1][1] if blocks else '?'} failed"
            f"{' at ' + failed[1] if failed else ''} ({how}); its output:\n"
            f"{out[blocks[-1].start() if blocks else 0:][-6000:]}")


@pytest.fixture(scope="session")
def doc_runs(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Path, DocRun]]:
    """The runs of the files whose test is selected, all started together."""
    paths = [item.callspec.params["path"] for item in request.session.items
             if getattr(item, "originalname", None) == "test_sh_blocks_run_as_written"]
    runs = {path: DocRun.start(path, tmp_path_factory.mktemp(f"docs-{path.stem}")) for path in paths}
    yield runs
    for run in runs.values():
        run.stop()


@pytest.mark.slow
@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.name)
def test_sh_blocks_run_as_written(path: Path, doc_runs: dict[Path, DocRun]):
    run = doc_runs[path]
    code, out, took = run.finish(deadline=run.started + TIMEOUT_SECONDS)
    print(f"{path.name}: {took:.1f} s\n{out}")  # shown with -s, or on a failure
    if code != 0 or f"{MARK} done" not in out:
        pytest.fail(failure_report(run, code, out), pytrace=False)
    ran = re.findall(rf"^{MARK} block (\d+)$", out, re.MULTILINE)
    expected = [str(b.line) for b in fenced_blocks(path) if b.info == RUNNABLE]
    assert ran == expected, f"{path.name}: blocks run {ran}, expected {expected}"
    assert "Traceback" not in out, out[-6000:]


# -- the convention ---------------------------------------------------------------------

def test_docs_have_runnable_examples():
    assert {p.name for p in RUN_FILES} >= {"README.md", "cli.md", "operations.md"}


def test_every_fence_is_runnable_or_a_known_kind():
    unknown = [f"{b.where}: ```{b.info}" for b in ALL_BLOCKS if b.info not in NOT_RUN | {RUNNABLE}]
    assert not unknown, (f"write ```sh to run a shell example, ```console for shell commands "
                         f"that cannot run here, else one of {sorted(NOT_RUN - {''})} or a bare "
                         f"fence: {unknown}")


def test_every_sched_command_of_a_block_that_is_not_run_exists():
    """(test_docs.py checks the unindented blocks and the code spans; this covers the
    blocks inside list items too.)"""
    for block in ALL_BLOCKS:
        if block.info != RUNNABLE:
            for words in SCHED_CALL.findall("\n".join(block.lines)):
                assert names_a_command(tuple(words.split())), f"{block.where}: `sched {words}`"


def test_console_blocks_hold_only_what_cannot_run():
    """A ```console block holds something this test cannot run: a make target, a command
    that runs until stopped, the setup of the session in the repository root, or a
    deployment's own paths or database server; anything else should be ```sh."""
    reasons = re.compile(r"\bmake\b|--watch|tail -f|/srv/|/var/|\.venv/bin|\bsched run\b|\bsched serve\b|"
                         r"postgresql://|\bcreateuser\b|\bcreatedb\b")
    for block in ALL_BLOCKS:
        if block.info == "console":
            assert reasons.search("\n".join(block.lines)), (
                f"{block.where}: nothing in this ```console block keeps it from running: "
                f"make it ```sh")


def test_checked_comments_are_recognised():
    """A `# exit N` comment on a command is checked only after `|| echo "exit $?"`: a
    comment that looks checked must be."""
    for block in ALL_BLOCKS:
        if block.info != RUNNABLE:
            continue
        for line in block.lines:
            if re.search(r"#\s*exit \d", line) and not line.lstrip().startswith("#"):
                assert EXPECT_EXIT.match(line), f"{block.where}: unchecked `# exit N`: {line}"
