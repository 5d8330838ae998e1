"""Billing profiles: who pays a merchant's statements, and how.

Nobody can point a merchant's statements at someone else's card: the service creates the merchant's Stripe
customer itself (its metadata naming the merchant) and the card is added through a SetupIntent the merchant
confirms with Stripe.js; an admin may link an existing customer only if its metadata names this merchant, and a
customer pays for one merchant only. The alternative is bank transfer, recorded by an admin per statement."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Conflict, InvalidRequest, NotFound, ProblemError
from app.models import Merchant
from app.settlement.schemas import BillingProfileOut, PaymentMethodOut, SetupIntentOut
from app.settlement.stripe_gateway import StripeGateway, StripeRefused, StripeUnavailable

T = TypeVar("T")


class StripeNotConfigured(ProblemError):
    status, kind, title = 503, "stripe-not-configured", "Stripe is not configured on this service"


class StripeNotReachable(ProblemError):
    status, kind, title = 503, "stripe-unavailable", "Stripe did not answer; try again shortly"


class CustomerNotForMerchant(InvalidRequest):
    kind, title = "customer-not-for-this-merchant", "This Stripe customer does not belong to this merchant"


class CustomerInUse(Conflict):
    kind, title = "customer-in-use", "This Stripe customer already pays for another merchant"


class SetupNotComplete(Conflict):
    kind, title = "setup-not-complete", "The card setup has not succeeded"


def require_gateway(gateway: StripeGateway | None) -> StripeGateway:
    if gateway is None:
        raise StripeNotConfigured("Set STRIPE_API_KEY to bill merchants by card.")
    return gateway


def profile_of(merchant: Merchant) -> BillingProfileOut:
    method = (
        PaymentMethodOut(id=merchant.stripe_payment_method_id, label=merchant.stripe_payment_method_label)
        if merchant.stripe_payment_method_id
        else None
    )
    return BillingProfileOut(
        merchant_id=merchant.id,
        method=merchant.billing_method,
        stripe_customer_id=merchant.stripe_customer_id,
        payment_method=method,
    )


async def _locked(session: AsyncSession, merchant: Merchant) -> Merchant:
    """The merchant row, locked and re-read: billing changes for one merchant take turns."""
    locked = await session.scalar(
        select(Merchant)
        .where(Merchant.id == merchant.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert locked is not None
    return locked


async def use_bank_transfer(session: AsyncSession, merchant: Merchant) -> Merchant:
    """Statements made from now on are paid by bank transfer; the Stripe customer (if any) stays linked for a
    later switch back, but nothing is charged to it."""
    merchant = await _locked(session, merchant)
    merchant.billing_method = "bank_transfer"
    await session.flush()
    return merchant


async def link_stripe_customer(
    session: AsyncSession, gateway: StripeGateway, merchant: Merchant, customer_id: str
) -> Merchant:
    """Admin only: bill the merchant through an existing Stripe customer whose metadata names it."""
    customer = await _stripe(gateway.customer(customer_id))
    if customer is None or customer.deleted:
        raise CustomerNotForMerchant(f"Stripe has no customer {customer_id}.")
    if customer.merchant_id != merchant.id:
        raise CustomerNotForMerchant(
            f"Customer {customer_id}'s metadata must name this merchant (g4g_merchant_id={merchant.id})."
        )
    merchant = await _locked(session, merchant)
    other = await session.scalar(
        select(Merchant.id).where(Merchant.stripe_customer_id == customer_id, Merchant.id != merchant.id)
    )
    if other is not None:
        raise CustomerInUse(f"Customer {customer_id} already pays for another merchant.")
    if merchant.stripe_customer_id != customer_id:
        merchant.stripe_payment_method_id = merchant.stripe_payment_method_label = None
    merchant.stripe_customer_id = customer_id
    merchant.billing_method = "stripe"
    await session.flush()
    return merchant


async def start_card_setup(
    session: AsyncSession, gateway: StripeGateway, merchant: Merchant
) -> SetupIntentOut:
    """A SetupIntent for the merchant to add its card, on the Stripe customer the service made for it (made
    now, once, if it has none yet)."""
    merchant = await _locked(session, merchant)
    if merchant.stripe_customer_id is None:
        merchant.stripe_customer_id = await _stripe(
            gateway.create_customer(merchant_id=merchant.id, name=merchant.name)
        )
        await session.flush()
    setup_id, client_secret = await _stripe(
        gateway.create_setup_intent(customer_id=merchant.stripe_customer_id, merchant_id=merchant.id)
    )
    return SetupIntentOut(
        setup_intent_id=setup_id,
        client_secret=client_secret,
        customer_id=merchant.stripe_customer_id,
        publishable_key=gateway.publishable_key,
    )


async def complete_card_setup(
    session: AsyncSession, gateway: StripeGateway, merchant: Merchant, setup_intent_id: str
) -> Merchant:
    """After the merchant confirmed the SetupIntent (or Stripe told us, `setup_intent.succeeded`): its card
    becomes the customer's default and statements are charged to it. Only a SetupIntent on this merchant's own
    customer counts; what Stripe says is read from Stripe, never taken from the caller."""
    intent = await _stripe(gateway.setup_intent(setup_intent_id))
    merchant = await _locked(session, merchant)
    if (
        intent is None
        or merchant.stripe_customer_id is None
        or intent.customer_id != merchant.stripe_customer_id
    ):
        raise NotFound(f"No card setup {setup_intent_id} for this merchant.")
    if intent.status != "succeeded" or intent.payment_method_id is None:
        raise SetupNotComplete(
            f"Setup {setup_intent_id} is {intent.status}; confirm it with Stripe.js first."
        )
    label = await _stripe(
        gateway.make_default_payment_method(
            customer_id=merchant.stripe_customer_id, payment_method_id=intent.payment_method_id
        )
    )
    merchant.stripe_payment_method_id = intent.payment_method_id
    merchant.stripe_payment_method_label = label
    merchant.billing_method = "stripe"
    await session.flush()
    return merchant


async def merchant_for_setup_intent(session: AsyncSession, merchant_id: str | None) -> Merchant | None:
    return await session.get(Merchant, merchant_id) if merchant_id else None


async def _stripe(call: Awaitable[T]) -> T:
    """Stripe's trouble as the caller's answer: unreachable is a 503 to retry, a refusal a 422."""
    try:
        return await call
    except StripeUnavailable:
        raise StripeNotReachable() from None
    except StripeRefused as exc:
        raise InvalidRequest(f"Stripe refused the request: {exc}") from None
