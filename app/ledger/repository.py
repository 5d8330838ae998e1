from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from app.ledger.service import EntryDraft


async def insert_entries(db: asyncpg.Connection, entries: list[EntryDraft]) -> None:
    await db.execute(
        """
        INSERT INTO ledger_entries (id, cause_type, cause_id, order_id, memo)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
        """,
        [e.id for e in entries],
        [e.cause_type for e in entries],
        [e.cause_id for e in entries],
        [e.order_id for e in entries],
        [e.memo for e in entries],
    )
    legs = [(e.id, p) for e in entries for p in e.postings]
    await db.execute(
        """
        INSERT INTO ledger_postings (entry_id, account, currency, amount)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
        """,
        [entry_id for entry_id, _ in legs],
        [p.account for _, p in legs],
        [p.currency for _, p in legs],
        [p.amount for _, p in legs],
    )
