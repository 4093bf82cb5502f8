"""Failure policy and flow control on a real database with a manual clock: backoff,
failover, dead letters and requeue, cancel, approval, delays, backpressure."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest

from cli.main import main
from eventlog.errors import BadInput, Refused
from eventlog.timeutil import from_text, to_text
from scheduler import operator, worker
from scheduler.durations import parse_duration
from scheduler.reads import queries
from scheduler.submit import TaskSpec, submit
from scheduler.tick import tick

TWO_DEVS = [{"agentName": "ann", "agentType": "dev"}, {"agentName": "bob", "agentType": "dev"}]


def add(ws, n=1, **kw):
    return [s.task_id for s in submit(ws, [TaskSpec(queue="dev", title=f"t{i}", **kw) for i in range(n)])]


def status(ws, task_id):
    return queries.show(ws, task_id)[0].status


def test_a_flaky_task_fails_twice_then_succeeds_on_another_agent(make_workspace):
    ws = make_workspace([*TWO_DEVS, {"agentName": "cy", "agentType": "dev"}], backoff_base_seconds=5)
    ws.rng = random.Random(3)
    (task_id,) = add(ws)
    agents_seen = []
    for attempt in (1, 2):
        ws.clock.advance(10)  # past any backoff drawn so far (caps 5 s, then 10 s)
        tick(ws)
        holder = queries.show(ws, task_id)[0].agent
        claim = worker.claim(ws, holder)
        agents_seen.append(holder)
        assert worker.fail(ws, task_id, claim.token, f"flake {attempt}") == "queued"
    ws.clock.advance(10)
    tick(ws)
    third = queries.show(ws, task_id)[0].agent
    claim = worker.claim(ws, third)
    worker.complete(ws, task_id, claim.token, {"ok": True})
    assert len(set([*agents_seen, third])) == 3  # each attempt on a different agent
    assert status(ws, task_id) == "succeeded"


def test_a_poison_task_is_dead_lettered_after_3_attempts_and_requeued_fresh(make_workspace):
    ws = make_workspace(TWO_DEVS, backoff_base_seconds=0)
    (task_id,) = add(ws)
    for _ in range(3):
        tick(ws)
        holder = queries.show(ws, task_id)[0].agent
        worker.fail(ws, task_id, worker.claim(ws, holder).token, "poison")
    task, history = queries.show(ws, task_id)
    assert task.status == "dead"
    assert json.loads(history[-1].data)["errors"] == ["poison"] * 3
    assert [t.task_id for t in queries.list_tasks(ws, status_="dead")] == [task_id]
    with pytest.raises(Refused, match="only dead tasks"):
        operator.requeue(ws, [add(ws)[0]])
    assert operator.requeue(ws, [task_id]) == [task_id]
    task = queries.show(ws, task_id)[0]
    assert (task.status, task.excluded, task.attempt - task.attempt_floor) == ("queued", (), 0)
    tick(ws)
    holder = queries.show(ws, task_id)[0].agent
    claim = worker.claim(ws, holder)
    assert claim.attempt == 4  # attempt numbers stay unique; three fresh ones remain
    assert worker.fail(ws, task_id, claim.token, "again") == "queued"


def test_requeue_all_of_a_queue(make_workspace):
    ws = make_workspace(TWO_DEVS)
    dead = add(ws, 2, max_attempts=1)
    for task_id in dead:
        claim = worker.claim(ws, "ann" if task_id == dead[0] else "bob")
        worker.fail(ws, task_id, claim.token, "x")
    assert sorted(operator.requeue(ws, queue="dev")) == dead
    assert all(status(ws, t) == "queued" for t in dead)


def test_retries_wait_out_their_backoff(make_workspace):
    ws = make_workspace(TWO_DEVS, backoff_base_seconds=100)
    (task_id,) = add(ws)
    claim = worker.claim(ws, "ann")
    ws.clock.advance(7)
    ws.rng = random.Random(0)  # the jitter is drawn from the workspace's random source
    worker.fail(ws, task_id, claim.token, "x")
    *_, failed, requeued = queries.show(ws, task_id)[1]
    assert (failed.type, requeued.type) == ("TaskFailed", "TaskRequeued")
    assert json.loads(requeued.data)["reason"] == "failed"  # the drawn delay is in the event:
    # docs/operations.md: uniform in [0, min(max, base * factor ^ (attempts used - 1))),
    # here [0, min(3600, 100 * 2 ^ 0)) after the first failure
    expected = failed.at + timedelta(seconds=random.Random(0).random() * min(3600, 100 * 2 ** 0))
    not_before = from_text(json.loads(requeued.data)["not_before"])
    assert abs(not_before - expected) <= timedelta(milliseconds=1), (not_before, expected)
    assert to_text(not_before) == queries.show(ws, task_id)[0].not_before
    assert to_text(ws.clock.now()) < queries.show(ws, task_id)[0].not_before
    assert worker.claim(ws, "bob") is None and tick(ws).assigned == []  # still backing off
    ws.clock.advance(100)
    assert tick(ws).assigned == [{"task_id": task_id, "agent": "bob"}]


def test_cancel_queued_and_assigned_at_once(make_workspace):
    ws = make_workspace(TWO_DEVS)
    queued, assigned = add(ws, 2)
    assert operator.cancel(ws, queued, "me", "not needed") == "cancelled"
    tick(ws)
    assert status(ws, assigned) == "assigned"
    assert operator.cancel(ws, assigned, "me") == "cancelled"
    assert all(a["assigned"] == 0 for a in queries.status(ws)["agents"].values())
    with pytest.raises(Refused, match="already cancelled"):
        operator.cancel(ws, queued, "me")


def test_cancel_running_reaches_the_worker_at_its_heartbeat(make_workspace):
    ws = make_workspace(TWO_DEVS)
    (task_id,) = add(ws)
    claim = worker.claim(ws, "ann")
    assert operator.cancel(ws, task_id, "me") == "running"
    assert queries.show(ws, task_id)[0].cancelling
    assert worker.heartbeat(ws, task_id, claim.token).cancel is True
    assert worker.fail(ws, task_id, claim.token, "stopping as asked") == "cancelled"
    failed = [json.loads(r.data) for r in queries.show(ws, task_id)[1] if r.type == "TaskFailed"]
    assert failed[-1]["reason"] == "cancelled"
    assert queries.status(ws)["queues"]["dev"]["cancelled"] == 1


def test_a_cancelling_task_whose_lease_expires_ends_cancelled(make_workspace):
    ws = make_workspace(TWO_DEVS, lease_seconds=30)
    (task_id,) = add(ws)
    worker.claim(ws, "ann")
    operator.cancel(ws, task_id, "me")
    ws.clock.advance(30)
    tick(ws)
    assert status(ws, task_id) == "cancelled"


def test_approval_gate(make_workspace):
    ws = make_workspace(TWO_DEVS)
    first, second = add(ws, 2, requires_approval=True)
    assert status(ws, first) == "awaiting_approval"
    assert tick(ws).assigned == []
    operator.decide_approval(ws, [first], "lead", approve=True)
    operator.decide_approval(ws, [second], "lead", approve=False, reason="too risky")
    assert [a["task_id"] for a in tick(ws).assigned] == [first]
    assert status(ws, second) == "cancelled"
    approved = [json.loads(r.data) for r in queries.show(ws, first)[1] if r.type == "TaskApproved"]
    assert approved == [{"task_id": first, "by": "lead"}]
    with pytest.raises(Refused, match="not awaiting approval"):
        operator.decide_approval(ws, [first], "lead", approve=True)


def test_a_delayed_task_waits(make_workspace):
    ws = make_workspace(TWO_DEVS)
    (task_id,) = add(ws, not_before=ws.clock.now() + parse_duration("10m"))
    assert tick(ws).assigned == []
    ws.clock.advance(599)
    assert tick(ws).assigned == []
    ws.clock.advance(1)
    assert [a["task_id"] for a in tick(ws).assigned] == [task_id]
    assert parse_duration("2h") == timedelta(hours=2) and parse_duration("90") == timedelta(seconds=90)


def test_a_full_queue_refuses_the_whole_batch(tmp_path, make_workspace):
    ws = make_workspace(TWO_DEVS)
    (ws.settings.home / "sched.toml").write_text("[queues.dev]\nmax_queue_depth = 3\n")
    from scheduler.config.settings import load_settings

    ws.settings = load_settings({}, {"home": ws.settings.home}).settings
    add(ws, 2)
    before = queries.status(ws)["last_seq"]
    with pytest.raises(Refused, match="queue full: 'dev' holds 2 open tasks, max_queue_depth is 3"):
        add(ws, 2)
    assert queries.status(ws)["last_seq"] == before
    add(ws, 1)  # exactly full is fine


def test_a_duplicate_idempotency_key_in_a_batch(make_workspace):
    ws = make_workspace(TWO_DEVS)
    results = submit(ws, [TaskSpec(queue="dev", title="a", idempotency_key="k"),
                          TaskSpec(queue="dev", title="b", idempotency_key="k")])
    assert [r.task_id for r in results] == [1, 1] and [r.created for r in results] == [True, False]


def test_a_chain_of_three_runs_in_order(make_workspace):
    ws = make_workspace(TWO_DEVS)
    (a,) = add(ws)
    (b,) = add(ws, after=[a])
    (c,) = add(ws, after=[b])
    assert [status(ws, t) for t in (a, b, c)] == ["queued", "blocked", "blocked"]
    assert [x["task_id"] for x in tick(ws).assigned] == [a]
    for expected_next in (b, c, None):
        done = next(t for t in (a, b, c) if status(ws, t) == "assigned")
        holder = queries.show(ws, done)[0].agent
        worker.complete(ws, done, worker.claim(ws, holder).token)
        assigned = [x["task_id"] for x in tick(ws).assigned]
        assert assigned == ([expected_next] if expected_next else [])
    assert [status(ws, t) for t in (a, b, c)] == ["succeeded"] * 3
    assert queries.verify_log(ws).ok


def test_a_failed_parent_dead_letters_the_whole_chain(make_workspace):
    ws = make_workspace(TWO_DEVS)
    (a,) = add(ws, max_attempts=1)
    (b,) = add(ws, after=[a])
    (c,) = add(ws, after=[b], requires_approval=True)
    claim = worker.claim(ws, "ann")
    assert worker.fail(ws, a, claim.token, "broken") == "dead"
    report = tick(ws)
    assert sorted(report.dead_lettered) == [b, c]
    reasons = {t: json.loads(queries.show(ws, t)[1][-1].data)["reason"] for t in (b, c)}
    assert reasons == {b: f"task {a} it runs after ended dead", c: f"task {b} it runs after ended dead"}
    assert queries.verify_log(ws).ok


def test_a_cancelled_parent_dooms_its_dependants_and_after_refuses_the_impossible(make_workspace):
    ws = make_workspace(TWO_DEVS)
    (a,) = add(ws)
    (b,) = add(ws, after=[a])
    operator.cancel(ws, a, "me")
    assert tick(ws).dead_lettered == [b]
    with pytest.raises(BadInput, match="that task is cancelled"):
        add(ws, after=[a])
    with pytest.raises(BadInput, match="--after 99: no such task"):
        add(ws, after=[99])


def test_a_parent_named_twice_is_waited_on_once(make_workspace):
    ws = make_workspace(TWO_DEVS)
    (a,) = add(ws)
    (b,) = add(ws, after=[a, a])
    assert queries.show(ws, b)[0].waiting_on == (a,)
    assert queries.show(ws, a)[0].blocks == (b,)


def test_among_equal_priorities_the_task_that_unblocks_more_goes_first(make_workspace):
    ws = make_workspace([{"agentName": "ann", "agentType": "dev"}])
    plain, busy = add(ws, 2)
    add(ws, 2, after=[busy])
    assert tick(ws).assigned == [{"task_id": busy, "agent": "ann"}]
    assert status(ws, plain) == "queued"


def test_affinity_sends_a_task_type_to_the_agent_that_succeeds_at_it(make_workspace):
    ws = make_workspace(TWO_DEVS, backoff_base_seconds=0)
    for agent, ok in (("ann", False), ("bob", True)):  # build a record for type "lint"
        (task_id,) = add(ws, 1, task_type="lint", assignee=agent)
        claim = worker.claim(ws, agent)
        if ok:
            worker.complete(ws, task_id, claim.token)
        else:
            worker.fail(ws, task_id, claim.token, "lint crashed", retry=False)
    (task_id,) = add(ws, 1, task_type="lint")
    assert tick(ws).assigned == [{"task_id": task_id, "agent": "bob"}]  # not ann, though "ann" < "bob"
    (other,) = add(ws, 1, task_type="docs")
    assert tick(ws).assigned == [{"task_id": other, "agent": "ann"}]  # bob is busy now
    assert queries.verify_log(ws).ok


def test_a_closed_gate_holds_its_queue_while_others_go_on(make_workspace):
    from scheduler.config.settings import load_settings

    ws = make_workspace()  # dev: ann, bob; qa: qin
    up = ws.settings.home / "database-is-up"
    (ws.settings.home / "sched.toml").write_text(
        f'[queues.dev]\ngate = ["test", "-e", "{up}"]\ngate_cache_seconds = 60\n')
    ws.settings = load_settings({}, {"home": ws.settings.home}).settings
    (dev,) = add(ws)
    (qa,) = submit(ws, [TaskSpec(queue="qa", title="q")])
    report = tick(ws)
    assert report.assigned == [{"task_id": qa.task_id, "agent": "qin"}] and report.gates_closed == ["dev"]
    assert queries.status(ws)["gates_closed"]["dev"]["detail"] == "gate 'test' exited 1"
    assert worker.claim(ws, "ann") is None  # a claim assigns nothing from a gated queue either
    up.touch()
    assert tick(ws).assigned == []  # the failed result is cached for 60 s
    ws.clock.advance(60)
    report = tick(ws)
    assert report.gates_closed == [] and [a["task_id"] for a in report.assigned] == [dev]
    kinds = [r.type for r in queries.replay(ws)]
    assert (kinds.count("QueueGateClosed"), kinds.count("QueueGateOpened")) == (1, 1)
    assert queries.status(ws)["gates_closed"] == {}
    assert queries.verify_log(ws).ok


def test_a_closed_gate_says_why_its_last_check_failed(make_workspace):
    """Its gate changed while closed (another command, another exit): status and
    explain kept the reason it first closed with."""
    from scheduler.config.settings import load_settings
    from scheduler.reads.explain import explain

    ws = make_workspace()
    toml = ws.settings.home / "sched.toml"

    def gate(argv: str) -> None:
        toml.write_text(f'[queues.dev]\ngate = {argv}\ngate_cache_seconds = 1\n')
        ws.settings = load_settings({}, {"home": ws.settings.home}).settings

    gate('["false"]')
    (dev,) = add(ws)
    assert tick(ws).gates_closed == ["dev"]
    assert queries.status(ws)["gates_closed"]["dev"]["detail"] == "gate 'false' exited 1"
    gate('["sh", "-c", "echo replica lagging; exit 7"]')
    ws.clock.advance(2)
    assert tick(ws).gates_closed == ["dev"]
    now = "gate 'sh' exited 7: replica lagging"
    assert queries.status(ws)["gates_closed"]["dev"]["detail"] == now
    assert explain(ws, dev)["now"]["held"] == [f"the gate of queue dev is closed: {now}"]
    kinds = [r.type for r in queries.replay(ws)]
    assert kinds.count("QueueGateClosed") == 1  # (a reason is no new event: the log says when it closed)


def test_a_gate_taken_out_while_closed_opens_its_queue_and_any_output_is_told(make_workspace):
    """A gate that printed bytes that are not UTF-8 closes its queue with its line
    (decoding it stopped every tick); taken out of sched.toml while closed, it opens the
    queue at the next tick (nothing would run it again: the queue stayed closed)."""
    from scheduler.config.settings import load_settings

    ws = make_workspace()
    toml = ws.settings.home / "sched.toml"
    toml.write_text('[queues.dev]\ngate = ["sh", "-c", "printf \'db down \\\\377\\\\000\\\\n\'; exit 1"]\n')
    ws.settings = load_settings({}, {"home": ws.settings.home}).settings
    (dev,) = add(ws)
    assert tick(ws).gates_closed == ["dev"]
    assert queries.status(ws)["gates_closed"]["dev"]["detail"] == "gate 'sh' exited 1: db down \ufffd"
    toml.write_text("")
    ws.settings = load_settings({}, {"home": ws.settings.home}).settings
    report = tick(ws)
    assert report.gates_closed == [] and [a["task_id"] for a in report.assigned] == [dev]
    (opened,) = [r for r in queries.replay(ws) if r.type == "QueueGateOpened"]
    assert json.loads(opened.data) == {"queue": "dev", "detail": "its gate was taken out of the settings"}
    assert queries.verify_log(ws).ok


def test_an_old_low_priority_task_overtakes_a_crowd_of_young_high_ones(make_workspace):
    ws = make_workspace([{"agentName": "ann", "agentType": "dev"}], age_boost_seconds=600,
                        age_boost_max=10)
    (old,) = add(ws, 1, priority=0)
    ws.clock.advance(600 * 5)  # +5 points
    young = add(ws, 20, priority=3)
    ordered = queries.list_tasks(ws, queue="dev")
    assert ordered[0].task_id == old
    figures = queries.pick_figures(ws, ordered[:1])[old]
    assert (figures["effective_priority"], figures["waited_seconds"]) == (5, 3000.0)
    assert tick(ws).assigned == [{"task_id": old, "agent": "ann"}]  # found in its age band
    assert all(status(ws, t) == "queued" for t in young)


def test_a_task_sent_back_without_an_attempt_keeps_its_wait_and_its_age(make_workspace):
    """An assignment its agent never started (taken back at its start deadline), or one
    an operator released (a drain), used no attempt: the task's wait goes on from when
    it became ready, and the priority it earned by waiting stays, instead of starting
    over at each bounce, behind younger work."""
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "command": ["true"]}],
                        age_boost_seconds=600, age_boost_max=10, start_deadline_seconds=60)
    ws.launcher = lambda settings, task_id: None  # nobody starts what a tick assigns

    def figures(task_id):
        return queries.pick_figures(ws, [queries.show(ws, task_id)[0]])[task_id]

    (old,) = add(ws)
    assert tick(ws).assigned == [{"task_id": old, "agent": "ann"}]
    ws.clock.advance(1200)  # long past its start deadline
    report = tick(ws)  # taken back, and assigned again at once: ann is free
    assert report.expired == [{"task_id": old, "agent": "ann", "reason": "not_started"}]
    assert status(ws, old) == "assigned" and figures(old)["waited_seconds"] == 1200.0
    ws.clock.advance(600)
    operator.drain(ws, "ann", "op")  # released: back in its queue
    assert status(ws, old) == "queued"
    assert (figures(old)["waited_seconds"], figures(old)["effective_priority"]) == (1800.0, 3)


def test_a_requeued_dependant_waits_for_its_requeued_parent(make_workspace):
    ws = make_workspace(TWO_DEVS)
    (a,) = add(ws, max_attempts=1)
    (b,) = add(ws, after=[a])
    worker.fail(ws, a, worker.claim(ws, "ann").token, "broken")
    assert tick(ws).dead_lettered == [b]
    with pytest.raises(Refused, match=f"runs after task {a}, which is dead"):
        operator.requeue(ws, [b])
    assert sorted(operator.requeue(ws, queue="dev")) == [a, b]
    assert (status(ws, a), status(ws, b)) == ("queued", "blocked")
    report = tick(ws)
    assert report.dead_lettered == []  # b hopes again: it waits for a, it is not doomed
    assert [x["task_id"] for x in report.assigned] == [a]  # b is not runnable yet
    holder = queries.show(ws, a)[0].agent
    claim = worker.claim(ws, holder)
    assert claim.task.task_id == a
    worker.complete(ws, a, claim.token)
    assert status(ws, b) == "queued"
    assert queries.verify_log(ws).ok


def test_a_requeued_task_that_was_never_approved_waits_for_approval_again(make_workspace):
    """A task submitted to wait for approval died waiting (its parent died); requeued
    with its parent, it went to the queue and ran with no approval ever recorded. It
    waits for approval again now; one that had been approved runs after its parent."""
    ws = make_workspace(TWO_DEVS)
    (parent,) = add(ws, max_attempts=1)
    gated, allowed = (s.task_id for s in submit(ws, [
        TaskSpec(queue="dev", title="deploy", after=[parent], requires_approval=True),
        TaskSpec(queue="dev", title="approved", after=[parent], requires_approval=True)]))
    operator.decide_approval(ws, [allowed], by="kim", approve=True)
    worker.fail(ws, parent, worker.claim(ws, "ann").token, "broken")
    tick(ws)
    assert (status(ws, gated), status(ws, allowed)) == ("dead", "dead")
    assert sorted(operator.requeue(ws, queue="dev")) == [parent, gated, allowed]
    assert (status(ws, parent), status(ws, gated), status(ws, allowed)) == ("queued", "awaiting_approval",
                                                                            "blocked")
    claim = worker.claim(ws, "ann")
    worker.complete(ws, parent, claim.token)
    assert (status(ws, gated), status(ws, allowed)) == ("awaiting_approval", "queued")
    assert [x["task_id"] for x in tick(ws).assigned] == [allowed]  # not the one nobody allowed
    operator.decide_approval(ws, [gated], by="kim", approve=True)
    assert status(ws, gated) == "queued"
    requeued = [r.event for r in queries.show(ws, gated)[1] if r.type == "TaskRequeued"]
    assert [(e.to_approve, e.by) for e in requeued] == [(True, None)]
    assert queries.verify_log(ws).ok


def test_requeue_all_of_a_queue_leaves_dead_the_tasks_after_a_cancelled_one(make_workspace):
    ws = make_workspace()
    (parent,) = submit(ws, [TaskSpec(queue="dev", title="parent")])
    (child,) = submit(ws, [TaskSpec(queue="dev", title="child", after=[parent.task_id])])
    operator.cancel(ws, parent.task_id, by="op")
    tick(ws)  # the child can never run: dead-lettered
    assert queries.show(ws, child.task_id)[0].status == "dead"
    assert operator.requeue(ws, queue="dev") == []
    assert queries.show(ws, child.task_id)[0].status == "dead"
    with pytest.raises(Refused) as refused:
        operator.requeue(ws, [child.task_id])
    assert refused.value.message == (  # not "requeue it first": a cancelled task is not requeued
        f"task {child.task_id} runs after task {parent.task_id}, which is cancelled: it can never start "
        "(a cancelled task is not requeued)")


def test_a_requeued_dependant_does_not_wait_on_a_parent_that_succeeded_while_it_was_dead(make_workspace):
    ws = make_workspace()
    p1, p2 = (s.task_id for s in submit(ws, [TaskSpec(queue="dev", title="p1"),
                                             TaskSpec(queue="dev", title="p2", max_attempts=1)]))
    (child,) = submit(ws, [TaskSpec(queue="dev", title="child", after=[p1, p2])])
    claims = {c.task.task_id: c for c in (worker.claim(ws, "ann"), worker.claim(ws, "ann"))}
    worker.fail(ws, p2, claims[p2].token, "boom")  # p2 dead: the child is dead-lettered
    tick(ws)
    worker.complete(ws, p1, claims[p1].token)  # p1 succeeds while the child is dead
    operator.requeue(ws, [p2, child.task_id])
    assert queries.show(ws, child.task_id)[0].waiting_on == (p2,)  # not p1 any more
    again = worker.claim(ws, "ann")
    assert again.task.task_id == p2
    worker.complete(ws, p2, again.token)
    assert queries.show(ws, child.task_id)[0].status == "queued"
    assert queries.verify_log(ws).ok


def test_a_claim_takes_back_expired_leases_of_its_type_first(make_workspace):
    # a pull-only fleet with no tick running: ann dies holding a task; bob's claim recovers it
    ws = make_workspace(TWO_DEVS, backoff_base_seconds=0, lease_seconds=60)
    (task_id,) = add(ws)
    assert worker.claim(ws, "ann").task.task_id == task_id  # and ann is never heard of again
    ws.clock.advance(61)
    claimed = worker.claim(ws, "bob")
    assert claimed is not None and claimed.task.task_id == task_id
    kinds = [rec.type for rec in queries.show(ws, task_id)[1]]
    assert kinds[-4:] == ["LeaseExpired", "TaskRequeued", "TaskAssigned", "TaskStarted"]
    assert queries.verify_log(ws).ok


def test_a_claim_leaves_other_queues_to_their_own_agents(make_workspace):
    ws = make_workspace(lease_seconds=60)  # ann and bob serve dev, qin serves qa
    (qa_task,) = submit(ws, [TaskSpec(queue="qa", title="check")])
    assert worker.claim(ws, "qin").task.task_id == qa_task.task_id
    ws.clock.advance(61)
    assert worker.claim(ws, "ann") is None  # nothing for dev; qa's expiry is not ann's to settle
    assert status(ws, qa_task.task_id) == "running"


def test_an_idempotency_key_names_one_task_of_one_queue(make_workspace):
    ws = make_workspace()
    (first,) = submit(ws, [TaskSpec(queue="dev", title="a", idempotency_key="k")])
    with pytest.raises(BadInput, match="already names task 1 of queue 'dev'"):
        submit(ws, [TaskSpec(queue="qa", title="b", idempotency_key="k")])
    with pytest.raises(BadInput) as within:  # (no task 2 exists: the line names the other item)
        submit(ws, [TaskSpec(queue="qa", title="c", idempotency_key="new"),
                    TaskSpec(queue="dev", title="d", idempotency_key="new")])
    assert within.value.message == ("idempotency key 'new' is also that of task 1 of the batch, a task of "
                                    "queue 'qa', not a task of 'dev'; nothing submitted")
    with pytest.raises(BadInput) as lines:
        submit(ws, [TaskSpec(queue="qa", title="c", idempotency_key="new"),
                    TaskSpec(queue="dev", title="d", idempotency_key="new")],
               wheres=["b.jsonl:1", "b.jsonl:2"])
    assert lines.value.message == ("b.jsonl:2: idempotency key 'new' is also that of b.jsonl:1, a task of "
                                   "queue 'qa', not a task of 'dev'; nothing submitted")
    assert [t.task_id for t in queries.list_tasks(ws)] == [first.task_id]


def test_a_task_dead_because_its_parent_died_says_so(make_workspace, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    ws = make_workspace(TWO_DEVS)
    (a,) = add(ws, max_attempts=1)
    (b,) = add(ws, after=[a])
    worker.fail(ws, a, worker.claim(ws, "ann").token, "broken")
    tick(ws)
    dead = queries.show(ws, b)[0]
    assert dead.dead_reason == f"task {a} it runs after ended dead"
    assert main(["tasks", "--status", "dead", "--home", str(ws.settings.home)], clock=ws.clock) == 0
    listed = capsys.readouterr().out
    assert "why dead" in listed and f"task {a} it runs after ended dead" in listed
    assert queries.show(ws, a)[0].dead_reason == "attempts used up (1 of 1)"
    operator.requeue(ws, [a, b])
    assert queries.show(ws, b)[0].dead_reason is None


def test_a_gone_wrapper_is_named_as_the_last_error(make_workspace):
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "command": ["true"]}])
    (task_id,) = add(ws)
    ws.launcher = lambda settings, task_id: None
    tick(ws)
    from scheduler.runner.exec import start

    start(ws, task_id, {})  # records TaskStarted with this process as the wrapper
    report = tick(ws, alive=lambda pid: False)  # as if that process were gone
    assert report.expired == [{"task_id": task_id, "agent": "ann", "reason": "wrapper_gone"}]
    task = queries.show(ws, task_id)[0]
    assert task.last_error is not None and task.last_error.startswith("the sched exec wrapper (pid ")
    assert "lease expired" not in task.last_error


def _started_on(ws, monkeypatch, machine):
    """One task assigned to a push agent and started by a wrapper that recorded `machine`."""
    from scheduler.runner import exec as runner

    (task_id,) = add(ws)
    ws.launcher = lambda settings, task_id: None
    tick(ws)
    monkeypatch.setattr(runner, "this_machine", lambda: machine)
    started = runner.start(ws, task_id, {})
    runner.forget_cgroups([started])  # its command never runs: nothing would remove its group
    return task_id


def test_an_attempt_started_on_another_machine_under_the_same_host_name_is_left_to_its_lease(
        make_workspace, monkeypatch):
    """Two machines given one host name (a cloned VM): the other's wrapper pid means
    nothing here, so its running attempt is not taken for dead; its lease still ends it
    if nobody renews it."""
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "command": ["true"]}])
    task_id = _started_on(ws, monkeypatch, "m1/b1/4026531836")
    for elsewhere in ("m2/b7/4026531836", "m1/b1/4026532999"):  # another machine; a container
        report = tick(ws, alive=lambda pid: False, machine=lambda m=elsewhere: m)
        assert report.expired == []
        assert status(ws, task_id) == "running"
    ws.clock.advance(ws.settings.lease_seconds + 1)
    report = tick(ws, alive=lambda pid: False, machine=lambda: "m2/b7/4026531836")
    assert report.expired == [{"task_id": task_id, "agent": "ann", "reason": "lease_expired"}]


def test_an_attempt_of_an_earlier_boot_is_taken_back_whatever_its_pid_now_names(make_workspace, monkeypatch):
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "command": ["true"]}])
    task_id = _started_on(ws, monkeypatch, "m1/b1/4026531836")
    report = tick(ws, alive=lambda pid: True, machine=lambda: "m1/b1/4026531836")
    assert report.expired == [] and status(ws, task_id) == "running"  # its wrapper runs: left alone
    report = tick(ws, alive=lambda pid: True, machine=lambda: "m1/b2/4026531836")  # after a restart
    assert report.expired == [{"task_id": task_id, "agent": "ann", "reason": "wrapper_gone"}]
    task = queries.show(ws, task_id)[0]
    assert task.last_error is not None and task.last_error.endswith("is gone: the machine restarted since")


def test_an_attempt_of_another_machine_under_the_same_host_name_is_never_signalled_here(
        make_workspace, monkeypatch):
    """Evicting its agent (or taking back its expired lease) stops an attempt's processes
    only where its wrapper runs: here, a pid (and the process group it names) is another
    machine's, and signalling it could stop something unrelated."""
    from scheduler import operator as operations
    from scheduler.machine import this_machine
    from scheduler.runner import containment

    stopped: list[int] = []
    monkeypatch.setattr(containment, "stop_attempt", lambda ref, grace=0.0: stopped.append(ref.task_id) or [])
    ws = make_workspace([{"agentName": "ann", "agentType": "dev", "command": ["true"]},
                         {"agentName": "bob", "agentType": "dev", "command": ["true"]}])
    elsewhere = _started_on(ws, monkeypatch, "m2/b7/4026531836")
    here = _started_on(ws, monkeypatch, this_machine())
    holders = {t: queries.show(ws, t)[0].agent for t in (elsewhere, here)}
    told = [operations.evict(ws, holders[t], by="op") for t in (elsewhere, here)]
    assert stopped == [here]
    assert [(c.taken_back, c.stopped) for c in told] == [([elsewhere], []), ([here], [here])]
