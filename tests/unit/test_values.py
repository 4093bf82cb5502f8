"""The size a payload is measured at is the size the log stores it at."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventlog.errors import BadInput
from eventlog.values import check_json, encoded_size

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),  # any text: accents, emoji, quotes and control characters
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_encoded_size_is_the_utf8_length_of_the_compact_json(value):
    assert encoded_size(value) == len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def test_a_payload_at_the_limit_is_kept_and_one_byte_over_is_refused():
    at_limit = {"note": "é" * 10}  # {"note":"éééééééééé"}: 9 + 20 + 2 bytes
    assert check_json(at_limit, "payload", 31) is at_limit
    with pytest.raises(BadInput, match=r"payload: is 31 bytes, over the limit of 30"):
        check_json(at_limit, "payload", 30)
