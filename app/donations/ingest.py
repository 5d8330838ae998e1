"""Applying order events: exactly one business effect per natural key, whatever webhook carries it.

Works on batches: every step is one set-based statement for the whole batch. `receive` runs a batch in a transaction
of its own (the inbox answers its requests once it committed); `apply_parked_for_merchant` works inside its caller's.
The rules, in order:

1. Natural keys are locked first (advisory, transaction-scoped, in key order): the payment and the refunds of
   one order are applied one transaction at a time, and an event for a merchant being registered either sees
   the merchant or is parked before the registration looks for parked events.
2. Then (same statement) the delivery is claimed in the inbox (unique on platform + webhook id within a month,
   and locked by webhook id as a month starts: `MONTH_EDGE`); a redelivery, in any month, gets the stored
   answer and changes nothing.
3. Payments, then refunds, then cancellations are applied. Within a batch that order is safe: an order's
   reversed total depends only on the set of its refunds and whether it was cancelled, not on their order.
4. Events that can't apply yet are parked: a payment until its merchant is registered, a refund or
   cancellation until its payment arrives. When that arrives (in this module, same transaction), they apply.
5. The same natural key with other content is a 409 and an anomaly for the operator.
6. A payment placed more than a day ahead is refused (422) without being claimed, so the platform can correct it
   under the same webhook id; the refusal is noted once as an anomaly. A refund beyond what is left of the
   order's amount reverses the rest of the donation and is noted as an anomaly too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from pydantic import TypeAdapter, ValidationError

from app.core.errors import ProblemError
from app.core.ids import new_id
from app.core.json_body import parse_json
from app.core.money import MAX_ORDER_MINOR_UNITS
from app.core.partitions import month_start
from app.donations import outcomes, repository
from app.donations.calculation import Line, base_amount, donation_for, reversed_total
from app.donations.outcomes import Anomaly, Outcome
from app.donations.rules import RULE_TERMS
from app.donations.schemas import OrderCancelled, OrderEvent, OrderPaid, OrderRefunded
from app.events.outbox import EventDraft, drafted, enqueue_deliveries
from app.ledger import accounts
from app.ledger.service import transfer

# Running refund totals stay far inside bigint whatever a platform sends.
MAX_REFUNDED = 1000 * MAX_ORDER_MINOR_UNITS

# How far ahead of our clock an order may be placed (clocks drift, time zones get mixed up); anything later
# would stay pledged for years and count as money to come.
MAX_PLACED_AHEAD = timedelta(days=1)

EVENT_ADAPTER: TypeAdapter[OrderPaid | OrderRefunded | OrderCancelled] = TypeAdapter(OrderEvent)


@dataclass(slots=True)
class Delivery:
    """One authentic webhook delivery: the parsed event, or the answer that rejects its body."""

    platform_id: str
    webhook_id: str
    body: bytes
    event: OrderPaid | OrderRefunded | OrderCancelled | None = None
    rejection: Outcome | None = None
    stored: bool = False  # already in the inbox (parked): settling it updates its row

    @property
    def event_type(self) -> str | None:
        return self.event.type if self.event else None


def parse_delivery(platform_id: str, webhook_id: str, body: bytes) -> Delivery:
    """Validate an authentic body. Invalid bodies are still deliveries: they are kept with their 4xx answer."""
    delivery = Delivery(platform_id, webhook_id, body)
    try:
        document = parse_json(body)
    except ValueError as exc:
        delivery.rejection = outcomes.rejected(f"not JSON: {exc}", status=400, kind="malformed-event")
        return delivery
    except ProblemError as exc:  # more values or deeper nesting than any event has
        delivery.rejection = outcomes.rejected(str(exc), status=exc.status, kind="malformed-event")
        return delivery
    try:
        delivery.event = EVENT_ADAPTER.validate_python(document)
    except ValidationError as exc:
        errors = [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()[:20]
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        delivery.rejection = outcomes.rejected(f"{'.'.join(first['loc'])}: {first['msg']}", errors=errors)
    return delivery


# ---- keys ----


def _order_key(platform_id: str, order_id: str) -> str:
    return f"{platform_id}/{order_id}"


def natural_key(event: OrderPaid | OrderRefunded | OrderCancelled) -> str:
    data = event.data
    if isinstance(event, OrderRefunded):
        return f"refund:{event.data.order_id}:{event.data.refund_id}"
    return f"{'payment' if isinstance(event, OrderPaid) else 'cancellation'}:{data.order_id}"


def _lock_id(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def merchant_lock(platform_id: str, merchant_external_id: str) -> int:
    return _lock_id(f"merchant:{platform_id}/{merchant_external_id}")


def _order_lock(platform_id: str, order_id: str) -> int:
    return _lock_id(f"order:{_order_key(platform_id, order_id)}")


MERCHANT_LEVEL, ORDER_LEVEL, WEBHOOK_LEVEL = 0, 1, 2
# The inbox is partitioned by month on `received_at`, so its unique key holds within a month. The read finds a
# webhook id's earlier answer in any month; but two deliveries of one id in flight as a month starts could be
# written in two months and both claim it. Within this much of a month's start, a batch also locks its webhook
# ids (an inbox transaction lasts well under it).
MONTH_EDGE = timedelta(minutes=10)


def near_month_start(now: datetime) -> bool:
    return abs(now - month_start(now + MONTH_EDGE)) <= MONTH_EDGE


def _webhook_locks(deliveries: Iterable[Delivery]) -> list[tuple[int, int, bool]]:
    return [(WEBHOOK_LEVEL, _lock_id(f"webhook:{d.platform_id}/{d.webhook_id}"), False) for d in deliveries]


def _locks_for(deliveries: Iterable[Delivery], *, merchants: bool = True) -> list[tuple[int, int, bool]]:
    """Payments hold their merchant's lock shared (registration takes it exclusively); every event holds its
    order's lock exclusively."""
    order_locks: set[int] = set()
    merchant_locks: set[int] = set()
    for d in deliveries:
        if d.event is None:
            continue
        order_locks.add(_order_lock(d.platform_id, d.event.data.order_id))
        if merchants and isinstance(d.event, OrderPaid):
            merchant_locks.add(merchant_lock(d.platform_id, d.event.data.merchant_id))
    return [(MERCHANT_LEVEL, k, True) for k in merchant_locks] + [
        (ORDER_LEVEL, k, False) for k in order_locks
    ]


async def lock_merchant(db: asyncpg.Connection, platform_id: str, merchant_external_id: str) -> None:
    """Registration's lock: exclusive, so no payment for this merchant can be parked while it registers."""
    await repository.lock_keys(
        db, [(MERCHANT_LEVEL, merchant_lock(platform_id, merchant_external_id), False)]
    )


def _hash(data: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).digest()


def payment_content(event: OrderPaid, items: list[dict[str, Any]]) -> dict[str, Any]:
    """What makes two payments of an order the same payment; `items` are its items as dicts."""
    d = event.data
    return {
        "order_id": d.order_id,
        "merchant_id": d.merchant_id,
        "currency": d.currency,
        "placed_at": d.placed_at.timestamp(),  # the instant, whatever offset it was written with
        "items": items,
    }


def refund_content(event: OrderRefunded) -> dict[str, Any]:
    return event.data.model_dump()


# ---- the batch ----


class ClaimRace(Exception):
    """A webhook id of this batch was claimed by a concurrent transaction after this one looked: the batch is
    rolled back and tried again (it then finds that delivery's answer)."""


async def receive(db: asyncpg.Connection, deliveries: Sequence[Delivery], *, now: datetime) -> list[Outcome]:
    """Record and apply a batch of deliveries in a transaction of its own; one outcome per delivery, in order, once
    it committed. Four round trips: BEGIN with the locks, one read, one write (left out when the batch holds
    redeliveries only), COMMIT."""
    first_of: dict[tuple[str, str], int] = {}
    for i, d in enumerate(deliveries):
        first_of.setdefault((d.platform_id, d.webhook_id), i)
    primaries = [deliveries[i] for i in sorted(set(first_of.values()))]

    locks = _locks_for(primaries)
    if near_month_start(now):
        locks += _webhook_locks(primaries)
    async with repository.transaction_holding(db, locks):
        facts = await _read(db, primaries, answers=True)
        results = {
            (platform_id, webhook_id): Outcome(status, http_status, json.loads(body), redelivered=True)
            for platform_id, webhook_id, status, http_status, body in facts.answers
        }
        new = [d for d in primaries if (d.platform_id, d.webhook_id) not in results]
        results.update(await _apply(db, new, facts, now=now))
    return [results[(d.platform_id, d.webhook_id)] for d in deliveries]


async def apply_parked_for_merchant(
    db: asyncpg.Connection, platform_id: str, merchant_external_id: str, *, now: datetime
) -> int:
    """Apply the payments parked until this merchant was registered (and what waited for them).
    The caller holds the merchant's lock exclusively (`lock_merchant`), so the parked set is complete.
    Returns how many parked deliveries were applied."""
    parked = _parked(
        await repository.parked_waiting_for(db, [(platform_id, f"merchant:{merchant_external_id}")])
    )
    if not parked:
        return 0
    await repository.lock_keys(db, _locks_for(parked, merchants=False))
    results = await _apply(db, parked, await _read(db, parked, answers=False), now=now)
    return sum(1 for o in results.values() if o.status != "parked")


def _parked(rows: Iterable[tuple[str, str, bytes]]) -> list[Delivery]:
    parked = []
    for platform_id, webhook_id, body in rows:
        delivery = parse_delivery(platform_id, webhook_id, bytes(body))
        delivery.stored = True
        parked.append(delivery)
    return parked


async def _read(db: asyncpg.Connection, deliveries: Sequence[Delivery], *, answers: bool) -> _Facts:
    """What the batch needs to know, in one statement: earlier answers to its webhook ids (when `answers`),
    merchants and rules for its payments, the orders it names (row-locked when it may change them), existing
    refunds, and the events parked until one of its orders is paid."""
    payments = [(d, e) for d in deliveries if isinstance(e := d.event, OrderPaid)]
    reversals = [(d, e) for d in deliveries if isinstance(e := d.event, OrderRefunded | OrderCancelled)]
    paid_keys = sorted({(d.platform_id, e.data.order_id) for d, e in payments})
    facts = await repository.read_batch(
        db,
        repository.BatchLookups(
            answers_for=[(d.platform_id, d.webhook_id) for d in deliveries] if answers else [],
            merchants_for=[(d.platform_id, e.data.merchant_id, e.data.placed_at) for d, e in payments],
            orders_to_change=sorted({(d.platform_id, e.data.order_id) for d, e in reversals}),
            orders_paid=paid_keys,
            refunds=[
                (d.platform_id, e.data.order_id, e.data.refund_id)
                for d, e in reversals
                if isinstance(e, OrderRefunded)
            ],
            parked_waiting_for=[(platform_id, f"order:{order_id}") for platform_id, order_id in paid_keys],
        ),
    )
    parked: dict[tuple[str, str], list[Delivery]] = {}
    for delivery in _parked(facts.parked):
        if delivery.event is not None:
            parked.setdefault((delivery.platform_id, delivery.event.data.order_id), []).append(delivery)
    return _Facts(
        answers=facts.answers,
        merchants={
            (d.platform_id, d.webhook_id): found
            for (d, _), found in zip(payments, facts.merchants, strict=True)
        },
        orders={
            (r[1], r[2]): _OrderState(
                id=r[0],
                merchant_external_id=r[3],
                merchant_id=r[4],
                currency=r[5],
                base_amount=r[6],
                donation_amount=r[7],
                refunded_amount=r[8],
                reversed_amount=r[9],
                cancelled=r[10],
                content_hash=bytes(r[11]),
                billed=r[12],
            )
            for r in facts.orders
        },
        paid_hashes={(p, x): bytes(h) for p, x, h in facts.orders_paid},
        refund_hashes={(p, x, rf): bytes(h) for p, x, rf, h in facts.refunds},
        parked_for_order=parked,
    )


@dataclass
class _Facts:
    answers: list[tuple[str, str, str, int, str]]
    # (platform, webhook id) → merchant, rule in effect, and when no rule is: when the first one takes effect
    merchants: dict[tuple[str, str], tuple[str | None, str | None, datetime | None]]
    orders: dict[tuple[str, str], _OrderState]  # (platform, order id) → the order, row-locked
    paid_hashes: dict[tuple[str, str], bytes]  # (platform, order id) → content hash of an existing order
    refund_hashes: dict[tuple[str, str, str], bytes]  # (platform, order id, refund id) → content hash
    parked_for_order: dict[tuple[str, str], list[Delivery]]  # (platform, order id) → parked until it is paid


@dataclass
class _OrderState:
    id: str
    merchant_id: str
    merchant_external_id: str
    currency: str
    base_amount: int
    donation_amount: int
    refunded_amount: int
    reversed_amount: int
    cancelled: bool
    content_hash: bytes
    billed: bool
    touched: bool = False
    cancelled_now: bool = False
    new: repository.NewOrder | None = None  # paid in this batch: written with its final totals


@dataclass
class _Batch:
    now: datetime
    outcomes: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    writes: repository.BatchWrites = field(default_factory=repository.BatchWrites)
    events: list[EventDraft] = field(default_factory=list)

    def settle(self, d: Delivery, outcome: Outcome) -> None:
        self.outcomes[(d.platform_id, d.webhook_id)] = outcome
        if anomaly := outcome.anomaly:
            self.writes.anomalies.append(
                repository.NewAnomaly(
                    id=new_id("anm"),
                    platform_id=d.platform_id,
                    webhook_id=d.webhook_id,
                    kind=anomaly.kind,
                    natural_key=outcome.natural_key,
                    detail=anomaly.detail,
                    asked_amount=anomaly.asked,
                    applied_amount=anomaly.applied,
                    currency=anomaly.currency,
                )
            )
        if not outcome.kept:
            return
        row = repository.NewDelivery(
            platform_id=d.platform_id,
            webhook_id=d.webhook_id,
            body=d.body,
            event_type=d.event_type,
            status=outcome.status,
            response_status=outcome.http_status,
            response_body=orjson.dumps(outcome.body).decode(),
            natural_key=outcome.natural_key,
            waiting_for=outcome.waiting_for,
        )
        (self.writes.settled_deliveries if d.stored else self.writes.new_deliveries).append(row)


async def _apply(
    db: asyncpg.Connection, deliveries: Sequence[Delivery], facts: _Facts, *, now: datetime
) -> dict[tuple[str, str], Outcome]:
    """Decide the outcome of deliveries not answered before (new, or parked and now applicable) from what
    `_read` found, then write everything in one statement. Payments first, then what waited for them, then
    refunds and cancellations."""
    batch = _Batch(now=now)
    payments: list[Delivery] = []
    reversals: list[Delivery] = []
    for d in deliveries:
        if d.event is None:
            assert d.rejection is not None
            batch.settle(d, d.rejection)
        elif isinstance(d.event, OrderPaid):
            payments.append(d)
        else:
            reversals.append(d)

    unblocked = await _apply_payments(db, batch, payments, facts)
    _apply_reversals(batch, unblocked + reversals, facts)

    writes = batch.writes
    for order in facts.orders.values():
        if order.new is not None:
            new, cancelled_at = order.new, now if order.cancelled else None
            if (new.refunded_amount, new.reversed_amount, new.cancelled_at) != (
                order.refunded_amount,
                order.reversed_amount,
                cancelled_at,
            ):  # refunded or cancelled in the batch that records it (a copy costs 5 µs: only then)
                new = dataclasses.replace(
                    new,
                    refunded_amount=order.refunded_amount,
                    reversed_amount=order.reversed_amount,
                    cancelled_at=cancelled_at,
                )
            writes.orders.append(new)
        elif order.touched:
            writes.order_totals.append(
                (order.id, order.refunded_amount, order.reversed_amount, now if order.cancelled_now else None)
            )
    writes.events = drafted(batch.events)
    claimed, event_deliveries = await repository.write_batch(db, writes)
    if claimed != len(writes.new_deliveries):
        raise ClaimRace()
    await enqueue_deliveries(db, event_deliveries)
    return batch.outcomes


async def _apply_payments(
    db: asyncpg.Connection, batch: _Batch, payments: list[Delivery], facts: _Facts
) -> list[Delivery]:
    """Record paid orders with their donation; returns the parked refunds/cancellations they unblock."""
    if not payments:
        return []
    rule_terms = await RULE_TERMS.terms_for(
        {rule_id for _, rule_id, _ in facts.merchants.values() if rule_id},
        lambda ids: repository.rule_terms(db, ids),
    )
    unblocked: list[Delivery] = []
    for d in payments:
        event = _paid(d)
        data = event.data
        key = natural_key(event)
        latest = batch.now + MAX_PLACED_AHEAD
        if not d.stored and data.placed_at > latest:  # a parked payment was checked when it arrived
            batch.settle(d, outcomes.placed_in_future(key, data.placed_at.isoformat(), latest.isoformat()))
            continue
        merchant_id, rule_id, first_rule_from = facts.merchants[(d.platform_id, d.webhook_id)]
        if merchant_id is None:
            batch.settle(d, outcomes.parked(key, f"merchant:{data.merchant_id}"))
            continue
        items = [item.model_dump() for item in data.items]
        content_hash = _hash(payment_content(event, items))
        order_key = (d.platform_id, data.order_id)
        stored = facts.paid_hashes.get(order_key)
        if stored is not None:
            batch.settle(d, _same_or_conflict(key, stored, content_hash))
            continue
        lines = [Line(sku=i.sku, quantity=i.quantity, amount=i.amount) for i in data.items]
        donation = donation_for(rule_terms[rule_id] if rule_id else None, data.currency, lines)
        if donation > MAX_ORDER_MINOR_UNITS:
            batch.settle(
                d,
                outcomes.rejected(f"the donation ({donation}) exceeds {MAX_ORDER_MINOR_UNITS} minor units."),
            )
            continue
        order = repository.NewOrder(
            id=new_id("ord"),
            platform_id=d.platform_id,
            external_id=data.order_id,
            merchant_id=merchant_id,
            currency=data.currency,
            placed_at=data.placed_at,
            items_json=orjson.dumps(items).decode(),
            base_amount=base_amount(lines),
            donation_amount=donation,
            rule_id=rule_id,
            donation_reason=(
                None if rule_id else "before-first-rule" if first_rule_from else "no-rule-in-force"
            ),
            content_hash=content_hash,
            refunded_amount=0,
            reversed_amount=0,
            cancelled_at=None,
        )
        facts.paid_hashes[order_key] = content_hash  # a second payment of this order in the batch compares
        facts.orders[order_key] = _OrderState(
            id=order.id,
            merchant_id=merchant_id,
            merchant_external_id=data.merchant_id,
            currency=data.currency,
            base_amount=order.base_amount,
            donation_amount=donation,
            refunded_amount=0,
            reversed_amount=0,
            cancelled=False,
            content_hash=content_hash,
            billed=False,
            new=order,
        )
        unblocked.extend(facts.parked_for_order.get(order_key, []))
        batch.settle(d, outcomes.applied(key))
        batch.events.append(
            EventDraft(
                "donation.recorded",
                {
                    "order_id": order.external_id,
                    "platform_id": order.platform_id,
                    "merchant_id": order.merchant_id,
                    "merchant_external_id": data.merchant_id,
                    "donation": {"amount": order.donation_amount, "currency": order.currency},
                    "placed_at": order.placed_at.isoformat(),
                },
                batch.now,
                merchant_id=order.merchant_id,
                platform_id=order.platform_id,
            )
        )
        if order.donation_amount > 0:
            batch.writes.entries.append(
                transfer(
                    cause_type="order_paid",
                    cause_id=order.id,
                    order_id=order.id,
                    memo=f"pledge on order {order.external_id}",
                    debit=accounts.pledges_receivable(order.merchant_id),
                    credit=accounts.DONATIONS_PLEDGED,
                    currency=order.currency,
                    amount=order.donation_amount,
                )
            )
    return unblocked


def _same_or_conflict(key: str, stored: bytes, incoming: bytes) -> Outcome:
    if stored == incoming:
        return outcomes.duplicate(key)
    return outcomes.conflict(key, f"{key} was first received with other content; this event was not applied.")


def _apply_reversals(batch: _Batch, events: list[Delivery], facts: _Facts) -> None:
    """Refunds and cancellations, in arrival order per order; each reverses the increase of the order's
    reversed total."""
    for d in events:
        event = _reversal(d)
        key = natural_key(event)
        order = facts.orders.get((d.platform_id, event.data.order_id))
        if order is None:
            batch.settle(d, outcomes.parked(key, f"order:{event.data.order_id}"))
            continue
        problem = _mismatch(event, order)
        if problem is not None:
            batch.settle(d, problem)
            continue
        before = order.reversed_amount
        if isinstance(event, OrderRefunded):
            content_hash = _hash(refund_content(event))
            refund_key = (d.platform_id, event.data.order_id, event.data.refund_id)
            stored = facts.refund_hashes.get(refund_key)
            if stored is not None:
                batch.settle(d, _same_or_conflict(key, stored, content_hash))
                continue
            if order.refunded_amount + event.data.amount > MAX_REFUNDED:
                batch.settle(
                    d, _invalid(key, f"refunds of order {event.data.order_id} would exceed {MAX_REFUNDED}.")
                )
                continue
            facts.refund_hashes[refund_key] = content_hash
            anomaly = _over_refund(event, order)
            order.refunded_amount += event.data.amount
            cause_type, cause_id = "order_refunded", new_id("rfd")
            memo = f"refund {event.data.refund_id}"
        else:
            if order.cancelled:
                batch.settle(d, outcomes.duplicate(key))
                continue
            order.cancelled = order.cancelled_now = True
            cause_type, cause_id = "order_cancelled", order.id
            memo = "cancellation"
            anomaly = None
        order.reversed_amount = reversed_total(
            donation=order.donation_amount,
            base=order.base_amount,
            refunded=order.refunded_amount,
            cancelled=order.cancelled,
        )
        order.touched = True
        delta = order.reversed_amount - before
        if isinstance(event, OrderRefunded):
            batch.writes.refunds.append(
                repository.NewRefund(
                    id=cause_id,
                    order_id=order.id,
                    refund_id=event.data.refund_id,
                    amount=event.data.amount,
                    currency=event.data.currency,
                    reversed_amount=delta,
                    content_hash=content_hash,
                )
            )
        if delta > 0:
            batch.events.append(
                EventDraft(
                    "donation.reversed",
                    {
                        "order_id": event.data.order_id,
                        "platform_id": d.platform_id,
                        "merchant_id": order.merchant_id,
                        "merchant_external_id": order.merchant_external_id,
                        "cause": "refund" if isinstance(event, OrderRefunded) else "cancellation",
                        "refund_id": event.data.refund_id if isinstance(event, OrderRefunded) else None,
                        "reversed": {"amount": delta, "currency": order.currency},
                        "reversed_total": {"amount": order.reversed_amount, "currency": order.currency},
                        "net": {
                            "amount": order.donation_amount - order.reversed_amount,
                            "currency": order.currency,
                        },
                    },
                    batch.now,
                    merchant_id=order.merchant_id,
                    platform_id=d.platform_id,
                )
            )
            # Before billing, the pledge shrinks; after, the merchant is owed a credit on its next statement.
            owed_by = accounts.credits_due if order.billed else accounts.pledges_receivable
            batch.writes.entries.append(
                transfer(
                    cause_type=cause_type,
                    cause_id=cause_id,
                    order_id=order.id,
                    memo=f"{memo} on order {event.data.order_id}",
                    debit=accounts.DONATIONS_PLEDGED,
                    credit=owed_by(order.merchant_id),
                    currency=order.currency,
                    amount=delta,
                )
            )
        batch.settle(d, outcomes.applied(key, anomaly=anomaly))


def _over_refund(event: OrderRefunded, order: _OrderState) -> Anomaly | None:
    """A refund of more than is left of the order's amount: it still applies (the reversal stops at the whole
    donation), but the platform and the operator should see that the figures didn't add up."""
    left = max(order.base_amount - order.refunded_amount, 0)
    asked = event.data.amount
    if asked <= left:
        return None
    return Anomaly(
        "over-refund",
        f"refund {event.data.refund_id} of order {event.data.order_id} asked for {asked}, but only {left} of the "
        f"order's {order.base_amount} was left to refund: {left} was applied, reversing the rest of the "
        "donation.",
        asked=asked,
        applied=left,
        currency=order.currency,
    )


def _mismatch(event: OrderRefunded | OrderCancelled, order: _OrderState) -> Outcome | None:
    key = natural_key(event)
    if event.data.merchant_id != order.merchant_external_id:
        return _invalid(
            key,
            f"order {event.data.order_id} belongs to merchant {order.merchant_external_id}, "
            f"not {event.data.merchant_id}.",
        )
    if isinstance(event, OrderRefunded) and event.data.currency != order.currency:
        return _invalid(
            key,
            f"order {event.data.order_id} was paid in {order.currency}; "
            f"a refund in {event.data.currency} can't apply to it.",
        )
    return None


def _invalid(key: str, detail: str) -> Outcome:
    kind = "event-does-not-match-order"
    outcome = outcomes.rejected(detail, kind=kind, natural_key=key)
    return Outcome(outcome.status, outcome.http_status, outcome.body, key, anomaly=Anomaly(kind, detail))


def _paid(d: Delivery) -> OrderPaid:
    assert isinstance(d.event, OrderPaid)
    return d.event


def _reversal(d: Delivery) -> OrderRefunded | OrderCancelled:
    assert isinstance(d.event, OrderRefunded | OrderCancelled)
    return d.event
