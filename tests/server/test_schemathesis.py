"""schemathesis against the API's own contract, /openapi.json, in-process: for every
operation, generated requests, valid and not (wrong types, unknown fields, a mangled
token), get no server error, and every answer is one the contract declares (status code,
content type, headers, body schema).

One check is left out: `positive_data_acceptance` (a schema-valid request must not be
refused). The API refuses what its schema cannot express, exactly as the CLI does (a
submit with neither queue nor title, `agent` with `unassigned`, a time that is no time),
with 400 and the CLI's line; a test of its own holds those lines equal to the CLI's
(test_same_documents.py). Schema-invalid requests must still be refused.

Each operation is called with a token of the role it needs, over a database holding
tasks in several states, and a valid request names what exists (a generated task id or
agent name almost never does): so every handler runs on valid input, not only its
refusal of a wrong token or an unknown id. A negative case that mangled the token sends
the mangled one.

(Not schemathesis.pytest.from_fixture: under pytest 9 it fails on a pytest attribute
that no longer exists; the operations are looped over in one test instead.)"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import positive_data_acceptance

from scheduler import access, worker
from scheduler.submit import TaskSpec, submit
from server.limits import ServerLimits
from tests.server.conftest import Api

ENDLESS = "/api/v1/events"  # an endless stream: a call never returns (test_events_stream.py covers it)
EXAMPLES = 25  # per operation and mode, with a fixed seed (derandomize): quick, the same every run
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def token_for(path: str) -> str:
    """The token whose role the operation needs: an agent's own work with the agent's,
    a host's starts with the host's, everything else with the operator's (an operator
    may not do an agent's work: those handlers would only ever answer 403)."""
    if path.startswith(("/api/v1/agents/{name}/claim", "/api/v1/tasks/{task_id}/heartbeat",
                        "/api/v1/tasks/{task_id}/progress", "/api/v1/tasks/{task_id}/complete",
                        "/api/v1/tasks/{task_id}/fail", "/api/v1/tasks/{task_id}/release")):
        return "box"
    if path.startswith("/api/v1/hosts/"):
        return "far"
    return "ops"


def check(api: Api, operation: Any, mode: schemathesis.GenerationMode, ids: list[int]) -> set[int]:
    """Generated requests of one operation in one mode keep the contract; the status
    codes they were answered with."""
    token, codes = token_for(operation.path), set()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def keeps_its_contract(case: schemathesis.Case) -> None:
        if mode is schemathesis.GenerationMode.POSITIVE and case.path_parameters:
            # a valid request names what exists (a generated one almost never does)
            named = case.path_parameters
            if "task_id" in named:
                # (crc32, not hash(): a str hash differs from process to process)
                named["task_id"] = ids[zlib.crc32(str(named["task_id"]).encode()) % len(ids)]
            if "name" in named:
                named["name"] = "ann"
            if "host" in named:
                named["host"] = "far-1"
        # a negative case may have mangled the token: then that one is sent, to be refused
        mangled = mode is schemathesis.GenerationMode.NEGATIVE and "Authorization" in (case.headers or {})
        response = case.call_and_validate(headers=None if mangled else api.auth(token),
                                          excluded_checks=[positive_data_acceptance])
        codes.add(response.status_code)

    keeps_its_contract()
    return codes


def test_the_api_keeps_its_contract(make_api: Callable[..., Api]):
    # a body limit that 1,000 ids fit in: a larger body is refused with 413, which the
    # contract's schema cannot say; claims that may not wait (a claim of an agent with no
    # work it may take would wait the whole `wait_seconds`, up to 20 s, longer than the
    # client's timeout: long polls are test_endpoints.py's)
    api = make_api(ServerLimits(poll_seconds=0.01, max_body_bytes=256 * 1024, max_wait_seconds=0))
    api.tokens["far"] = access.create_token(api.ws, "far", "kim", host="far-1").token
    # tasks in every state a path may name: queued, awaiting approval, running for ann
    submitted = submit(api.ws, [TaskSpec(queue="dev", title=f"t{i}", requires_approval=i % 3 == 0)
                                for i in range(9)])
    worker.claim(api.ws, "ann")
    ids = [s.task_id for s in submitted]
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app).exclude(path=ENDLESS)
    checked, answered = set(), defaultdict(set)
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in MODES:
            try:
                answered[(operation.label, mode.value)] = check(api, operation, mode, ids)
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
                continue  # nothing to get wrong (GET /health takes no input)
            checked.add((operation.label, mode.value))
    assert {("GET /health", "positive"), ("GET /api/v1/status", "negative"),
            ("POST /api/v1/pause", "negative"), ("POST /api/v1/resume", "positive")} <= checked
    # every operation's handler ran on valid input: past the token and the lookup of what
    # its path names, at least once
    unreached = sorted(label for (label, mode), codes in answered.items()
                       if mode == "positive" and codes <= {401, 403, 404})
    assert not unreached, {label: answered[(label, "positive")] for label in unreached}
