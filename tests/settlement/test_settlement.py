"""Final donations billed once, charged through a real Stripe-compatible server, pooled in the base currency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.helpers import assert_problem, audit_ok, get_order, order_paid, order_refunded, send_event, settle
from tests.settlement.conftest import (
    STRIPE_WEBHOOK_SECRET,
    Programme,
    link_customer,
    open_programme,
    payment_intent_event,
)
from tests.stripe_server import (
    LocalStripe,
    WebhookReceiver,
    create_chargeable_customer,
    create_declining_customer,
)

WINDOW = timedelta(days=30, seconds=1)


async def _pay(programme: Programme, merchant: dict[str, object], order_id: str, **kwargs: object) -> None:
    event = order_paid(
        order_id, merchant=str(merchant["external_id"]), placed_at=programme.clock.now(), **kwargs
    )  # type: ignore[arg-type]
    assert (await send_event(programme.client, programme.platform, event)).json() == {"status": "applied"}


async def test_final_donations_are_billed_charged_and_pooled(programme: Programme) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("tea", customer=customer.customer_id)
    await _pay(programme, shop, "S-1")
    await _pay(programme, shop, "S-2")

    early = await programme.settle()
    assert early["statements"] == [] and early["carried_forward"] == []  # nothing is final yet
    stage = (await get_order(programme.client, programme.admin, programme.platform["id"], "S-1")).json()[
        "stage"
    ]
    assert stage == "pledged"

    programme.clock.advance(WINDOW)
    assert (await get_order(programme.client, programme.admin, programme.platform["id"], "S-1")).json()[
        "stage"
    ] == "final"
    run = await programme.settle()
    [statement] = run["statements"]
    assert statement["total"] == {"amount": 392, "currency": "CNY"} and statement["status"] == "paid"
    assert statement["payment_attempts"] == 1 and statement["payment_intent_id"].startswith("pi_")
    intent = await programme.stripe.v1.payment_intents.retrieve_async(statement["payment_intent_id"])
    assert (intent.status, intent.amount, intent.customer) == ("succeeded", 392, customer.customer_id)

    full = (await programme.client.get(f"/v1/statements/{statement['id']}", headers=programme.admin)).json()
    assert sorted((line["order_id"], line["kind"], line["amount"]["amount"]) for line in full["lines"]) == [
        ("S-1", "donation", 196),
        ("S-2", "donation", 196),
    ]
    assert (await get_order(programme.client, programme.admin, programme.platform["id"], "S-1")).json()[
        "stage"
    ] == "collected"

    # Collected, but no CNY rate yet: the money waits, visibly, outside the pool.
    funds = await programme.funds()
    [cny] = [s for s in funds["stages"] if s["currency"] == "CNY"]
    assert (cny["collected"], cny["collected_unconverted"], cny["pledged"], cny["final"]) == (392, 392, 0, 0)
    assert funds["pool"] == {"amount": 0, "currency": "USD"} and funds["next_package"] is None

    rate = await programme.client.put("/v1/fx-rates/CNY", json={"rate": "0.1385"}, headers=programme.admin)
    assert rate.status_code == 200 and rate.json()["rate"] == "0.1385"
    funds = await programme.funds()
    # 392 fen × 0.1385 = 54.292 cents → 54, half-even, once
    assert funds["pool"] == {"amount": 54, "currency": "USD"}
    assert next(s for s in funds["stages"] if s["currency"] == "CNY")["collected_unconverted"] == 0
    await audit_ok(programme.client, programme.admin)

    # Running again bills nothing twice.
    again = await programme.settle()
    assert again["statements"] == [] and again["carried_forward"] == []
    assert (
        len(
            (
                await programme.client.get(f"/v1/merchants/{shop['id']}/statements", headers=programme.admin)
            ).json()["data"]
        )
        == 1
    )


async def test_stripe_webhooks_are_verified_applied_once_and_agree_with_the_charge(
    programme: Programme,
) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("tea", customer=customer.customer_id)
    await _pay(programme, shop, "W-1")
    programme.clock.advance(WINDOW)
    [statement] = (await programme.settle())["statements"]
    assert statement["status"] == "paid"
    funds_before = await programme.funds()

    # The webhook for the same payment arrives after Stripe's own answer: nothing more happens.
    succeeded = payment_intent_event(
        "evt_1",
        "payment_intent.succeeded",
        statement["id"],
        amount=196,
        intent_id=statement["payment_intent_id"],
    )
    answer = await programme.stripe_event(succeeded)
    assert answer.status_code == 200 and answer.json() == {
        "status": "processed",
        "outcome": "already recorded",
    }
    assert (await programme.stripe_event(succeeded)).json() == {"status": "duplicate", "outcome": None}
    # A late failure report can't undo a payment.
    failed = payment_intent_event("evt_2", "payment_intent.payment_failed", statement["id"])
    assert (await programme.stripe_event(failed)).json()["outcome"] == "no change"
    # Unknown event types are stored and acknowledged.
    assert (
        await programme.stripe_event({"id": "evt_3", "type": "customer.created", "data": {"object": {}}})
    ).status_code == 200
    assert await programme.funds() == funds_before

    forged = await programme.stripe_event(
        payment_intent_event("evt_4", "payment_intent.succeeded", statement["id"]), secret="whsec_wrong"
    )
    assert_problem(forged, 401, "unauthorized")
    stale = await programme.stripe_event(
        payment_intent_event("evt_5", "payment_intent.succeeded", statement["id"]), at=1
    )
    assert_problem(stale, 401, "unauthorized")
    unsigned = await programme.client.post(
        "/v1/webhooks/stripe", content=b"{}", headers={"content-type": "application/json"}
    )
    assert_problem(unsigned, 401, "unauthorized")
    await audit_ok(programme.client, programme.admin)


async def test_below_the_minimum_carries_forward_until_it_is_reached(programme: Programme) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("tea", customer=customer.customer_id)
    small = [{"sku": "A", "quantity": 1, "amount": 1000}]  # 15 + 2 = 17 fen
    await _pay(programme, shop, "C-1", items=small)
    programme.clock.advance(WINDOW)
    run = await programme.settle()
    assert run["statements"] == []
    assert run["carried_forward"] == [
        {
            "merchant_id": shop["id"],
            "currency": "CNY",
            "total": {"amount": 17, "currency": "CNY"},
            "reason": "below_minimum",
        }
    ]
    await _pay(programme, shop, "C-2")
    programme.clock.advance(WINDOW)
    [statement] = (await programme.settle())["statements"]
    assert statement["total"]["amount"] == 17 + 196 and statement["status"] == "paid"


async def test_declined_cards_fail_the_statement_and_a_later_run_charges_again(programme: Programme) -> None:
    declining = await create_declining_customer(programme.stripe)
    shop = await programme.shop("tea", customer=declining.customer_id)
    await _pay(programme, shop, "D-1")
    programme.clock.advance(WINDOW)
    [statement] = (await programme.settle())["statements"]
    assert statement["status"] == "payment_failed" and statement["payment_attempts"] == 1
    assert statement["last_payment_error"]
    assert (await get_order(programme.client, programme.admin, programme.platform["id"], "D-1")).json()[
        "stage"
    ] == "billed"

    again = await programme.settle()
    assert again["statements"] == []  # nothing new to bill …
    failed = (await programme.client.get(f"/v1/statements/{statement['id']}", headers=programme.admin)).json()
    assert (failed["status"], failed["payment_attempts"]) == (
        "payment_failed",
        2,
    )  # … but it was charged again

    good = await create_chargeable_customer(programme.stripe)
    await link_customer(programme.client, programme.admin, programme.stripe, shop["id"], good.customer_id)
    await programme.settle()
    paid = (await programme.client.get(f"/v1/statements/{statement['id']}", headers=programme.admin)).json()
    assert (paid["status"], paid["payment_attempts"], paid["total"]["amount"]) == ("paid", 3, 196)
    await audit_ok(programme.client, programme.admin)


async def test_a_refund_after_billing_is_a_credit_on_the_next_statement_and_the_pool_never_shrinks(
    programme: Programme,
) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("tea", customer=customer.customer_id)
    await programme.client.put("/v1/fx-rates/CNY", json={"rate": "0.5"}, headers=programme.admin)
    await _pay(programme, shop, "R-1")
    programme.clock.advance(WINDOW)
    [first] = (await programme.settle())["statements"]
    pool = (await programme.funds())["pool"]["amount"]
    assert first["status"] == "paid" and pool == 98

    refund = order_refunded("R-1", "RF-1", 12800, merchant=str(shop["external_id"]))
    assert (await send_event(programme.client, programme.platform, refund)).json() == {"status": "applied"}
    assert (await programme.funds())["pool"]["amount"] == pool
    carried = (await programme.settle())["carried_forward"]
    assert carried == [
        {
            "merchant_id": shop["id"],
            "currency": "CNY",
            "total": {"amount": -196, "currency": "CNY"},
            "reason": "below_minimum",
        }
    ]
    [cny] = [s for s in (await programme.funds())["stages"] if s["currency"] == "CNY"]
    assert cny["credits_due"] == 196

    for n in range(3):
        await _pay(programme, shop, f"R-{n + 2}")
    programme.clock.advance(WINDOW)
    [second] = (await programme.settle())["statements"]
    assert second["total"]["amount"] == 3 * 196 - 196
    lines = (await programme.client.get(f"/v1/statements/{second['id']}", headers=programme.admin)).json()[
        "lines"
    ]
    assert ("R-1", "credit", -196) in [(x["order_id"], x["kind"], x["amount"]["amount"]) for x in lines]
    assert (await programme.funds())["pool"]["amount"] == pool + 196  # (588 - 196) × 0.5
    await audit_ok(programme.client, programme.admin)


@pytest.fixture
async def failing_stripe() -> AsyncIterator[str]:
    """A server in Stripe's place that answers every call with a 500."""
    from aiohttp import web

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": {"type": "api_error", "message": "boom"}}, status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", broken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("stripe_down", ["unreachable", "answering 500"])
async def test_stripe_down_leaves_the_statement_to_retry_and_nothing_is_doubled(
    programme: Programme, local_stripe: LocalStripe, tmp_path: Path, failing_stripe: str, stripe_down: str
) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("tea", customer=customer.customer_id)
    await _pay(programme, shop, "U-1")
    programme.clock.advance(WINDOW)

    # Another API process, whose Stripe is down, runs the settlement.
    api_base = "http://127.0.0.1:9" if stripe_down == "unreachable" else failing_stripe
    offline, clock = await open_programme(
        programme.database_url, tmp_path / "offline", local_stripe, api_base=api_base
    )
    clock.set(programme.clock.now())
    async with offline.router.lifespan_context(offline):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=offline), base_url="http://g4g.test"
        ) as client:
            run = await settle(client, programme.admin, app=offline)
    [statement] = run["statements"]
    assert statement["status"] == "pending_payment" and "unknown" in statement["last_payment_error"]
    funds = await programme.funds()
    assert next(s for s in funds["stages"] if s["currency"] == "CNY")["billed"] == 196

    await programme.settle()
    paid = (await programme.client.get(f"/v1/statements/{statement['id']}", headers=programme.admin)).json()
    assert (paid["status"], paid["payment_attempts"]) == ("paid", 1)
    assert len(await _intents_of(programme, statement["id"])) == 1
    await audit_ok(programme.client, programme.admin)


async def _intents_of(programme: Programme, statement_id: str) -> list[object]:
    """PaymentIntents created at the Stripe server for one statement."""
    intents = await programme.stripe.v1.payment_intents.list_async({"limit": 100})
    return [i for i in intents.data if i.to_dict().get("metadata", {}).get("statement_id") == statement_id]


async def test_the_webhook_may_settle_a_statement_before_stripe_answers(
    programme: Programme, local_stripe: LocalStripe, tmp_path: Path
) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("tea", customer=customer.customer_id)
    await _pay(programme, shop, "E-1")
    programme.clock.advance(WINDOW)
    offline, clock = await open_programme(
        programme.database_url, tmp_path / "offline", local_stripe, api_base="http://127.0.0.1:9"
    )
    clock.set(programme.clock.now())
    async with offline.router.lifespan_context(offline):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=offline), base_url="http://g4g.test"
        ) as client:
            [statement] = (await settle(client, programme.admin, app=offline))["statements"]
    # Stripe did charge, but its answer never reached us; its webhook does.
    event = payment_intent_event("evt_first", "payment_intent.succeeded", statement["id"], amount=196)
    assert (await programme.stripe_event(event)).json()["outcome"] == "statement paid"
    await programme.settle()  # nothing left to charge
    assert await _intents_of(programme, statement["id"]) == []
    paid = (await programme.client.get(f"/v1/statements/{statement['id']}", headers=programme.admin)).json()
    assert paid["status"] == "paid"
    await audit_ok(programme.client, programme.admin)


async def test_concurrent_runs_bill_once(programme: Programme) -> None:
    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("tea", customer=customer.customer_id)
    for n in range(5):
        await _pay(programme, shop, f"P-{n}")
    programme.clock.advance(WINDOW)
    runs = await asyncio.gather(*(programme.settle() for _ in range(4)))
    statements = [s for r in runs for s in r["statements"]]
    [statement] = statements
    assert len(await _intents_of(programme, statement["id"])) == 1
    await audit_ok(programme.client, programme.admin)


async def test_bad_settlement_input(programme: Programme) -> None:
    future = (programme.clock.now() + timedelta(days=1)).isoformat()
    assert_problem(
        await programme.client.post("/v1/settlement-runs", json={"as_of": future}, headers=programme.admin),
        422,
        "invalid-request",
    )
    for body in ({"rate": "0"}, {"rate": "-1"}, {"rate": "1e5"}, {"rate": 0.5}, {"rate": "abc"}):
        assert_problem(
            await programme.client.put("/v1/fx-rates/CNY", json=body, headers=programme.admin),
            422,
            "invalid-request",
        )
    assert_problem(
        await programme.client.put("/v1/fx-rates/USD", json={"rate": "1"}, headers=programme.admin),
        409,
        "base-currency-has-no-rate",
    )
    assert_problem(
        await programme.client.put("/v1/fx-rates/ZZZ", json={"rate": "1"}, headers=programme.admin),
        422,
        "invalid-request",
    )
    assert (await programme.client.get("/v1/fx-rates", headers=programme.admin)).json()["data"] == []


async def test_localstripes_own_webhooks_reach_the_service_and_change_nothing_more(
    programme: Programme, local_stripe: LocalStripe
) -> None:
    """Stripe's answer and its webhooks both report each charge; whichever comes second changes nothing."""

    async def forward(body: bytes, headers: dict[str, str]) -> int:
        signature = headers.get("Stripe-Signature", "")
        response = await programme.client.post(
            "/v1/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": signature, "content-type": "application/json"},
        )
        return response.status_code

    paying = await create_chargeable_customer(programme.stripe)
    declining = await create_declining_customer(programme.stripe)
    good = await programme.shop("good", customer=paying.customer_id)
    bad = await programme.shop("bad", customer=declining.customer_id)
    await _pay(programme, good, "H-1")
    await _pay(programme, bad, "H-2")
    programme.clock.advance(WINDOW)
    async with WebhookReceiver(forward=forward) as receiver:
        local_stripe.register_webhook(
            receiver.url,
            STRIPE_WEBHOOK_SECRET,
            events=["payment_intent.succeeded", "payment_intent.payment_failed"],
        )
        try:
            run = await programme.settle()
            statuses = {s["merchant_id"]: s["status"] for s in run["statements"]}
            assert statuses == {good["id"]: "paid", bad["id"]: "payment_failed"}
            funds = await programme.funds()
            delivered = [
                await receiver.wait_for(lambda d, kind=kind: kind.encode() in d.body)
                for kind in ("payment_intent.succeeded", "payment_intent.payment_failed")
            ]
        finally:
            local_stripe.unregister_webhooks()
    assert len(delivered) == 2
    events = {row["type"]: row["outcome"] for row in await _stripe_events(programme)}
    assert events == {
        "payment_intent.succeeded": "already recorded",
        "payment_intent.payment_failed": "no change",
    }
    assert await programme.funds() == funds
    await audit_ok(programme.client, programme.admin)


async def _stripe_events(programme: Programme) -> list[dict[str, object]]:
    async with programme.app.state.engine.connect() as connection:
        rows = await connection.execute(text("SELECT type, outcome FROM stripe_events"))
        return [dict(row._mapping) for row in rows]


async def test_a_payment_recorded_elsewhere_meanwhile_is_not_recorded_again(
    programme: Programme, tmp_path: Path
) -> None:
    """The webhook's transaction loaded the statement before the charge's transaction recorded the payment."""
    from app.models import Statement
    from app.settlement.service import record_payment

    customer = await create_chargeable_customer(programme.stripe)
    shop = await programme.shop("tea", customer=customer.customer_id)
    await _pay(programme, shop, "X-1")
    programme.clock.advance(WINDOW)
    [statement] = (await programme.settle())["statements"]
    sessionmaker = programme.app.state.sessionmaker
    async with sessionmaker() as session, session.begin():
        async with sessionmaker() as other, other.begin():
            await other.execute(
                text("UPDATE statements SET status = 'pending_payment' WHERE id = :id"),
                {"id": statement["id"]},
            )
        stale = await session.get(Statement, statement["id"])
        assert stale is not None and stale.status == "pending_payment"
        async with sessionmaker() as other, other.begin():
            await other.execute(
                text("UPDATE statements SET status = 'paid' WHERE id = :id"), {"id": statement["id"]}
            )
        assert not await record_payment(
            session,
            statement["id"],
            via="stripe",
            payment_intent_id="pi_x",
            now=programme.clock.now(),
            base_currency="USD",
        )
    await audit_ok(programme.client, programme.admin)
