"""What the settlement code relies on, proven against a real Stripe-compatible server (localstripe) with stripe's
async client: off-session PaymentIntents, declines, signed webhooks and what their payloads carry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import stripe
from stripe.params import PaymentIntentCreateParams

from tests.stripe_server import (
    PM_CARD_ATTACH_DECLINED,
    BillableCustomer,
    Delivery,
    LocalStripe,
    WebhookReceiver,
    create_chargeable_customer,
    create_customer_with_card,
    create_declining_customer,
    open_stripe_client,
)

WEBHOOK_SECRET = "whsec_g4g_harness"
PAYMENT_EVENTS = ["payment_intent.succeeded", "payment_intent.payment_failed"]


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    with LocalStripe() as server:
        yield server


@pytest.fixture
def server(localstripe: LocalStripe) -> LocalStripe:
    localstripe.reset()
    return localstripe


@pytest.fixture
async def client(server: LocalStripe) -> AsyncIterator[stripe.StripeClient]:
    async with open_stripe_client(server.url) as stripe_client:
        yield stripe_client


@pytest.fixture
async def receiver(server: LocalStripe) -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as webhook_receiver:
        server.register_webhook(webhook_receiver.url, WEBHOOK_SECRET, PAYMENT_EVENTS)
        yield webhook_receiver
    server.unregister_webhooks()


def charge_params(
    customer: BillableCustomer, statement_id: str, amount: int = 12_345
) -> PaymentIntentCreateParams:
    """What settlement sends: the customer's default card, confirmed off-session, tagged with our statement."""
    return {
        "customer": customer.customer_id,
        "payment_method": customer.payment_method_id,
        "amount": amount,
        "currency": "usd",
        "off_session": True,
        "confirm": True,
        "metadata": {"statement_id": statement_id},
    }


def event_type(delivery: Delivery) -> str:
    return str(json.loads(delivery.body)["type"])


def for_intent(kind: str, intent_id: str) -> Callable[[Delivery], bool]:
    def matches(delivery: Delivery) -> bool:
        event = json.loads(delivery.body)
        return bool(event["type"] == kind and event["data"]["object"]["id"] == intent_id)

    return matches


async def test_off_session_payment_intent_succeeds_synchronously(client: stripe.StripeClient) -> None:
    customer = await create_chargeable_customer(client)
    stored = await client.v1.customers.retrieve_async(customer.customer_id)
    assert stored.invoice_settings is not None
    assert stored.invoice_settings.default_payment_method == customer.payment_method_id

    intent = await client.v1.payment_intents.create_async(
        charge_params(customer, "stmt_a"),
        options={"idempotency_key": "statement-stmt_a-attempt-1"},
    )

    assert intent.id.startswith("pi_")
    assert intent.status == "succeeded"
    assert (intent.amount, intent.currency) == (12_345, "usd")
    assert intent.customer == customer.customer_id
    assert intent.payment_method == customer.payment_method_id
    assert intent.metadata.to_dict() == {"statement_id": "stmt_a"}
    assert intent.last_payment_error is None

    again = await client.v1.payment_intents.retrieve_async(intent.id)
    assert (again.status, again.amount, again.currency) == ("succeeded", 12_345, "usd")
    assert again.metadata["statement_id"] == "stmt_a"


async def test_declined_card_raises_card_error_and_leaves_a_failed_intent(
    client: stripe.StripeClient,
) -> None:
    customer = await create_declining_customer(client)

    with pytest.raises(stripe.CardError) as raised:
        await client.v1.payment_intents.create_async(
            charge_params(customer, "stmt_b"),
            options={"idempotency_key": "statement-stmt_b-attempt-1"},
        )

    error = raised.value
    assert error.http_status == 402
    assert error.code == "card_declined"
    assert error.error is not None
    assert error.error.message == "Your card was declined."
    # Stripe names the PaymentIntent in the error; localstripe only names the failed charge.
    assert error.error.payment_intent is None
    assert error.error.charge is not None and error.error.charge.startswith("ch_")

    charge = await client.v1.charges.retrieve_async(error.error.charge)
    assert (charge.status, charge.failure_code) == ("failed", "card_declined")
    assert charge.payment_intent is not None
    intent = await client.v1.payment_intents.retrieve_async(str(charge.payment_intent))
    assert intent.status == "requires_payment_method"
    assert intent.metadata["statement_id"] == "stmt_b"
    assert intent.last_payment_error is not None
    assert intent.last_payment_error.code == "card_declined"


async def test_a_card_declined_on_attach_raises_card_error(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as raised:
        await create_customer_with_card(client, PM_CARD_ATTACH_DECLINED)
    assert (raised.value.http_status, raised.value.code) == (402, "card_declined")


async def test_webhooks_are_signed_and_carry_the_intent(
    server: LocalStripe, client: stripe.StripeClient, receiver: WebhookReceiver
) -> None:
    unfiltered = await WebhookReceiver().__aenter__()
    try:
        server.register_webhook(unfiltered.url, WEBHOOK_SECRET, name="everything")
        good = await create_chargeable_customer(client, name="Paying Merchant")
        bad = await create_declining_customer(client, name="Declined Merchant")

        paid = await client.v1.payment_intents.create_async(charge_params(good, "stmt_ok", 500))
        with pytest.raises(stripe.CardError) as raised:
            await client.v1.payment_intents.create_async(charge_params(bad, "stmt_fail", 700))
        assert raised.value.error is not None and raised.value.error.charge is not None
        failed_charge = await client.v1.charges.retrieve_async(raised.value.error.charge)
        failed_id = str(failed_charge.payment_intent)

        succeeded_delivery, failed_delivery = await asyncio.gather(
            receiver.wait_for(for_intent("payment_intent.succeeded", paid.id)),
            receiver.wait_for(for_intent("payment_intent.payment_failed", failed_id)),
        )
        await unfiltered.wait_for(lambda delivery: event_type(delivery) == "customer.created")
    finally:
        await unfiltered.__aexit__(None, None, None)

    # The `events` filter holds: this receiver only ever got payment_intent events.
    assert {event_type(delivery) for delivery in receiver.deliveries} <= set(PAYMENT_EVENTS)

    # Signature: `t=<unix>,v1=<hex>`, verified by the SDK, both spellings.
    assert succeeded_delivery.signature.startswith("t=") and ",v1=" in succeeded_delivery.signature
    assert succeeded_delivery.headers["Content-Type"] == "application/json; charset=utf-8"
    event = client.construct_event(succeeded_delivery.body, succeeded_delivery.signature, WEBHOOK_SECRET)
    same = stripe.Webhook.construct_event(
        succeeded_delivery.body, succeeded_delivery.signature, WEBHOOK_SECRET
    )
    assert same.id == event.id
    with pytest.raises(stripe.SignatureVerificationError):
        client.construct_event(succeeded_delivery.body, succeeded_delivery.signature, "whsec_wrong")
    with pytest.raises(stripe.SignatureVerificationError):
        client.construct_event(succeeded_delivery.body + b" ", succeeded_delivery.signature, WEBHOOK_SECRET)

    assert event.id.startswith("evt_")
    assert event.type == "payment_intent.succeeded"
    assert event.api_version == "2017-08-15"
    assert not event.livemode
    intent = event.data.object
    assert intent["object"] == "payment_intent"
    assert intent["id"] == paid.id
    assert intent["status"] == "succeeded"
    assert (intent["amount"], intent["currency"]) == (500, "usd")
    assert intent["customer"] == good.customer_id
    assert intent["metadata"]["statement_id"] == "stmt_ok"
    assert intent["last_payment_error"] is None
    # Stripe sends `latest_charge` as an id; localstripe embeds the whole charge.
    assert intent["latest_charge"]["id"].startswith("ch_")

    failed = client.construct_event(failed_delivery.body, failed_delivery.signature, WEBHOOK_SECRET)
    assert failed.type == "payment_intent.payment_failed"
    assert failed.id != event.id
    failed_intent = failed.data.object
    assert failed_intent["id"] == failed_id
    assert failed_intent["status"] == "requires_payment_method"
    assert (failed_intent["amount"], failed_intent["currency"]) == (700, "usd")
    assert failed_intent["metadata"]["statement_id"] == "stmt_fail"
    assert failed_intent["last_payment_error"]["code"] == "card_declined"

    # The event can be fetched back by id, e.g. to reconcile.
    fetched = await client.v1.events.retrieve_async(event.id)
    assert (fetched.type, fetched.data.object["id"]) == ("payment_intent.succeeded", paid.id)


async def test_each_server_starts_empty_and_stops_cleanly() -> None:
    first = LocalStripe().start()
    try:
        assert first.url.startswith("http://127.0.0.1:")
        async with open_stripe_client(first.url) as client:
            customer = await client.v1.customers.create_async({"name": "Only in the first"})
            assert (await client.v1.customers.retrieve_async(customer.id)).id == customer.id
    finally:
        first.stop()
    assert first.port is None

    with LocalStripe() as second:
        async with open_stripe_client(second.url) as client:
            with pytest.raises(stripe.InvalidRequestError) as raised:
                await client.v1.customers.retrieve_async(customer.id)
    assert raised.value.http_status == 404
