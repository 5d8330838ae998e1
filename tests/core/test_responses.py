"""The order webhook's answers are written by orjson: a platform must get the bytes it got before."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.responses import FastJSONResponse

_BODIES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_BODIES)
def test_an_answer_has_the_bytes_and_headers_starlette_would_write(body: Any) -> None:
    ours = FastJSONResponse(body, status_code=202, media_type="application/problem+json")
    theirs = JSONResponse(body, status_code=202, media_type="application/problem+json")
    assert ours.body == theirs.body
    assert ours.raw_headers == theirs.raw_headers


def test_what_orjson_refuses_is_still_answered() -> None:
    body = {"amount": 2**70, "by_status": {200: 3}, "text": "नेपाल"}
    assert FastJSONResponse(body).body == JSONResponse(body).body
