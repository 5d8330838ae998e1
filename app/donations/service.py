"""Donation rules, checkout quotes and the donation reads."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import driver_connection
from app.core.errors import InvalidRequest, NotFound
from app.core.ids import new_id
from app.core.money import MoneyOut
from app.donations import repository
from app.donations.calculation import Line, donation_for
from app.donations.rules import RULE_TERMS, stored_from_input
from app.donations.schemas import (
    AnomalyOut,
    DonationRow,
    DonationRuleIn,
    DonationRuleOut,
    LineIn,
    OrderDonationOut,
    QuoteOut,
    SkuOverrideOut,
    Stage,
    TrailItem,
)
from app.logistics.machine import PACKAGE_STAGE
from app.models import DonationRule, Merchant, Order, WebhookAnomaly
from app.packages.allocation_repository import order_trail


async def set_rule(
    session: AsyncSession, merchant: Merchant, rule: DonationRuleIn, *, now: datetime
) -> DonationRule:
    """Add a rule version for the merchant, in effect from `effective_from` (default now).

    A rule may not start in the past: donations already promised to buyers can't be lowered after the fact.
    Earlier versions stay as they were, readable as history."""
    effective_from = rule.effective_from or now
    if effective_from < now:
        raise InvalidRequest(
            "effective_from: may not be in the past; omit it to start now.",
            errors=[{"loc": ["body", "effective_from"], "msg": "may not be in the past", "type": "past"}],
        )
    fixed, overrides = stored_from_input(rule)
    version = DonationRule(
        id=new_id("rul"),
        merchant_id=merchant.id,
        rate_bps=rule.rate_bps,
        fixed_per_unit=fixed,
        sku_overrides=overrides,
        effective_from=effective_from,
    )
    session.add(version)
    await session.flush()
    await session.refresh(version)
    return version


def rule_out(rule: DonationRule, *, in_effect_id: str | None, now: datetime) -> DonationRuleOut:
    status = (
        "scheduled" if rule.effective_from > now else "in_effect" if rule.id == in_effect_id else "superseded"
    )
    return DonationRuleOut(
        id=rule.id,
        merchant_id=rule.merchant_id,
        rate_bps=rule.rate_bps,
        fixed_per_unit=[MoneyOut(amount=m["amount"], currency=m["currency"]) for m in rule.fixed_per_unit],
        sku_overrides=[SkuOverrideOut.model_validate(o) for o in rule.sku_overrides],
        effective_from=rule.effective_from,
        created_at=rule.created_at,
        status=status,
    )


async def rule_in_effect_id(session: AsyncSession, merchant_id: str, now: datetime) -> str | None:
    return await repository.rule_id_in_effect(session, merchant_id, now)


async def quote(
    db: asyncpg.Connection,
    *,
    platform_id: str,
    merchant_external_id: str,
    currency: str,
    placed_at: datetime,
    items: list[LineIn],
) -> QuoteOut:
    """The donation an order placed at `placed_at` gets: the same lookup and computation the order webhook uses
    (one read statement; the rule's terms are cached per version)."""
    merchant_id, rule_id = await repository.merchant_and_rule(
        db, platform_id, merchant_external_id, placed_at
    )
    if merchant_id is None:
        raise NotFound(f"No merchant {merchant_external_id!r} on this platform.")
    terms = None
    if rule_id is not None:
        found = await RULE_TERMS.terms_for([rule_id], lambda ids: repository.rule_terms(db, ids))
        terms = found[rule_id]
    lines = [Line(sku=i.sku, quantity=i.quantity, amount=i.amount) for i in items]
    return QuoteOut(
        donation=MoneyOut(amount=donation_for(terms, currency, lines), currency=currency),
        merchant_id=merchant_external_id,
        placed_at=placed_at,
        rule_id=rule_id,
    )


def stage_of(order: Order, statement_status: str | None, *, final_before: datetime) -> Stage:
    """Where the order's donation is: pledged while returns are possible, final after the window, billed on a
    statement, collected once paid. A donation reversed in full before billing is `reversed`."""
    if statement_status == "paid":
        return "collected"
    if statement_status is not None:
        return "billed"
    if order.donation_amount > 0 and order.reversed_amount == order.donation_amount:
        return "reversed"
    return "final" if order.placed_at <= final_before else "pledged"


def _money(amount: int, currency: str) -> MoneyOut:
    return MoneyOut(amount=amount, currency=currency)


DONATION_NOTES: dict[str, str] = {
    "before-first-rule": "Placed before the merchant's first donation rule took effect, so it gives no donation.",
    "no-rule-in-force": "The merchant had no donation rule when this order was recorded, so it gives no donation.",
}


def donation_row(order: Order, statement_status: str | None, *, final_before: datetime) -> DonationRow:
    return DonationRow(
        order_id=order.external_id,
        currency=order.currency,
        donation=_money(order.donation_amount, order.currency),
        reversed=_money(order.reversed_amount, order.currency),
        net=_money(order.donation_amount - order.reversed_amount, order.currency),
        stage=stage_of(order, statement_status, final_before=final_before),
        placed_at=order.placed_at,
        donation_reason=order.donation_reason,
        donation_note=DONATION_NOTES.get(order.donation_reason) if order.donation_reason else None,
    )


def anomaly_out(anomaly: WebhookAnomaly) -> AnomalyOut:
    def money(amount: int | None) -> MoneyOut | None:
        if amount is None or anomaly.currency is None:
            return None
        return _money(amount, anomaly.currency)

    return AnomalyOut(
        id=anomaly.id,
        platform_id=anomaly.platform_id,
        webhook_id=anomaly.webhook_id,
        kind=anomaly.kind,
        natural_key=anomaly.natural_key,
        detail=anomaly.detail,
        asked=money(anomaly.asked_amount),
        applied=money(anomaly.applied_amount),
        created_at=anomaly.created_at,
    )


async def order_donation(
    session: AsyncSession, platform_id: str, order_external_id: str, *, final_before: datetime
) -> OrderDonationOut:
    """An applied order's donation and trail. A parked or unknown order is 404."""
    found = await repository.order_with_merchant(session, platform_id, order_external_id)
    if found is None:
        raise NotFound(f"No order {order_external_id!r} has been applied for this platform.")
    order, merchant, statement_status = found
    return await order_donation_of(session, order, merchant, statement_status, final_before=final_before)


async def order_donation_of(
    session: AsyncSession,
    order: Order,
    merchant: Merchant,
    statement_status: str | None,
    *,
    final_before: datetime,
) -> OrderDonationOut:
    """`GET /v1/orders/{order_id}`'s answer for an order already found (the merchant's dashboard shows it too)."""
    row = donation_row(order, statement_status, final_before=final_before)
    trail = [
        TrailItem(
            package_id=package_id,
            share=MoneyOut(amount=int(share), currency=currency),
            country=country,
            region=region,
            grade=grade,
            delivery_status=status,
            stage=PACKAGE_STAGE[status],
            delivered_at=delivered_at,
            receipt_confirmed_at=receipt_confirmed_at,
        )
        for (
            package_id,
            share,
            currency,
            country,
            region,
            grade,
            status,
            delivered_at,
            receipt_confirmed_at,
        ) in await order_trail(await driver_connection(session), order.id)
    ]
    return OrderDonationOut(**row.model_dump(), merchant_id=merchant.external_id, trail=trail)
