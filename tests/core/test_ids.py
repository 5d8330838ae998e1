"""Ids made in bulk are the same kind of id as one made alone: prefixed ULIDs of now, all different."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ulid import ULID

from app.core.ids import new_id, new_ids_in_bulk


def test_ids_made_in_bulk_are_distinct_ulids_of_now_like_a_single_one() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    ids = new_ids_in_bulk("pkg", 20_000)
    after = datetime.now(UTC) + timedelta(milliseconds=1)
    assert len(ids) == len(set(ids)) == 20_000
    single = new_id("pkg")
    for value in ids:
        prefix, _, ulid = value.partition("_")
        assert prefix == "pkg" and len(value) == len(single)
        assert str(ULID.from_str(ulid)) == ulid and before <= ULID.from_str(ulid).datetime <= after
    assert new_ids_in_bulk("alc", 0) == []
