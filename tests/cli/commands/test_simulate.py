"""`sched simulate` through the CLI: the document, the text, bad input; nothing appended."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cli.common import human_duration
from scheduler.clock import ManualClock
from tests.cli.conftest import FLEET, InProcess, event_count, ok, one_error_line, one_json, write_control


def record_some_work(cli: InProcess) -> None:
    for title in ("a", "b", "c"):
        ok(cli("submit", "--queue", "dev", "--title", title))
    ok(cli("tick"))
    for agent in ("ann", "ann"):
        claimed = one_json(ok(cli("worker", "claim", "--agent", agent, "--json")))["task"]
        ok(cli("worker", "complete", str(claimed["task_id"]), "--token", claimed["token"]))


def test_simulate_reads_the_log_and_compares_a_changed_fleet_appending_nothing(seeded: Path, cli: InProcess):
    record_some_work(cli)
    before = event_count(seeded / "sched.db")
    bigger = seeded / "bigger.json"
    bigger.write_text(json.dumps([{"agentName": "ann", "agentType": "dev", "maxConcurrency": 9}]))
    doc = one_json(ok(cli("simulate", "--agents", str(bigger), "--set", "queues.dev.max_attempts=5",
                          "--json")))
    assert event_count(seeded / "sched.db") == before
    assert doc["source"] == "log" and doc["tasks"] == 4
    assert doc["baseline"]["agents"]["ann"]["capacity"] == 2
    assert doc["whatif"]["agents"]["ann"]["capacity"] == 9 and "bob" not in doc["whatif"]["agents"]
    assert doc["difference"]["agents"]["ann"]["capacity"] == 7
    assert doc["fidelity"]["all"]["wait_mean_recorded"] is not None
    assert set(doc["depth"]["queues"]) == {"dev"} and len(doc["depth"]["queues"]["dev"]) == 2
    text = ok(cli("simulate", "--agents", str(bigger))).stdout
    assert "baseline" in text and "what-if" in text and "queue dev" in text and "time to drain" in text


def test_simulate_a_generated_load_and_find_the_capacity(home: Path, cli: InProcess):
    ok(cli("init"))
    args = ("simulate", "--generate", "dev:rate=120/h,run=2m", "--duration", "2h", "--seed", "3")
    doc = one_json(ok(cli(*args, "--find", "capacity", "--queue", "dev", "--target", "wait_p95<=1m",
                          "--json")))
    assert doc["source"] == "generate" and doc["fidelity"] is None
    found = doc["search"]["capacity"]
    met = {p["capacity"]: p["met"] for p in doc["search"]["curve"]}
    assert met[found] and not met.get(found - 1, False)
    assert doc == one_json(ok(cli(*args, "--find", "capacity", "--queue", "dev", "--target",
                                  "wait_p95<=1m", "--json")))  # seeded: the same answer
    assert doc["search"]["metric"] == "wait_p95"
    # the curve in the text says its figures as durations, as the target is written
    text = ok(cli(*args, "--find", "capacity", "--queue", "dev", "--target", "wait_p95<=1m")).stdout
    point = next(p for p in doc["search"]["curve"] if p["capacity"] == found)
    assert f"{found:>6} slots: {human_duration(point['value'])}  met" in text
    assert doc["search"]["threshold"] == 60


def test_a_capacity_that_misses_by_less_than_the_rounding_says_its_figure(home: Path, cli: InProcess):
    """`wait_p95<=10s` missed by a p95 of 10.4 s read `10s` beside no `met`: the figure
    is given to the millisecond when, rounded, it would read as the target."""
    ok(cli("init"))
    args = ("simulate", "--generate", "dev:rate=120/h,run=2m", "--duration", "2h", "--seed", "3", "--find",
            "capacity", "--queue", "dev")
    doc = one_json(ok(cli(*args, "--target", "wait_p95<=1m", "--json")))
    near = [p for p in doc["search"]["curve"] if not p["met"] and p["value"] is not None]
    assert near, doc["search"]["curve"]
    point = near[-1]
    target = f"wait_p95<={point['value'] - 0.004:.3f}"  # just under the figure: missed
    text = ok(cli(*args, "--target", target)).stdout
    shown = f"{point['value']:.3f}".rstrip("0").rstrip(".")
    assert f"{point['capacity']:>6} slots: {shown}s" in text, text


def test_a_task_cancelled_before_its_not_before_does_not_stretch_the_run(home: Path, cli: InProcess):
    """Its not_before was still a timer of the run: the time to drain, the utilization
    and the depth chart ran on to it (an hour here, for two seconds of work)."""
    clock = ManualClock()
    ok(cli("init", clock=clock))
    ok(cli("submit", "--queue", "dev", "--title", "later", "--delay", "1h", clock=clock))
    ok(cli("cancel", "1", clock=clock))
    ok(cli("submit", "--queue", "dev", "--title", "now", clock=clock))
    ok(cli("tick", clock=clock))
    claimed = one_json(ok(cli("worker", "claim", "--agent", "ann", "--json", clock=clock)))["task"]
    clock.advance(2)
    ok(cli("worker", "complete", str(claimed["task_id"]), "--token", claimed["token"], clock=clock))
    doc = one_json(ok(cli("simulate", "--interval", "1", "--json", clock=clock)))
    assert doc["baseline"]["queues"]["dev"]["succeeded"] == 1
    assert doc["baseline"]["queues"]["dev"]["cancelled"] == 1
    assert doc["baseline"]["time_to_drain_seconds"] < 10


def test_simulate_says_its_progress_on_stderr_also_with_json(home: Path, cli: InProcess):
    ok(cli("init"))
    done = ok(cli("simulate", "--generate", "dev:rate=1/s,run=1s", "--duration", "1h", "--json"))
    assert "simulating the baseline..." in done.stderr
    assert one_json(done)["tasks"] > 0


def test_a_what_if_setting_that_changes_nothing_says_why(home: Path, cli: InProcess):
    """A misspelt queue, or the value already in force, gave an answer equal to the
    baseline's with nothing to say it was no what-if at all."""
    ok(cli("init"))
    args = ("simulate", "--generate", "dev:rate=1/m,run=1m", "--duration", "1h", "--json")
    done = ok(cli(*args, "--set", "queues.deb.max_attempts=5", "--set", "max_attempts=3",
                  "--set", "queues.dev.max_attempts=4"))
    notes = ["--set queues.deb.max_attempts=5: no task of the workload is in queue 'deb'; it changes nothing",
             "--set max_attempts=3: max_attempts already is 3; it changes nothing"]
    assert one_json(done)["notes"] == notes
    assert all(note in done.stderr.splitlines() for note in notes)
    assert one_json(ok(cli(*args, "--set", "queues.dev.max_attempts=4")))["notes"] == []


def test_a_baseline_of_a_fleet_that_did_not_run_the_work_says_so(seeded: Path, cli: InProcess):
    """The baseline runs the control file in force now: after a change (ann 2 -> 9
    slots), its waits and the fidelity were of a fleet that never ran the work, with
    nothing to say so."""
    record_some_work(cli)
    assert one_json(ok(cli("simulate", "--json")))["notes"] == []  # the same file: nothing to say
    with sqlite3.connect(seeded / "sched.db") as conn:
        (recorded,) = conn.execute("SELECT recorded_at FROM events WHERE type = ?",
                                   ("AgentsConfigured",)).fetchone()
    write_control(seeded, [FLEET[0], {**FLEET[1], "command": ["true"]}, *FLEET[2:]])
    assert one_json(ok(cli("simulate", "--json")))["notes"] == []  # (a command: not what it models)
    write_control(seeded, [{**FLEET[0], "maxConcurrency": 9}, *FLEET[1:]])
    done = ok(cli("simulate", "--json"))
    note = ("the workload ran, in part or all, under another control file than the one in force now "
            f"(recorded at {recorded}); the baseline runs the one in force now, so its figures and the "
            "fidelity are of a fleet that did not run this work: give that fleet's file with --agents to ask "
            "about it")
    assert one_json(done)["notes"] == [note] and note in done.stderr.splitlines()


def test_a_setting_the_simulation_does_not_model_says_it_changes_nothing(home: Path, cli: InProcess):
    """A 60 s timeout over runs of 5 min answered as if modelled: runs unchanged, no
    note. (`database_url` is modelled: on PostgreSQL an arrival wakes a tick; its note
    said it changed nothing.)"""
    ok(cli("init"))
    doc = one_json(ok(cli("simulate", "--generate", "dev:rate=1/m,run=5m", "--duration", "1h", "--json",
                          "--set", "exec_timeout_seconds=60", "--set", "queues.dev.gate=[\"false\"]",
                          "--set", "tick_interval_seconds=5", "--set", "database_url=postgresql://u@h/db")))
    assert doc["notes"] == [
        "--set exec_timeout_seconds=60: the simulation does not model exec_timeout_seconds "
        "(docs/operations.md, What-if); it changes nothing",
        "--set queues.dev.gate=[\"false\"]: the simulation does not model gate (docs/operations.md, "
        "What-if); it changes nothing"]


def test_work_that_never_ends_never_drains(home: Path, cli: InProcess):
    """With tasks no agent could take, the time to drain was the span to the last end
    of the others (a fleet without the agent "drained" sooner), and a drain target was
    met."""
    ok(cli("init"))
    args = ("simulate", "--generate", "dev:rate=60/h,run=1m", "--generate", "nobody:rate=6/h,run=1m",
            "--duration", "1h")
    doc = one_json(ok(cli(*args, "--json")))
    assert doc["baseline"]["unfinished"] > 0 and doc["baseline"]["time_to_drain_seconds"] is None
    assert ["time", "to", "drain", "never"] in [line.split() for line in ok(cli(*args)).stdout.splitlines()]
    search = one_json(ok(cli(*args, "--find", "capacity", "--queue", "dev", "--target",
                             "time_to_drain_seconds<=2h", "--json")))["search"]
    assert search["capacity"] is None and not any(point["met"] for point in search["curve"])


def test_work_left_waiting_on_a_person_does_not_stop_the_drain(seeded: Path, cli: InProcess):
    """A task still awaiting approval when the log ends is unfinished, but the fleet
    drained what it was given: the time to drain is not `never`."""
    record_some_work(cli)
    ok(cli("submit", "--queue", "dev", "--title", "waits for a person", "--requires-approval"))
    baseline = one_json(ok(cli("simulate", "--json")))["baseline"]
    assert baseline["unfinished"] >= 1 and baseline["time_to_drain_seconds"] is not None


def test_simulate_a_workload_file(home: Path, cli: InProcess):
    ok(cli("init"))
    workload = home / "load.jsonl"
    workload.write_text("".join(json.dumps({"at": i, "queue": "dev", "run_seconds": 30}) + "\n"
                                for i in range(6)))
    doc = one_json(ok(cli("simulate", "--workload", str(workload), "--json")))
    assert doc["baseline"]["queues"]["dev"]["succeeded"] == 6
    assert doc["whatif"] is None


@pytest.mark.parametrize("args, says", [
    (("--set", "nonsense=1"), "no setting 'nonsense'"),
    (("--set", "queues.dev.max_attempts=0"), "max_attempts"),
    (("--set", "lease_seconds"), "expected KEY=VALUE"),
    (("--target", "wait_p95<=5m"), "go with --find capacity"),
    (("--find", "capacity", "--queue", "dev"), "needs --queue and --target"),
    (("--find", "agents", "--queue", "dev", "--target", "wait_p95<=1m"), "only 'capacity'"),
    (("--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"), "--until is before --since"),
    (("--since", "yesterday"), "--since: expected an ISO time"),
    (("--since", "9999-12-31T23:59:59-05:00"), "in the years 1 to 9999 in UTC"),  # (it has its offset)
    (("--workload", "missing.jsonl"), "--workload missing.jsonl"),
    (("--generate", "dev:rate=1/h,run=1m", "--since", "2026-01-01T00:00:00Z"), "do not go with"),
    (("--agents", "missing.json"), "missing.json"),
    (("--interval", "1e12"), "--interval must be at most 315360000 seconds"),  # was an internal error
    (("--interval", "1e309"), "--interval must be at most 315360000 seconds"),  # (infinity: not "above 0")
])
def test_bad_input_is_one_line_and_exit_2(seeded: Path, cli: InProcess, args, says):
    before = event_count(seeded / "sched.db")
    line = one_error_line(cli("simulate", *args), 2)
    assert says in line
    assert event_count(seeded / "sched.db") == before


def test_a_workload_that_gives_a_task_id_twice_is_refused_in_one_line(home: Path, cli: InProcess):
    """A line's id is its number unless it gives one: mixing both can repeat an id, and
    the run then lost a task (it came out unfinished, the figures wrong, exit 0)."""
    ok(cli("init"))
    workload = home / "load.jsonl"
    workload.write_text('{"at": 0, "queue": "dev", "run_seconds": 100, "task_id": 2}\n'
                        '{"at": 1, "queue": "dev", "run_seconds": 100}\n')
    assert one_error_line(cli("simulate", "--workload", str(workload)), 2) == (
        f"sched: --workload {workload}:2: task_id 2 is line 1's too (one task per id)")


@pytest.mark.parametrize("line, says", [
    ('{"at": 0, "queue": "dev", "run_seconds": 1e300}', "'run_seconds' must be at most 31622400 (366 days)"),
    ('{"at": 1e300, "queue": "dev", "run_seconds": 1}', "'at' must be at most 253402300799 (the year 9999)"),
    ('{"at": 0, "queue": "dev", "delay_seconds": 1e12, "run_seconds": 1}', "'delay_seconds' must be at most"),
])
def test_a_workload_a_simulation_could_not_finish_is_refused(home: Path, cli: InProcess, line, says):
    """A task running 1e300 s, or arriving at 1e300 s, ran out of memory or never ended."""
    ok(cli("init"))
    workload = home / "load.jsonl"
    workload.write_text(line + "\n")
    assert says in one_error_line(cli("simulate", "--workload", str(workload)), 2)


def test_a_run_that_would_go_past_the_calendar_ends_in_one_error_line(home: Path, cli: InProcess):
    """Found only while it runs (an arrival at the last second of 9999 may be given):
    after its progress, one error line and exit 2, not "a number is too large"."""
    ok(cli("init"))
    workload = home / "load.jsonl"
    workload.write_text('{"at": 253402300799, "queue": "dev", "run_seconds": 60}\n')
    done = cli("simulate", "--workload", str(workload))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == ["simulating the baseline...", (
        "sched: the simulated run goes on past the year 9999: its arrivals or due times lie too "
        "near the calendar's end")]


def test_a_generated_load_too_big_to_simulate_is_refused(home: Path, cli: InProcess):
    ok(cli("init"))
    line = one_error_line(cli("simulate", "--generate", "dev:rate=1000000/s,run=1s", "--duration", "1d"), 2)
    assert "at most 10,000,000 can be simulated" in line
    assert "at most 366 days" in one_error_line(cli("simulate", "--generate", "dev:rate=1/h,run=400d"), 2)
    assert "at most 366 days" in one_error_line(
        cli("simulate", "--generate", "dev:rate=1/h,run=1m", "--duration", "400d"), 2)
    for nothing in ("0", "0s", "0.0h"):  # (an empty answer, exit 0, as if asked)
        assert one_error_line(cli("simulate", "--generate", "dev:rate=1/h,run=1m", "--duration", nothing),
                              2) == "sched: --duration must be longer than 0"


def test_a_task_cancelled_while_it_ran_is_cancelled_in_the_replay_too(home: Path, cli: InProcess):
    """Its attempt that the cancel ended was left out, so the task ran a stand-in (the
    mean of its queue's successes so far: none, 0 s) and succeeded at once; the cancel,
    replayed later, found nothing to cancel (QA on PostgreSQL: 4 cancelled tasks read as
    4 successes of 0 s)."""
    clock = ManualClock()
    ok(cli("init", clock=clock))
    ok(cli("submit", "--queue", "dev", "--title", "long", clock=clock))
    claimed = one_json(ok(cli("worker", "claim", "--agent", "ann", "--json", clock=clock)))["task"]
    clock.advance(30)
    ok(cli("cancel", str(claimed["task_id"]), clock=clock))  # running: cancelling
    clock.advance(5)
    ok(cli("worker", "fail", str(claimed["task_id"]), "--token", claimed["token"], "--error", "stopped",
           clock=clock))  # (its worker heard of the cancel: the task ends cancelled)
    dev = one_json(ok(cli("simulate", "--interval", "1", "--json", clock=clock)))["baseline"]["queues"]["dev"]
    assert (dev["succeeded"], dev["cancelled"]) == (0, 1)
    assert dev["run_p50"] >= 30  # it ran until the cancel, as it did


def test_a_task_on_its_retry_when_the_log_ends_is_not_taken_to_fail_again(home: Path, cli: InProcess):
    """Its running attempt 2 has no end in the log: it was simulated as attempt 1's
    failure once more, and again, and the task dead-lettered (the baseline said a live
    fleet's retries all die)."""
    clock = ManualClock()
    ok(cli("init", clock=clock))
    ok(cli("submit", "--queue", "dev", "--title", "flaky", clock=clock))
    claimed = one_json(ok(cli("worker", "claim", "--agent", "ann", "--json", clock=clock)))["task"]
    clock.advance(2)
    ok(cli("worker", "fail", str(claimed["task_id"]), "--token", claimed["token"], "--error", "boom",
           clock=clock))
    clock.advance(120)  # past its backoff
    again = one_json(ok(cli("worker", "claim", "--agent", "bob", "--json", clock=clock)))["task"]
    assert (again["task_id"], again["attempt"]) == (claimed["task_id"], 2)
    baseline = one_json(ok(cli("simulate", "--interval", "1", "--json", clock=clock)))["baseline"]
    queue = baseline["queues"]["dev"]
    assert (queue["succeeded"], queue["dead_lettered"]) == (1, 0)


def test_a_change_of_a_count_is_written_whole():
    """`:g` wrote a change of 1,234,567 tasks as +1.23457e+06."""
    from cli.simulate_cmd import _change

    assert (_change(1_234_567, False), _change(-3, False), _change(0, False)) == ("+1234567", "-3", "")
