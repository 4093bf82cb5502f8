"""The what-if engine, its workloads and the capacity search, on hand-made workloads
whose outcome can be worked out by hand."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.errors import BadInput
from eventlog.store import Recorded
from scheduler.decisions.plan import PlanPolicy
from scheduler.decisions.policy import QueuePolicy
from scheduler.whatif.capacity import parse_target, search
from scheduler.whatif.engine import MAX_DEPTH_SAMPLES, FleetAgent, Scenario, simulate, with_capacity
from scheduler.whatif.facts import Arrival, Attempt, carried_attempt
from scheduler.whatif.figures import summary
from scheduler.whatif.sketch import RELATIVE_ACCURACY, TINY, Sketch
from scheduler.whatif.workload import ListedWorkload, LogWorkload, generate, parse_load, read_jsonl

OK = Attempt(0.0, 10.0, "succeeded")
FAIL = Attempt(0.0, 10.0, "failed")


def scenario(*agents: FleetAgent, max_attempts: int = 3, tick: float = 5.0) -> Scenario:
    policy = QueuePolicy(max_attempts=max_attempts, backoff_base_seconds=0.0)
    return Scenario(agents=agents, plan_policy=PlanPolicy(), queue_policy=lambda _q: policy,
                    tick_seconds=tick)


def tasks(*items: tuple[float, list[Attempt]], queue: str = "dev") -> ListedWorkload:
    return ListedWorkload((Arrival(task_id=i, at=at, queue=queue), attempts)
                          for i, (at, attempts) in enumerate(items, 1))


def test_one_slot_serves_in_turn_and_two_serve_at_once():
    two = [(0.0, [OK]), (0.0, [OK])]
    one_slot = summary(simulate(tasks(*two), scenario(FleetAgent("ann", "dev", 1))))
    assert one_slot["queues"]["dev"]["wait_max"] == 10.0  # the second waits for the first to end
    assert one_slot["time_to_drain_seconds"] == 20.0
    assert one_slot["agents"]["ann"]["utilization"] == 1.0
    two_slots = summary(simulate(tasks(*two), scenario(FleetAgent("ann", "dev", 2))))
    assert two_slots["queues"]["dev"]["wait_max"] == 0.0
    assert two_slots["time_to_drain_seconds"] == 10.0


def test_arrivals_wait_for_the_next_interval_tick_and_ends_wake_one():
    run = simulate(tasks((0.0, [OK]), (3.0, [Attempt(0.0, 1.0, "succeeded")])),
                   scenario(FleetAgent("ann", "dev", 2), tick=5.0), keep_order=True)
    # the second arrives at 3 s: the tick at 5 s assigns it (2 s of wait)
    assert run.waited == [0.0, 2.0]
    waits = run.queue("dev").waits
    assert (waits.count, waits.total, waits.largest, waits.quantile(0.5)) == (2, 2.0, 2.0, 0.0)


def test_more_attempts_turn_a_dead_letter_into_a_success():
    four_failures = [(0.0, [FAIL, FAIL, FAIL, FAIL, OK])]
    fleet = FleetAgent("ann", "dev", 1)
    three = simulate(tasks(*four_failures), scenario(fleet, max_attempts=3)).queue("dev")
    assert (three.succeeded, three.dead, len(three.runs)) == (0, 1, 3)
    five = simulate(tasks(*four_failures), scenario(fleet, max_attempts=5)).queue("dev")
    assert (five.succeeded, five.dead, len(five.runs)) == (1, 0, 5)


def test_a_failed_attempt_goes_to_another_agent_of_the_type():
    fleet = scenario(FleetAgent("ann", "dev", 1), FleetAgent("bob", "dev", 1))
    run = simulate(tasks((0.0, [FAIL, OK])), fleet, keep_order=True)
    assert run.order == [(1, "ann"), (1, "bob")]


@pytest.mark.parametrize("hours", [(), ("00:00-24:00",), ("09:00-10:00",)])
@pytest.mark.parametrize("task", [{"assignee": "gone"}, {"requires": ("gpu",)}])
def test_a_task_no_agent_can_take_is_left_unfinished_and_the_run_ends(hours, task):
    """Also where the fleet keeps working hours, whose opening is no event: the interval
    ticks then went on for ever, though no opening could place the task."""
    workload = ListedWorkload([(Arrival(task_id=1, at=0.0, queue="dev", **task), [OK]),
                               (Arrival(task_id=2, at=0.0, queue="dev"), [OK])])
    run = simulate(workload, scenario(FleetAgent("ann", "dev", 1, hours=hours)))
    assert run.unfinished == 1 and run.queue("dev").succeeded == 1


@pytest.mark.parametrize("tick", [5.0, 1e-7, 1e-300])
def test_work_held_back_by_working_hours_is_assigned_when_they_open(tick):
    """Whatever the interval: a tick that cannot move a time that large (1e-7 s, 1e-300
    s) ran for ever while hours held the work back."""
    # the run starts at 0 s: Thursday 1970-01-01 00:00 UTC; the agent works from 09:00
    run = simulate(tasks((0.0, [OK])), scenario(FleetAgent("ann", "dev", 1, hours=("09:00-17:00",)),
                                                tick=tick), keep_order=True)
    assert run.order == [(1, "ann")] and run.waited == [9 * 3600.0]
    assert run.unfinished == 0 and run.queue("dev").succeeded == 1


def test_a_simulated_attempt_follows_the_tasks_own_recorded_one():
    recorded = [FAIL, OK]
    assert carried_attempt(recorded, 1, OK) is FAIL
    assert carried_attempt(recorded, 2, FAIL) is OK
    assert carried_attempt(recorded, 7, FAIL) is OK  # past the recorded attempts: the last again
    assert carried_attempt([], 1, FAIL) is FAIL  # never ran: the stand-in


def test_capacity_is_spread_over_the_types_agents():
    fleet = (FleetAgent("a", "dev", 1), FleetAgent("b", "dev", 1), FleetAgent("q", "qa", 3))
    assert [a.capacity for a in with_capacity(fleet, "dev", 5)] == [3, 2, 3]


def test_the_generator_is_seeded_and_keeps_to_its_rate():
    loads = [parse_load("dev:rate=600/h,run=30s,fail=0.2"), parse_load("qa:rate=1/m,run=2m")]
    first = list(generate(loads, 36_000, seed=7))
    assert first == list(generate(loads, 36_000, seed=7))
    assert first != list(generate(loads, 36_000, seed=8))
    times = [arrival.at for arrival, _ in first]
    assert times == sorted(times) and times[-1] <= 36_000
    dev = sum(1 for arrival, _ in first if arrival.queue == "dev")
    assert 5_600 < dev < 6_400  # 6,000 expected: five standard deviations either side
    failed = sum(1 for _, attempts in first for a in attempts if a.outcome == "failed")
    assert 0.15 < failed / sum(len(a) for _, a in first) < 0.25


@pytest.mark.parametrize("text", ["dev", "dev:rate=5", "dev:rate=0/h,run=1s", "dev:rate=1/h,run=1s,fail=1",
                                  "dev:rate=1/y,run=1s", "dev:rate=1/h,run=soon", "dev:speed=1,run=1s",
                                  "dev:rate=5e-324/d,run=1m", "dev:rate=5e-324/h,run=1m"])  # (none, so small)
def test_a_bad_load_is_refused(text):
    with pytest.raises(BadInput, match="--generate"):
        parse_load(text)


def test_a_jsonl_workload_is_read_in_order_and_bad_lines_are_named(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"at": 0, "queue": "dev", "run_seconds": 5}\n\n'
                    '{"at": 2, "queue": "qa", "attempts": [{"run_seconds": 1, "outcome": "failed"}, '
                    '{"run_seconds": 3}]}\n')
    items = list(read_jsonl(good))
    assert [(a.task_id, a.queue, [x.outcome for x in att]) for a, att in items] == [
        (1, "dev", ["succeeded"]), (3, "qa", ["failed", "succeeded"])]
    for line, problem in [({"at": 1, "queue": "dev"}, "'run_seconds' must be a number"),
                          ({"at": 1, "queue": "dev", "run_seconds": 1, "colour": "red"}, "unknown key"),
                          ({"at": 5, "queue": "dev", "run_seconds": 1}, "goes back in time"),
                          ({"at": -5, "queue": "dev", "run_seconds": 1}, "'at' must be at least 0"),
                          ({"at": "2026-01-01T00:00:00", "queue": "dev", "run_seconds": 1},
                           "'at' must be seconds or an ISO time with its offset"),
                          ({"at": 20, "queue": "dev", "run_seconds": 1, "due": "1969-12-31T00:00:00Z"},
                           "'due' must lie between 1970 and the year 9999"),
                          ({"at": 20, "queue": "dev", "run_seconds": 1, "task_type": ["x"]},
                           "'task_type' must be a non-empty string"),
                          ({"at": 20, "queue": "dev", "run_seconds": 1, "assignee": 5},
                           "'assignee' must be a non-empty string"),
                          ({"at": 20, "queue": "dev", "run_seconds": 1, "requires": ["bad name!"]},
                           "'bad name!' is not a capability name"),
                          ({"at": 20, "queue": "dev", "run_seconds": 1, "task_id": 7, "after": [7]},
                           "'after' names the task itself"),
                          ({"at": 20, "queue": "dev", "run_seconds": 1, "after": [1, 9]},  # 1: line 1's
                           "'after' names task 9, which no line before this one gives"),
                          ({"at": 20, "queue": "dev", "run_seconds": 1, "max_attempts": 10**20},
                           "'max_attempts' must be an integer from 1 to 1,000,000"),
                          ({"at": 20, "queue": "dev", "run_seconds": 1, "outcome": "failed",
                            "retryable": "false"}, "'retryable' must be true or false"),
                          ({"at": 20, "queue": "dev", "attempts": [{"run_seconds": 1, "bogus": 1}]},
                           "unknown key 'bogus' in an attempt"),
                          ({"at": 20, "queue": "dev", "outcome": "failed", "attempts": [{"run_seconds": 1}]},
                           "'outcome' goes in each of 'attempts' when they are given")]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"at": 10, "queue": "dev", "run_seconds": 5}\n' + json.dumps(line) + "\n")
        with pytest.raises(BadInput, match=f"bad.jsonl:2: .*{problem}"):
            list(read_jsonl(bad))
    bad.write_bytes(b'{"at": 0, "queue": "dev", "run_seconds": 6}\n' * 2000 + b"\xff\xfe\n")
    with pytest.raises(BadInput, match=r"bad\.jsonl:2001: not UTF-8 text$"):  # (the line itself)
        list(read_jsonl(bad))
    bad.write_text('{"at": 0, "queue": "dev", "run_seconds": 6}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(BadInput, match=r"bad\.jsonl:2: nested too deeply to read$"):  # (a RecursionError)
        list(read_jsonl(bad))


def test_the_capacity_search_finds_the_smallest_capacity_and_shows_its_curve():
    def evaluate(capacity: int) -> dict[str, object]:
        return {"time_to_drain_seconds": 0.0, "queues": {"dev": {"wait_p95": 600.0 / capacity}}}

    found, curve = search(evaluate, "dev", parse_target("wait_p95<=1m"), start=2, ceiling=1000)
    assert found == 10
    capacities = [point["capacity"] for point in curve]
    assert capacities == sorted(capacities) and 9 in capacities and 10 in capacities
    assert [p["met"] for p in curve] == [p["capacity"] >= 10 for p in curve]
    assert search(evaluate, "dev", parse_target("wait_p95<1s"), start=2, ceiling=64)[0] is None


@pytest.mark.parametrize("text", ["wait<=5m", "wait_p95=5m", "wait_p95<=soon", "dead_lettered<=1.5"])
def test_a_bad_target_is_refused(text):
    with pytest.raises(BadInput, match="--target"):
        parse_target(text)


def nearest_rank(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@given(st.lists(st.one_of(st.just(0.0), st.floats(min_value=TINY, max_value=1.7e308)), min_size=1),
       st.sampled_from([0.0, 0.01, 0.5, 0.95, 0.99, 1.0]))
def test_a_sketch_reads_quantiles_within_its_accuracy_and_counts_exactly(values, share):
    sketch = Sketch(values)
    exact = nearest_rank(values, share)
    assert abs(sketch.quantile(share) - exact) <= RELATIVE_ACCURACY * exact * (1 + 1e-9)
    assert (sketch.quantile(share) == 0.0) == (exact == 0.0)  # zero is exact
    assert (len(sketch), sketch.largest, sketch.smallest) == (len(values), max(values), min(values))
    assert sketch.total == sum(values)
    assert sketch.quantile(1.0) == max(values)


def test_a_sketch_stays_small_however_many_values_it_holds():
    """A day of waits from a millisecond to a year fills at most ~2,400 buckets: its
    memory follows the range of the values, not their number."""
    draws = [10 ** (-3 + 10.5 * (i * 0.6180339887 % 1)) for i in range(200_000)]
    sketch = Sketch(draws)
    assert len(sketch) == 200_000 and len(sketch.buckets) <= 2_420
    assert Sketch().quantile(0.5) is None


def test_a_sketch_refuses_what_is_no_duration_and_reads_under_a_nanosecond_as_zero():
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite number of seconds"):
            Sketch().add(bad)
    tiny = Sketch([1e-300, 5e-320, 2.0])
    assert (tiny.quantile(0.5), tiny.smallest, tiny.quantile(1.0)) == (0.0, 5e-320, 2.0)
    assert Sketch([-3.0, 1.0]).quantile(0.5) == 0.0  # a negative counts as zero


def test_a_long_run_keeps_a_bounded_depth_series_with_its_peak():
    """Sampled each second, a task running 300 days after a burst would make 26 million
    samples per queue: past `MAX_DEPTH_SAMPLES` the interval doubles and pairs merge
    into their larger, so the series stays bounded and the burst's peak stays in it."""
    burst = [(1.0, [Attempt(0.0, 10.0, "succeeded")]) for _ in range(5)]
    long = (0.0, [Attempt(0.0, 300 * 86400.0, "succeeded")])
    policy = QueuePolicy(max_attempts=1, backoff_base_seconds=0.0)
    every_second = Scenario(agents=(FleetAgent("ann", "dev", 2),), plan_policy=PlanPolicy(),
                            queue_policy=lambda _q: policy, tick_seconds=5.0, sample_seconds=1.0)
    run = simulate(tasks(long, *burst), every_second)
    depth = run.queue("dev").depth
    assert len(depth) <= MAX_DEPTH_SAMPLES
    assert max(depth) == 5  # from 1 s to 5 s: the burst waits for the next tick (the long one runs)
    # the series spans the run: samples x interval reach its end, within one interval
    assert abs(len(depth) * run.sample_seconds - (run.ended_at - run.started_at)) <= run.sample_seconds


def test_a_recorded_attempt_starts_when_its_command_ran():
    # assigned at 0, its start recorded at 2, its command ran 3 s later, ended at 10:
    # the attempt waited 5 s to start and ran 5 s
    def record(seq: int, kind: str, second: int, **data: object) -> Recorded:
        return Recorded(seq=seq, stream_id="task-1", type=kind, schema_version=1,
                        recorded_at=f"2026-01-01T00:00:{second:02d}.000000Z",
                        data=json.dumps({"task_id": 1, **data}), prev_hash="", hash="")

    log = [record(1, "TaskSubmitted", 0, queue="dev", title="t"), record(2, "TaskAssigned", 0),
           record(3, "TaskStarted", 2), record(4, "TaskSucceeded", 10, start_delay_seconds=3.0)]
    workload = LogWorkload(iter(log), None, None, lambda _q: 3)
    list(workload.facts())
    assert workload.attempt(1, 1) == Attempt(5.0, 5.0, "succeeded")


def logged(*entries: tuple[str, float, int, dict]) -> LogWorkload:
    """A workload read from a log of these (type, second, task id, fields) records."""
    records = [Recorded(seq=seq, stream_id=f"task-{task}", type=kind, schema_version=1,
                        recorded_at=f"2026-01-01T00:00:{second:09.6f}Z",
                        data=json.dumps({"task_id": task, **data}), prev_hash="", hash="")
               for seq, (kind, second, task, data) in enumerate(entries, 1)]
    return LogWorkload(iter(records), None, None, lambda _q: 1)


def test_a_task_approved_while_its_parent_runs_waits_for_it_and_is_doomed_with_it():
    """An approval made the task ready at once: it ran beside its parent, and succeeded
    where the log says it was doomed when the parent died."""
    log = logged(("TaskSubmitted", 0, 1, {"queue": "dev", "title": "parent", "max_attempts": 1}),
                 ("TaskSubmitted", 0, 2, {"queue": "dev", "title": "child", "after": [1], "max_attempts": 1,
                                          "requires_approval": True}),
                 ("TaskAssigned", 0, 1, {}), ("TaskStarted", 0, 1, {}),
                 ("TaskApproved", 1, 2, {}),
                 ("TaskFailed", 10, 1, {"reason": "exit_code", "retryable": False}))
    dev = simulate(log, scenario(FleetAgent("ann", "dev", 2), max_attempts=1)).queue("dev")
    assert (dev.succeeded, dev.dead, dev.doomed) == (0, 1, 1)


def test_a_task_after_one_that_already_died_is_doomed_on_arrival():
    """A parent ended dead before the child arrived was taken for a task outside the
    workload: the child ran."""
    died = (0.0, [Attempt(0.0, 10.0, "failed", retryable=False)])
    for arrives in (3.0, 100.0):  # while its parent runs, and after it died
        workload = ListedWorkload([(Arrival(task_id=1, at=died[0], queue="dev"), died[1]),
                                   (Arrival(task_id=2, at=arrives, queue="dev", after=(1,)), [OK])])
        dev = simulate(workload, scenario(FleetAgent("ann", "dev", 2), max_attempts=1)).queue("dev")
        assert (dev.succeeded, dev.dead, dev.doomed) == (0, 1, 1), arrives


def test_the_depth_counts_waiting_tasks_on_one_time_axis_for_every_queue():
    """It counted assigned and running tasks too (two running tasks drew a full chart),
    and a queue seen late was drawn from the run's start."""
    every_30s = Scenario(agents=(FleetAgent("ann", "dev", 2),), plan_policy=PlanPolicy(),
                         queue_policy=lambda _q: QueuePolicy(), tick_seconds=5.0, sample_seconds=30.0)
    running = simulate(tasks((0.0, [Attempt(0.0, 600.0, "succeeded")]),
                             (0.0, [Attempt(0.0, 600.0, "succeeded")])), every_30s)
    assert set(running.queue("dev").depth) == {0}
    late = ListedWorkload([(Arrival(task_id=1, at=0.0, queue="dev"), [Attempt(0.0, 1800.0, "succeeded")]),
                           (Arrival(task_id=2, at=1200.0, queue="qa"), [OK])])  # (no qa agent: it waits)
    run = simulate(late, every_30s)
    dev, qa = list(run.queue("dev").depth), list(run.queue("qa").depth)
    assert len(dev) == len(qa) == 60  # a sample each 30 s from 30 to 1800 s
    assert qa.index(1) == 40 and set(qa[40:]) == {1}  # from the first sample after 1200 s


def test_the_time_to_drain_ends_with_the_last_attempt_not_a_later_rejection():
    log = logged(("TaskSubmitted", 0, 1, {"queue": "dev", "title": "a"}),
                 ("TaskSubmitted", 0, 2, {"queue": "dev", "title": "b", "requires_approval": True}),
                 ("TaskAssigned", 0, 1, {}), ("TaskStarted", 0, 1, {}), ("TaskSucceeded", 1.5, 1, {}),
                 ("TaskRejected", 8, 2, {}))
    figures = summary(simulate(log, scenario(FleetAgent("ann", "dev", 1))))
    assert figures["time_to_drain_seconds"] == 1.5
    assert figures["agents"]["ann"]["utilization"] == 1.0


def test_the_difference_names_what_only_the_what_if_has_in_a_fixed_order():
    from scheduler.whatif.figures import difference

    base = {"agents": {"ann": {"attempts": 3}, "old": {"attempts": 1}}}
    other = {"agents": {"ann": {"attempts": 5}, "zed": {"attempts": 1}, "bob": {"attempts": 2}}}
    assert json.dumps(difference(base, other)) == json.dumps(
        {"agents": {"ann": {"attempts": 2}, "old": None, "bob": None, "zed": None}})


def test_work_held_back_by_hours_holds_no_other_queue_back():
    """While one agent's hours held its queue's work back, every other queue was ticked
    once a minute, not at the interval: a dev task arriving at 3 s waited until 60 s."""
    workload = ListedWorkload([(Arrival(task_id=1, at=0.0, queue="night"), [OK]),
                               (Arrival(task_id=2, at=3.0, queue="dev"), [OK]),
                               (Arrival(task_id=3, at=130.0, queue="dev"), [OK])])
    fleet = scenario(FleetAgent("night", "night", 1, hours=("09:00-17:00",)), FleetAgent("ann", "dev", 1))
    run = simulate(workload, fleet, keep_order=True)
    assert dict(zip((t for t, _ in run.order), run.waited, strict=True)) == {2: 2.0, 3: 0.0, 1: 9 * 3600.0}
