"""Settlement rules: statements of final donations, payments, and conversion into the pool.

Units of work: `run_settlement`, `record_payment`, `record_failure` and `set_fx_rate` each work inside the
caller's transaction and never commit. Charging (`charge_due_statements`) talks to Stripe between two short
transactions of its own, so no transaction stays open across a network call, and is safe to repeat."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.database import driver_connection
from app.core.errors import Conflict, InvalidRequest
from app.core.ids import new_id
from app.core.money import MoneyOut, currency_exponent, round_half_even
from app.events.outbox import emit
from app.ledger import accounts
from app.ledger.service import EntryDraft, Posting, post, transfer
from app.models import FxConversion, FxRate, Merchant, SettlementRun, Statement
from app.settlement import repository
from app.settlement.schemas import CarriedForward
from app.settlement.stripe_gateway import ChargeResult, StripeGateway

log = structlog.get_logger("g4g.settlement")


class BaseCurrencyHasNoRate(Conflict):
    kind, title = "base-currency-has-no-rate", "The base currency has no exchange rate"


# Longer than a Stripe call can take with its retries; after it, a charge that never reported back is retried.
CHARGE_LEASE = timedelta(minutes=5)


async def set_billing_profile(session: AsyncSession, merchant: Merchant, stripe_customer_id: str) -> Merchant:
    merchant.stripe_customer_id = stripe_customer_id
    await session.flush()
    return merchant


async def run_settlement(
    session: AsyncSession, *, as_of: datetime, now: datetime, window: timedelta, min_invoice: int
) -> tuple[SettlementRun, list[Statement], list[CarriedForward]]:
    """Bill every merchant, per currency, for its final unbilled donations net of reversals, less credits for
    reversals on orders billed before. Totals below `min_invoice` (or negative) carry forward: their orders stay
    unbilled and appear again next run. Runs are serialised; an order is billed once, ever."""
    if as_of > now:
        raise InvalidRequest(
            "as_of: may not be in the future; donations are final only once the window passed."
        )
    db = await driver_connection(session)
    await repository.lock_settlement(db)
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    customers: dict[str, str | None] = {}
    for row in await repository.billable_orders(db, final_before=as_of - window):
        groups[(row["merchant_id"], row["currency"])].append(row)
        customers[row["merchant_id"]] = row["stripe_customer_id"]

    run = SettlementRun(id=new_id("stl"), as_of=as_of, summary={})
    session.add(run)
    await session.flush()
    statements: list[Statement] = []
    carried: list[CarriedForward] = []
    lines: list[tuple[str, str, str, int]] = []
    settled: list[tuple[str, str, int]] = []
    entries: list[EntryDraft] = []
    for (merchant_id, currency), rows in sorted(groups.items()):
        billed = sum(r["donation_amount"] - r["reversed_amount"] for r in rows if r["statement_id"] is None)
        credited = sum(
            r["reversed_amount"] - r["settled_reversed"] for r in rows if r["statement_id"] is not None
        )
        total = billed - credited
        if customers[merchant_id] is None or total < min_invoice:
            reason = "no_billing_profile" if customers[merchant_id] is None else "below_minimum"
            carried.append(
                CarriedForward(
                    merchant_id=merchant_id,
                    currency=currency,
                    total=MoneyOut(amount=total, currency=currency),
                    reason=reason,
                )
            )
            continue
        statement = Statement(
            id=new_id("stm"),
            run_id=run.id,
            merchant_id=merchant_id,
            currency=currency,
            as_of=as_of,
            total=total,
            status="pending_payment",
            payment_attempts=0,
        )
        statements.append(statement)
        for r in rows:
            if r["statement_id"] is None:
                lines.append((statement.id, r["id"], "donation", r["donation_amount"] - r["reversed_amount"]))
            else:
                lines.append(
                    (statement.id, r["id"], "credit", -(r["reversed_amount"] - r["settled_reversed"]))
                )
            settled.append((r["id"], statement.id, r["reversed_amount"]))
        legs = [
            Posting(accounts.billed_receivable(merchant_id), currency, total),
            Posting(accounts.pledges_receivable(merchant_id), currency, -billed),
            Posting(accounts.credits_due(merchant_id), currency, credited),
        ]
        entries.append(
            EntryDraft(
                cause_type="statement",
                cause_id=statement.id,
                memo=f"statement {statement.id} billed",
                postings=tuple(p for p in legs if p.amount),
            )
        )
    session.add_all(statements)
    await session.flush()
    await repository.insert_statement_lines(db, lines)
    await repository.mark_orders_settled(db, settled)
    await post(db, entries)
    run.summary = {
        "statements": [s.id for s in statements],
        "carried_forward": [c.model_dump(mode="json") for c in carried],
    }
    await session.flush()
    return run, statements, carried


async def record_payment(
    session: AsyncSession,
    statement_id: str,
    *,
    payment_intent_id: str | None,
    now: datetime,
    base_currency: str,
) -> bool:
    """The statement was paid (from Stripe's answer or its webhook, whichever comes first): money collected,
    and converted into the pool if a rate is known. False if it was already recorded."""
    statement = await repository.statement_for_update(session, statement_id)
    if statement is None or statement.status == "paid":
        return False
    statement.status = "paid"
    statement.paid_at = now
    statement.payment_intent_id = payment_intent_id or statement.payment_intent_id
    statement.last_payment_error = None
    await session.flush()
    await emit(
        await driver_connection(session),
        "statement.paid",
        {
            "statement_id": statement.id,
            "merchant_id": statement.merchant_id,
            "total": {"amount": statement.total, "currency": statement.currency},
            "paid_at": now.isoformat(),
            "payment_intent_id": statement.payment_intent_id,
        },
        occurred_at=now,
        merchant_id=statement.merchant_id,
    )
    await post(
        await driver_connection(session),
        [
            transfer(
                cause_type="statement_paid",
                cause_id=statement.id,
                memo=f"statement {statement.id} paid",
                debit=accounts.COLLECTED_UNCONVERTED,
                credit=accounts.billed_receivable(statement.merchant_id),
                currency=statement.currency,
                amount=statement.total,
            )
        ],
    )
    rate = None
    if statement.currency != base_currency:
        await repository.lock_currency_conversion(await driver_connection(session), statement.currency)
        rate = await repository.latest_rate(session, statement.currency, base_currency)
        if rate is None:
            return True  # waits, visibly, as collected-unconverted until a rate is set
    await _convert(session, statement, rate, base_currency)
    return True


async def record_failure(
    session: AsyncSession, statement_id: str, *, attempt: int | None, error: str
) -> bool:
    """A charge attempt failed. Only the current, unpaid attempt can fail the statement; a later run charges it
    again. A failure reported after the statement was paid changes nothing."""
    statement = await repository.statement_for_update(session, statement_id)
    if statement is None or statement.status != "pending_payment":
        return False
    if attempt is not None and attempt != statement.payment_attempts:
        return False
    statement.status = "payment_failed"
    statement.last_payment_error = error[:500]
    await session.flush()
    await emit(
        await driver_connection(session),
        "statement.payment_failed",
        {
            "statement_id": statement.id,
            "merchant_id": statement.merchant_id,
            "total": {"amount": statement.total, "currency": statement.currency},
            "attempt": statement.payment_attempts,
            "error": statement.last_payment_error,
        },
        occurred_at=datetime.now(UTC),
        merchant_id=statement.merchant_id,
    )
    return True


async def _convert(
    session: AsyncSession, statement: Statement, rate: FxRate | None, base_currency: str
) -> None:
    """Two linked legs through the FX account: the collected currency out, the base currency into the pool,
    rounded half-even once; the rounding difference is recorded with the conversion."""
    amount, currency = statement.total, statement.currency
    if rate is None:  # already in the base currency
        exact = Fraction(amount)
    else:
        shift = currency_exponent(base_currency) - currency_exponent(currency)
        exact = Fraction(amount) * Fraction(Decimal(rate.rate)) * Fraction(10) ** shift
    base_amount = round_half_even(exact)
    legs = [
        Posting(accounts.FX_EXCHANGE, currency, amount),
        Posting(accounts.COLLECTED_UNCONVERTED, currency, -amount),
        Posting(accounts.POOL, base_currency, base_amount),
        Posting(accounts.FX_EXCHANGE, base_currency, -base_amount),
    ]
    session.add(
        FxConversion(
            id=new_id("fxc"),
            statement_id=statement.id,
            currency=currency,
            amount=amount,
            base_currency=base_currency,
            base_amount=base_amount,
            fx_rate_id=rate.id if rate else None,
            rounding_difference=str(exact - base_amount),
        )
    )
    await session.flush()
    netted: dict[tuple[str, str], int] = defaultdict(int)
    for leg in legs:
        netted[(leg.account, leg.currency)] += leg.amount
    postings = tuple(Posting(a, c, v) for (a, c), v in netted.items() if v)
    if postings:
        await post(
            await driver_connection(session),
            [
                EntryDraft(
                    cause_type="fx_conversion",
                    cause_id=statement.id,
                    memo=f"statement {statement.id}: {amount} {currency} into the pool as {base_amount} {base_currency}",
                    postings=postings,
                )
            ],
        )


async def set_fx_rate(
    session: AsyncSession, *, currency: str, rate: str, base_currency: str
) -> tuple[FxRate, int]:
    """Record a rate (history is kept) and convert every collected amount in that currency that waited for one.
    Returns the rate and how many statements it converted."""
    if currency == base_currency:
        raise BaseCurrencyHasNoRate(f"{base_currency} is the programme's base currency; it needs no rate.")
    await repository.lock_currency_conversion(await driver_connection(session), currency)
    fx_rate = FxRate(id=new_id("fxr"), currency=currency, base_currency=base_currency, rate=Decimal(rate))
    session.add(fx_rate)
    await session.flush()
    await session.refresh(fx_rate)
    waiting = await repository.paid_unconverted(session, currency)
    for statement in waiting:
        await _convert(session, statement, fx_rate, base_currency)
    return fx_rate, len(waiting)


async def charge_due_statements(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    *,
    now: datetime,
    base_currency: str,
) -> None:
    """Charge every unpaid statement once more: new ones, failed ones (a new attempt), and ones whose last
    attempt has no known outcome (the same attempt again, so Stripe's idempotency key prevents a double charge)."""
    async with sessionmaker() as session:
        due = await repository.statements_to_charge(session)
    for statement_id in due:
        try:
            await charge_statement(sessionmaker, gateway, statement_id, now=now, base_currency=base_currency)
        except Exception as exc:  # one statement's trouble must not keep the others from being charged
            log.error("statement_charge_failed", statement_id=statement_id, exc_info=exc)


async def charge_statement(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    statement_id: str,
    *,
    now: datetime,
    base_currency: str,
) -> ChargeResult | None:
    async with sessionmaker() as session, session.begin():
        statement = await repository.statement_for_update(session, statement_id)
        if statement is None or statement.status == "paid":
            return None
        if statement.charging_until is not None and statement.charging_until > now:
            return None  # another run is charging it right now
        statement.charging_until = now + CHARGE_LEASE
        if statement.status == "payment_failed" or statement.payment_attempts == 0:
            statement.payment_attempts += 1
            statement.status = "pending_payment"
        attempt, amount, currency = statement.payment_attempts, statement.total, statement.currency
        merchant = await session.get(Merchant, statement.merchant_id)
        assert merchant is not None
        customer_id = merchant.stripe_customer_id
    if customer_id is None:
        result = ChargeResult("declined", error="the merchant has no billing profile")
    else:
        result = await gateway.charge(
            statement_id=statement_id,
            attempt=attempt,
            customer_id=customer_id,
            amount=amount,
            currency=currency,
        )
    async with sessionmaker() as session, session.begin():
        held = await repository.statement_for_update(session, statement_id)
        if held is not None:
            held.charging_until = None
            await session.flush()  # before the record_* functions re-read the row
        if result.outcome == "succeeded":
            await record_payment(
                session,
                statement_id,
                payment_intent_id=result.payment_intent_id,
                now=now,
                base_currency=base_currency,
            )
        elif result.outcome == "declined":
            await record_failure(session, statement_id, attempt=attempt, error=result.error or "declined")
        else:
            statement = await repository.statement_for_update(session, statement_id)
            if statement is not None and statement.status == "pending_payment":
                statement.last_payment_error = f"outcome unknown ({result.error}); retried by the next run"
    log.info("statement_charged", statement_id=statement_id, attempt=attempt, outcome=result.outcome)
    return result


async def apply_stripe_event(
    session: AsyncSession, event: dict[str, Any], *, now: datetime, base_currency: str
) -> str:
    """What a verified Stripe event does. Unknown types and events about no statement of ours are kept and
    acknowledged, and do nothing."""
    kind = str(event.get("type", ""))
    if kind not in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        return "ignored: not an event we act on"
    intent = (event.get("data") or {}).get("object") or {}
    metadata = intent.get("metadata") or {}
    statement_id = metadata.get("statement_id")
    known = isinstance(statement_id, str) and await session.scalar(
        select(Statement.id).where(Statement.id == statement_id)
    )
    if not known or not isinstance(statement_id, str):
        return "ignored: no statement of ours"
    if kind == "payment_intent.succeeded":
        done = await record_payment(
            session, statement_id, payment_intent_id=intent.get("id"), now=now, base_currency=base_currency
        )
        return "statement paid" if done else "already recorded"
    attempt_text = metadata.get("attempt")
    attempt = int(attempt_text) if isinstance(attempt_text, str) and attempt_text.isdigit() else None
    error = ((intent.get("last_payment_error") or {}).get("message")) or "payment failed"
    done = await record_failure(session, statement_id, attempt=attempt, error=str(error))
    return "statement payment failed" if done else "no change"
