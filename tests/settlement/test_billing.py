"""Who gets charged: the service makes each merchant's Stripe customer, the merchant adds its own card through a
SetupIntent, an admin may link only a customer whose metadata names the merchant, and no two merchants share a
customer. Against a real Stripe-compatible server (localstripe)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.helpers import assert_problem, audit_ok, bearer, create_key
from tests.settlement.conftest import WINDOW, Programme, link_customer, stripe_signature
from tests.stripe_server import PM_CARD_OK, create_chargeable_customer


async def _merchant_key(programme: Programme, merchant: dict[str, Any]) -> dict[str, str]:
    key = await create_key(programme.client, programme.admin, role="merchant", merchant_id=merchant["id"])
    return bearer(key["token"])


async def test_a_merchant_cannot_point_its_statements_at_any_customer(programme: Programme) -> None:
    """The defect the review reproduced: a merchant key set `cus_…` of its choosing and was charged there."""
    victim = await create_chargeable_customer(programme.stripe, name="Someone Else")
    shop = await programme.shop("tea", customer=None)
    key = await _merchant_key(programme, shop)
    response = await programme.client.put(
        f"/v1/merchants/{shop['id']}/billing",
        json={"method": "stripe", "stripe_customer_id": victim.customer_id},
        headers=key,
    )
    assert_problem(response, 403, "forbidden")
    profile = (await programme.client.get(f"/v1/merchants/{shop['id']}/billing", headers=key)).json()
    assert profile == {
        "merchant_id": shop["id"],
        "method": None,
        "stripe_customer_id": None,
        "payment_method": None,
    }


async def test_an_admin_links_only_a_customer_that_names_the_merchant_and_nobody_else_uses(
    programme: Programme,
) -> None:
    shop = await programme.shop("tea", customer=None)
    other = await programme.shop("cake", customer=None)
    url = f"/v1/merchants/{shop['id']}/billing"

    anonymous = await create_chargeable_customer(programme.stripe)  # no metadata at all
    problem = assert_problem(
        await programme.client.put(
            url,
            json={"method": "stripe", "stripe_customer_id": anonymous.customer_id},
            headers=programme.admin,
        ),
        422,
        "customer-not-for-this-merchant",
    )
    assert shop["id"] in problem["detail"]

    others = await create_chargeable_customer(programme.stripe)
    await link_customer(programme.client, programme.admin, programme.stripe, other["id"], others.customer_id)
    assert_problem(
        await programme.client.put(
            url, json={"method": "stripe", "stripe_customer_id": others.customer_id}, headers=programme.admin
        ),
        422,
        "customer-not-for-this-merchant",
    )
    # Even if someone rewrites the customer's metadata in Stripe, a customer pays for one merchant only.
    await programme.stripe.v1.customers.update_async(
        others.customer_id, {"metadata": {"g4g_merchant_id": shop["id"]}}
    )
    assert_problem(
        await programme.client.put(
            url, json={"method": "stripe", "stripe_customer_id": others.customer_id}, headers=programme.admin
        ),
        409,
        "customer-in-use",
    )
    assert_problem(
        await programme.client.put(
            url, json={"method": "stripe", "stripe_customer_id": "cus_doesnotexist"}, headers=programme.admin
        ),
        422,
        "customer-not-for-this-merchant",
    )
    assert (await programme.client.get(url, headers=programme.admin)).json()["method"] is None


async def test_a_merchant_adds_its_card_with_a_setup_intent_and_is_charged_on_it(
    programme: Programme,
) -> None:
    shop = await programme.shop("tea", customer=None)
    key = await _merchant_key(programme, shop)
    base = f"/v1/merchants/{shop['id']}/billing"

    created = await programme.client.post(f"{base}/setup-intent", headers=key)
    assert created.status_code == 201, created.text
    setup = created.json()
    assert setup["setup_intent_id"].startswith("seti_") and setup["client_secret"].startswith(
        setup["setup_intent_id"]
    )
    customer = await programme.stripe.v1.customers.retrieve_async(setup["customer_id"])
    assert customer.metadata.to_dict() == {"g4g_merchant_id": shop["id"]}  # made by us, for this merchant

    # Before the card is confirmed nothing changes.
    assert_problem(
        await programme.client.post(f"{base}/setup-intent/{setup['setup_intent_id']}/complete", headers=key),
        409,
        "setup-not-complete",
    )
    # What Stripe.js does in the merchant's browser.
    await programme.stripe.v1.setup_intents.confirm_async(
        setup["setup_intent_id"], {"payment_method": PM_CARD_OK, "client_secret": setup["client_secret"]}
    )
    done = await programme.client.post(
        f"{base}/setup-intent/{setup['setup_intent_id']}/complete", headers=key
    )
    assert done.status_code == 200, done.text
    profile = done.json()
    assert profile["method"] == "stripe" and profile["stripe_customer_id"] == setup["customer_id"]
    assert profile["payment_method"]["label"].endswith("4242")

    # A second setup reuses the same customer (one per merchant).
    again = (await programme.client.post(f"{base}/setup-intent", headers=key)).json()
    assert again["customer_id"] == setup["customer_id"]

    await _pay_and_settle(programme, shop, "CARD-1")
    [statement] = (await programme.client.get(f"/v1/merchants/{shop['id']}/statements", headers=key)).json()[
        "data"
    ]
    assert statement["status"] == "paid" and statement["paid_via"] == "stripe"
    intent = await programme.stripe.v1.payment_intents.retrieve_async(statement["payment_intent_id"])
    assert intent.customer == setup["customer_id"] and intent.amount == 196
    await audit_ok(programme.client, programme.admin)


async def test_nobody_completes_another_merchants_setup(programme: Programme) -> None:
    mine = await programme.shop("tea", customer=None)
    theirs = await programme.shop("cake", customer=None)
    their_key = await _merchant_key(programme, theirs)
    my_setup = (
        await programme.client.post(
            f"/v1/merchants/{mine['id']}/billing/setup-intent", headers=programme.admin
        )
    ).json()
    await programme.stripe.v1.setup_intents.confirm_async(
        my_setup["setup_intent_id"], {"payment_method": PM_CARD_OK}
    )
    # Their key can't reach my merchant at all, and my setup can't complete theirs.
    assert_problem(
        await programme.client.post(
            f"/v1/merchants/{mine['id']}/billing/setup-intent/{my_setup['setup_intent_id']}/complete",
            headers=their_key,
        ),
        404,
        "not-found",
    )
    await programme.client.post(f"/v1/merchants/{theirs['id']}/billing/setup-intent", headers=their_key)
    assert_problem(
        await programme.client.post(
            f"/v1/merchants/{theirs['id']}/billing/setup-intent/{my_setup['setup_intent_id']}/complete",
            headers=their_key,
        ),
        404,
        "not-found",
    )
    assert (await programme.client.get(f"/v1/merchants/{theirs['id']}/billing", headers=their_key)).json()[
        "payment_method"
    ] is None


async def test_stripes_setup_intent_succeeded_event_completes_the_setup(programme: Programme) -> None:
    shop = await programme.shop("tea", customer=None)
    setup = (
        await programme.client.post(
            f"/v1/merchants/{shop['id']}/billing/setup-intent", headers=programme.admin
        )
    ).json()
    await programme.stripe.v1.setup_intents.confirm_async(
        setup["setup_intent_id"], {"payment_method": PM_CARD_OK}
    )
    event = {
        "id": "evt_setup_1",
        "object": "event",
        "type": "setup_intent.succeeded",
        "created": int(time.time()),
        # What the event claims is not trusted: the service reads the SetupIntent back from Stripe.
        "data": {"object": {"id": setup["setup_intent_id"], "metadata": {"g4g_merchant_id": shop["id"]}}},
    }
    answer = await programme.stripe_event(event)
    assert answer.json() == {"status": "processed", "outcome": "card set up"}
    profile = (
        await programme.client.get(f"/v1/merchants/{shop['id']}/billing", headers=programme.admin)
    ).json()
    assert profile["method"] == "stripe" and profile["payment_method"]["label"].endswith("4242")

    # An event naming another merchant for this SetupIntent does nothing.
    other = await programme.shop("cake", customer=None)
    forged = dict(event, id="evt_setup_2")
    forged["data"] = {
        "object": {"id": setup["setup_intent_id"], "metadata": {"g4g_merchant_id": other["id"]}}
    }
    body = json.dumps(forged).encode()
    answer = await programme.client.post(
        "/v1/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": stripe_signature(body, "whsec_settlement_tests")},
    )
    assert answer.json()["outcome"].startswith("ignored")
    assert (
        await programme.client.get(f"/v1/merchants/{other['id']}/billing", headers=programme.admin)
    ).json()["method"] is None


async def test_concurrent_first_setups_make_one_customer(programme: Programme) -> None:
    shop = await programme.shop("tea", customer=None)
    answers = await asyncio.gather(
        *[
            programme.client.post(f"/v1/merchants/{shop['id']}/billing/setup-intent", headers=programme.admin)
            for _ in range(4)
        ]
    )
    assert [a.status_code for a in answers] == [201] * 4
    assert len({a.json()["customer_id"] for a in answers}) == 1


async def test_bank_transfer_statements_are_made_but_not_charged_and_paid_by_a_recorded_transfer(
    programme: Programme,
) -> None:
    shop = await programme.shop("tea", customer=None)
    chosen = await programme.client.put(
        f"/v1/merchants/{shop['id']}/billing", json={"method": "bank_transfer"}, headers=programme.admin
    )
    assert chosen.json()["method"] == "bank_transfer"
    await _pay_and_settle(programme, shop, "BANK-1")
    [statement] = (
        await programme.client.get(f"/v1/merchants/{shop['id']}/statements", headers=programme.admin)
    ).json()["data"]
    assert (statement["billing_method"], statement["status"], statement["payment_attempts"]) == (
        "bank_transfer",
        "pending_payment",
        0,
    )
    url = f"/v1/statements/{statement['id']}/payments"
    wrong = await programme.client.post(
        url, json={"reference": "TT-1", "amount": {"amount": 195, "currency": "CNY"}}, headers=programme.admin
    )
    assert_problem(wrong, 422, "payment-does-not-match")
    wrong_currency = await programme.client.post(
        url, json={"reference": "TT-1", "amount": {"amount": 196, "currency": "USD"}}, headers=programme.admin
    )
    assert_problem(wrong_currency, 422, "payment-does-not-match")

    transfer = {"reference": "TT-2026-11-29-001", "amount": {"amount": 196, "currency": "CNY"}}
    paid = await programme.client.post(url, json=transfer, headers=programme.admin)
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["paid_via"], paid.json()["payment_reference"]) == (
        "paid",
        "bank_transfer",
        "TT-2026-11-29-001",
    )
    funds = await programme.funds()
    assert next(s for s in funds["stages"] if s["currency"] == "CNY")["collected"] == 196
    # The same transfer again changes nothing; another one is refused.
    assert (await programme.client.post(url, json=transfer, headers=programme.admin)).json() == paid.json()
    assert_problem(
        await programme.client.post(url, json=dict(transfer, reference="TT-other"), headers=programme.admin),
        409,
        "statement-already-paid",
    )
    assert await programme.funds() == funds
    await audit_ok(programme.client, programme.admin)


async def test_a_statement_paid_by_card_refuses_a_transfer(programme: Programme) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("tea", customer=customer.customer_id)
    await _pay_and_settle(programme, shop, "CARD-2")
    [statement] = (
        await programme.client.get(f"/v1/merchants/{shop['id']}/statements", headers=programme.admin)
    ).json()["data"]
    assert statement["paid_via"] == "stripe"
    refused = await programme.client.post(
        f"/v1/statements/{statement['id']}/payments",
        json={"reference": "TT-9", "amount": {"amount": 196, "currency": "CNY"}},
        headers=programme.admin,
    )
    assert_problem(refused, 409, "statement-already-paid")
    merchant_key = await _merchant_key(programme, shop)
    assert_problem(
        await programme.client.post(
            f"/v1/statements/{statement['id']}/payments",
            json={"reference": "TT-9", "amount": {"amount": 196, "currency": "CNY"}},
            headers=merchant_key,
        ),
        403,
        "forbidden",
    )


async def _pay_and_settle(programme: Programme, shop: dict[str, Any], order_id: str) -> dict[str, Any]:
    from tests.helpers import order_paid, send_event

    event = order_paid(order_id, merchant=str(shop["external_id"]), placed_at=programme.clock.now())
    assert (await send_event(programme.client, programme.platform, event)).json() == {"status": "applied"}
    programme.clock.advance(WINDOW)
    return await programme.settle()
