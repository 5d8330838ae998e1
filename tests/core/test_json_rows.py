"""Rows sent as one jsonb parameter come back from PostgreSQL exactly as they were: text of any script, quotes and
backslashes, integers at the edges of bigint, None, instants with their offsets, bytes."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.json_rows import rows_from, rows_param

# PostgreSQL's text holds any character but NUL; lone surrogates are not text at all.
TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)
BIGINT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INSTANT = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=45)), timezone(timedelta(hours=-3, minutes=-30))]
    )
)  # fmt: skip
ROW = st.tuples(TEXT, st.none() | BIGINT, INSTANT, st.binary(max_size=40), st.none() | TEXT)
COLUMNS = "t text, n bigint, at timestamptz, b bytea, maybe text"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=6), others=st.lists(ROW, max_size=3))
async def test_rows_come_back_as_they_were_sent(database_url: str, rows: list, others: list) -> None:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        got = await connection.fetch(
            rows_from("$1::jsonb -> 'rows'", COLUMNS), rows_param({"rows": rows, "others": others})
        )
    finally:
        await connection.close()
    assert Counter(tuple(r) for r in got) == Counter(rows)  # an instant equals itself in any offset


def test_a_naive_datetime_or_a_type_it_cannot_carry_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="naive"):
        rows_param({"rows": [(datetime(2026, 1, 1),)]})
    with pytest.raises(TypeError, match="set"):
        rows_param({"rows": [({1},)]})
