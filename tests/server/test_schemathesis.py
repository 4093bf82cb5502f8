"""schemathesis against the API's own contract, /openapi.json, in-process: for every
operation, generated requests, valid and not (wrong types, unknown fields, a mangled
token), get no server error, and every answer is one the contract declares (status code,
content type, headers, body schema).

One check is left out: `positive_data_acceptance` (a schema-valid request must not be
refused). The API refuses what its schema cannot express, exactly as the CLI does (a
submit with neither queue nor title, `agent` with `unassigned`, a time that is no time),
with 400 and the CLI's line; a test of its own holds those lines equal to the CLI's
(test_same_documents.py). Schema-invalid requests must still be refused.

(Not schemathesis.pytest.from_fixture: under pytest 9 it fails on a pytest attribute
that no longer exists; the operations are looped over in one test instead.)"""

from __future__ import annotations

from collections.abc import Callable

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import positive_data_acceptance

from server.limits import ServerLimits
from tests.server.conftest import Api

ENDLESS = "/api/v1/events"  # an endless stream: a call never returns (test_events_stream.py covers it)
EXAMPLES = 25  # per operation and mode, with a fixed seed (derandomize): quick, the same every run
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def test_the_api_keeps_its_contract(make_api: Callable[..., Api]):
    # a body limit that 1,000 ids fit in: a larger body is refused with 413, which the
    # contract's schema cannot say
    api = make_api(ServerLimits(poll_seconds=0.01, max_body_bytes=256 * 1024))
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app).exclude(path=ENDLESS)
    checked = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in MODES:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
            def keeps_its_contract(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=api.auth("ops"), excluded_checks=[positive_data_acceptance])

            try:
                keeps_its_contract()
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
                continue  # nothing to get wrong (GET /health takes no input)
            checked.add((operation.label, mode.value))
    assert {("GET /health", "positive"), ("GET /api/v1/status", "negative"),
            ("POST /api/v1/pause", "negative"), ("POST /api/v1/resume", "positive")} <= checked
