"""What Stripe receives and what happens when its answer is unknown, wrong or a refusal — against localstripe."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text

from tests.helpers import assert_problem, audit_ok, order_paid, send_event
from tests.settlement.conftest import WINDOW, Programme, payment_intent_event
from tests.stripe_server import create_chargeable_customer


async def _order(
    programme: Programme, shop: dict[str, Any], order_id: str, currency: str, amount: int
) -> None:
    event = order_paid(
        order_id,
        merchant=str(shop["external_id"]),
        currency=currency,
        items=[{"sku": "X", "quantity": 1, "amount": amount}],
        placed_at=programme.clock.now(),
    )
    assert (await send_event(programme.client, programme.platform, event)).json() == {"status": "applied"}


async def _statement(programme: Programme, statement_id: str) -> dict[str, Any]:
    return dict(
        (await programme.client.get(f"/v1/statements/{statement_id}", headers=programme.admin)).json()
    )


async def _intents(programme: Programme, customer_id: str) -> list[Any]:
    """The customer's PaymentIntents (localstripe's list takes no filter, and serves every test's)."""
    listed = await programme.stripe.v1.payment_intents.list_async({"limit": 100})
    return [intent async for intent in listed.auto_paging_iter() if intent.customer == customer_id]


async def test_isk_is_charged_in_stripes_units(programme: Programme) -> None:
    """6,000 kr is 600000 in Stripe's API; sent as 6000 it would have been 60 kr (the review's reproduction)."""
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("ice", customer=customer.customer_id)
    await _order(programme, shop, "ISK-1", "ISK", 400_000)  # 1.5 % of 400,000 kr = 6,000 kr
    programme.clock.advance(WINDOW)
    [statement] = (await programme.settle())["statements"]
    assert statement["total"] == {"amount": 6000, "currency": "ISK"} and statement["status"] == "paid"
    intent = await programme.stripe.v1.payment_intents.retrieve_async(statement["payment_intent_id"])
    assert (intent.amount, intent.currency) == (600_000, "isk")
    await audit_ok(programme.client, programme.admin)


async def test_a_fraction_stripe_cannot_take_carries_to_the_next_statement(programme: Programme) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("kuwait", customer=customer.customer_id)
    await _order(programme, shop, "KWD-1", "KWD", 823_000)  # 1.5 % = 12.345 KWD: Stripe takes 12.340
    programme.clock.advance(WINDOW)
    [first] = (await programme.settle())["statements"]
    assert first["total"]["amount"] == 12_340 and first["status"] == "paid"
    intent = await programme.stripe.v1.payment_intents.retrieve_async(first["payment_intent_id"])
    assert intent.amount == 12_340
    lines = {
        (line["kind"], line["amount"]["amount"])
        for line in (await _statement(programme, first["id"]))["lines"]
    }
    assert lines == {("donation", 12_345), ("carried_out", -5)}
    funds = await programme.funds()
    assert next(s for s in funds["stages"] if s["currency"] == "KWD")["final"] == 5  # visibly waiting
    await audit_ok(programme.client, programme.admin)

    await _order(programme, shop, "KWD-2", "KWD", 823_000)
    programme.clock.advance(WINDOW)
    [second] = (await programme.settle())["statements"]
    # 12.345 + the 0.005 carried = 12.350: exact in Stripe's units, nothing left over.
    assert second["total"]["amount"] == 12_350
    lines = {
        (line["kind"], line["amount"]["amount"])
        for line in (await _statement(programme, second["id"]))["lines"]
    }
    assert lines == {("donation", 12_345), ("carried_in", 5)}
    assert next(s for s in (await programme.funds())["stages"] if s["currency"] == "KWD")["final"] == 0
    await audit_ok(programme.client, programme.admin)


async def test_below_stripes_minimum_nothing_is_charged_and_it_carries_forward(programme: Programme) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("huf", customer=customer.customer_id)
    await _order(programme, shop, "HUF-1", "HUF", 1_000_000)  # 1.5 % of 10,000 Ft = 150 Ft < Stripe's 175 Ft
    programme.clock.advance(WINDOW)
    run = await programme.settle()
    assert run["statements"] == []
    assert run["carried_forward"] == [
        {
            "merchant_id": shop["id"],
            "currency": "HUF",
            "total": {"amount": 15_000, "currency": "HUF"},
            "reason": "below_stripe_minimum",
        }
    ]
    assert await _intents(programme, customer.customer_id) == []
    await _order(programme, shop, "HUF-2", "HUF", 1_000_000)
    programme.clock.advance(WINDOW)
    [statement] = (await programme.settle())["statements"]
    assert statement["total"]["amount"] == 30_000 and statement["status"] == "paid"


async def test_stripe_refusing_the_request_needs_attention_and_is_not_retried_forever(
    programme: Programme,
) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("gone", customer=customer.customer_id)
    await _order(programme, shop, "GONE-1", "CNY", 12_800)
    await programme.stripe.v1.customers.delete_async(customer.customer_id)  # Stripe: "No such customer"
    programme.clock.advance(WINDOW)
    [statement] = (await programme.settle())["statements"]
    assert statement["status"] == "needs_attention"
    assert "Stripe refused" in statement["last_payment_error"]
    queue = (
        await programme.client.get("/v1/statements?status=needs_attention", headers=programme.admin)
    ).json()
    assert [s["id"] for s in queue["data"]] == [statement["id"]]

    await programme.settle()
    await programme.settle()
    assert (await _statement(programme, statement["id"]))["payment_attempts"] == 1  # not charged again

    fixed = await create_chargeable_customer(programme.stripe)
    from tests.settlement.conftest import link_customer

    await link_customer(programme.client, programme.admin, programme.stripe, shop["id"], fixed.customer_id)
    reopened = await programme.client.post(
        f"/v1/statements/{statement['id']}/reopen", headers=programme.admin
    )
    assert reopened.json()["status"] == "payment_failed"
    assert_problem(
        await programme.client.post(f"/v1/statements/{statement['id']}/reopen", headers=programme.admin),
        409,
        "statement-not-reopenable",
    )
    await programme.settle()
    paid = await _statement(programme, statement["id"])
    assert (paid["status"], paid["payment_attempts"]) == ("paid", 2)
    await audit_ok(programme.client, programme.admin)


async def test_an_attempt_with_a_known_payment_intent_is_retrieved_not_created_again(
    programme: Programme,
) -> None:
    """Stripe charged, the service knew the PaymentIntent id but died before recording the outcome: the next
    run reads the PaymentIntent back and records the payment; no second PaymentIntent is made."""
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("crash", customer=customer.customer_id)
    await _order(programme, shop, "CRASH-1", "CNY", 12_800)
    programme.clock.advance(WINDOW)
    statement = await _unsent_statement(programme)
    intent = await programme.stripe.v1.payment_intents.create_async(
        {
            "customer": customer.customer_id,
            "amount": 194,  # 1.5 % of 128.00 + 0.02 per unit
            "currency": "cny",
            "payment_method": customer.payment_method_id,
            "off_session": True,
            "confirm": True,
            "metadata": {"statement_id": statement, "attempt": "1"},
        }
    )
    await _sql(
        programme,
        "UPDATE statements SET payment_attempts = 1, attempt_started_at = :at, payment_intent_id = :pi WHERE id = :id",
        id=statement,
        at=programme.clock.now(),
        pi=intent.id,
    )
    before = len(await _intents(programme, customer.customer_id))
    await programme.settle()
    after = await _statement(programme, statement)
    assert (after["status"], after["payment_attempts"], after["payment_intent_id"]) == ("paid", 1, intent.id)
    assert len(await _intents(programme, customer.customer_id)) == before
    await audit_ok(programme.client, programme.admin)


async def _unsent_statement(programme: Programme) -> str:
    """Bill without charging (as a run that died between its two steps)."""
    from app.settlement.service import run_settlement

    async with programme.app.state.sessionmaker() as session, session.begin():
        _, [statement], _ = await run_settlement(
            session,
            as_of=programme.clock.now(),
            now=programme.clock.now(),
            window=timedelta(days=30),
            min_invoice=100,
        )
    return statement.id


async def test_an_unknown_outcome_older_than_stripes_key_memory_is_never_sent_again_blindly(
    programme: Programme,
) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("lost", customer=customer.customer_id)
    await _order(programme, shop, "LOST-1", "CNY", 12_800)
    programme.clock.advance(WINDOW)
    statement = await _unsent_statement(programme)
    # Attempt 1 went out a day ago and nobody ever heard back (no PaymentIntent id known).
    await _sql(
        programme,
        "UPDATE statements SET payment_attempts = 1, attempt_started_at = :at WHERE id = :id",
        id=statement,
        at=programme.clock.now() - timedelta(hours=24),
    )
    await programme.settle()
    after = await _statement(programme, statement)
    # localstripe has no search: the service can't know whether attempt 1 charged, so it asks the operator
    # rather than risk a second charge.
    assert after["status"] == "needs_attention" and "attempt 1" in after["last_payment_error"]
    assert await _intents(programme, customer.customer_id) == []


async def test_a_succeeded_payment_for_another_amount_is_not_a_payment(programme: Programme) -> None:
    shop = await programme.shop("odd", customer=None)
    await programme.client.put(
        f"/v1/merchants/{shop['id']}/billing", json={"method": "bank_transfer"}, headers=programme.admin
    )
    # A Stripe statement (made while it billed by card) that a Stripe event claims paid with the wrong amount.
    customer = await create_chargeable_customer(programme.stripe)
    from tests.settlement.conftest import link_customer

    await link_customer(programme.client, programme.admin, programme.stripe, shop["id"], customer.customer_id)
    await programme.stripe.v1.customers.update_async(
        customer.customer_id, {"invoice_settings": {"default_payment_method": ""}}
    )
    await _order(programme, shop, "ODD-1", "CNY", 12_800)
    programme.clock.advance(WINDOW)
    [statement] = (await programme.settle())["statements"]
    assert statement["status"] == "payment_failed"  # no card to charge
    funds = await programme.funds()
    for amount, currency in ((100, "cny"), (196, "usd")):
        event = payment_intent_event(
            f"evt_odd_{currency}",
            "payment_intent.succeeded",
            statement["id"],
            amount=amount,
            currency=currency,
        )
        assert (await programme.stripe_event(event)).json()["outcome"] == "anomaly: amount mismatch"
    after = await _statement(programme, statement["id"])
    assert after["status"] == "needs_attention" and "194 CNY" in after["last_payment_error"]
    assert await programme.funds() == funds
    await audit_ok(programme.client, programme.admin)


async def test_one_merchants_absurd_data_does_not_stop_the_run_for_the_others(programme: Programme) -> None:
    """9,300 orders of 10**15 (from before orders were bounded) no longer overflow the run: that merchant gets a
    statement as large as one may be, the rest waits visibly, and everybody else is billed."""
    legacy = await programme.shop("legacy", customer=None)
    await programme.client.put(
        f"/v1/merchants/{legacy['id']}/billing", json={"method": "bank_transfer"}, headers=programme.admin
    )
    await _sql(
        programme,
        """
        INSERT INTO orders (id, platform_id, external_id, merchant_id, currency, placed_at, items, base_amount,
                            donation_amount, refunded_amount, reversed_amount, content_hash)
        SELECT 'ord_legacy_' || n, :platform, 'LEGACY-' || n, :merchant, 'CNY', :at, '[]'::jsonb, 10^15,
               10^15, 0, 0, '\\x00'::bytea
        FROM generate_series(1, 9300) AS n
        """,
        platform=programme.platform["id"],
        merchant=legacy["id"],
        at=programme.clock.now(),
    )
    customer = await create_chargeable_customer(programme.stripe)
    normal = await programme.shop("normal", customer=customer.customer_id)
    await _order(programme, normal, "NORMAL-1", "CNY", 12_800)
    programme.clock.advance(WINDOW)
    run = await programme.settle()
    by_merchant = {s["merchant_id"]: s for s in run["statements"]}
    assert by_merchant[normal["id"]]["status"] == "paid"
    assert by_merchant[legacy["id"]]["total"]["amount"] == 10**15
    [waiting] = [c for c in run["carried_forward"] if c["merchant_id"] == legacy["id"]]
    assert waiting["reason"] == "exceeds_maximum" and waiting["total"]["amount"] == 9299 * 10**15


async def _sql(programme: Programme, sql: str, **params: Any) -> None:
    async with programme.app.state.engine.begin() as connection:
        await connection.execute(text(sql), params)
