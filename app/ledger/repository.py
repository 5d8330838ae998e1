from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from app.core.json_rows import rows_from, rows_param

if TYPE_CHECKING:
    from app.ledger.service import EntryDraft


def entries_cte(param: str) -> str:
    """Two CTEs writing entries and all their legs from the tables `entries_tables` puts in the `jsonb` parameter
    `param` (`app.core.json_rows`), for a statement that writes other things too. The balance trigger fires once,
    at the end of the statement, and sees every leg."""
    entries = rows_from(
        f"{param} -> 'ledger_entries'", "id text, cause_type text, cause_id text, order_id text, memo text"
    )
    postings = rows_from(
        f"{param} -> 'ledger_postings'", "entry_id text, account text, currency text, amount bigint"
    )
    return f"""
        ledger_entries_written AS (
            INSERT INTO ledger_entries (id, cause_type, cause_id, order_id, memo) {entries}
        ), ledger_postings_written AS (
            INSERT INTO ledger_postings (entry_id, account, currency, amount) {postings}
        )"""


def entries_tables(entries: Sequence[EntryDraft]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "ledger_entries": [(e.id, e.cause_type, e.cause_id, e.order_id, e.memo) for e in entries],
        "ledger_postings": [(e.id, p.account, p.currency, p.amount) for e in entries for p in e.postings],
    }


_INSERT_ENTRIES = f"WITH {entries_cte('$1::jsonb')} SELECT 1"


async def insert_entries(db: asyncpg.Connection, entries: list[EntryDraft]) -> None:
    """Entries and all their legs in one statement (one round trip); the balance trigger sees every leg."""
    await db.execute(_INSERT_ENTRIES, rows_param(entries_tables(entries)))
