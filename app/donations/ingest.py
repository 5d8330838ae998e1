"""Applying order events: exactly one business effect per natural key, whatever webhook carries it.

Works on batches: every step is one set-based statement for the whole batch, inside the caller's transaction
(the inbox pipeline commits; this module never does). The rules, in order:

1. Natural keys are locked first (advisory, transaction-scoped, in key order): the payment and the refunds of
   one order are applied one transaction at a time, and an event for a merchant being registered either sees
   the merchant or is parked before the registration looks for parked events.
2. Then (same statement) the delivery is claimed in the inbox (unique on platform + webhook id); a redelivery
   gets the stored answer and changes nothing.
3. Payments, then refunds, then cancellations are applied. Within a batch that order is safe: an order's
   reversed total depends only on the set of its refunds and whether it was cancelled, not on their order.
4. Events that can't apply yet are parked: a payment until its merchant is registered, a refund or
   cancellation until its payment arrives. When that arrives (in this module, same transaction), they apply.
5. The same natural key with other content is a 409 and an anomaly for the operator.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import TypeAdapter, ValidationError

from app.core.ids import new_id
from app.core.json_body import parse_json
from app.core.money import MAX_ORDER_MINOR_UNITS
from app.donations import outcomes, repository
from app.donations.calculation import Line, base_amount, donation_for, reversed_total
from app.donations.outcomes import Outcome
from app.donations.rules import RULE_TERMS
from app.donations.schemas import OrderCancelled, OrderEvent, OrderPaid, OrderRefunded
from app.events.outbox import EventDraft, emit_many
from app.ledger import accounts
from app.ledger.service import EntryDraft, post, transfer

# Running refund totals stay far inside bigint whatever a platform sends.
MAX_REFUNDED = 1000 * MAX_ORDER_MINOR_UNITS

EVENT_ADAPTER: TypeAdapter[OrderPaid | OrderRefunded | OrderCancelled] = TypeAdapter(OrderEvent)


@dataclass(slots=True)
class Delivery:
    """One authentic webhook delivery: the parsed event, or the answer that rejects its body."""

    platform_id: str
    webhook_id: str
    body: bytes
    event: OrderPaid | OrderRefunded | OrderCancelled | None = None
    rejection: Outcome | None = None

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


MERCHANT_LEVEL, ORDER_LEVEL = 0, 1


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


def payment_content(event: OrderPaid) -> dict[str, Any]:
    d = event.data
    return {
        "order_id": d.order_id,
        "merchant_id": d.merchant_id,
        "currency": d.currency,
        "placed_at": d.placed_at.timestamp(),  # the instant, whatever offset it was written with
        "items": [item.model_dump() for item in d.items],
    }


def refund_content(event: OrderRefunded) -> dict[str, Any]:
    return event.data.model_dump()


# ---- the batch ----


async def receive(db: asyncpg.Connection, deliveries: Sequence[Delivery], *, now: datetime) -> list[Outcome]:
    """Record and apply a batch of deliveries; one outcome per delivery, in order."""
    first_of: dict[tuple[str, str], int] = {}
    for i, d in enumerate(deliveries):
        first_of.setdefault((d.platform_id, d.webhook_id), i)
    primaries = [deliveries[i] for i in sorted(set(first_of.values()))]

    claimed = await repository.lock_and_claim(
        db, _locks_for(primaries), [(d.platform_id, d.webhook_id, d.body, d.event_type) for d in primaries]
    )
    new = [d for d in primaries if (d.platform_id, d.webhook_id) in claimed]
    results: dict[tuple[str, str], Outcome] = {}
    redelivered = [
        (d.platform_id, d.webhook_id) for d in primaries if (d.platform_id, d.webhook_id) not in claimed
    ]
    if redelivered:
        for key, (status, http_status, body) in (await repository.stored_answers(db, redelivered)).items():
            results[key] = Outcome(status, http_status, body, redelivered=True)
    results.update(await apply(db, new, now=now))
    return [results[(d.platform_id, d.webhook_id)] for d in deliveries]


async def apply_parked_for_merchant(
    db: asyncpg.Connection, platform_id: str, merchant_external_id: str, *, now: datetime
) -> int:
    """Apply the payments parked until this merchant was registered (and what waited for them).
    The caller holds the merchant's lock exclusively (`lock_merchant`), so the parked set is complete.
    Returns how many parked deliveries were applied."""
    parked = await _load_parked(db, [(platform_id, f"merchant:{merchant_external_id}")])
    if not parked:
        return 0
    await repository.lock_keys(db, _locks_for(parked, merchants=False))
    results = await apply(db, parked, now=now)
    return sum(1 for o in results.values() if o.status != "parked")


async def _load_parked(db: asyncpg.Connection, waits: Sequence[tuple[str, str]]) -> list[Delivery]:
    return [
        parse_delivery(r["platform_id"], r["webhook_id"], bytes(r["body"]))
        for r in await repository.parked_waiting_for(db, waits)
    ]


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


@dataclass
class _Batch:
    now: datetime
    outcomes: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    entries: list[EntryDraft] = field(default_factory=list)
    anomalies: list[tuple[str, str, str, str, str | None, str]] = field(default_factory=list)
    events: list[EventDraft] = field(default_factory=list)

    def settle(self, d: Delivery, outcome: Outcome) -> None:
        self.outcomes[(d.platform_id, d.webhook_id)] = outcome
        if outcome.anomaly:
            kind = str(outcome.body["type"]).rsplit("/", 1)[-1]
            self.anomalies.append(
                (new_id("anm"), d.platform_id, d.webhook_id, kind, outcome.natural_key, outcome.anomaly)
            )


async def apply(
    db: asyncpg.Connection, deliveries: Sequence[Delivery], *, now: datetime
) -> dict[tuple[str, str], Outcome]:
    """Apply deliveries already claimed in the inbox (new, or parked and now applicable), and settle their
    inbox rows. Payments first, then what waited for them, then refunds and cancellations."""
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

    unblocked = await _apply_payments(db, batch, payments)
    await _apply_reversals(db, batch, unblocked + reversals)

    await post(db, batch.entries)
    await repository.insert_anomalies(db, batch.anomalies)
    await emit_many(db, batch.events)
    await repository.settle_deliveries(
        db,
        [
            repository.SettledDelivery(
                platform_id=key[0],
                webhook_id=key[1],
                status=o.status,
                response_status=o.http_status,
                response_body=o.body,
                natural_key=o.natural_key,
                waiting_for=o.waiting_for,
            )
            for key, o in batch.outcomes.items()
        ],
    )
    return batch.outcomes


async def _apply_payments(db: asyncpg.Connection, batch: _Batch, payments: list[Delivery]) -> list[Delivery]:
    """Record paid orders with their donation; returns the parked refunds/cancellations they unblock."""
    if not payments:
        return []
    resolved = await repository.merchants_and_rules(
        db, [(d.platform_id, _paid(d).data.merchant_id, _paid(d).data.placed_at) for d in payments]
    )
    rule_terms = await RULE_TERMS.terms_for(
        {row["rule_id"] for row in resolved if row["rule_id"]}, lambda ids: repository.rule_terms(db, ids)
    )
    candidates: dict[tuple[str, str], tuple[Delivery, repository.NewOrder]] = {}
    followers: list[tuple[Delivery, bytes]] = []
    for d, row in zip(payments, resolved, strict=True):
        event = _paid(d)
        data = event.data
        key = natural_key(event)
        if row["merchant_id"] is None:
            batch.settle(d, outcomes.parked(key, f"merchant:{data.merchant_id}"))
            continue
        content_hash = _hash(payment_content(event))
        order_key = (d.platform_id, data.order_id)
        if order_key in candidates:
            followers.append((d, content_hash))
            continue
        terms = rule_terms[row["rule_id"]] if row["rule_id"] else None
        lines = [Line(sku=i.sku, quantity=i.quantity, amount=i.amount) for i in data.items]
        donation = donation_for(terms, data.currency, lines)
        if (
            donation > MAX_ORDER_MINOR_UNITS
        ):  # e.g. a big fixed amount × quantity: kept, answered, never a 500
            batch.settle(
                d,
                outcomes.rejected(f"the donation ({donation}) exceeds {MAX_ORDER_MINOR_UNITS} minor units."),
            )
            continue
        candidates[order_key] = (
            d,
            repository.NewOrder(
                id=new_id("ord"),
                platform_id=d.platform_id,
                external_id=data.order_id,
                merchant_id=row["merchant_id"],
                currency=data.currency,
                placed_at=data.placed_at,
                items_json=json.dumps([i.model_dump() for i in data.items]),
                base_amount=base_amount(lines),
                donation_amount=donation,
                rule_id=row["rule_id"],
                content_hash=content_hash,
            ),
        )

    inserted = await repository.insert_orders(db, [order for _, order in candidates.values()])
    existing = {
        (r["platform_id"], r["external_id"]): bytes(r["content_hash"])
        # Only their content hashes are read: no row lock, so this can't interleave badly with settlement's.
        for r in await repository.orders_by_key(db, [k for k in candidates if k not in inserted], lock=False)
    }
    for order_key, (d, order) in candidates.items():
        key = natural_key(_paid(d))
        if order_key in inserted:
            batch.settle(d, outcomes.applied(key))
            batch.events.append(
                EventDraft(
                    "donation.recorded",
                    {
                        "order_id": order.external_id,
                        "platform_id": order.platform_id,
                        "merchant_id": order.merchant_id,
                        "merchant_external_id": _paid(d).data.merchant_id,
                        "donation": {"amount": order.donation_amount, "currency": order.currency},
                        "placed_at": order.placed_at.isoformat(),
                    },
                    batch.now,
                    merchant_id=order.merchant_id,
                    platform_id=order.platform_id,
                )
            )
            if order.donation_amount > 0:
                batch.entries.append(
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
        else:
            batch.settle(d, _same_or_conflict(key, existing[order_key], order.content_hash))
    for d, content_hash in followers:
        event = _paid(d)
        _, first = candidates[(d.platform_id, event.data.order_id)]
        stored = existing.get((d.platform_id, event.data.order_id), first.content_hash)
        batch.settle(d, _same_or_conflict(natural_key(event), stored, content_hash))

    return await _load_parked(db, [(p, f"order:{x}") for p, x in inserted])


def _same_or_conflict(key: str, stored: bytes, incoming: bytes) -> Outcome:
    if stored == incoming:
        return outcomes.duplicate(key)
    return outcomes.conflict(key, f"{key} was first received with other content; this event was not applied.")


async def _apply_reversals(db: asyncpg.Connection, batch: _Batch, events: list[Delivery]) -> None:
    """Refunds and cancellations, in arrival order per order; each reverses the increase of the order's
    reversed total."""
    if not events:
        return
    keys = {(d.platform_id, _reversal(d).data.order_id) for d in events}
    orders = {
        (r["platform_id"], r["external_id"]): _OrderState(
            id=r["id"],
            merchant_id=r["merchant_id"],
            merchant_external_id=r["merchant_external_id"],
            currency=r["currency"],
            base_amount=r["base_amount"],
            donation_amount=r["donation_amount"],
            refunded_amount=r["refunded_amount"],
            reversed_amount=r["reversed_amount"],
            cancelled=r["cancelled"],
            content_hash=bytes(r["content_hash"]),
            billed=r["billed"],
        )
        for r in await repository.orders_by_key(db, sorted(keys))
    }
    refund_keys = [
        (orders[(d.platform_id, e.data.order_id)].id, e.data.refund_id)
        for d in events
        if isinstance(e := d.event, OrderRefunded) and (d.platform_id, e.data.order_id) in orders
    ]
    refund_hashes = await repository.refund_hashes(db, refund_keys)
    new_refunds: list[repository.NewRefund] = []

    for d in events:
        event = _reversal(d)
        key = natural_key(event)
        order = orders.get((d.platform_id, event.data.order_id))
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
            stored = refund_hashes.get((order.id, event.data.refund_id))
            if stored is not None:
                batch.settle(d, _same_or_conflict(key, stored, content_hash))
                continue
            if order.refunded_amount + event.data.amount > MAX_REFUNDED:
                batch.settle(
                    d, _invalid(key, f"refunds of order {event.data.order_id} would exceed {MAX_REFUNDED}.")
                )
                continue
            refund_hashes[(order.id, event.data.refund_id)] = content_hash
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
        order.reversed_amount = reversed_total(
            donation=order.donation_amount,
            base=order.base_amount,
            refunded=order.refunded_amount,
            cancelled=order.cancelled,
        )
        order.touched = True
        delta = order.reversed_amount - before
        if isinstance(event, OrderRefunded):
            new_refunds.append(
                repository.NewRefund(
                    id=cause_id,
                    order_id=order.id,
                    refund_id=event.data.refund_id,
                    amount=event.data.amount,
                    currency=event.data.currency,
                    reversed_amount=delta,
                    content_hash=refund_hashes[(order.id, event.data.refund_id)],
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
            batch.entries.append(
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
        batch.settle(d, outcomes.applied(key))

    await repository.insert_refunds(db, new_refunds)
    await repository.update_order_totals(
        db,
        [
            (o.id, o.refunded_amount, o.reversed_amount, batch.now if o.cancelled_now else None)
            for o in orders.values()
            if o.touched
        ],
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
    outcome = outcomes.rejected(detail, kind="event-does-not-match-order", natural_key=key)
    return Outcome(outcome.status, outcome.http_status, outcome.body, key, anomaly=detail)


def _paid(d: Delivery) -> OrderPaid:
    assert isinstance(d.event, OrderPaid)
    return d.event


def _reversal(d: Delivery) -> OrderRefunded | OrderCancelled:
    assert isinstance(d.event, OrderRefunded | OrderCancelled)
    return d.event
