from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from app.ledger.service import EntryDraft


async def insert_entries(db: asyncpg.Connection, entries: list[EntryDraft]) -> None:
    """Entries and all their legs in one statement (one round trip); the balance trigger sees every leg."""
    legs = [(e.id, p) for e in entries for p in e.postings]
    await db.execute(
        """
        WITH entries AS (
            INSERT INTO ledger_entries (id, cause_type, cause_id, order_id, memo)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
            RETURNING id
        )
        INSERT INTO ledger_postings (entry_id, account, currency, amount)
        SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::bigint[])
        WHERE (SELECT count(*) FROM entries) > 0
        """,
        [e.id for e in entries],
        [e.cause_type for e in entries],
        [e.cause_id for e in entries],
        [e.order_id for e in entries],
        [e.memo for e in entries],
        [entry_id for entry_id, _ in legs],
        [p.account for _, p in legs],
        [p.currency for _, p in legs],
        [p.amount for _, p in legs],
    )
