"""Order events from a platform: signed, stored, applied exactly once per natural key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from app.donations import repository
from tests.conftest import DEFAULT_DONATION, Shop
from tests.helpers import (
    assert_problem,
    audit_ok,
    create_merchant,
    get_order,
    order_cancelled,
    order_paid,
    order_refunded,
    send_event,
    set_rule,
    signed_headers,
)


async def _counts(app: object) -> dict[str, int]:
    async with app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        return {
            table: (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()  # noqa: S608
            for table in ("orders", "order_refunds", "ledger_entries", "ledger_postings", "webhook_anomalies")
        }


async def test_a_paid_order_gets_its_merchants_donation(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    response = await send_event(client, shop.platform, order_paid("TM-1001", merchant=shop.external_id))
    assert response.status_code == 200 and response.json() == {"status": "applied"}

    order = (await get_order(client, admin, shop.platform["id"], "TM-1001")).json()
    assert order["donation"] == {"amount": DEFAULT_DONATION, "currency": "CNY"}
    assert order["reversed"] == {"amount": 0, "currency": "CNY"}
    assert order["net"] == {"amount": DEFAULT_DONATION, "currency": "CNY"}
    assert order["stage"] == "pledged" and order["merchant_id"] == "shop-88" and order["trail"] == []
    await audit_ok(client, admin)


async def test_redelivery_gets_the_same_answer_and_changes_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: object
) -> None:
    event = order_paid("TM-1", merchant=shop.external_id)
    first = await send_event(client, shop.platform, event, webhook_id="msg_same")
    before = await _counts(app)
    again = await send_event(client, shop.platform, event, webhook_id="msg_same")
    assert (
        (again.status_code, again.json()) == (first.status_code, first.json()) == (200, {"status": "applied"})
    )
    assert await _counts(app) == before


async def test_a_batch_writes_only_what_it_has_and_redeliveries_alone_write_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    original = repository._write_statement

    def recorded(shape: tuple[bool, ...]) -> str:
        statements.append(original(shape))
        return statements[-1]

    monkeypatch.setattr(repository, "_write_statement", recorded)
    paid = order_paid("TM-W", merchant=shop.external_id)
    refunded = order_refunded("TM-W", "R-W", 100, merchant=shop.external_id)
    first = await send_event(client, shop.platform, paid, webhook_id="msg_w1")
    refund = await send_event(client, shop.platform, refunded, webhook_id="msg_w2")
    assert first.is_success and refund.is_success
    # A payment writes its delivery, order and ledger entry, not the refund's or the totals' parts; the refund
    # writes its own, not an order.
    assert "INSERT INTO orders" in statements[0] and "order_refunds" not in statements[0]
    assert "UPDATE orders" not in statements[0] and "webhook_anomalies" not in statements[0]
    assert "INSERT INTO order_refunds" in statements[1] and "UPDATE orders" in statements[1]
    assert "INSERT INTO orders" not in statements[1]

    again = await send_event(client, shop.platform, paid, webhook_id="msg_w1")
    assert (
        (again.status_code, again.json()) == (first.status_code, first.json()) == (200, {"status": "applied"})
    )
    again = await send_event(client, shop.platform, refunded, webhook_id="msg_w2")
    assert (again.status_code, again.json()) == (refund.status_code, refund.json())
    assert len(statements) == 2  # the redeliveries were answered from the read, with no write statement
    order = (await get_order(client, admin, shop.platform["id"], "TM-W")).json()
    assert order["reversed"]["amount"] > 0  # the refund was written once, by the first delivery
    await audit_ok(client, admin)


async def test_same_order_under_another_webhook_id_is_a_duplicate(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: object
) -> None:
    event = order_paid("TM-2", merchant=shop.external_id)
    await send_event(client, shop.platform, event)
    before = await _counts(app)
    # Same order, same content (the envelope's timestamp and the offset placed_at is written in may differ).
    event["timestamp"] = datetime.now(UTC).isoformat()
    placed = datetime.fromisoformat(event["data"]["placed_at"])
    event["data"]["placed_at"] = placed.astimezone(UTC).replace(tzinfo=None).isoformat() + "+00:00"
    again = await send_event(client, shop.platform, event)
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    assert await _counts(app) == before


async def test_same_key_with_other_content_is_409_and_an_anomaly(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: object
) -> None:
    await send_event(client, shop.platform, order_paid("TM-3", merchant=shop.external_id))
    await send_event(client, shop.platform, order_refunded("TM-3", "R-1", 6400, merchant=shop.external_id))
    before = await _counts(app)

    other_items = order_paid(
        "TM-3", merchant=shop.external_id, items=[{"sku": "TEA-01", "quantity": 9, "amount": 1}]
    )
    body = assert_problem(
        await send_event(client, shop.platform, other_items, webhook_id="msg_c1"), 409, "conflicting-event"
    )
    assert "payment:TM-3" in body["detail"]
    other_refund = order_refunded("TM-3", "R-1", 100, merchant=shop.external_id)
    assert_problem(await send_event(client, shop.platform, other_refund), 409, "conflicting-event")

    after = await _counts(app)
    assert after == before | {"webhook_anomalies": before["webhook_anomalies"] + 2}
    anomalies = (await client.get("/v1/webhook-anomalies", headers=admin)).json()["data"]
    assert {(a["kind"], a["natural_key"]) for a in anomalies} == {
        ("conflicting-event", "payment:TM-3"),
        ("conflicting-event", "refund:TM-3:R-1"),
    }
    # The conflicting delivery, redelivered, gets its 409 again and records nothing more.
    assert_problem(
        await send_event(client, shop.platform, other_items, webhook_id="msg_c1"), 409, "conflicting-event"
    )
    assert await _counts(app) == after
    order = (await get_order(client, admin, shop.platform["id"], "TM-3")).json()
    assert (
        order["donation"]["amount"] == DEFAULT_DONATION
        and order["reversed"]["amount"] == DEFAULT_DONATION // 2
    )


async def test_payment_for_an_unknown_merchant_is_parked_then_applied_on_registration(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    event = order_paid("NEW-1", merchant="shop-new")
    response = await send_event(client, shop.platform, event, webhook_id="msg_parked")
    assert response.status_code == 202 and response.json() == {"status": "parked"}
    refund = order_refunded("NEW-1", "R-9", 3200, merchant="shop-new")
    assert (await send_event(client, shop.platform, refund)).status_code == 202

    parked = (await client.get("/v1/parked-events", headers=admin)).json()["data"]
    assert sorted(p["waiting_for"] for p in parked) == ["merchant:shop-new", "order:NEW-1"]
    assert_problem(await get_order(client, admin, shop.platform["id"], "NEW-1"), 404, "not-found")

    merchant = await create_merchant(client, admin, platform_id=shop.platform["id"], external_id="shop-new")
    # No rule yet: the order gives nothing, but it is recorded, and the refund that waited for it applied.
    order = (await get_order(client, admin, shop.platform["id"], "NEW-1")).json()
    assert order["donation"]["amount"] == 0 and order["merchant_id"] == merchant["external_id"]
    assert (await client.get("/v1/parked-events", headers=admin)).json()["data"] == []
    # A redelivery of the parked event now reports what became of it.
    again = await send_event(client, shop.platform, event, webhook_id="msg_parked")
    assert again.status_code == 200 and again.json() == {"status": "applied"}
    await audit_ok(client, admin)


async def test_refund_before_payment_is_parked_then_applied_when_paid(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    refund = order_refunded("TM-4", "R-1", 12800, merchant=shop.external_id)
    assert (await send_event(client, shop.platform, refund)).status_code == 202
    cancel = order_cancelled("TM-5", merchant=shop.external_id)
    assert (await send_event(client, shop.platform, cancel)).status_code == 202

    await send_event(client, shop.platform, order_paid("TM-4", merchant=shop.external_id))
    await send_event(client, shop.platform, order_paid("TM-5", merchant=shop.external_id))
    for order_id in ("TM-4", "TM-5"):
        order = (await get_order(client, admin, shop.platform["id"], order_id)).json()
        assert order["reversed"]["amount"] == DEFAULT_DONATION and order["net"]["amount"] == 0
        assert order["stage"] == "reversed"
    await audit_ok(client, admin)


async def test_full_refund_reverses_exactly_the_donation_whatever_the_partials(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    items = [{"sku": "A", "quantity": 1, "amount": 333}, {"sku": "B", "quantity": 3, "amount": 667}]
    await send_event(client, shop.platform, order_paid("TM-6", merchant=shop.external_id, items=items))
    # 1000 × 150 / 10000 + 4 units × 2 = 15 + 8
    assert (await get_order(client, admin, shop.platform["id"], "TM-6")).json()["donation"]["amount"] == 23

    reversed_after = []
    for n, amount in enumerate([100, 250, 1, 649, 50], start=1):
        refund = order_refunded("TM-6", f"R-{n}", amount, merchant=shop.external_id)
        assert (await send_event(client, shop.platform, refund)).json() == {"status": "applied"}
        reversed_after.append(
            (await get_order(client, admin, shop.platform["id"], "TM-6")).json()["reversed"]["amount"]
        )
    # round_half_even(23 × R / 1000) for R = 100, 350, 351, 1000, and a refund beyond the base reverses nothing more
    assert reversed_after == [2, 8, 8, 23, 23]
    await audit_ok(client, admin)


async def test_cancel_reverses_what_is_left(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    await send_event(client, shop.platform, order_paid("TM-7", merchant=shop.external_id))
    await send_event(client, shop.platform, order_refunded("TM-7", "R-1", 6400, merchant=shop.external_id))
    assert (
        await send_event(client, shop.platform, order_cancelled("TM-7", merchant=shop.external_id))
    ).json() == {"status": "applied"}
    again = await send_event(client, shop.platform, order_cancelled("TM-7", merchant=shop.external_id))
    assert again.json() == {"status": "duplicate"}
    late_refund = order_refunded("TM-7", "R-2", 6400, merchant=shop.external_id)
    assert (await send_event(client, shop.platform, late_refund)).json() == {"status": "applied"}
    order = (await get_order(client, admin, shop.platform["id"], "TM-7")).json()
    assert (order["donation"]["amount"], order["reversed"]["amount"], order["net"]["amount"]) == (196, 196, 0)
    await audit_ok(client, admin)


async def test_refund_must_match_the_orders_currency_and_merchant(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: object
) -> None:
    await send_event(client, shop.platform, order_paid("TM-8", merchant=shop.external_id))
    before = await _counts(app)
    wrong_currency = order_refunded("TM-8", "R-1", 100, merchant=shop.external_id, currency="USD")
    body = assert_problem(
        await send_event(client, shop.platform, wrong_currency), 422, "event-does-not-match-order"
    )
    assert "CNY" in body["detail"]
    wrong_merchant = order_refunded("TM-8", "R-2", 100, merchant="someone-else")
    assert_problem(await send_event(client, shop.platform, wrong_merchant), 422, "event-does-not-match-order")
    after = await _counts(app)
    assert {k: v for k, v in after.items() if k != "webhook_anomalies"} == {
        k: v for k, v in before.items() if k != "webhook_anomalies"
    }
    assert (await get_order(client, admin, shop.platform["id"], "TM-8")).json()["reversed"]["amount"] == 0


async def test_orders_use_the_rule_in_effect_when_placed(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    await set_rule(client, admin, shop.merchant["id"], rate_bps=1000, effective_from=later.isoformat())
    early = order_paid("TM-9", merchant=shop.external_id, placed_at=datetime.now(UTC))
    late = order_paid("TM-10", merchant=shop.external_id, placed_at=later + timedelta(seconds=1))
    await send_event(client, shop.platform, early)
    await send_event(client, shop.platform, late)
    assert (await get_order(client, admin, shop.platform["id"], "TM-9")).json()["donation"]["amount"] == 196
    # the line subtotal 12800 × 1000 / 10000; the new rule has no fixed amount
    assert (await get_order(client, admin, shop.platform["id"], "TM-10")).json()["donation"]["amount"] == 1280


async def test_merchant_sees_its_donations_and_only_a_platforms_orders_are_its_own(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    from tests.helpers import bearer, create_key, create_platform

    for n in range(3):
        await send_event(client, shop.platform, order_paid(f"TM-L{n}", merchant=shop.external_id))
    merchant_key = bearer(
        (await create_key(client, admin, role="merchant", merchant_id=shop.merchant["id"]))["token"]
    )
    page = (
        await client.get(
            f"/v1/merchants/{shop.merchant['id']}/donations", headers=merchant_key, params={"limit": 2}
        )
    ).json()
    rest = (
        await client.get(
            f"/v1/merchants/{shop.merchant['id']}/donations",
            headers=merchant_key,
            params={"cursor": page["next_cursor"]},
        )
    ).json()
    rows = page["data"] + rest["data"]
    assert [r["order_id"] for r in rows] == ["TM-L0", "TM-L1", "TM-L2"] and rest["next_cursor"] is None
    assert all(r["donation"] == {"amount": 196, "currency": "CNY"} and r["stage"] == "pledged" for r in rows)

    own_key = bearer(
        (await create_key(client, admin, role="platform", platform_id=shop.platform["id"]))["token"]
    )
    assert (await client.get("/v1/orders/TM-L0", headers=own_key)).status_code == 200
    other = await create_platform(client, admin)
    other_key = bearer((await create_key(client, admin, role="platform", platform_id=other["id"]))["token"])
    assert_problem(await client.get("/v1/orders/TM-L0", headers=other_key), 404, "not-found")
    assert_problem(
        await client.get(f"/v1/merchants/{shop.merchant['id']}/donations", headers=other_key),
        404,
        "not-found",
    )


async def test_unknown_platform_is_404(client: httpx.AsyncClient, shop: Shop) -> None:
    body = json.dumps(order_paid("X", merchant=shop.external_id)).encode()
    headers = signed_headers(shop.platform["webhook_secret"], body)
    assert_problem(
        await client.post("/v1/webhooks/orders/plt_nope", content=body, headers=headers), 404, "not-found"
    )
