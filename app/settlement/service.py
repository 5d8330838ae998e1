"""Settlement rules: statements of final donations, payments, and conversion into the pool.

Units of work: `run_settlement`, `record_payment`, `record_failure`, `record_bank_transfer` and `set_fx_rate`
each work inside the caller's transaction and never commit. Charging (`charge_due_statements`) talks to Stripe
between two short transactions of its own, so no transaction stays open across a network call, and is safe to
repeat."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import asyncpg
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.database import driver_connection
from app.core.errors import Conflict, InvalidRequest, NotFound
from app.core.ids import new_id
from app.core.jobs import enqueue
from app.core.money import Money, MoneyOut, currency_exponent, round_half_even
from app.events.outbox import emit
from app.ledger import accounts
from app.ledger.service import EntryDraft, Posting, post, transfer
from app.models import FxConversion, FxRate, Merchant, SettlementRun, Statement
from app.packages import pool
from app.settlement import billing, repository
from app.settlement.schemas import CarriedForward
from app.settlement.stripe_amounts import chargeable, maximum_charge, to_stripe
from app.settlement.stripe_gateway import ChargeResult, StripeGateway, StripeUnavailable

log = structlog.get_logger("g4g.settlement")


class BaseCurrencyHasNoRate(Conflict):
    kind, title = "base-currency-has-no-rate", "The base currency has no exchange rate"


class StatementAlreadyPaid(Conflict):
    kind, title = "statement-already-paid", "The statement is already paid"


class PaymentMayBeInFlight(Conflict):
    kind, title = "card-charge-in-progress", "A card charge for this statement may still succeed"


class PaymentDoesNotMatch(InvalidRequest):
    kind, title = "payment-does-not-match", "The payment is not the statement's open amount"


class NotReopenable(Conflict):
    kind, title = "statement-not-reopenable", "Only a statement that needs attention can be reopened"


# Longer than a Stripe call can take with its retries; after it, a charge that never reported back is retried.
CHARGE_LEASE = timedelta(minutes=5)
# Stripe keeps an idempotency key's answer for at least 24 hours: an attempt older than this is never sent again
# under its key; it is looked up instead.
KEY_LIFETIME = timedelta(hours=23)
# No statement carries more than this; orders beyond it wait for the next one (a bigint never overflows, and one
# merchant's absurd data can't stop a run for everyone).
MAX_STATEMENT_MINOR_UNITS = 10**15


# ---- statements ----


@dataclass
class _Group:
    """One merchant's billable money in one currency."""

    merchant_id: str
    currency: str
    orders: list[asyncpg.Record] = field(default_factory=list)
    carryovers: list[asyncpg.Record] = field(default_factory=list)


@dataclass
class _Plan:
    donations: list[asyncpg.Record]
    credits: list[asyncpg.Record]
    carryovers: list[asyncpg.Record]
    total: int
    carried_out: int
    method: str


def _net(row: asyncpg.Record) -> int:
    return int(row["donation_amount"] - row["reversed_amount"])


def _plan(
    group: _Group, method: str | None, *, min_invoice: int
) -> tuple[_Plan | None, list[CarriedForward]]:
    """What one statement for this group would bill, or why nothing is billed now (and what waits)."""
    credits = [r for r in group.orders if r["statement_id"] is not None]
    pending = sorted(
        (r for r in group.orders if r["statement_id"] is None), key=lambda r: (r["placed_at"], r["id"])
    )
    currency = group.currency
    cap = maximum_charge(currency).amount if method == "stripe" else MAX_STATEMENT_MINOR_UNITS
    total = sum(int(c["amount"]) for c in group.carryovers) - sum(
        int(r["reversed_amount"] - r["settled_reversed"]) for r in credits
    )
    chosen: list[asyncpg.Record] = []
    for row in pending:
        if total + _net(row) > cap:
            break
        chosen.append(row)
        total += _net(row)
    waiting = pending[len(chosen) :]
    carried: list[CarriedForward] = []

    def carry(reason: str, amount: int) -> tuple[None, list[CarriedForward]]:
        carried.append(
            CarriedForward(
                merchant_id=group.merchant_id,
                currency=currency,
                total=MoneyOut(amount=amount, currency=currency),
                reason=reason,
            )
        )
        return None, carried

    if waiting:
        over = "exceeds_stripe_maximum" if method == "stripe" else "exceeds_maximum"
        left = sum(_net(r) for r in waiting)
        if not chosen:  # the oldest order alone is more than one statement can carry
            return carry(over, total + left)
        carry(over, left)
    if method is None:
        return carry("no_billing_profile", total)
    if total < min_invoice:
        return carry("below_minimum", total)
    carried_out = 0
    if method == "stripe":
        part = chargeable(Money(total, currency))
        if part.below_minimum:
            return carry("below_stripe_minimum", total)
        carried_out = part.rest.amount
    plan = _Plan(chosen, credits, list(group.carryovers), total - carried_out, carried_out, method)
    return plan, carried


async def run_settlement(
    session: AsyncSession,
    *,
    as_of: datetime,
    now: datetime,
    window: timedelta,
    min_invoice: int,
    run: SettlementRun | None = None,
) -> tuple[SettlementRun, list[Statement], list[CarriedForward]]:
    """Bill every merchant, per currency, for its final unbilled donations net of reversals, less credits for
    reversals on orders billed before, plus remainders carried from earlier statements. What can't be billed now
    (below the minimum, no billing profile, more than a statement may carry, less than Stripe takes) carries
    forward: its orders stay unbilled and appear again next run. Runs are serialised; an order is billed once."""
    if as_of > now:
        raise InvalidRequest(
            "as_of: may not be in the future; donations are final only once the window passed."
        )
    db = await driver_connection(session)
    await repository.lock_settlement(db)
    groups: dict[tuple[str, str], _Group] = {}
    for row in await repository.billable_orders(db, final_before=as_of - window):
        key = (row["merchant_id"], row["currency"])
        groups.setdefault(key, _Group(*key)).orders.append(row)
    for row in await repository.pending_carryovers(db):
        key = (row["merchant_id"], row["currency"])
        groups.setdefault(key, _Group(*key)).carryovers.append(row)
    methods = await repository.billing_methods(db, sorted({m for m, _ in groups}))

    if run is None:
        run = SettlementRun(id=new_id("stl"), as_of=as_of, status="billing", summary={})
        session.add(run)
        await session.flush()
    statements: list[Statement] = []
    carried: list[CarriedForward] = []
    writes = repository.StatementWrites()
    entries: list[EntryDraft] = []
    for key in sorted(groups):
        group = groups[key]
        plan, waiting = _plan(group, methods.get(group.merchant_id), min_invoice=min_invoice)
        carried.extend(waiting)
        if plan is None:
            continue
        statement = Statement(
            id=new_id("stm"),
            run_id=run.id,
            merchant_id=group.merchant_id,
            currency=group.currency,
            as_of=as_of,
            total=plan.total,
            billing_method=plan.method,
            status="pending_payment",
            payment_attempts=0,
        )
        statements.append(statement)
        entries.append(_bill(statement, plan, writes))
    session.add_all(statements)
    await session.flush()
    await repository.write_statements(db, writes)
    await post(db, entries)
    run.summary = {
        "statements": [s.id for s in statements],
        "carried_forward": [c.model_dump(mode="json") for c in carried],
    }
    await session.flush()
    return run, statements, carried


def _bill(statement: Statement, plan: _Plan, writes: repository.StatementWrites) -> EntryDraft:
    """The statement's lines, the orders and carryovers it settles, and its ledger entry."""
    billed = sum(_net(r) for r in plan.donations)
    credited = sum(int(r["reversed_amount"] - r["settled_reversed"]) for r in plan.credits)
    carried_in = sum(int(c["amount"]) for c in plan.carryovers)
    for row in plan.donations:
        writes.lines.append((statement.id, row["id"], "donation", _net(row)))
        writes.settled.append((row["id"], statement.id, row["reversed_amount"]))
    for row in plan.credits:
        writes.lines.append(
            (statement.id, row["id"], "credit", -int(row["reversed_amount"] - row["settled_reversed"]))
        )
        writes.settled.append((row["id"], statement.id, row["reversed_amount"]))
    for carryover in plan.carryovers:
        writes.lines.append((statement.id, carryover["order_id"], "carried_in", int(carryover["amount"])))
        writes.carried_into.append((carryover["id"], statement.id))
    if plan.carried_out:
        # A fraction of Stripe's unit can't be charged: it moves to the next statement, still the money of the
        # order with the largest line here.
        positive = [(_net(r), r["id"]) for r in plan.donations] + [
            (int(c["amount"]), c["order_id"]) for c in plan.carryovers
        ]
        order_id = max(positive)[1]
        writes.lines.append((statement.id, order_id, "carried_out", -plan.carried_out))
        writes.carried_out.append(
            (
                new_id("cry"),
                statement.merchant_id,
                statement.currency,
                plan.carried_out,
                order_id,
                statement.id,
            )
        )
    # What stays pledged: the carried-out remainder; what leaves the pledges: the billed donations and what came
    # back in from earlier statements.
    legs = [
        Posting(accounts.billed_receivable(statement.merchant_id), statement.currency, statement.total),
        Posting(
            accounts.pledges_receivable(statement.merchant_id),
            statement.currency,
            -(billed + carried_in - plan.carried_out),
        ),
        Posting(accounts.credits_due(statement.merchant_id), statement.currency, credited),
    ]
    return EntryDraft(
        cause_type="statement",
        cause_id=statement.id,
        memo=f"statement {statement.id} billed",
        postings=tuple(p for p in legs if p.amount),
    )


# ---- payments ----


async def record_payment(
    session: AsyncSession,
    statement_id: str,
    *,
    via: str,
    now: datetime,
    base_currency: str,
    payment_intent_id: str | None = None,
    reference: str | None = None,
) -> bool:
    """The statement was paid (by Stripe's answer or its webhook, whichever comes first, or by a bank transfer an
    admin recorded): money collected, and converted into the pool if a rate is known. False if it was already
    recorded."""
    statement = await repository.statement_for_update(session, statement_id)
    if statement is None or statement.status == "paid":
        return False
    statement.status = "paid"
    statement.paid_at = now
    statement.paid_via = via
    statement.payment_reference = reference
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
            "paid_via": via,
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
                memo=f"statement {statement.id} paid ({via})",
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
    session: AsyncSession,
    statement_id: str,
    *,
    attempt: int | None,
    error: str,
    payment_intent_id: str | None = None,
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
    statement.payment_intent_id = payment_intent_id or statement.payment_intent_id
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


async def mark_needs_attention(
    session: AsyncSession, statement_id: str, *, reason: str, payment_intent_id: str | None = None
) -> bool:
    """Charging again cannot help: the operator must look (and then reopen it or record a bank transfer)."""
    statement = await repository.statement_for_update(session, statement_id)
    if statement is None or statement.status == "paid":
        return False
    statement.status = "needs_attention"
    statement.last_payment_error = reason[:500]
    statement.payment_intent_id = payment_intent_id or statement.payment_intent_id
    await session.flush()
    log.warning("statement_needs_attention", statement_id=statement_id, reason=reason[:200])
    return True


async def note_anomaly(session: AsyncSession, statement_id: str, anomaly: str) -> None:
    """Something about a statement's money the operator must see (e.g. a second payment for it)."""
    statement = await repository.statement_for_update(session, statement_id)
    if statement is not None:
        statement.anomaly = anomaly[:500]
        await session.flush()
    log.error("statement_anomaly", statement_id=statement_id, anomaly=anomaly[:200])


async def reopen(session: AsyncSession, statement_id: str) -> Statement:
    """A statement that needed attention goes back to being charged by the next run, as a new attempt."""
    statement = await repository.statement_for_update(session, statement_id)
    if statement is None:
        raise NotFound(f"No statement {statement_id}.")
    if statement.status != "needs_attention":
        raise NotReopenable(f"Statement {statement_id} is {statement.status}.")
    statement.status = "payment_failed"
    await session.flush()
    return statement


async def record_bank_transfer(
    session: AsyncSession,
    statement_id: str,
    *,
    reference: str,
    amount: Money,
    now: datetime,
    base_currency: str,
) -> Statement:
    """An admin records a bank transfer for a statement: it must be the open amount, and then the statement is
    paid exactly as through Stripe. The same transfer again changes nothing; a statement paid one way refuses
    the other, and a card charge that may still succeed blocks it."""
    statement = await repository.statement_for_update(session, statement_id)
    if statement is None:
        raise NotFound(f"No statement {statement_id}.")
    if statement.status == "paid":
        if statement.paid_via == "bank_transfer" and statement.payment_reference == reference:
            if amount == Money(statement.total, statement.currency):
                return statement
        raise StatementAlreadyPaid(
            f"Statement {statement_id} was already paid by {statement.paid_via}"
            + (
                f" (reference {statement.payment_reference})."
                if statement.paid_via == "bank_transfer"
                else "."
            )
        )
    if amount != Money(statement.total, statement.currency):
        raise PaymentDoesNotMatch(
            f"The open amount is {statement.total} {statement.currency}; the transfer must be exactly that."
        )
    if (
        statement.billing_method == "stripe"
        and statement.status == "pending_payment"
        and statement.payment_attempts
    ):
        raise PaymentMayBeInFlight(
            f"Card charge attempt {statement.payment_attempts} for {statement_id} has no final outcome yet."
        )
    await record_payment(
        session, statement_id, via="bank_transfer", reference=reference, now=now, base_currency=base_currency
    )
    return statement


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
    # In the pool, the money stays its orders' money: whose it was follows it into the packages it buys.
    await pool.fund_from_statement(await driver_connection(session), statement.id, base_amount, base_currency)


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
    """Charge every unpaid Stripe statement once more: new ones, failed ones (a new attempt), and ones whose last
    attempt has no known outcome (looked up, or sent again under the same idempotency key within its lifetime)."""
    async with sessionmaker() as session:
        due = await repository.statements_to_charge(session)
    for statement_id in due:
        try:
            await charge_statement(sessionmaker, gateway, statement_id, now=now, base_currency=base_currency)
        except Exception as exc:  # one statement's trouble must not keep the others from being charged
            log.error("statement_charge_failed", statement_id=statement_id, exc_info=exc)


async def reconcile_unknown_charges(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    *,
    now: datetime,
    base_currency: str,
) -> None:
    """Look again at every Stripe statement whose charge was sent and never answered for sure (no new attempts:
    a failed statement waits for the next run)."""
    async with sessionmaker() as session:
        due = await repository.statements_in_flight(session)
    for statement_id in due:
        try:
            await charge_statement(sessionmaker, gateway, statement_id, now=now, base_currency=base_currency)
        except Exception as exc:
            log.error("statement_reconcile_failed", statement_id=statement_id, exc_info=exc)


async def charge_statement(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    statement_id: str,
    *,
    now: datetime,
    base_currency: str,
) -> ChargeResult | None:
    """One step towards getting a Stripe statement paid, never two PaymentIntents for one attempt: an attempt
    whose PaymentIntent we know is retrieved; one whose outcome is unknown is sent again under its key while
    Stripe still remembers the key (23 h), then looked up by its metadata; only a failed attempt makes a new one."""
    async with sessionmaker() as session, session.begin():
        statement = await repository.statement_for_update(session, statement_id)
        if statement is None or statement.billing_method != "stripe":
            return None
        if statement.status not in ("pending_payment", "payment_failed"):
            return None
        if statement.charging_until is not None and statement.charging_until > now:
            return None  # another run is charging it right now
        statement.charging_until = now + CHARGE_LEASE
        if statement.status == "payment_failed" or statement.payment_attempts == 0:
            statement.payment_attempts += 1
            statement.status = "pending_payment"
            statement.attempt_started_at = now
            statement.payment_intent_id = None
        attempt, started, known_intent = (
            statement.payment_attempts,
            statement.attempt_started_at or now,
            statement.payment_intent_id,
        )
        money = Money(statement.total, statement.currency)
        merchant = await session.get(Merchant, statement.merchant_id)
        assert merchant is not None
        customer_id = merchant.stripe_customer_id
    result = await _attempt(
        gateway, statement_id, attempt, started, known_intent, customer_id, money, now=now
    )
    async with sessionmaker() as session, session.begin():
        held = await repository.statement_for_update(session, statement_id)
        if held is not None:
            held.charging_until = None
            await session.flush()  # before the record_* functions re-read the row
        await _record_outcome(
            session, statement_id, attempt, money, result, now=now, base_currency=base_currency
        )
    log.info("statement_charged", statement_id=statement_id, attempt=attempt, outcome=result.outcome)
    return result


async def _attempt(
    gateway: StripeGateway,
    statement_id: str,
    attempt: int,
    started: datetime,
    known_intent: str | None,
    customer_id: str | None,
    money: Money,
    *,
    now: datetime,
) -> ChargeResult:
    if known_intent is not None:
        return await gateway.payment_intent(known_intent)
    if now - started >= KEY_LIFETIME:
        try:
            found = await gateway.find_attempt(statement_id, attempt)
        except StripeUnavailable:
            return ChargeResult(
                "needs_attention",
                error=f"attempt {attempt} has had no known outcome for 23 hours and Stripe's search did not answer:"
                f" look for a PaymentIntent with metadata statement_id={statement_id}, attempt={attempt}, then"
                " reopen or record the payment",
            )
        return found or ChargeResult("declined", error=f"attempt {attempt} never reached Stripe")
    if customer_id is None:
        return ChargeResult("declined", error="the merchant has no Stripe customer")
    return await gateway.charge(
        statement_id=statement_id,
        attempt=attempt,
        customer_id=customer_id,
        amount=to_stripe(money),
        currency=money.currency,
    )


def _mismatch(money: Money, result: ChargeResult) -> str | None:
    """Why a succeeded PaymentIntent can't count as this statement's payment, if it can't."""
    expected = (to_stripe(money), money.currency)
    if (result.amount, result.currency) != expected:
        return (
            f"PaymentIntent {result.payment_intent_id} succeeded for {result.amount} {result.currency}, but the"
            f" statement is {expected[0]} {expected[1]} in Stripe's units"
        )
    return None


async def _record_outcome(
    session: AsyncSession,
    statement_id: str,
    attempt: int,
    money: Money,
    result: ChargeResult,
    *,
    now: datetime,
    base_currency: str,
) -> None:
    if result.outcome == "succeeded":
        mismatch = _mismatch(money, result)
        if mismatch is not None:
            await mark_needs_attention(
                session, statement_id, reason=mismatch, payment_intent_id=result.payment_intent_id
            )
            return
        await _record_card_payment(session, statement_id, result, now=now, base_currency=base_currency)
    elif result.outcome == "declined":
        await record_failure(
            session,
            statement_id,
            attempt=attempt,
            error=result.error or "declined",
            payment_intent_id=result.payment_intent_id,
        )
    elif result.outcome == "needs_attention":
        await mark_needs_attention(
            session, statement_id, reason=result.error or "", payment_intent_id=result.payment_intent_id
        )
    else:
        statement = await repository.statement_for_update(session, statement_id)
        if statement is not None and statement.status == "pending_payment":
            statement.payment_intent_id = result.payment_intent_id or statement.payment_intent_id
            statement.last_payment_error = (
                f"outcome unknown ({result.error}); looked at again by the next run"
            )


async def _record_card_payment(
    session: AsyncSession, statement_id: str, result: ChargeResult, *, now: datetime, base_currency: str
) -> str:
    statement = await repository.statement_for_update(session, statement_id)
    assert statement is not None
    if statement.status == "paid":
        if statement.paid_via == "stripe" and statement.payment_intent_id == result.payment_intent_id:
            return "already recorded"
        await note_anomaly(
            session,
            statement_id,
            f"paid twice: PaymentIntent {result.payment_intent_id} succeeded after the statement was paid by "
            f"{statement.paid_via} ({statement.payment_intent_id or statement.payment_reference}); refund one",
        )
        return "anomaly: paid twice"
    await record_payment(
        session,
        statement_id,
        via="stripe",
        payment_intent_id=result.payment_intent_id,
        now=now,
        base_currency=base_currency,
    )
    return "statement paid"


async def apply_stripe_event(
    session: AsyncSession,
    event: dict[str, Any],
    *,
    gateway: StripeGateway | None,
    now: datetime,
    base_currency: str,
) -> str:
    """What a verified Stripe event does. Unknown types and events about nothing of ours are kept and
    acknowledged, and do nothing."""
    kind = str(event.get("type", ""))
    obj = (event.get("data") or {}).get("object") or {}
    if kind == "setup_intent.succeeded":
        return await _apply_setup_event(session, obj, gateway)
    if kind not in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        return "ignored: not an event we act on"
    metadata = obj.get("metadata") or {}
    statement_id = metadata.get("statement_id")
    statement = (
        await session.scalar(select(Statement).where(Statement.id == statement_id))
        if isinstance(statement_id, str)
        else None
    )
    if statement is None or statement.billing_method != "stripe":
        return "ignored: no statement of ours"
    attempt_text = metadata.get("attempt")
    attempt = int(attempt_text) if isinstance(attempt_text, str) and attempt_text.isdigit() else None
    if kind == "payment_intent.succeeded":
        result = ChargeResult(
            "succeeded",
            payment_intent_id=obj.get("id"),
            amount=obj.get("amount") if isinstance(obj.get("amount"), int) else None,
            currency=str(obj.get("currency", "")).upper(),
        )
        mismatch = _mismatch(Money(statement.total, statement.currency), result)
        if mismatch is None:
            return await _record_card_payment(
                session, statement.id, result, now=now, base_currency=base_currency
            )
        if statement.status == "paid":
            await note_anomaly(session, statement.id, f"after payment: {mismatch}")
        else:
            await mark_needs_attention(
                session, statement.id, reason=mismatch, payment_intent_id=result.payment_intent_id
            )
        return "anomaly: amount mismatch"
    error = ((obj.get("last_payment_error") or {}).get("message")) or "payment failed"
    done = await record_failure(session, statement.id, attempt=attempt, error=str(error))
    return "statement payment failed" if done else "no change"


async def _apply_setup_event(
    session: AsyncSession, obj: dict[str, Any], gateway: StripeGateway | None
) -> str:
    metadata = obj.get("metadata") or {}
    merchant = await billing.merchant_for_setup_intent(session, metadata.get("g4g_merchant_id"))
    setup_intent_id = obj.get("id")
    if merchant is None or gateway is None or not isinstance(setup_intent_id, str):
        return "ignored: no merchant of ours"
    try:
        await billing.complete_card_setup(session, gateway, merchant, setup_intent_id)
    except (NotFound, billing.SetupNotComplete) as exc:  # not this merchant's customer, or not succeeded
        return f"ignored: {exc.detail}"
    return "card set up"


SETTLEMENT_TASK = "settlement.run"


async def queue_settlement(session: AsyncSession, *, as_of: datetime | None, now: datetime) -> SettlementRun:
    """A settlement run, queued as a background job in the same transaction: `execute_settlement` does it."""
    as_of = as_of or now
    if as_of > now:
        raise InvalidRequest(
            "as_of: may not be in the future; donations are final only once the window passed."
        )
    run = SettlementRun(id=new_id("stl"), as_of=as_of, status="queued", summary={})
    session.add(run)
    await session.flush()
    await enqueue(await driver_connection(session), SETTLEMENT_TASK, [run.id.encode()])
    return run


async def execute_settlement(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway | None,
    run_id: str | None,
    *,
    now: datetime,
    window: timedelta,
    min_invoice: int,
    base_currency: str,
) -> str:
    """Do a queued run (or, with no id, a scheduled one): bill in one transaction, then charge every unpaid Stripe
    statement (a charge never happens for a statement that isn't recorded), then mark it done. Safe to repeat
    after a crash at any point: a run bills once, and charging is idempotent. Returns the run's id."""
    try:
        async with sessionmaker() as session, session.begin():
            if run_id is None:
                run = SettlementRun(id=new_id("stl"), as_of=now, status="queued", summary={})
                session.add(run)
                await session.flush()
            else:
                found = await repository.run_for_update(session, run_id)
                if found is None or found.status == "done":
                    return run_id
                run = found
            if run.status in ("queued", "billing", "failed"):
                run.status = "billing"
                await run_settlement(
                    session, as_of=run.as_of, now=now, window=window, min_invoice=min_invoice, run=run
                )
                run.status, run.error = "charging", None
            run_id = run.id
    except Exception as exc:  # recorded for the operator; the job queue tries again
        log.error("settlement_run_failed", run_id=run_id, exc_info=exc)
        if run_id is not None:
            async with sessionmaker() as session, session.begin():
                failed = await repository.run_for_update(session, run_id)
                if failed is not None and failed.status != "done":
                    failed.status, failed.error = "failed", f"{type(exc).__name__}: {exc}"[:500]
        raise
    if gateway is not None:
        await charge_due_statements(sessionmaker, gateway, now=now, base_currency=base_currency)
    async with sessionmaker() as session, session.begin():
        finished = await repository.run_for_update(session, run_id)
        assert finished is not None
        finished.status, finished.finished_at = "done", now
    return run_id
