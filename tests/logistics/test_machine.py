"""The state machine's table, read the way the SPEC states it, and the API's vocabulary agreeing with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest

from app.logistics import machine
from app.logistics.schemas import (
    DeliveredEventIn,
    EventStatus,
    ReceiptEventIn,
    ShipmentStatus,
    TrackingEventIn,
)
from app.models.shipment import SHIPMENT_STATUSES

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_the_api_the_table_and_the_database_name_the_same_statuses() -> None:
    assert set(get_args(ShipmentStatus)) == set(machine.TRANSITIONS) == set(SHIPMENT_STATUSES)
    assert set(get_args(EventStatus)) == set(machine.POSTABLE)
    postable = {
        status
        for model in (TrackingEventIn, DeliveredEventIn, ReceiptEventIn)
        for status in get_args(model.model_fields["status"].annotation)
    }
    assert postable == set(machine.POSTABLE)
    assert machine.FINAL == {"receipt_confirmed", "returned", "cancelled"}
    assert set(machine.ALLOCATION_STATUS) == set(machine.TRANSITIONS)


def test_only_the_programme_may_cancel_and_only_a_planned_shipment() -> None:
    assert machine.allowed_next("planned", programme=False) == ["handed_over"]
    assert machine.allowed_next("planned", programme=True) == ["handed_over", "cancelled"]
    assert all(
        "cancelled" not in following
        for status, following in machine.TRANSITIONS.items()
        if status != "planned"
    )


@pytest.mark.parametrize("final", sorted(machine.FINAL))
@pytest.mark.parametrize("status", machine.POSTABLE)
def test_nothing_leaves_a_final_state(final: str, status: str) -> None:
    if status in machine.PROGRAMME_ONLY:  # the programme's decision, on the current status alone: refused
        with pytest.raises(machine.IllegalTransition):
            machine.decide(final, T0, status, T0 - timedelta(seconds=1), programme=True)
    else:  # a late report is kept, and changes nothing
        late = machine.decide(final, T0, status, T0 - timedelta(seconds=1), programme=True)
        assert late == machine.Decision("recorded", "older_than_current_status")
    with pytest.raises(machine.IllegalTransition) as refused:
        machine.decide(final, T0, status, T0, programme=True)
    assert (refused.value.current, refused.value.allowed) == (final, [])


def test_older_means_strictly_before_the_event_that_set_the_status() -> None:
    assert machine.decide(
        "in_transit", T0, "handed_over", T0 - timedelta(microseconds=1), programme=False
    ) == (machine.Decision("recorded", "older_than_current_status"))
    with pytest.raises(machine.IllegalTransition):
        machine.decide("in_transit", T0, "handed_over", T0, programme=False)
    assert machine.decide("in_transit", T0, "out_for_delivery", T0, programme=False).result == "applied"
    # A planned shipment was set by no event: the first hand-over counts whatever its time.
    assert (
        machine.decide("planned", T0, "handed_over", T0 - timedelta(days=3), programme=False).result
        == "applied"
    )
