"""The size a payload is measured at is the size the log stores it at."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.errors import BadInput
from eventlog.events import TaskSubmitted, dump_event
from eventlog.values import check_json, encoded_size

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),  # any text: accents, emoji, quotes and control characters
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def stored_bytes(payload: object) -> int:
    """The bytes `payload` adds to a stored TaskSubmitted row over a null payload."""
    def row(value: object) -> int:
        return len(dump_event(TaskSubmitted(task_id=1, queue="dev", title="t", payload=value)).encode())
    return row(payload) - row(None) + len("null")


@given(json_values)
def test_encoded_size_is_the_size_of_the_payload_in_the_stored_event(value):
    assert encoded_size(value) == stored_bytes(value)


def test_a_float_is_measured_as_the_log_writes_it():
    # json.dumps writes 1.5e-07; the stored event, and the size measured, 1.5e-7
    assert encoded_size([1.5e-7]) == len("[1.5e-7]") == stored_bytes([1.5e-7])


def test_a_payload_at_the_limit_is_kept_and_one_byte_over_is_refused():
    at_limit = {"note": "é" * 10}  # {"note":"éééééééééé"}: 9 + 20 + 2 bytes
    assert check_json(at_limit, "payload", 31) is at_limit
    with pytest.raises(BadInput, match=r"payload: is 31 bytes, over the limit of 30"):
        check_json(at_limit, "payload", 30)
