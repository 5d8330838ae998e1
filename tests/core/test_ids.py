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


def test_single_ids_are_ulids_of_now_that_sort_by_time() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    ids = [new_id("ord") for _ in range(5_000)]
    after = datetime.now(UTC) + timedelta(milliseconds=1)
    assert len(set(ids)) == len(ids)
    for value in ids:
        prefix, _, ulid = value.partition("_")
        decoded = ULID.from_str(ulid)
        assert prefix == "ord" and str(decoded) == ulid and before <= decoded.datetime <= after
    # Made in a later millisecond: sorts after (the cursor order of every list).
    first = ids[0]
    while ULID.from_str(new_id("ord")[4:]).milliseconds == ULID.from_str(first[4:]).milliseconds:
        pass
    assert new_id("ord") > first
