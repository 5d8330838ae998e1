"""Donation rules (effective-dated, validated) and checkout quotes that equal the recorded donation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Shop
from tests.helpers import (
    assert_problem,
    bearer,
    create_key,
    create_merchant,
    get_order,
    order_paid,
    send_event,
    set_rule,
)

CURRENCIES = ["CNY", "USD", "EUR", "JPY", "GBP", "IDR", "MYR", "SGD", "THB", "VND", "PHP", "KRW"]


async def test_merchant_sets_its_rule_and_reads_the_history(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    key = bearer((await create_key(client, admin, role="merchant", merchant_id=shop.merchant["id"]))["token"])
    soon = datetime.now(UTC) + timedelta(days=3)
    rule = {
        "rate_bps": 150,
        "fixed_per_unit": [{"amount": 2, "currency": "CNY"}],
        "sku_overrides": [{"sku": "TEA-01", "rate_bps": 500}, {"sku": "GIFT-CARD", "excluded": True}],
        "effective_from": soon.isoformat(),
    }
    stored = await set_rule(client, key, shop.merchant["id"], **rule)
    assert stored["id"].startswith("rul_") and stored["status"] == "scheduled"
    assert datetime.fromisoformat(stored["effective_from"]) == soon
    assert stored["sku_overrides"] == [
        {"sku": "TEA-01", "rate_bps": 500, "fixed_per_unit": None, "excluded": False},
        {"sku": "GIFT-CARD", "rate_bps": None, "fixed_per_unit": None, "excluded": True},
    ]
    history = (await client.get(f"/v1/merchants/{shop.merchant['id']}/donation-rules", headers=key)).json()[
        "data"
    ]
    assert [r["status"] for r in history] == ["scheduled", "in_effect"]  # the fixture's rule is in effect now
    assert history[0]["id"] == stored["id"]


async def test_invalid_rules_are_422_naming_the_field_and_change_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    url = f"/v1/merchants/{shop.merchant['id']}/donation-rule"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rate_bps": 10001}, "rate_bps"),
        ({"rate_bps": -1}, "rate_bps"),
        ({"rate_bps": 1.5}, "rate_bps"),
        ({"rate_bps": "100"}, "rate_bps"),
        ({"rate_bps": 1, "fixed_per_unit": [{"amount": 1, "currency": "ABC"}]}, "currency"),
        ({"rate_bps": 1, "fixed_per_unit": [{"amount": -1, "currency": "CNY"}]}, "amount"),
        ({"rate_bps": 1, "fixed_per_unit": [{"amount": 1, "currency": "CNY"}] * 2}, "fixed_per_unit"),
        ({"rate_bps": 1, "sku_overrides": [{"sku": "A", "excluded": True, "rate_bps": 5}]}, "excluded"),
        ({"rate_bps": 1, "sku_overrides": [{"sku": "A"}]}, "rate_bps"),
        ({"rate_bps": 1, "sku_overrides": [{"sku": "A", "rate_bps": 1}, {"sku": "A", "rate_bps": 2}]}, "sku"),
        ({"rate_bps": 1, "effective_from": "2020-01-01T00:00:00Z"}, "effective_from"),
        ({"rate_bps": 1, "effective_from": "2099-01-01T00:00:00"}, "effective_from"),
        ({}, "rate_bps"),
        # Bounded: every quote and order of this merchant applies the rule.
        ({"rate_bps": 1, "fixed_per_unit": [{"amount": 10**9 + 1, "currency": "CNY"}]}, "amount"),
        (
            {"rate_bps": 1, "fixed_per_unit": [{"amount": 1, "currency": c} for c in CURRENCIES[:11]]},
            "fixed_per_unit",
        ),
        (
            {"rate_bps": 1, "sku_overrides": [{"sku": f"S{i}", "rate_bps": 1} for i in range(501)]},
            "sku_overrides",
        ),
    ]
    for body, field in cases:
        problem = assert_problem(await client.put(url, json=body, headers=admin), 422, "invalid-request")
        assert field in problem["detail"], (body, problem)
    # A number a binary float would round to a whole amount is refused, not rounded.
    exact = b'{"rate_bps": 1, "fixed_per_unit": [{"amount": 999999999.9999999999, "currency": "CNY"}]}'
    problem = assert_problem(
        await client.put(url, content=exact, headers=admin | {"content-type": "application/json"}),
        422,
        "invalid-request",
    )
    assert "amount" in problem["detail"]
    history = (await client.get(f"/v1/merchants/{shop.merchant['id']}/donation-rules", headers=admin)).json()[
        "data"
    ]
    assert len(history) == 1


async def test_only_the_merchant_itself_or_an_admin_sets_a_rule(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    other = await create_merchant(client, admin, platform_id=shop.platform["id"])
    other_key = bearer((await create_key(client, admin, role="merchant", merchant_id=other["id"]))["token"])
    platform_key = bearer(
        (await create_key(client, admin, role="platform", platform_id=shop.platform["id"]))["token"]
    )
    url = f"/v1/merchants/{shop.merchant['id']}/donation-rule"
    assert_problem(await client.put(url, json={"rate_bps": 9000}, headers=other_key), 404, "not-found")
    assert_problem(await client.put(url, json={"rate_bps": 9000}, headers=platform_key), 403, "forbidden")
    # The platform may read its merchant's rules, and quote with them.
    assert (
        await client.get(f"/v1/merchants/{shop.merchant['id']}/donation-rules", headers=platform_key)
    ).status_code == 200


async def test_quote_for_unknown_merchant_is_404(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    platform_key = bearer(
        (await create_key(client, admin, role="platform", platform_id=shop.platform["id"]))["token"]
    )
    body = {"merchant_id": "nobody", "currency": "CNY", "items": [{"sku": "A", "quantity": 1, "amount": 100}]}
    assert_problem(await client.post("/v1/quotes", json=body, headers=platform_key), 404, "not-found")


_ids = itertools.count()
currencies = st.sampled_from(["CNY", "JPY", "USD", "KWD"])
money_lists = st.lists(
    st.fixed_dictionaries({"amount": st.integers(0, 500), "currency": currencies}),
    max_size=3,
    unique_by=lambda m: m["currency"],
)
overrides = st.lists(
    st.one_of(
        st.fixed_dictionaries({"sku": st.sampled_from(["A", "B", "C"]), "rate_bps": st.integers(0, 10_000)}),
        st.fixed_dictionaries({"sku": st.sampled_from(["A", "B", "C"]), "fixed_per_unit": money_lists}),
        st.fixed_dictionaries({"sku": st.sampled_from(["A", "B", "C"]), "excluded": st.just(True)}),
    ),
    max_size=3,
    unique_by=lambda o: o["sku"],
)
rules = st.fixed_dictionaries(
    {"rate_bps": st.integers(0, 10_000), "fixed_per_unit": money_lists, "sku_overrides": overrides}
)
carts = st.lists(
    st.fixed_dictionaries(
        {
            "sku": st.sampled_from(["A", "B", "C", "D"]),
            "quantity": st.integers(1, 50),
            "amount": st.integers(0, 10**9),
        }
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rule=rules, cart=carts, currency=currencies)
async def test_quote_equals_the_recorded_donation(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    shop: Shop,
    rule: dict[str, Any],
    cart: list[dict[str, Any]],
    currency: str,
) -> None:
    n = next(_ids)
    merchant = await create_merchant(client, admin, platform_id=shop.platform["id"], external_id=f"q-{n}")
    await set_rule(client, admin, merchant["id"], **rule)
    placed_at = datetime.now(UTC)
    quote = await client.post(
        "/v1/quotes",
        json={
            "platform_id": shop.platform["id"],
            "merchant_id": f"q-{n}",
            "currency": currency,
            "placed_at": placed_at.isoformat(),
            "items": cart,
        },
        headers=admin,
    )
    assert quote.status_code == 200, quote.text
    event = order_paid(f"Q-{n}", merchant=f"q-{n}", currency=currency, items=cart, placed_at=placed_at)
    assert (await send_event(client, shop.platform, event)).json() == {"status": "applied"}
    order = (await get_order(client, admin, shop.platform["id"], f"Q-{n}")).json()
    assert order["donation"] == quote.json()["donation"]


async def test_the_largest_rule_allowed_keeps_quotes_fast_and_exact(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop
) -> None:
    """500 overrides of 10 fixed amounts each: the rule is parsed once per version, so every quote after the
    first costs what a small rule costs, and gives the same donation the webhook records."""
    overrides = [
        {
            "sku": f"SKU-{i}",
            "rate_bps": i % 100,
            "fixed_per_unit": [{"amount": i, "currency": c} for c in CURRENCIES[:10]],
        }
        for i in range(500)
    ]
    await set_rule(client, admin, shop.merchant["id"], rate_bps=150, sku_overrides=overrides)
    quote = {
        "merchant_id": shop.external_id,
        "currency": "CNY",
        "items": [{"sku": "SKU-499", "quantity": 2, "amount": 10000}],
        "platform_id": shop.platform["id"],
    }
    first = await client.post("/v1/quotes", json=quote, headers=admin)
    assert first.status_code == 200, first.text
    assert first.json()["donation"]["amount"] == 10000 * 99 // 10000 + 2 * 499
    event = order_paid("BIG-RULE", merchant=shop.external_id, items=quote["items"])
    assert (await send_event(client, shop.platform, event)).json() == {"status": "applied"}
    order = await get_order(client, admin, shop.platform["id"], "BIG-RULE")
    assert order.json()["donation"] == first.json()["donation"]
