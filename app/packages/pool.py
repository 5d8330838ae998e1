"""The pool as a queue of order-attributed money (`funding_sources`), spent oldest first.

Money enters when a statement's collected money is converted into the base currency: the base amount is split
over the statement's positive lines (each an order's donation, or a remainder carried in from an earlier
statement for an order) in proportion to their amounts, exactly (largest remainder), one source per order.
Money a cancelled shipment gives back enters again, as the same orders' money. Each source takes the next
stretch `[start, end)` of the queue; packages are funded from the front (`allocation.py`), so what has been spent
is always the stretch `[0, Σ package funding)`, and a unit of money is spent at most once.

Appending and spending take turns (`lock_pool`): offsets are handed out in one order, and a run sees the whole
queue as it stands."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from app.core.money import split
from app.packages import allocation_repository as repository
from app.receipts import events as receipts

POOL_LOCK = 0x6734_706F_6F6C_7175  # one writer of the pool queue at a time, across every process


async def lock_pool(db: asyncpg.Connection) -> None:
    await db.execute("SELECT pg_advisory_xact_lock($1)", POOL_LOCK)


async def fund_from_statement(
    db: asyncpg.Connection, statement_id: str, base_amount: int, currency: str
) -> None:
    """The base-currency money a paid statement brought into the pool, attributed to its orders."""
    if base_amount <= 0:
        return
    lines = await repository.positive_statement_lines(db, statement_id)
    if not lines:
        return
    parts = split(base_amount, [line.amount for line in lines])
    await lock_pool(db)
    await repository.append_funding_sources(
        db,
        [
            repository.NewSource("collected", statement_id, line.order_id, line.merchant_id, part, None)
            for line, part in zip(lines, parts, strict=True)
            if part > 0
        ],
        currency=currency,
    )
    await receipts.announce(db, now=None, order_ids=[line.order_id for line in lines])


async def release(db: asyncpg.Connection, package_ids: Sequence[str], currency: str) -> int:
    """Give packages' money back to the pool (their shipment was cancelled before it left): each funding row
    comes back as a new source of the same order, at the end of the queue. The caller holds the pool lock.
    Returns the amount released."""
    rows = await repository.funding_of_packages(db, package_ids)
    await repository.append_funding_sources(
        db,
        [
            repository.NewSource(
                "released", r["statement_id"], r["order_id"], r["merchant_id"], r["amount"], r["package_id"]
            )
            for r in rows
        ],
        currency=currency,
    )
    return sum(int(r["amount"]) for r in rows)
