"""Events that arrive at once: one shipment's events take turns, so its history is one consistent sequence and
its money moves once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx

from tests.helpers import audit_ok
from tests.logistics.conftest import Shipping


def _consistent(shipment: dict[str, Any], answers: list[httpx.Response]) -> list[dict[str, Any]]:
    """Every answer is a 201 (recorded) or a 409 (refused); the history holds exactly the 201s, once each, and
    reads as one sequence: each event starts where the one before left the shipment."""
    assert all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
    recorded = {a.json()["id"] for a in answers if a.status_code == 201}
    history = shipment["events"]
    assert len({e["event_id"] for e in history}) == len(history)
    status = "planned"
    for event in history:
        assert event["status_before"] == status, history
        status = event["status_after"]
    assert status == shipment["status"]
    return [e for e in history if e["id"] in recorded]


async def test_ten_conflicting_events_at_once_leave_one_consistent_history(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["1", "2", "3"])
    await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery"])
    at = shipping.now() + timedelta(minutes=1)
    shipping.pool.clock.advance(timedelta(minutes=2))
    answers = await asyncio.gather(
        *[
            shipping.post(
                shipment["id"], "delivered" if n % 2 else "delivery_failed", event_id=f"C-{n}", at=at
            )
            for n in range(10)
        ]
    )
    read = await shipping.read(shipment["id"])
    new = _consistent(read, answers)
    applied = [e for e in new if e["result"] == "applied"]
    assert len(applied) == 1 and read["status"] == applied[0]["status"]
    # What else got in is only what the winner allows without moving: more scans of a failed delivery.
    assert all(e["reason"] == "repeats_current_status" for e in new if e["result"] == "recorded")
    assert {p["status"] for p in read["packages"]} == {
        "delivered" if read["status"] == "delivered" else "shipped"
    }
    await audit_ok(shipping.client, shipping.admin)


async def test_ten_receipts_at_once_move_the_money_once(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["1", "2", "3"])
    await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery", "delivered"])
    shipping.pool.clock.advance(timedelta(hours=1))
    boxes = [p["id"] for p in shipment["packages"]]
    outcomes = ["accepted", "damaged", "missing"]

    def receipt(n: int) -> list[dict[str, Any]]:
        chosen = [outcomes[(n + i) % 3] for i in range(len(boxes))]
        return [
            {"package_id": box, "outcome": outcome}
            | ({} if outcome == "accepted" else {"reason": f"variant {n}"})
            for box, outcome in zip(boxes, chosen, strict=True)
        ]

    answers = await asyncio.gather(
        *[
            shipping.post(shipment["id"], "receipt_confirmed", event_id=f"R-{n}", packages=receipt(n))
            for n in range(10)
        ]
    )
    assert sorted(a.status_code for a in answers) == [201] + [409] * 9
    read = await shipping.read(shipment["id"])
    [winner] = _consistent(read, answers)
    assert {p["id"]: p["status"] for p in read["packages"]} == {
        o["package_id"]: o["outcome"] for o in winner["packages"]
    }
    assert (
        await shipping.count(
            "SELECT count(*) FROM ledger_entries e WHERE e.cause_type = 'shipment_event'"
            " AND e.cause_id IN (SELECT id FROM shipment_events WHERE shipment_id = :id)",
            id=shipment["id"],
        )
        == 3
    )
    money = await shipping.balances()
    assert money["delivered"] + money["written_off"] == 1500 and money["in_transit"] == 0
    await audit_ok(shipping.client, shipping.admin)


async def test_the_same_event_posted_ten_times_at_once_is_recorded_once(shipping: Shipping) -> None:
    shipment = await shipping.shipment(["1"])
    at = shipping.now()
    answers = await asyncio.gather(
        *[
            shipping.post(shipment["id"], "handed_over", event_id="SAME", at=at, location="hub")
            for _ in range(10)
        ]
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.text for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 9
    read = await shipping.read(shipment["id"])
    assert [e["event_id"] for e in read["events"]] == ["SAME"] and read["status"] == "handed_over"


async def test_a_cancellation_racing_the_hand_over_leaves_one_outcome_and_the_money_in_one_place(
    shipping: Shipping,
) -> None:
    shipment = await shipping.shipment(["1", "2"])
    at = shipping.now()
    answers = await asyncio.gather(
        *[
            shipping.post(shipment["id"], "cancelled", event_id=f"X-{n}", at=at, headers=shipping.admin)
            if n % 2
            else shipping.post(shipment["id"], "handed_over", event_id=f"H-{n}", at=at)
            for n in range(10)
        ]
    )
    read = await shipping.read(shipment["id"], shipping.admin)
    new = _consistent(read, answers)
    assert len([e for e in new if e["result"] == "applied"]) == 1
    funds = await shipping.pool.funds()
    if read["status"] == "cancelled":
        assert funds["pool"]["amount"] == 1000 and funds["packages"]["allocated"]["amount"] == 0
    else:
        assert funds["pool"]["amount"] == 0 and funds["packages"]["in_transit"]["amount"] == 1000
    await audit_ok(shipping.client, shipping.admin)
