"""Shipment events and photos are in the log once, under the key that sent them; the same again is no change."""

from __future__ import annotations

from tests.evidence.photos import photo
from tests.helpers import assert_problem
from tests.logistics.conftest import Shipping
from tests.logistics.conftest import pool as pool  # the fixtures, for this file too
from tests.logistics.conftest import shipping as shipping


async def test_a_partners_events_and_photos_are_recorded_once_and_a_refused_one_not_at_all(
    shipping: Shipping,
) -> None:
    shipment = await shipping.shipment(["3"])
    handed = await shipping.post(shipment["id"], "handed_over", event_id="E-handed")
    assert handed.status_code == 201, handed.text
    again = await shipping.post(shipment["id"], "handed_over", event_id="E-handed", at=shipping.now())
    assert again.headers.get("Idempotent-Replayed") == "true", again.text
    assert_problem(await shipping.post(shipment["id"], "planned", event_id="E-back"), 422, "invalid-request")
    image = photo("PNG")
    for _ in range(2):  # the same photo twice: one evidence
        sent = await shipping.client.post(
            f"/v1/shipments/{shipment['id']}/evidence",
            content=image,
            headers={**shipping.partner_key, "Content-Type": "image/png"},
        )
        assert sent.status_code == 201, sent.text
    cancel = await shipping.post(shipment["id"], "cancelled", event_id="E-cancel", headers=shipping.admin)
    assert cancel.status_code == 409, cancel.text  # it has left: only a planned shipment may be cancelled

    log = (
        await shipping.client.get(
            "/v1/activity",
            params={"resource_type": "shipment", "resource_id": shipment["id"]},
            headers=shipping.admin,
        )
    ).json()["data"][::-1]
    assert [(e["action"], e["key_role"], e["key_logistics_partner_id"]) for e in log] == [
        ("shipment.post_event", "logistics", shipping.partner["id"]),
        ("shipment.add_evidence", "logistics", shipping.partner["id"]),
    ]
    assert log[0]["details"] == {
        "event_id": handed.json()["id"],
        "status": "handed_over",
        "result": "applied",
        "status_after": "handed_over",
    }
    assert log[1]["details"] == {"evidence_id": sent.json()["evidence_id"]}


async def test_the_programme_cancelling_a_planned_shipment_is_recorded_under_its_key(
    shipping: Shipping,
) -> None:
    shipment = await shipping.shipment(["3"])
    cancel = await shipping.post(shipment["id"], "cancelled", note="school closed", headers=shipping.admin)
    assert cancel.status_code == 201, cancel.text
    [entry] = (
        await shipping.client.get(
            "/v1/activity", params={"action": "shipment.post_event"}, headers=shipping.admin
        )
    ).json()["data"]
    assert (entry["resource_id"], entry["key_name"], entry["details"]["status"]) == (
        shipment["id"],
        "ops",
        "cancelled",
    )
    assert "school closed" not in str(entry)  # a note is free text: it stays on the shipment, not in the log
