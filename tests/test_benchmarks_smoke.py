"""The benchmark suite cannot rot: its cheap figures run at `--size small` and give a
document of the promised shape, and its fast database loader writes exactly what
`submit()` writes. Speed is never checked here: targets live in the benchmarks only."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from benchmarks import bench_cli, run
from benchmarks.build import load_queued
from benchmarks.common import fleet, new_workspace, task_specs
from scheduler.clock import ManualClock
from scheduler.submit import submit

KEYS = {"name", "value", "unit", "ceiling", "ratio", "target", "met"}


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_the_cheap_figures_give_one_document_of_the_promised_shape(tmp_path: Path, capsys, engine, request):
    if engine == "postgresql":
        request.getfixturevalue("pg_cluster")  # skipped (or failed, in CI) without PostgreSQL
    names = run.CHEAP if engine == "sqlite" else run.CHEAP_POSTGRES
    out = tmp_path / "bench.json"
    code = run.main(["--size", "small", "--only", *names, "--json-out", str(out), "--quiet",
                     "--workdir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert doc == json.loads(out.read_text())
    assert doc["size"] == "small"
    assert [f["name"] for f in doc["figures"]] == names
    for figure in doc["figures"]:
        assert "error" not in figure, figure.get("traceback")
        assert set(figure) >= KEYS
        assert figure["value"] > 0 and figure["ceiling"] > 0 and figure["ratio"] > 0
        assert figure["target"].split()[0] in (">=", "<=")
        assert isinstance(figure["met"], bool)
        assert figure["name"] in captured.err  # the readable table


def small_figures(names: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    """The figures `names` run at `--size small`, by name, each measured (no error)."""
    code = run.main(["--size", "small", "--only", *names, "--quiet", "--workdir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    figures = {f["name"]: f for f in json.loads(captured.out)["figures"]}
    assert list(figures) == names
    for figure in figures.values():
        assert "error" not in figure, figure.get("traceback")
        assert set(figure) >= KEYS and isinstance(figure["met"], bool)
    return figures


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux /proc")
def test_the_start_figures_run_real_daemons(tmp_path: Path, capsys):
    figures = small_figures(run.START, tmp_path, capsys)
    for figure in figures.values():
        assert figure["value"] > 0 and figure["ceiling"] > 0
    small = run.SIZES["small"]
    assert figures["agent_start"]["details"]["started"] == small["start_agents"] * small["start_bursts"]
    assert len(figures["agent_start"]["details"]["burst_medians_ms"]) == small["start_bursts"]
    assert figures["agent_start_burst"]["details"]["started"] == small["burst_agents"] * small["burst_repeat"]
    assert figures["wrapper_memory"]["details"]["attempts"] > 0
    assert figures["daemon_throughput"]["details"]["succeeded"] == run.SIZES["small"]["throughput_tasks"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_the_http_figures_run_a_real_server(tmp_path: Path, capsys):
    figures = small_figures(run.HTTP, tmp_path, capsys)
    small = run.SIZES["small"]
    claims = figures["http_claims"]
    assert claims["value"] > 0 and claims["ceiling"] > 0
    assert claims["details"]["rounds"] == claims["details"]["python_rounds"] == \
        small["http_clients"] * small["http_rounds"]
    latency = figures["http_claim_latency"]
    assert latency["details"]["claims"] == small["latency_claims"]
    assert 0 < latency["details"]["p50_ms"] <= latency["details"]["p99_ms"]
    idle = figures["http_idle_polls"]
    assert idle["details"]["answered_null"] == small["idle_clients"]  # every long poll waited, then null
    assert idle["details"]["answered_before_window_end"] == 0
    assert idle["value"] >= 0 and idle["details"]["threads_waiting_max"] > 0


def test_the_cold_figures_run_the_installed_command_in_new_processes(tmp_path: Path, capsys):
    figures = small_figures(run.COLD, tmp_path, capsys)
    repeat = run.SIZES["small"]["cli_repeat"]
    for figure in figures.values():
        assert figure["value"] > figure["ceiling"] > 0  # sched does more than `python -c pass`
        assert len(figure["details"]["seconds"]) == len(figure["details"]["bare_seconds"]) == repeat
    start = len(bench_cli.sched_argv())  # the installed script, or `python -m cli`
    assert {name: figure["details"]["argv"][start:start + 2] for name, figure in figures.items()} == {
        "cold_cli": ["status", "--json"], "cold_tasks": ["tasks", "--json"],
        "cold_heartbeat": ["worker", "heartbeat"], "cold_complete": ["worker", "complete"],
        "cold_claim": ["worker", "claim"], "cold_fail": ["worker", "fail"]}


def test_the_claims_figure_races_processes_and_splits_a_claim_into_its_statements(tmp_path: Path, capsys):
    claims = small_figures(["claims"], tmp_path, capsys)["claims"]
    small = run.SIZES["small"]
    assert claims["details"]["claimed"] == claims["details"]["bare_claimed"] == small["claims"]
    alone = claims["details"]["one_process"]
    assert alone["claims"] == small["claims"] // small["claim_processes"]
    assert alone["statements_per_claim"] > 0 and alone["replay_left_the_same_rows"]
    assert alone["statements_ms_per_claim"] > 0 and alone["sched_ms_per_claim"] > 0


def test_the_postgresql_submit_ceiling_replays_the_statements_sched_sent(tmp_path: Path, capsys, pg_cluster):
    """The ceiling of the PostgreSQL issue: the recorded statements, replayed bare, write
    the same events (a replay that dropped or changed a statement would be quicker)."""
    figure = small_figures(["pg_single_submit_statements"], tmp_path, capsys)["pg_single_submit_statements"]
    details = figure["details"]
    assert details["replay_left_the_same_events"]
    submits = run.SIZES["small"]["single_submits"]
    assert details["round_trips"] == 2 * submits  # the lock and reads; the writes and COMMIT
    assert details["statements"] >= 6 * submits


def test_every_figure_has_both_sizes_of_its_parameters():
    assert set(run.SIZES["small"]) == set(run.SIZES["default"])
    assert set(run.CHEAP) <= set(run.FIGURES)


def test_every_figure_is_described_in_the_table_of_docs_performance():
    """docs/performance.md says what each figure measures and against what ceiling: a
    figure the table leaves out (or one it keeps after the figure went) is a stale doc."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "performance.md").read_text()
    table = text.split("## The figures", 1)[1].split("\n## ", 1)[0]
    described = {name for line in table.splitlines() if line.startswith("| `")
                 for name in re.findall(r"`(\w+)`", line.split("|")[1])}
    assert described == set(run.FIGURES)


def dump(db: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(db)
    try:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                for table in ("events", "tasks", "queue_counts", "projection_meta")}
    finally:
        conn.close()


def test_the_fast_loader_writes_what_submit_writes(tmp_path: Path):
    clock = ManualClock()
    by_submit = new_workspace(tmp_path / "submit", fleet(2, 1))
    by_submit.clock = clock
    submit(by_submit, task_specs(30))
    submit(by_submit, task_specs(20, start=30))
    by_load = new_workspace(tmp_path / "load", fleet(2, 1))
    load_queued(by_load, 30, clock.now())
    load_queued(by_load, 20, clock.now(), start=30)
    by_submit.close(), by_load.close()
    assert dump(tmp_path / "submit" / "sched.db") == dump(tmp_path / "load" / "sched.db")
