"""A JSON body's shape is measured on its bytes before it is parsed: values and depth exactly as a parser would
count them, so the limits refuse what they say and nothing else."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import InvalidRequest
from app.core.json_body import DEFAULT_LIMITS, JsonLimits, PayloadTooLarge, check_shape, parse_json

# Strings full of what would confuse a scan that ignored them: brackets, commas, quotes and escapes.
_tricky_text = st.text(alphabet=st.sampled_from(list('[]{},:"\\ \n\tab\u00e9\u4e2d\x00')), max_size=8)
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_tricky_text, children, max_size=4),
    max_leaves=40,
)


def _values(value: Any) -> int:
    if isinstance(value, list):
        return 1 + sum(_values(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(_values(v) for v in value.values())
    return 1


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300)
@given(value=_json_values, indent=st.sampled_from([None, 0, 2]), ascii_only=st.booleans())
def test_values_and_depth_are_counted_exactly(value: Any, indent: int | None, ascii_only: bool) -> None:
    body = json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode()
    values, depth = _values(value), _depth(value)
    check_shape(body, JsonLimits(depth=depth, values=values))  # exactly at both limits: accepted
    with pytest.raises(PayloadTooLarge):
        check_shape(body, JsonLimits(depth=depth, values=values - 1))
    if depth > 0:
        with pytest.raises(InvalidRequest):
            check_shape(body, JsonLimits(depth=depth - 1, values=values))


def test_the_worst_shapes_are_refused_quickly_and_with_their_reason() -> None:
    eight_mib = 8 * 1024 * 1024
    cases: list[tuple[bytes, type[Exception], str]] = [
        (b"[" + b"[]," * (eight_mib // 3) + b"[]]", PayloadTooLarge, "more than 100000 values"),
        (b"[" + b'"",' * (eight_mib // 3) + b'""]', PayloadTooLarge, "more than 100000 values"),
        (b"[" + b"0," * (eight_mib // 2) + b"0]", PayloadTooLarge, "more than 100000 values"),
        (b"[" * eight_mib, PayloadTooLarge, "more than 100000 values"),  # each open array would be one
        (b"[" * 99_999, InvalidRequest, "deeper than 32 levels"),
        (b'{"a":' * 33 + b"1" + b"}" * 33, InvalidRequest, "deeper than 32 levels"),
    ]
    for body, refusal, reason in cases:
        started = time.perf_counter()
        with pytest.raises(refusal, match=reason):
            parse_json(body)
        # Well under a second on a slow machine: a scan of bytes, never a parse into objects.
        assert time.perf_counter() - started < 1.0, body[:20]


@pytest.mark.parametrize(
    "body",
    [
        b'"' + b'\\"' * 2_000_000,  # an unterminated string of escaped quotes
        b'"\\' * 2_000_000,
        b'"' * 4_000_000,  # two million empty strings, no commas: refused by the count of quotes
    ],
    ids=["escaped quotes", "quote-backslash", "bare quotes"],
)
def test_unterminated_and_escaped_strings_are_scanned_in_linear_time(body: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises((ValueError, PayloadTooLarge)):
        parse_json(body)
    assert time.perf_counter() - started < 1.0


def test_a_body_within_the_limits_parses_with_exact_numbers() -> None:
    body = b"[" * 32 + b"999999999999999.99" + b"]" * 32
    parsed: Any = parse_json(body)
    for _ in range(32):
        (parsed,) = parsed
    assert parsed == Decimal("999999999999999.99")
    at_limit = b"[" + b"0," * (DEFAULT_LIMITS.values - 2) + b"0]"
    assert len(parse_json(at_limit)) == DEFAULT_LIMITS.values - 1
