"""What goes out when boxes move: `package.delivered` to the merchants whose orders paid for an accepted box
(with their share), `shipment.status_changed` to the programme's endpoints."""

from __future__ import annotations

from datetime import timedelta

from tests.helpers import bearer, create_key
from tests.jobs import drain_jobs
from tests.logistics.conftest import Shipping
from tests.receiver import Receiver


async def test_merchants_hear_of_their_accepted_boxes_and_the_programme_of_every_status(
    shipping: Shipping,
) -> None:
    pool = shipping.pool
    tea, cake = await pool.merchant("tea"), await pool.merchant("cake")
    await pool.collect([(tea, "T-1", 700), (cake, "C-1", 300)])
    kind = await pool.kind(unit_cost={"amount": 500, "currency": "USD"})
    await pool.school(["1", "2"])
    run = await pool.run(term="2027-T1", package_kind_id=kind["id"])
    shipment = await shipping.read(run["schools"][0]["shipment_id"])

    programme, merchant = await Receiver().start(), await Receiver().start()
    try:
        for receiver, headers, events in (
            (programme, shipping.admin, ["shipment.status_changed"]),
            (
                merchant,
                bearer(
                    (await create_key(pool.client, pool.admin, role="merchant", merchant_id=cake["id"]))[
                        "token"
                    ]
                ),
                ["package.delivered"],
            ),
        ):
            created = await pool.client.post(
                "/v1/webhook-endpoints", json={"url": receiver.url, "events": events}, headers=headers
            )
            assert created.status_code == 201, created.text
            receiver.secrets.append(created.json()["secret"])

        await shipping.walk(shipment["id"], ["handed_over", "in_transit", "out_for_delivery", "delivered"])
        shipping.pool.clock.advance(timedelta(hours=1))
        late = await shipping.post(shipment["id"], "in_transit", at=shipping.now() - timedelta(days=1))
        assert late.json()["result"] == "recorded"  # changes nothing, so says nothing
        # Tea's money is in the first box, cake's in the second; the second is the one the school accepts.
        first, second = (p["id"] for p in shipment["packages"])
        receipt = await shipping.post(
            shipment["id"],
            "receipt_confirmed",
            packages=[
                {"package_id": first, "outcome": "damaged", "reason": "crushed"},
                {"package_id": second, "outcome": "accepted"},
            ],
        )
        assert receipt.status_code == 201, receipt.text
        await drain_jobs(pool.app)
    finally:
        await programme.stop()
        await merchant.stop()

    # Delivered at least once, in any order: the partner's times put them in order.
    changes = sorted((r.body["data"] for r in programme.received), key=lambda c: c["occurred_at"])
    assert all(r.verified_with == [0] for r in programme.received)
    assert [(c["previous_status"], c["status"]) for c in changes] == [
        ("planned", "handed_over"),
        ("handed_over", "in_transit"),
        ("in_transit", "out_for_delivery"),
        ("out_for_delivery", "delivered"),
        ("delivered", "receipt_confirmed"),
    ]
    assert {c["shipment_id"] for c in changes} == {shipment["id"]}
    [delivered] = [r.body for r in merchant.received]
    assert delivered["type"] == "package.delivered" and merchant.received[0].verified_with == [0]
    data = delivered["data"]
    assert (data["package_id"], data["merchant_id"]) == (second, cake["id"])
    assert data["share"] == {"amount": 300, "currency": "USD"} and data["cost"]["amount"] == 500
    assert (data["country"], data["grade"]) == ("NP", "2") and data["receipt_confirmed_at"]
    assert "student" not in str(delivered) and "school" not in str(data)
