"""Orders whose figures don't add up: placed too far ahead (refused, can be corrected), placed before any rule
(recorded with the reason), refunded beyond their amount (applied, noted); and who may read the anomalies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import DEFAULT_DONATION, Shop
from tests.helpers import (
    assert_problem,
    audit_ok,
    bearer,
    create_key,
    create_merchant,
    create_platform,
    get_order,
    order_paid,
    order_refunded,
    row_counts,
    send_event,
    set_rule,
)


async def _counts(app: Any) -> dict[str, int]:
    return await row_counts(
        app, "orders", "order_refunds", "ledger_entries", "webhook_deliveries", "webhook_anomalies", "events"
    )


async def _anomalies(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> list[dict[str, Any]]:
    response = await client.get("/v1/webhook-anomalies", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def test_an_order_placed_years_ahead_is_refused_until_corrected_under_the_same_webhook_id(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: Any
) -> None:
    before = await _counts(app)
    future = order_paid("TM-2099", merchant=shop.external_id, placed_at=datetime(2099, 1, 1, tzinfo=UTC))
    body = assert_problem(
        await send_event(client, shop.platform, future, webhook_id="msg_2099"), 422, "placed-at-in-the-future"
    )
    assert "2099-01-01" in body["detail"] and body["errors"][0]["loc"] == ["data", "placed_at"]
    # Sent again as it was: refused again, still one anomaly; nothing else was written either time.
    assert_problem(
        await send_event(client, shop.platform, future, webhook_id="msg_2099"), 422, "placed-at-in-the-future"
    )
    assert await _counts(app) == before | {"webhook_anomalies": before["webhook_anomalies"] + 1}
    assert (await get_order(client, admin, shop.platform["id"], "TM-2099")).status_code == 404
    [anomaly] = await _anomalies(client, admin)
    assert (anomaly["kind"], anomaly["webhook_id"], anomaly["natural_key"]) == (
        "placed-at-in-the-future",
        "msg_2099",
        "payment:TM-2099",
    )

    # The platform fixes placed_at and resends under the same webhook id: it was never claimed, so it applies.
    corrected = order_paid("TM-2099", merchant=shop.external_id)
    applied = await send_event(client, shop.platform, corrected, webhook_id="msg_2099")
    assert (applied.status_code, applied.json()) == (200, {"status": "applied"})
    order = (await get_order(client, admin, shop.platform["id"], "TM-2099")).json()
    assert order["donation"]["amount"] == DEFAULT_DONATION and order["stage"] == "pledged"
    assert len(await _anomalies(client, admin)) == 1


async def test_an_order_placed_less_than_a_day_ahead_is_applied(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    soon = order_paid("TM-SOON", merchant=shop.external_id, placed_at=datetime.now(UTC) + timedelta(hours=23))
    answer = await send_event(client, shop.platform, soon)
    assert (answer.status_code, answer.json()) == (200, {"status": "applied"})
    order = (await get_order(client, admin, shop.platform["id"], "TM-SOON")).json()
    assert order["donation"]["amount"] == DEFAULT_DONATION and order["stage"] == "pledged"


async def test_an_order_no_rule_applied_to_says_why_it_gives_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    platform_key = bearer(
        (await create_key(client, admin, role="platform", platform_id=shop.platform["id"]))["token"]
    )
    old = order_paid("TM-2001", merchant=shop.external_id, placed_at=datetime(2001, 1, 1, tzinfo=UTC))
    assert (await send_event(client, shop.platform, old)).json() == {"status": "applied"}
    order = (await client.get("/v1/orders/TM-2001", headers=platform_key)).json()
    assert order["donation"]["amount"] == 0
    assert order["donation_reason"] == "before-first-rule"
    assert "before the merchant's first donation rule" in order["donation_note"]

    ruleless = await create_merchant(client, admin, platform_id=shop.platform["id"], external_id="no-rule")
    paid = order_paid("TM-NR", merchant="no-rule")
    assert (await send_event(client, shop.platform, paid)).json() == {"status": "applied"}
    order = (await client.get("/v1/orders/TM-NR", headers=platform_key)).json()
    assert (order["donation"]["amount"], order["donation_reason"]) == (0, "no-rule-in-force")
    assert "no donation rule" in order["donation_note"]

    # A rule set later doesn't change what an order already recorded says; orders under it carry no reason.
    await set_rule(client, admin, ruleless["id"], rate_bps=100)
    later = order_paid("TM-NR2", merchant="no-rule", placed_at=datetime.now(UTC) + timedelta(seconds=1))
    assert (await send_event(client, shop.platform, later)).json() == {"status": "applied"}
    rows = (await client.get(f"/v1/merchants/{ruleless['id']}/donations", headers=platform_key)).json()[
        "data"
    ]
    assert [(r["order_id"], r["donation_reason"], r["donation_note"] is None) for r in rows] == [
        ("TM-NR", "no-rule-in-force", False),
        ("TM-NR2", None, True),
    ]
    now = order_paid("TM-NOW", merchant=shop.external_id)
    assert (await send_event(client, shop.platform, now)).json() == {"status": "applied"}
    order = (await client.get("/v1/orders/TM-NOW", headers=platform_key)).json()
    assert (order["donation"]["amount"], order["donation_reason"], order["donation_note"]) == (
        DEFAULT_DONATION,
        None,
        None,
    )


async def test_an_over_refund_reverses_the_donation_once_and_is_one_anomaly(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: Any
) -> None:
    items = [{"sku": "TEA-01", "quantity": 1, "amount": 10000}]  # 150 + 2 = 152 fen
    await send_event(client, shop.platform, order_paid("TM-OR", merchant=shop.external_id, items=items))
    refund = order_refunded("TM-OR", "R-1", 20000, merchant=shop.external_id)
    answer = await send_event(client, shop.platform, refund, webhook_id="msg_over")
    assert (answer.status_code, answer.json()) == (200, {"status": "applied"})
    order = (await get_order(client, admin, shop.platform["id"], "TM-OR")).json()
    assert (order["donation"]["amount"], order["reversed"]["amount"], order["net"]["amount"]) == (152, 152, 0)
    assert order["stage"] == "reversed"
    after = await _counts(app)

    # Redelivered, and the same refund under another webhook id: nothing more, no second anomaly.
    again = await send_event(client, shop.platform, refund, webhook_id="msg_over")
    assert (again.status_code, again.json()) == (200, {"status": "applied"})
    duplicate = await send_event(client, shop.platform, refund)
    assert (duplicate.status_code, duplicate.json()) == (200, {"status": "duplicate"})
    assert await _counts(app) == after | {"webhook_deliveries": after["webhook_deliveries"] + 1}

    [anomaly] = await _anomalies(client, admin)
    assert (anomaly["kind"], anomaly["webhook_id"], anomaly["natural_key"]) == (
        "over-refund",
        "msg_over",
        "refund:TM-OR:R-1",
    )
    assert anomaly["asked"] == {"amount": 20000, "currency": "CNY"}
    assert anomaly["applied"] == {"amount": 10000, "currency": "CNY"}
    await audit_ok(client, admin)


async def test_an_over_refund_parked_before_its_payment_is_noted_when_it_applies(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    refund = order_refunded("TM-EARLY", "R-1", 30000, merchant=shop.external_id)
    parked = await send_event(client, shop.platform, refund)
    assert (parked.status_code, parked.json()) == (202, {"status": "parked"})
    assert await _anomalies(client, admin) == []

    await send_event(client, shop.platform, order_paid("TM-EARLY", merchant=shop.external_id))
    order = (await get_order(client, admin, shop.platform["id"], "TM-EARLY")).json()
    assert order["reversed"]["amount"] == order["donation"]["amount"] == DEFAULT_DONATION
    [anomaly] = await _anomalies(client, admin)
    assert (anomaly["kind"], anomaly["asked"]["amount"], anomaly["applied"]["amount"]) == (
        "over-refund",
        30000,
        12800,  # the line subtotal
    )


async def test_a_platform_reads_only_its_own_anomalies(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    other = await create_platform(client, admin, name="JD")
    other_shop = await create_merchant(client, admin, platform_id=other["id"], external_id="shop-88")
    await set_rule(client, admin, other_shop["id"], rate_bps=150)
    for platform in (shop.platform, other):
        await send_event(client, platform, order_paid("TM-1", merchant="shop-88"))
        await send_event(client, platform, order_refunded("TM-1", "R-1", 99999, merchant="shop-88"))
        await send_event(client, platform, order_refunded("TM-1", "R-2", 1, merchant="shop-88"))
    mine = bearer(
        (await create_key(client, admin, role="platform", platform_id=shop.platform["id"]))["token"]
    )
    theirs = bearer((await create_key(client, admin, role="platform", platform_id=other["id"]))["token"])

    # R-1 asks for more than the order; R-2 then finds nothing left to refund.
    assert [(a["platform_id"], a["natural_key"]) for a in await _anomalies(client, mine)] == [
        (shop.platform["id"], "refund:TM-1:R-1"),
        (shop.platform["id"], "refund:TM-1:R-2"),
    ]
    assert {a["platform_id"] for a in await _anomalies(client, theirs)} == {other["id"]}
    assert_problem(
        await client.get("/v1/webhook-anomalies", headers=mine, params={"platform_id": other["id"]}),
        404,
        "not-found",
    )

    # The operator sees all, or one platform's, a page at a time.
    assert len(await _anomalies(client, admin)) == 4
    first = (await client.get("/v1/webhook-anomalies", headers=admin, params={"limit": "3"})).json()
    rest = (
        await client.get(
            "/v1/webhook-anomalies", headers=admin, params={"limit": "3", "cursor": first["next_cursor"]}
        )
    ).json()
    assert len(first["data"]) == 3 and len(rest["data"]) == 1 and rest["next_cursor"] is None
    assert {a["platform_id"] for a in await _anomalies(client, admin, platform_id=other["id"])} == {
        other["id"]
    }
    merchant_key = bearer(
        (await create_key(client, admin, role="merchant", merchant_id=shop.merchant["id"]))["token"]
    )
    assert_problem(await client.get("/v1/webhook-anomalies", headers=merchant_key), 403, "forbidden")
