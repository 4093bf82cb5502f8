"""schemathesis against the API's own contract, /openapi.json, in-process: for every
operation, generated requests, valid and not (wrong types, unknown fields, a mangled
token), get no server error, and every answer is one the contract declares (status code,
content type, headers, body schema).

(Not schemathesis.pytest.from_fixture: under pytest 9 it fails on a pytest attribute
that no longer exists; the operations are looped over in one test instead.)"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from tests.server.conftest import Api

ENDLESS = "/api/v1/events"  # an endless stream: a call never returns (test_events_stream.py covers it)
EXAMPLES = 25  # per operation and mode, with a fixed seed (derandomize): quick, the same every run
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def test_the_api_keeps_its_contract(api: Api):
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app).exclude(path=ENDLESS)
    checked = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in MODES:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
            def keeps_its_contract(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=api.auth("ops"))

            try:
                keeps_its_contract()
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
                continue  # nothing to get wrong (GET /health takes no input)
            checked.add((operation.label, mode.value))
    assert {("GET /health", "positive"), ("GET /api/v1/status", "negative"),
            ("POST /api/v1/pause", "negative"), ("POST /api/v1/resume", "positive")} <= checked
