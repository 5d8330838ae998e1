from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from app.ledger.service import EntryDraft


def entries_cte(first: int) -> str:
    """Two CTEs writing entries and all their legs from parameters `$first`… (`entries_params`), for a
    statement that writes other things too. The balance trigger fires once, at the end of the statement, and
    sees every leg."""
    p = [f"${first + i}" for i in range(9)]
    return f"""
        ledger_entries_written AS (
            INSERT INTO ledger_entries (id, cause_type, cause_id, order_id, memo)
            SELECT * FROM unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::text[], {p[3]}::text[], {p[4]}::text[])
        ), ledger_postings_written AS (
            INSERT INTO ledger_postings (entry_id, account, currency, amount)
            SELECT * FROM unnest({p[5]}::text[], {p[6]}::text[], {p[7]}::text[], {p[8]}::bigint[])
        )"""  # noqa: S608 - only parameter numbers are formatted in


def entries_params(entries: Sequence[EntryDraft]) -> list[list[Any]]:
    legs = [(e.id, p) for e in entries for p in e.postings]
    return [
        [e.id for e in entries],
        [e.cause_type for e in entries],
        [e.cause_id for e in entries],
        [e.order_id for e in entries],
        [e.memo for e in entries],
        [entry_id for entry_id, _ in legs],
        [p.account for _, p in legs],
        [p.currency for _, p in legs],
        [p.amount for _, p in legs],
    ]


_INSERT_ENTRIES = f"WITH {entries_cte(1)} SELECT 1"


async def insert_entries(db: asyncpg.Connection, entries: list[EntryDraft]) -> None:
    """Entries and all their legs in one statement (one round trip); the balance trigger sees every leg."""
    await db.execute(_INSERT_ENTRIES, *entries_params(entries))
