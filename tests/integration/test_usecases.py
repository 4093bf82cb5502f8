"""One use-case layer under two front ends (issue 12, item 1): for every operation, the
`--json` document the CLI prints is the use case's `to_json()` for the same input on
the same state, and bad input through the use case raises the error the CLI prints.

Reads run the CLI (in this process) and the use case on one workspace. Writes run on
twins: the same control file, the same clock, the same steps; the use case acts on
twin A, the CLI on twin B, and each step's documents must be equal (a lease token is
random: each side uses its own, and the claim's token is left out of the comparison).
"""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from eventlog.errors import SchedError
from scheduler.clock import ManualClock
from scheduler.config.settings import load_settings
from scheduler.usecases import actions, fleet, observe, tasks, work
from scheduler.workspace import Workspace
from tests.conftest import DEFAULT_FLEET, write_fleet

Doc = dict[str, Any]


class Side:
    """One home with its own manual clock: the use case on a `Workspace` of it, or the
    CLI's `main()` run in this process with SCHED_HOME set to it."""

    def __init__(self, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        home.mkdir()
        write_fleet(home, DEFAULT_FLEET)
        self.home, self.monkeypatch, self.clock = home, monkeypatch, ManualClock()
        self.ws = Workspace(load_settings({}, {"home": home}).settings, clock=self.clock)
        self.ws.init_db()

    def sched(self, *args: str) -> tuple[int, str, str]:
        """`sched ARGS` in this process: exit code, stdout, stderr."""
        from cli.main import main

        out, err = io.StringIO(), io.StringIO()
        with self.monkeypatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("SCHED_")]:
                patch.delenv(key)
            patch.setenv("SCHED_HOME", str(self.home))
            patch.setenv("USER", "tester")
            patch.chdir(self.home)
            with redirect_stdout(out), redirect_stderr(err):
                code = main(list(args), clock=self.clock)
        return code, out.getvalue(), err.getvalue()

    def json(self, *args: str) -> Doc:
        """The one JSON document `sched ARGS --json` printed (whatever its exit code)."""
        code, out, err = self.sched(*args, "--json")
        assert "Traceback" not in err and code in (0, 1, 2), (args, code, err)
        (line,) = out.splitlines()
        return json.loads(line)

    def events(self) -> int:
        return observe.replay(self.ws, observe.ReplayRequest(head=True)).seq


def plain(document: Doc) -> Doc:
    """A document as JSON gives it back (what --json printed, parsed)."""
    return json.loads(json.dumps(document, default=str))


@pytest.fixture
def twins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Side, Side]]:
    a, b = Side(tmp_path / "a", monkeypatch), Side(tmp_path / "b", monkeypatch)
    yield a, b
    a.ws.close()
    b.ws.close()


# the requests of the CLI's user: `by` is its $USER, as `sched submit` and `requeue` record
submitting = functools.partial(actions.SubmitRequest, by="tester")
requeueing = functools.partial(actions.RequeueRequest, by="tester")


def test_every_write_gives_the_cli_document(twins: tuple[Side, Side]) -> None:
    a, b = twins
    tokens: dict[str, str] = {}

    def same(use_case: Callable[[], Any], *args: str, token_free: bool = False) -> Doc:
        """Run the use case on A and `sched ARGS --json` on B: equal documents."""
        mine, theirs = plain(use_case().to_json()), b.json(*args)
        if token_free:  # a claim: each side got its own token
            tokens["a"], tokens["b"] = mine["task"].pop("token"), theirs["task"].pop("token")
        assert mine == theirs, args
        return mine

    def step(seconds: float = 1) -> None:
        a.clock.advance(seconds)
        b.clock.advance(seconds)

    same(lambda: actions.submit(a.ws, submitting(queue="dev", title="one", priority=2)),
         "submit", "--queue", "dev", "--title", "one", "--priority", "2")
    same(lambda: actions.submit(a.ws, submitting(queue="dev", title="later", delay="10m",
                                                            payload={"k": [1]}, requires=["gpu"])),
         "submit", "-q", "dev", "-t", "later", "--delay", "10m", "--payload", '{"k": [1]}',
         "--requires", "gpu")
    same(lambda: actions.submit(a.ws, submitting(queue="qa", title="ok?", requires_approval=True,
                                                            due="2h", idempotency_key="k1")),
         "submit", "-q", "qa", "-t", "ok?", "--requires-approval", "--due", "2h",
         "--idempotency-key", "k1")
    same(lambda: actions.submit(a.ws, submitting(queue="qa", title="again", idempotency_key="k1")),
         "submit", "-q", "qa", "-t", "again", "--idempotency-key", "k1")  # the same task: not created
    dry = same(lambda: actions.submit(a.ws, submitting(queue="dev", title="dry", dry_run=True)),
               "submit", "-q", "dev", "-t", "dry", "--dry-run")
    assert dry["dry_run"] and dry["changes"]
    lines = [{"queue": "dev", "title": "batch one"},
             {"queue": "qa", "title": "no", "requires_approval": True}]
    batch = b.home / "batch.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    same(lambda: actions.submit(a.ws, submitting(tasks=lines)), "submit", "--file", str(batch))
    step()
    same(lambda: actions.approve(a.ws, actions.ApprovalRequest(task_ids=[3], by="tester")), "approve", "3")
    same(lambda: actions.reject(a.ws, actions.ApprovalRequest(task_ids=[5], by="tester", reason="no")),
         "reject", "5", "--reason", "no")
    same(lambda: fleet.pause(a.ws, fleet.PauseRequest(by="tester", reason="lunch")),
         "pause", "--reason", "lunch")
    same(lambda: fleet.pause(a.ws, fleet.PauseRequest(by="tester")), "pause")  # already paused
    same(lambda: fleet.resume(a.ws, fleet.ResumeRequest(by="tester")), "resume")
    same(lambda: fleet.resume(a.ws, fleet.ResumeRequest(by="tester")), "resume")  # was not paused
    step()

    claimed = same(lambda: work.claim(a.ws, "ann"), "worker", "claim", "--agent", "ann", token_free=True)
    task = str(claimed["task"]["task_id"])
    step()
    same(lambda: work.heartbeat(a.ws, work.ProgressRequest(task_id=int(task), token=tokens["a"], percent=10)),
         "worker", "heartbeat", task, "--token", tokens["b"], "--percent", "10")
    same(lambda: work.heartbeat(a.ws, work.ProgressRequest(task_id=int(task), token=tokens["a"])),
         "worker", "heartbeat", task, "--token", tokens["b"])
    same(lambda: work.progress(a.ws, work.ProgressRequest(task_id=int(task), token=tokens["a"],
                                                          message="half")),
         "worker", "progress", task, "--token", tokens["b"], "--message", "half")
    step(60)
    same(lambda: work.progress(a.ws, work.ProgressRequest(task_id=int(task), token=tokens["a"],
                                                          percent=50.5)),
         "worker", "progress", task, "--token", tokens["b"], "--percent", "50.5")
    same(lambda: work.complete(a.ws, work.CompleteRequest(task_id=int(task), token=tokens["a"],
                                                          result={"done": [1, 2]})),
         "worker", "complete", task, "--token", tokens["b"], "--result", '{"done": [1, 2]}')

    claimed = same(lambda: work.claim(a.ws, "ann"), "worker", "claim", "--agent", "ann", token_free=True)
    task = str(claimed["task"]["task_id"])
    same(lambda: work.fail(a.ws, work.FailRequest(task_id=int(task), token=tokens["a"], error="boom",
                                                  retry=False)),
         "worker", "fail", task, "--token", tokens["b"], "--error", "boom", "--no-retry")
    same(lambda: actions.requeue(a.ws, requeueing(all=True, queue="dev", dry_run=True)),
         "requeue", "--all", "--queue", "dev", "--dry-run")
    same(lambda: actions.requeue(a.ws, requeueing(task_ids=[int(task)])), "requeue", task)
    step()

    claimed = same(lambda: work.claim(a.ws, "ann"), "worker", "claim", "--agent", "ann", token_free=True)
    task = str(claimed["task"]["task_id"])
    same(lambda: actions.cancel(a.ws, actions.CancelRequest(task_id=int(task), by="tester", dry_run=True)),
         "cancel", task, "--dry-run")
    same(lambda: actions.cancel(a.ws, actions.CancelRequest(task_id=int(task), by="tester", reason="enough")),
         "cancel", task, "--reason", "enough")  # running: cancelling until its runner hears it
    same(lambda: work.heartbeat(a.ws, work.ProgressRequest(task_id=int(task), token=tokens["a"])),
         "worker", "heartbeat", task, "--token", tokens["b"])  # cancel: true
    same(lambda: work.fail(a.ws, work.FailRequest(task_id=int(task), token=tokens["a"], error="stopped")),
         "worker", "fail", task, "--token", tokens["b"], "--error", "stopped")
    same(lambda: actions.cancel(a.ws, actions.CancelRequest(task_id=2, by="tester")), "cancel", "2")
    step()

    same(lambda: actions.submit(a.ws, submitting(queue="dev", title="for bob", assignee="bob")),
         "submit", "-q", "dev", "-t", "for bob", "--assignee", "bob")
    same(lambda: work.claim(a.ws, "bob"), "worker", "claim", "--agent", "bob", token_free=True)
    same(lambda: work.claim(a.ws, "qin"), "worker", "claim", "--agent", "qin", token_free=True)
    same(lambda: work.claim(a.ws, "qin"), "worker", "claim", "--agent", "qin")  # {"task": null}
    same(lambda: fleet.drain(a.ws, fleet.ServiceRequest(agent="bob", by="tester", reason="patch")),
         "agents", "drain", "bob", "--reason", "patch")
    same(lambda: fleet.evict(a.ws, fleet.ServiceRequest(agent="qin", by="tester", dry_run=True)),
         "agents", "evict", "qin", "--dry-run")
    same(lambda: fleet.evict(a.ws, fleet.ServiceRequest(agent="qin", by="tester")), "agents", "evict", "qin")
    same(lambda: fleet.restore(a.ws, fleet.ServiceRequest(agent="bob", by="tester")),
         "agents", "restore", "bob")

    # the two logs hold the same events (a lease token's hash aside, and so the chain)
    def trail(side: Side) -> list[tuple[str, str]]:
        trail = observe.replay(side.ws, observe.ReplayRequest()).to_json()["events"]
        return [(e["type"], e["stream_id"]) for e in trail]

    assert trail(a) == trail(b)


@pytest.fixture
def busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Side]:
    """A home with history: done, dead, running, waiting and approval tasks."""
    side = Side(tmp_path / "home", monkeypatch)
    fill(side)
    yield side
    side.ws.close()


def fill(side: Side) -> None:
    """Give a fresh home the history `busy` describes."""
    ws = side.ws
    for title, queue in (("one", "dev"), ("two", "dev"), ("three", "qa"), ("four", "dev")):
        actions.submit(ws, actions.SubmitRequest(queue=queue, title=title, payload={"n": title}))
    actions.submit(ws, actions.SubmitRequest(queue="dev", title="gate", requires_approval=True))
    side.clock.advance(5)
    done = work.claim(ws, "ann").claim
    assert done is not None
    side.clock.advance(30)
    work.complete(ws, work.CompleteRequest(task_id=done.task.task_id, token=done.token, result=[1]))
    lost = work.claim(ws, "ann").claim
    assert lost is not None
    work.fail(ws, work.FailRequest(task_id=lost.task.task_id, token=lost.token, error="x", retry=False))
    assert work.claim(ws, "qin").claim is not None
    side.clock.advance(10)


READS: list[tuple[Callable[[Workspace], Any], tuple[str, ...]]] = [
    (lambda ws: tasks.list_tasks(ws, tasks.ListRequest()), ("tasks",)),
    (lambda ws: tasks.list_tasks(ws, tasks.ListRequest(queue="dev", limit=2)),
     ("tasks", "-q", "dev", "--limit", "2")),
    (lambda ws: tasks.list_tasks(ws, tasks.ListRequest(status="dead")), ("tasks", "--status", "dead")),
    (lambda ws: tasks.list_tasks(ws, tasks.ListRequest(agent="qin")), ("tasks", "--agent", "qin")),
    (lambda ws: tasks.list_tasks(ws, tasks.ListRequest(unassigned=True)), ("tasks", "--unassigned")),
    (lambda ws: tasks.show(ws, 1), ("show", "1")),
    (lambda ws: tasks.show(ws, 2), ("show", "2")),
    (lambda ws: observe.status(ws), ("status",)),
    (lambda ws: observe.status(ws, "4"), ("status", "--at", "4")),
    (lambda ws: observe.status(ws, "2026-01-01T00:00:05+00:00"),
     ("status", "--at", "2026-01-01T00:00:05+00:00")),
    (lambda ws: observe.metrics(ws), ("metrics",)),
    (lambda ws: observe.metrics(ws, "24h"), ("metrics", "--since", "24h")),
    (lambda ws: observe.health(ws), ("health",)),
    (lambda ws: observe.explain(ws, 1), ("explain", "1")),
    (lambda ws: observe.explain(ws, 4), ("explain", "4")),
    (lambda ws: observe.replay(ws, observe.ReplayRequest(verify=True)), ("replay", "--verify")),
    (lambda ws: observe.replay(ws, observe.ReplayRequest(head=True)), ("replay", "--head")),
    (lambda ws: fleet.list_agents(ws), ("agents", "list")),
]


@pytest.mark.parametrize(("use_case", "args"), READS, ids=[" ".join(args) for _, args in READS])
def test_every_read_gives_the_cli_document(busy: Side, use_case: Callable[[Workspace], Any],
                                           args: tuple[str, ...]) -> None:
    assert plain(use_case(busy.ws).to_json()) == busy.json(*args)


def test_health_ends_with_the_exit_code_of_its_level(busy: Side) -> None:
    code, _, _ = busy.sched("health", "--json")
    assert code == observe.health(busy.ws).exit_code


@pytest.mark.parametrize(("request_", "args"), [
    (observe.ReplayRequest(), ()),
    (observe.ReplayRequest(task=1), ("--task", "1")),
    (observe.ReplayRequest(since="3", until="6"), ("--since", "3", "--until", "6")),
    (observe.ReplayRequest(since="2026-01-01T00:00:05+00:00"), ("--since", "2026-01-01T00:00:05+00:00")),
])
def test_replay_prints_the_use_case_events_one_per_line(busy: Side, request_: observe.ReplayRequest,
                                                        args: tuple[str, ...]) -> None:
    """The trail streams: one event per line on the CLI, `{"events": [...]}` as one document."""
    code, out, _ = busy.sched("replay", *args, "--json")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == \
        plain(observe.replay(busy.ws, request_).to_json())["events"]


BAD: list[tuple[Callable[[Workspace], Any], tuple[str, ...]]] = [
    (lambda ws: actions.submit(ws, actions.SubmitRequest(queue="dev")), ("submit", "--queue", "dev")),
    (lambda ws: actions.submit(ws, actions.SubmitRequest(queue="dev", title="t", delay="1m",
                                                         not_before="2026-01-02T00:00:00+00:00")),
     ("submit", "-q", "dev", "-t", "t", "--delay", "1m", "--not-before", "2026-01-02T00:00:00+00:00")),
    (lambda ws: actions.submit(ws, actions.SubmitRequest(queue="dev", title="t", delay="soon")),
     ("submit", "-q", "dev", "-t", "t", "--delay", "soon")),
    (lambda ws: actions.submit(ws, actions.SubmitRequest(queue="dev", title="t", max_attempts=0)),
     ("submit", "-q", "dev", "-t", "t", "--max-attempts", "0")),
    (lambda ws: actions.submit(ws, actions.SubmitRequest(queue="dev", title="t", not_before="tomorrow")),
     ("submit", "-q", "dev", "-t", "t", "--not-before", "tomorrow")),
    (lambda ws: actions.submit(ws, actions.SubmitRequest(queue="ops", title="t")),
     ("submit", "-q", "ops", "-t", "t")),
    (lambda ws: actions.submit(ws, actions.SubmitRequest(queue="dev", title="t", assignee="qin")),
     ("submit", "-q", "dev", "-t", "t", "--assignee", "qin")),
    (lambda ws: actions.submit(ws, actions.SubmitRequest(queue="dev", title="t", after=[99])),
     ("submit", "-q", "dev", "-t", "t", "--after", "99")),
    (lambda ws: actions.submit(ws, actions.SubmitRequest(queue="dev", priority=3, tasks=[{}])),
     ("submit", "--file", "tasks.jsonl", "--queue", "dev", "--priority", "3")),
    (lambda ws: actions.requeue(ws, actions.RequeueRequest()), ("requeue",)),
    (lambda ws: actions.requeue(ws, actions.RequeueRequest(task_ids=[1], all=True, queue="dev")),
     ("requeue", "1", "--all", "--queue", "dev")),
    (lambda ws: actions.requeue(ws, actions.RequeueRequest(task_ids=[1])), ("requeue", "1")),
    (lambda ws: actions.cancel(ws, actions.CancelRequest(task_id=999, by="tester")), ("cancel", "999")),
    (lambda ws: actions.cancel(ws, actions.CancelRequest(task_id=1, by="tester")), ("cancel", "1")),
    (lambda ws: actions.approve(ws, actions.ApprovalRequest(task_ids=[1], by="tester")), ("approve", "1")),
    (lambda ws: actions.reject(ws, actions.ApprovalRequest(task_ids=[999], by="tester")), ("reject", "999")),
    (lambda ws: tasks.list_tasks(ws, tasks.ListRequest(status="sleeping")),
     ("tasks", "--status", "sleeping")),
    (lambda ws: tasks.list_tasks(ws, tasks.ListRequest(agent="ann", unassigned=True)),
     ("tasks", "--agent", "ann", "--unassigned")),
    (lambda ws: tasks.list_tasks(ws, tasks.ListRequest(agent="zed")), ("tasks", "--agent", "zed")),
    (lambda ws: tasks.show(ws, 999), ("show", "999")),
    (lambda ws: observe.status(ws, "yesterday"), ("status", "--at", "yesterday")),
    (lambda ws: observe.metrics(ws, "0"), ("metrics", "--since", "0")),
    (lambda ws: observe.metrics(ws, "a week"), ("metrics", "--since", "a week")),
    (lambda ws: observe.explain(ws, 999), ("explain", "999")),
    (lambda ws: observe.replay(ws, observe.ReplayRequest(expect_head="1:ab")),
     ("replay", "--expect-head", "1:ab")),
    (lambda ws: observe.replay(ws, observe.ReplayRequest(head=True, verify=True)),
     ("replay", "--head", "--verify")),
    (lambda ws: observe.replay(ws, observe.ReplayRequest(verify=True, expect_head="x")),
     ("replay", "--verify", "--expect-head", "x")),
    (lambda ws: observe.replay(ws, observe.ReplayRequest(since="soon")), ("replay", "--since", "soon")),
    (lambda ws: fleet.pause(ws, fleet.PauseRequest(by="tester", reason="x" * 100_000)),
     ("pause", "--reason", "x" * 100_000)),
    (lambda ws: fleet.drain(ws, fleet.ServiceRequest(agent="zed", by="tester")), ("agents", "drain", "zed")),
    (lambda ws: fleet.evict(ws, fleet.ServiceRequest(agent="zed", by="tester")), ("agents", "evict", "zed")),
    (lambda ws: work.claim(ws, "zed"), ("worker", "claim", "--agent", "zed")),
    (lambda ws: work.heartbeat(ws, work.ProgressRequest(task_id=1, token="t", percent=150)),
     ("worker", "heartbeat", "1", "--token", "t", "--percent", "150")),
    (lambda ws: work.heartbeat(ws, work.ProgressRequest(task_id=3, token="not-it")),
     ("worker", "heartbeat", "3", "--token", "not-it")),
    (lambda ws: work.progress(ws, work.ProgressRequest(task_id=1, token="t")),
     ("worker", "progress", "1", "--token", "t")),
    (lambda ws: work.complete(ws, work.CompleteRequest(task_id=999, token="t")),
     ("worker", "complete", "999", "--token", "t")),
    (lambda ws: work.fail(ws, work.FailRequest(task_id=1, token="t", error="  ")),
     ("worker", "fail", "1", "--token", "t", "--error", "  ")),
]


@pytest.mark.parametrize(("use_case", "args"), BAD, ids=[" ".join(args)[:60] for _, args in BAD])
def test_bad_input_raises_what_the_cli_prints(busy: Side, use_case: Callable[[Workspace], Any],
                                              args: tuple[str, ...]) -> None:
    """The same one line and exit code, and nothing appended either way."""
    before = busy.events()
    with pytest.raises(SchedError) as raised:
        use_case(busy.ws)
    code, out, err = busy.sched(*args)
    assert (code, err) == (raised.value.exit_code, f"sched: {raised.value.message}\n")
    assert out == ""
    assert busy.events() == before


def test_a_request_names_what_is_wrong_in_one_line() -> None:
    """Validated from a body (the HTTP front end): wrong types are one BadInput line too."""
    with pytest.raises(SchedError, match=r"^submit: priority: Input should be a valid integer$"):
        actions.SubmitRequest(queue="dev", title="t", priority="5")
    with pytest.raises(SchedError, match=r"^fail: retry: Input should be a valid boolean$"):
        work.FailRequest(task_id=1, token="t", error="x", retry="no")
    with pytest.raises(SchedError, match=r"^agent: surprise: Extra inputs are not permitted$"):
        fleet.ServiceRequest(agent="ann", surprise=1)


def test_the_use_cases_know_no_front_end() -> None:
    """They import neither the CLI nor what only it needs (typer, rich)."""
    from tests.unit.test_core_imports import imported_modules

    files = list((Path(__file__).parents[2] / "scheduler" / "usecases").glob("*.py"))
    assert len(files) > 3  # (moved, it would check nothing)
    for path in files:
        tops = {name.split(".")[0] for name in imported_modules(path)}
        assert not tops & {"cli", "typer", "rich", "sqlalchemy", "sqlmodel"}, path.name
