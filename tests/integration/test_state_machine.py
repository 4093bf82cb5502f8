"""A Hypothesis state machine drives sched through random sequences of submits, ticks,
claims, heartbeats, completions, failures, clock jumps, control-file changes and
database reopenings, and checks the invariants after every step -- against the event
log itself, with a checker that shares no code with the projections."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from eventlog.errors import BadInput, NotFound, Refused, TokenRejected
from scheduler import operator, worker
from scheduler.config.settings import load_settings
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick
from scheduler.workspace import Workspace
from tests.conftest import databases_for, new_workspace, write_fleet
from tests.invariants import check_log

FLEETS = [
    [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 2},
     {"agentName": "bob", "agentType": "dev", "maxConcurrency": 1},
     {"agentName": "qin", "agentType": "qa", "maxConcurrency": 1}],
    [{"agentName": "ann", "agentType": "dev", "maxConcurrency": 1},
     {"agentName": "qin", "agentType": "qa", "maxConcurrency": 2}],
    [{"agentName": "bob", "agentType": "dev", "maxConcurrency": 3, "enabled": False},
     {"agentName": "cy", "agentType": "dev", "maxConcurrency": 1},
     {"agentName": "qin", "agentType": "qa", "maxConcurrency": 1}],
]
NAMES = ["ann", "bob", "cy", "qin"]
MAX_ATTEMPTS = 2
FINAL_OR_WAITING = {"awaiting_approval", "blocked", "queued", "assigned", "running", "succeeded", "dead",
                    "cancelled"}


class SchedMachine(RuleBasedStateMachine):
    # a fresh database for each example (None: the file in the example's home)
    new_database: Callable[[], str | None] = staticmethod(lambda: None)

    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(prefix="sched-sm-"))
        self.ws = new_workspace(self.home, FLEETS[0], database=self.new_database(), lease_seconds=30,
                                start_deadline_seconds=20, max_attempts=MAX_ATTEMPTS)
        self.ws.rng = random.Random(7)  # retry jitter, reproducible per example
        self.fleet = FLEETS[0]
        self.live: dict[int, tuple[str, object]] = {}  # task -> (token, lease expiry)
        self.stale: list[tuple[int, str]] = []
        self.submitted = 0

    def teardown(self) -> None:
        self.ws.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def retire(self, task_id: int) -> None:
        token, _ = self.live.pop(task_id)
        self.stale.append((task_id, token))

    @rule(queue=st.sampled_from(["dev", "qa"]), count=st.integers(1, 3), priority=st.integers(0, 2),
          directed=st.sampled_from([None, "ann", "cy", "qin"]), approval=st.booleans(),
          key=st.sampled_from([None, "k1", "k2"]), chained=st.booleans())
    def submit_tasks(self, queue, count, priority, directed, approval, key, chained):
        types = {a["agentName"]: a["agentType"] for a in self.fleet}
        hopeful = [t.task_id for t in queries.list_tasks(self.ws)
                   if t.status not in {"dead", "cancelled"}]
        after = [max(hopeful)] if chained and hopeful else []
        specs = [TaskSpec(queue=queue, title="t", priority=priority, requires_approval=approval,
                          assignee=directed if types.get(directed) == queue else None,
                          idempotency_key=key and f"{queue}-{key}", after=after)
                 for _ in range(count)]
        if queue not in types.values():
            try:
                submit(self.ws, specs)
            except BadInput:
                return
            raise AssertionError("submit to a queue nobody serves was accepted")
        self.submitted += sum(s.created for s in submit(self.ws, specs))

    @rule()
    def run_tick(self):
        report = tick(self.ws)
        for item in report.expired:
            if item["task_id"] in self.live:
                self.retire(item["task_id"])

    @rule(agent=st.sampled_from(NAMES))
    def claim(self, agent):
        if agent not in {a["agentName"] for a in self.fleet}:
            try:
                worker.claim(self.ws, agent)
            except NotFound:
                return
            raise AssertionError("claim by an agent outside the control file was accepted")
        got = worker.claim(self.ws, agent)
        if got is not None:
            held = self.live.get(got.task.task_id)
            # a claim first takes back its type's expired leases: only those may go again
            assert held is None or self.ws.clock.now() >= held[1], "a live task was claimed again"
            if held is not None:
                self.retire(got.task.task_id)
            self.live[got.task.task_id] = (got.token, got.lease_expires_at)

    def _use_live(self, data, action):
        task_id = data.draw(st.sampled_from(sorted(self.live)))
        token, expires = self.live[task_id]
        if self.ws.clock.now() >= expires:
            try:
                action(task_id, token)
            except TokenRejected:
                self.retire(task_id)
                return None
            raise AssertionError("an expired lease was accepted")
        return task_id, action(task_id, token)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def heartbeat(self, data):
        done = self._use_live(data, lambda t, tok: worker.heartbeat(self.ws, t, tok))
        if done:
            task_id, beat = done
            self.live[task_id] = (self.live[task_id][0], beat.lease_expires_at)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def complete(self, data):
        done = self._use_live(data, lambda t, tok: worker.complete(self.ws, t, tok, {"n": 1}))
        if done:
            self.retire(done[0])

    @precondition(lambda self: self.live)
    @rule(data=st.data(), retry=st.booleans())
    def fail(self, data, retry):
        done = self._use_live(data, lambda t, tok: worker.fail(self.ws, t, tok, "boom", retry=retry))
        if done:
            self.retire(done[0])

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def stale_token_is_refused(self, data):
        task_id, token = data.draw(st.sampled_from(self.stale))
        before = queries.status(self.ws)["last_seq"]
        for call in (worker.heartbeat, worker.complete):
            try:
                call(self.ws, task_id, token)
            except TokenRejected:
                continue
            raise AssertionError(f"stale token of task {task_id} accepted by {call.__name__}")
        assert queries.status(self.ws)["last_seq"] == before

    @rule(data=st.data())
    def cancel(self, data):
        tasks = queries.list_tasks(self.ws)
        if not tasks:
            return
        task = data.draw(st.sampled_from(tasks))
        try:
            after = operator.cancel(self.ws, task.task_id, "tester")
        except Refused:
            assert task.status in {"succeeded", "dead", "cancelled"}
            return
        assert after == ("running" if task.status == "running" else "cancelled")

    @rule(data=st.data(), approve=st.booleans())
    def decide_approval(self, data, approve):
        waiting = queries.list_tasks(self.ws, status_="awaiting_approval")
        if waiting:
            task = data.draw(st.sampled_from(waiting))
            operator.decide_approval(self.ws, [task.task_id], "tester", approve)

    @rule()
    def requeue_dead(self):
        for queue in ("dev", "qa"):
            operator.requeue(self.ws, queue=queue)

    @rule(seconds=st.sampled_from([5, 15, 31]))
    def advance_clock(self, seconds):
        self.ws.clock.advance(seconds)

    @rule(index=st.integers(0, len(FLEETS) - 1))
    def change_control_file(self, index):
        self.fleet = FLEETS[index]
        write_fleet(self.home, self.fleet)

    @rule()
    def reopen_database(self):
        clock = self.ws.clock
        self.ws.close()
        settings_ = load_settings({}, {"home": self.home, "lease_seconds": 30,
                                       "start_deadline_seconds": 20, "max_attempts": MAX_ATTEMPTS})
        self.ws = Workspace(settings_.settings, clock=clock, rng=self.ws.rng)

    @invariant()
    def log_and_projections_agree(self):
        result = queries.verify_log(self.ws)
        assert result.ok, result.problems
        held = check_log(list(queries.replay(self.ws)))
        # each agent's load as the projection has it, against the log's own count (`free`,
        # clamped at 0 by its definition, could not show a miscount)
        agents = queries.status(self.ws)["agents"]
        assert {name: {"assigned": a["assigned"], "running": a["running"]} for name, a in agents.items()
                if a["assigned"] or a["running"]} == held

    @invariant()
    def every_task_is_in_exactly_one_state(self):
        tasks = queries.list_tasks(self.ws)
        assert len(tasks) == self.submitted
        assert all(t.status in FINAL_OR_WAITING for t in tasks), [t.status for t in tasks]
        assert all(t.attempt - t.attempt_floor <= t.max_attempts for t in tasks)
        counts = queries.status(self.ws)["queues"]
        assert sum(sum(c.values()) for c in counts.values()) == self.submitted


def test_scheduler_state_machine(engine, request, tmp_path):
    """The same machine on each storage engine."""
    databases = databases_for(engine, request, tmp_path)

    class OnEngine(SchedMachine):
        new_database = staticmethod(databases.new if engine == "postgresql" else lambda: None)

    run_state_machine_as_test(OnEngine, settings=settings(
        max_examples=40, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
