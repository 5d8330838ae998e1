"""Every donations query. The order-event path runs set-based statements on the raw asyncpg connection (one
statement per step for a whole batch of events); reads use SQLAlchemy."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.json_rows import rows_from, rows_param
from app.events import repository as events_repository
from app.events.repository import NewEvent
from app.ledger import repository as ledger_repository
from app.ledger.service import EntryDraft
from app.models import DonationRule, Merchant, Order, Statement, WebhookAnomaly, WebhookDelivery

# ---- the order-event path (raw asyncpg, set-based) ----


# Transaction-scoped advisory locks given as (level, key, shared?). Everyone takes them level by level (merchants,
# then orders, then webhook ids) and in key order within a level, so no two transactions can deadlock on them.
_LOCKS = """
    SELECT CASE WHEN t.shared THEN pg_advisory_xact_lock_shared(t.k)::text
                ELSE pg_advisory_xact_lock(t.k)::text END
    FROM unnest({}::int[], {}::bigint[], {}::bool[]) AS t(level, k, shared) ORDER BY t.level, t.k"""


async def lock_keys(db: asyncpg.Connection, keys: Sequence[tuple[int, int, bool]]) -> None:
    """The advisory locks of `keys`, in the caller's transaction."""
    if keys:
        await db.execute(
            _LOCKS.format("$1", "$2", "$3"),
            [level for level, _, _ in keys],
            [k for _, k, _ in keys],
            [shared for _, _, shared in keys],
        )


@contextlib.asynccontextmanager
async def transaction_holding(
    db: asyncpg.Connection, keys: Sequence[tuple[int, int, bool]]
) -> AsyncIterator[None]:
    """A transaction that begins holding the advisory locks of `keys`: BEGIN and the locks in one round trip (the
    simple query protocol, which takes no parameters, so the keys are written into the text: integers and booleans
    made here, never text a caller sent). Commits at the end of the block; rolls back if it raises."""
    levels = ",".join(str(int(level)) for level, _, _ in keys)
    ks = ",".join(str(int(k)) for _, k, _ in keys)
    shared = ",".join("t" if s else "f" for _, _, s in keys)
    locks = _LOCKS.format(f"'{{{levels}}}'", f"'{{{ks}}}'", f"'{{{shared}}}'")
    try:
        await db.execute(f"BEGIN;{locks}" if keys else "BEGIN")  # a lock that can't be had leaves BEGIN open
        yield
    except Exception:
        # A connection that died with the statement can't roll back: it is closed on its way back to the pool, and
        # the first error is the one that says what happened.
        with contextlib.suppress(Exception):
            await db.execute("ROLLBACK")
        raise
    await db.execute("COMMIT")


def _rule_in_effect(placed_at: str) -> str:
    """The rule version of merchant `m` in effect at `placed_at`: one lookup for orders and quotes alike."""
    return f"""
           SELECT r.id FROM donation_rules r
           WHERE r.merchant_id = m.id AND r.effective_from <= {placed_at}
           ORDER BY r.effective_from DESC, r.created_at DESC, r.id DESC LIMIT 1"""  # noqa: S608 - a column or a parameter


# The inbox's months ahead are made empty in advance (`app/core/partitions.py`), and a probe by webhook id would
# visit each of them. A row this transaction can see was received (its inserting transaction's `now()`) before this
# statement started, by PostgreSQL's own clock; bounding `received_at` a day past that lets PostgreSQL leave out the
# months that have not begun, and the default partition, when the statement starts (whatever its plan), at no risk
# short of the server's clock jumping back a day.
def _received_by_now(alias: str) -> str:
    return f"{alias}received_at < statement_timestamp() + interval '1 day'"


# Every lookup is a LATERAL probe per wanted key, kept from being flattened into a join (LIMIT 1 on unique keys,
# OFFSET 0 otherwise), so the plan is index lookups whatever the statistics said when the statement was first
# prepared: a plan cached while a table was tiny would otherwise scan it for the life of the connection.
_READ_BATCH = f"""
    SELECT
      (SELECT array_agg(ROW(d.platform_id, d.webhook_id, d.status, d.response_status, d.response_body::text))
       FROM unnest($1::text[], $2::text[]) AS u(p, w)
       CROSS JOIN LATERAL (
           SELECT * FROM webhook_deliveries d
           WHERE d.platform_id = u.p AND d.webhook_id = u.w AND {_received_by_now("d.")} LIMIT 1
       ) d) AS answers,
      (SELECT array_agg(ROW(m.id, r.id, f.effective_from) ORDER BY e.i)
       FROM unnest($3::text[], $4::text[], $5::timestamptz[]) WITH ORDINALITY AS e(p, x, placed_at, i)
       LEFT JOIN LATERAL (
           SELECT m.id FROM merchants m WHERE m.platform_id = e.p AND m.external_id = e.x LIMIT 1
       ) m ON true
       LEFT JOIN LATERAL ({_rule_in_effect("e.placed_at")}) r ON true
       LEFT JOIN LATERAL (  -- only looked up when no rule is in effect: why the order gets nothing
           SELECT f.effective_from FROM donation_rules f
           WHERE r.id IS NULL AND f.merchant_id = m.id ORDER BY f.effective_from LIMIT 1
       ) f ON true) AS merchants,
      (SELECT array_agg(ROW(o.*)) FROM (
           SELECT o.id, o.platform_id, o.external_id, m.external_id, o.merchant_id, o.currency, o.base_amount,
                  o.donation_amount, o.refunded_amount, o.reversed_amount, o.cancelled_at IS NOT NULL,
                  o.content_hash, o.statement_id IS NOT NULL
           FROM unnest($6::text[], $7::text[]) AS u(p, x)
           CROSS JOIN LATERAL (
               SELECT * FROM orders o WHERE o.platform_id = u.p AND o.external_id = u.x LIMIT 1
           ) o
           JOIN LATERAL (SELECT m.external_id FROM merchants m WHERE m.id = o.merchant_id LIMIT 1) m ON true
           ORDER BY o.id
           FOR UPDATE OF o
       ) o) AS orders_locked,
      (SELECT array_agg(ROW(o.platform_id, o.external_id, o.content_hash))
       FROM unnest($8::text[], $9::text[]) AS u(p, x)
       CROSS JOIN LATERAL (
           SELECT * FROM orders o WHERE o.platform_id = u.p AND o.external_id = u.x LIMIT 1
       ) o) AS orders_paid,
      (SELECT array_agg(ROW(u.p, u.x, r.refund_id, r.content_hash))
       FROM unnest($10::text[], $11::text[], $12::text[]) AS u(p, x, rf)
       CROSS JOIN LATERAL (
           SELECT o.id FROM orders o WHERE o.platform_id = u.p AND o.external_id = u.x LIMIT 1
       ) o
       CROSS JOIN LATERAL (  -- a probe of its own: a join here let a generic plan walk the whole index
           SELECT r.* FROM order_refunds r WHERE r.order_id = o.id AND r.refund_id = u.rf LIMIT 1
       ) r) AS refunds,
      (SELECT array_agg(ROW(d.platform_id, d.webhook_id, d.body) ORDER BY d.received_at, d.webhook_id) FROM (
           SELECT d.platform_id, d.webhook_id, d.body, d.received_at
           FROM unnest($13::text[], $14::text[]) AS u(p, wf)
           CROSS JOIN LATERAL (
               SELECT * FROM webhook_deliveries d
               WHERE d.platform_id = u.p AND d.waiting_for = u.wf AND d.status = 'parked'
                 AND {_received_by_now("d.")} OFFSET 0
           ) d
           ORDER BY d.received_at, d.webhook_id
           FOR UPDATE OF d
       ) d) AS parked
"""  # noqa: S608 - constant text, values are parameters


@dataclass(frozen=True, slots=True)
class BatchLookups:
    """What a batch of order events needs to know before deciding anything, asked in one statement."""

    answers_for: Sequence[
        tuple[str, str]
    ] = ()  # (platform, webhook id) of deliveries that may have been seen
    merchants_for: Sequence[tuple[str, str, datetime]] = ()  # (platform, merchant external id, placed_at)
    orders_to_change: Sequence[tuple[str, str]] = ()  # (platform, order id): read and row-locked
    orders_paid: Sequence[tuple[str, str]] = ()  # (platform, order id): only their content hashes, no lock
    refunds: Sequence[tuple[str, str, str]] = ()  # (platform, order id, refund id)
    parked_waiting_for: Sequence[tuple[str, str]] = ()  # (platform, "order:<id>" or "merchant:<id>")


@dataclass(frozen=True, slots=True)
class BatchFacts:
    answers: list[tuple[str, str, str, int, str]]  # platform, webhook id, status, HTTP status, body JSON
    # (merchant id, rule id in effect, the first rule's start when none is), one per merchants_for
    merchants: list[tuple[str | None, str | None, datetime | None]]
    # id, platform, external id, merchant external id, merchant id, currency, base, donation, refunded,
    # reversed, cancelled?, content hash, billed?
    orders: list[tuple[Any, ...]]
    orders_paid: list[tuple[str, str, bytes]]  # platform, external id, content hash
    refunds: list[tuple[str, str, str, bytes]]  # platform, order id, refund id, content hash
    parked: list[tuple[str, str, bytes]]  # platform, webhook id, body; oldest first, row-locked


async def read_batch(db: asyncpg.Connection, wanted: BatchLookups) -> BatchFacts:
    """Everything a batch needs from the database, in one round trip. The caller holds the batch's natural-key
    locks already (`lock_keys`, a statement of its own: this statement's snapshot is taken after them)."""
    row = await db.fetchrow(
        _READ_BATCH,
        *_columns(wanted.answers_for, 2),
        *_columns(wanted.merchants_for, 3),
        *_columns(wanted.orders_to_change, 2),
        *_columns(wanted.orders_paid, 2),
        *_columns(wanted.refunds, 3),
        *_columns(wanted.parked_waiting_for, 2),
    )
    assert row is not None
    return BatchFacts(
        answers=row["answers"] or [],
        merchants=row["merchants"] or [],
        orders=row["orders_locked"] or [],
        orders_paid=row["orders_paid"] or [],
        refunds=row["refunds"] or [],
        parked=row["parked"] or [],
    )


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


async def parked_waiting_for(
    db: asyncpg.Connection, waits: Sequence[tuple[str, str]]
) -> list[tuple[str, str, bytes]]:
    """Parked deliveries waiting for any of (platform, what): (platform, webhook id, body), oldest first,
    row-locked for this transaction."""
    facts = await read_batch(db, BatchLookups(parked_waiting_for=waits))
    return facts.parked


async def merchant_and_rule(
    db: asyncpg.Connection, platform_id: str, merchant_external_id: str, at: datetime
) -> tuple[str | None, str | None]:
    """The merchant (or None) and the rule version in effect at `at` (or None), found as the order webhook finds
    them, so a quote and the recorded donation are computed from the same rule. A statement of its own, small and
    cheap to run on the read pool, which keeps one generic plan for it."""
    row = await db.fetchrow(_MERCHANT_AND_RULE, platform_id, merchant_external_id, at)
    return (None, None) if row is None else (row[0], row[1])


_MERCHANT_AND_RULE = f"""
    SELECT m.id, r.id FROM merchants m
    LEFT JOIN LATERAL ({_rule_in_effect("$3")}) r ON true
    WHERE m.platform_id = $1 AND m.external_id = $2
"""  # noqa: S608 - constant text, values are parameters


async def rule_terms(db: asyncpg.Connection, rule_ids: Sequence[str]) -> list[tuple[str, int, Any, Any]]:
    """(id, rate_bps, fixed_per_unit JSON, sku_overrides JSON) of rule versions."""
    records = await db.fetch(
        """SELECT id, rate_bps, fixed_per_unit::text AS f, sku_overrides::text AS o FROM donation_rules
           WHERE id = ANY($1::text[])""",
        list(rule_ids),
    )
    return [(r["id"], r["rate_bps"], r["f"], r["o"]) for r in records]


async def rule_id_in_effect(session: AsyncSession, merchant_id: str, at: datetime) -> str | None:
    return await session.scalar(
        select(DonationRule.id)
        .where(DonationRule.merchant_id == merchant_id, DonationRule.effective_from <= at)
        .order_by(DonationRule.effective_from.desc(), DonationRule.created_at.desc(), DonationRule.id.desc())
        .limit(1)
    )


@dataclass(frozen=True, slots=True)
class NewDelivery:
    platform_id: str
    webhook_id: str
    body: bytes
    event_type: str | None
    status: str
    response_status: int
    response_body: str  # JSON
    natural_key: str | None
    waiting_for: str | None


@dataclass(frozen=True, slots=True)
class NewOrder:
    id: str
    platform_id: str
    external_id: str
    merchant_id: str
    currency: str
    placed_at: datetime
    items_json: str
    base_amount: int
    donation_amount: int
    rule_id: str | None
    donation_reason: str | None  # why no rule applied (`before-first-rule`, `no-rule-in-force`)
    content_hash: bytes
    refunded_amount: int
    reversed_amount: int
    cancelled_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewRefund:
    id: str
    order_id: str
    refund_id: str
    amount: int
    currency: str
    reversed_amount: int
    content_hash: bytes


@dataclass(frozen=True, slots=True)
class NewAnomaly:
    id: str
    platform_id: str
    webhook_id: str
    kind: str
    natural_key: str | None
    detail: str
    asked_amount: int | None
    applied_amount: int | None
    currency: str | None


@dataclass
class BatchWrites:
    """Everything a batch of order events writes; empty lists write nothing."""

    new_deliveries: list[NewDelivery] = field(default_factory=list)
    settled_deliveries: list[NewDelivery] = field(default_factory=list)  # parked before, settled now
    orders: list[NewOrder] = field(default_factory=list)
    refunds: list[NewRefund] = field(default_factory=list)
    order_totals: list[tuple[str, int, int, datetime | None]] = field(default_factory=list)
    entries: list[EntryDraft] = field(default_factory=list)
    anomalies: list[NewAnomaly] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)


# The rows it updates are found as the read statement finds rows, by a LATERAL probe per key, and then updated
# by their ctid, so the plan is index probes whatever the statistics said when it was prepared (a plan made on
# nearly empty tables would otherwise hash-join a whole-table scan). The rows were row-locked by the batch's
# read, so no concurrent update can move them between the probe and the update.
def _deliveries_claimed(param: str) -> str:
    claimed = rows_from(
        f"{param} -> 'deliveries_claimed'",
        "p text, w text, b bytea, t text, s text, rs int, rb jsonb, nk text, wf text",
    )
    return f"""
        deliveries_claimed AS (
            INSERT INTO webhook_deliveries (platform_id, webhook_id, body, event_type, status, response_status,
                                            response_body, natural_key, waiting_for, settled_at)
            SELECT p, w, b, t, s, rs, rb, nk, wf, now() FROM ({claimed}) u
            ORDER BY p, w
            ON CONFLICT DO NOTHING
            RETURNING 1
        )"""  # noqa: S608 - only our own SQL is formatted in


def _deliveries_settled(param: str) -> str:
    settled = rows_from(
        f"{param} -> 'deliveries_settled'", "p text, w text, s text, rs int, rb jsonb, nk text, wf text"
    )
    return f"""
        deliveries_settled AS (
            UPDATE webhook_deliveries d
            SET status = u.s, response_status = u.rs, response_body = u.rb, natural_key = u.nk,
                waiting_for = u.wf, settled_at = now()
            FROM ({settled}) u
            CROSS JOIN LATERAL (
                SELECT tableoid, ctid FROM webhook_deliveries
                WHERE platform_id = u.p AND webhook_id = u.w AND {_received_by_now("")} LIMIT 1
            ) found
            WHERE d.tableoid = found.tableoid AND d.ctid = found.ctid  -- a ctid is a row's only within its month
              AND {_received_by_now("d.")}
        )"""  # noqa: S608 - only our own SQL is formatted in


def _orders_written(param: str) -> str:
    orders = rows_from(
        f"{param} -> 'orders'",
        "id text, p text, x text, m text, c text, pa timestamptz, it jsonb, b bigint, d bigint, r text, dr text,"
        " h bytea, rf bigint, rv bigint, ca timestamptz",
    )
    return f"""
        orders_written AS (
            INSERT INTO orders (id, platform_id, external_id, merchant_id, currency, placed_at, items, base_amount,
                                donation_amount, rule_id, donation_reason, content_hash, refunded_amount,
                                reversed_amount, cancelled_at)
            SELECT * FROM ({orders}) u ORDER BY p, x
        )"""  # noqa: S608 - only our own SQL is formatted in


def _refunds_written(param: str) -> str:
    refunds = rows_from(
        f"{param} -> 'refunds'",
        "id text, order_id text, refund_id text, amount bigint, currency text, reversed_amount bigint,"
        " content_hash bytea",
    )
    return f"""
        refunds_written AS (
            INSERT INTO order_refunds (id, order_id, refund_id, amount, currency, reversed_amount, content_hash)
            {refunds}
        )"""


def _totals_written(param: str) -> str:
    totals = rows_from(f"{param} -> 'order_totals'", "id text, r bigint, v bigint, c timestamptz")
    return f"""
        totals_written AS (
            UPDATE orders o SET refunded_amount = u.r, reversed_amount = u.v,
                                cancelled_at = COALESCE(o.cancelled_at, u.c)
            FROM ({totals}) u
            CROSS JOIN LATERAL (SELECT ctid FROM orders WHERE id = u.id LIMIT 1) found
            WHERE o.ctid = found.ctid
        )"""  # noqa: S608 - only our own SQL is formatted in


def _anomalies_written(param: str) -> str:
    anomalies = rows_from(
        f"{param} -> 'anomalies'",
        "id text, platform_id text, webhook_id text, kind text, natural_key text, detail text,"
        " asked_amount bigint, applied_amount bigint, currency text",
    )
    return f"""
        anomalies_written AS (
            -- Once per (platform, webhook id, kind): an event refused without being kept may be sent again.
            INSERT INTO webhook_anomalies (id, platform_id, webhook_id, kind, natural_key, detail, asked_amount,
                                           applied_amount, currency)
            {anomalies}
            ON CONFLICT (platform_id, webhook_id, kind) DO NOTHING
        )"""


class _WritePart(NamedTuple):
    ctes: Callable[[str], str]  # the part's CTEs, reading their rows from the statement's `jsonb` parameter
    tables: Callable[[BatchWrites], dict[str, list[tuple[Any, ...]]]]  # those rows, by table, from the writes


# What a batch writes, part by part, in the statement's order, all its rows in one `jsonb` parameter
# (`app.core.json_rows`). A batch's statement holds only the parts it has rows for: each part costs PostgreSQL its
# executor set-up (opening the tables, their partitions and indexes) even when it has nothing to write, ~0.4 ms a
# batch for all of them.
_WRITE_PARTS = (
    _WritePart(
        _deliveries_claimed,
        lambda w: {
            "deliveries_claimed": [
                (d.platform_id, d.webhook_id, d.body, d.event_type, d.status, d.response_status,
                 d.response_body, d.natural_key, d.waiting_for)
                for d in w.new_deliveries
            ]
        },
    ),
    _WritePart(
        _deliveries_settled,
        lambda w: {
            "deliveries_settled": [
                (d.platform_id, d.webhook_id, d.status, d.response_status, d.response_body, d.natural_key,
                 d.waiting_for)
                for d in w.settled_deliveries
            ]
        },
    ),
    _WritePart(
        _orders_written,
        lambda w: {
            "orders": [
                (o.id, o.platform_id, o.external_id, o.merchant_id, o.currency, o.placed_at, o.items_json,
                 o.base_amount, o.donation_amount, o.rule_id, o.donation_reason, o.content_hash,
                 o.refunded_amount, o.reversed_amount, o.cancelled_at)
                for o in w.orders
            ]
        },
    ),
    _WritePart(
        _refunds_written,
        lambda w: {
            "refunds": [
                (r.id, r.order_id, r.refund_id, r.amount, r.currency, r.reversed_amount, r.content_hash)
                for r in w.refunds
            ]
        },
    ),
    _WritePart(_totals_written, lambda w: {"order_totals": w.order_totals}),
    _WritePart(
        _anomalies_written,
        lambda w: {
            "anomalies": [
                (a.id, a.platform_id, a.webhook_id, a.kind, a.natural_key, a.detail, a.asked_amount,
                 a.applied_amount, a.currency)
                for a in w.anomalies
            ]
        },
    ),
    _WritePart(ledger_repository.entries_cte, lambda w: ledger_repository.entries_tables(w.entries)),
    _WritePart(events_repository.events_for_subscribers_cte, lambda w: events_repository.events_table(w.events)),
)  # fmt: skip


# One statement text per shape, so asyncpg keeps one prepared statement (and PostgreSQL one plan) for each.
@functools.lru_cache(maxsize=256)
def _write_statement(shape: tuple[bool, ...]) -> str:
    ctes = [part.ctes("$1::jsonb") for present, part in zip(shape, _WRITE_PARTS, strict=True) if present]
    claimed = "(SELECT count(*) FROM deliveries_claimed)" if shape[0] else "0"
    delivered = "(SELECT array_agg(id ORDER BY id) FROM event_deliveries_written)" if shape[-1] else "NULL"
    return f"WITH {','.join(ctes)}\nSELECT {claimed} AS claimed, {delivered}::text[] AS event_deliveries"


_WRITE_BATCH = _write_statement((True,) * len(_WRITE_PARTS))  # every part: what the plans test checks


async def write_batch(db: asyncpg.Connection, writes: BatchWrites) -> tuple[int, list[str]]:
    """Write a batch's deliveries (new ones claimed in the inbox, parked ones settled), orders, refunds,
    running totals, ledger entries, anomalies and events out, in one statement holding only the parts the batch
    has rows for (nothing at all: no statement). Returns how many new deliveries were claimed (fewer than given:
    a concurrent transaction claimed one of the webhook ids first) and the ids of the event deliveries written."""
    parts = [part.tables(writes) for part in _WRITE_PARTS]
    shape = tuple(any(part.values()) for part in parts)  # which parts have rows
    if not any(shape):
        return 0, []
    tables = {name: rows for part in parts for name, rows in part.items() if rows}
    row = await db.fetchrow(_write_statement(shape), rows_param(tables))
    assert row is not None
    return row["claimed"], row["event_deliveries"] or []


# ---- reads (SQLAlchemy) ----


async def merchant_by_external_id(
    session: AsyncSession, platform_id: str, external_id: str
) -> Merchant | None:
    return await session.scalar(
        select(Merchant).where(Merchant.platform_id == platform_id, Merchant.external_id == external_id)
    )


async def rules_newest_first(
    session: AsyncSession, merchant_id: str, *, before: str | None, limit: int
) -> list[DonationRule]:
    query = (
        select(DonationRule).where(DonationRule.merchant_id == merchant_id).order_by(DonationRule.id.desc())
    )
    if before is not None:
        query = query.where(DonationRule.id < before)
    return list(await session.scalars(query.limit(limit)))


async def order_with_merchant(
    session: AsyncSession, platform_id: str, external_id: str
) -> tuple[Order, Merchant, str | None] | None:
    """The order, its merchant, and the status of the statement that billed it (if any)."""
    return await order_row(session, Order.platform_id == platform_id, Order.external_id == external_id)


async def order_row(session: AsyncSession, *where: Any) -> tuple[Order, Merchant, str | None] | None:
    """The one order matching `where`, its merchant, and the status of the statement that billed it (if any)."""
    row = (
        await session.execute(
            select(Order, Merchant, Statement.status)
            .join(Merchant, Merchant.id == Order.merchant_id)
            .outerjoin(Statement, Statement.id == Order.statement_id)
            .where(*where)
        )
    ).first()
    return (row[0], row[1], row[2]) if row else None


async def merchant_orders(
    session: AsyncSession, merchant_id: str, *, after: str | None, limit: int
) -> list[tuple[Order, str | None]]:
    """A merchant's orders with the status of the statement that billed each (if any)."""
    query = (
        select(Order, Statement.status)
        .outerjoin(Statement, Statement.id == Order.statement_id)
        .where(Order.merchant_id == merchant_id)
        .order_by(Order.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Order.id > after)
    return [(row[0], row[1]) for row in await session.execute(query)]


async def parked_deliveries(
    session: AsyncSession, *, platform_id: str | None, after: tuple[str, str] | None, limit: int
) -> list[WebhookDelivery]:
    query = select(WebhookDelivery).where(WebhookDelivery.status == "parked")
    if platform_id is not None:
        query = query.where(WebhookDelivery.platform_id == platform_id)
    if after is not None:
        query = query.where(tuple_(WebhookDelivery.platform_id, WebhookDelivery.webhook_id) > tuple_(*after))
    query = query.order_by(WebhookDelivery.platform_id, WebhookDelivery.webhook_id).limit(limit)
    return list(await session.scalars(query))


async def anomalies(
    session: AsyncSession, *, platform_id: str | None, after: str | None, limit: int
) -> list[WebhookAnomaly]:
    query = select(WebhookAnomaly).order_by(WebhookAnomaly.id).limit(limit)
    if platform_id is not None:
        query = query.where(WebhookAnomaly.platform_id == platform_id)
    if after is not None:
        query = query.where(WebhookAnomaly.id > after)
    return list(await session.scalars(query))


async def any_waiting(session: AsyncSession, partition: str) -> bool:
    """Whether a month of the inbox (a partition, named by `app/core/partitions.py`) holds a delivery that is
    parked or being processed."""
    query = f"SELECT EXISTS (SELECT 1 FROM {partition} WHERE status IN ('parked', 'processing'))"  # noqa: S608
    return bool((await session.execute(text(query))).scalar_one())


async def drop_month(session: AsyncSession, partition: str) -> None:
    """Drop a detached month of the inbox (a name from `app/core/partitions.py`)."""
    await session.execute(text(f"DROP TABLE {partition}"))


async def delete_settled_deliveries(db: asyncpg.Connection, *, received_before: datetime, limit: int) -> int:
    """Forget up to `limit` inbox rows received before the cutoff and settled (parked ones wait on, whatever
    their age); returns how many."""
    deleted = await db.fetchval(
        """WITH gone AS (
               DELETE FROM webhook_deliveries WHERE (platform_id, webhook_id) IN (
                   SELECT platform_id, webhook_id FROM webhook_deliveries
                   WHERE received_at < $1 AND status NOT IN ('parked', 'processing')
                   ORDER BY received_at LIMIT $2)
               RETURNING 1)
           SELECT count(*) FROM gone""",
        received_before,
        limit,
    )
    return int(deleted or 0)
