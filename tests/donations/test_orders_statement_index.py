"""The orders' statement index holds billed orders only, converted on a populated table, and still serves a lookup by
statement."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command

from app.core.migrations import alembic_config

BEFORE = "f3c9a1b5d7e2"  # the revision before the index became partial
ORDERS = 20_000
BILLED = ORDERS // 4


async def _index(db: asyncpg.Connection) -> tuple[bool, str | None, int]:
    """Whether the index is valid, its predicate, and how many entries it holds (set when it is built)."""
    row = await db.fetchrow(
        """SELECT i.indisvalid, pg_get_expr(i.indpred, i.indrelid) AS predicate, c.reltuples::bigint AS entries
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'ix_orders_statement_id'"""
    )
    assert row is not None
    return row["indisvalid"], row["predicate"], row["entries"]


async def test_the_index_keeps_billed_orders_only_and_finds_a_statements_orders(unmigrated_url: str) -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(unmigrated_url), BEFORE)
    db = await asyncpg.connect(unmigrated_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        # Orders alone, without the merchants, rules and statements they name: the foreign keys' triggers are off
        # for this session only.
        await db.execute("SET session_replication_role = replica")
        await db.execute(
            f"""INSERT INTO orders (id, platform_id, external_id, merchant_id, currency, placed_at, items, base_amount,
                                    donation_amount, content_hash, refunded_amount, reversed_amount, statement_id)
                SELECT 'ord_' || g, 'plt_1', 'TM-' || g, 'mer_1', 'CNY', now(), '[]', 100, 1, '\\x00', 0, 0,
                       CASE WHEN g % 4 = 0 THEN 'stm_' || g % 40 END
                FROM generate_series(1, {ORDERS}) g"""  # noqa: S608 - integers only
        )
        await db.execute("ANALYZE orders")
        assert await _index(db) == (True, None, ORDERS)  # before: every order, the unbilled ones under NULL

        await asyncio.to_thread(command.upgrade, alembic_config(unmigrated_url), "head")
        assert await _index(db) == (True, "(statement_id IS NOT NULL)", BILLED)
        plan = "\n".join(
            r[0] for r in await db.fetch("EXPLAIN SELECT id FROM orders WHERE statement_id = 'stm_8'")
        )
        assert "ix_orders_statement_id" in plan, plan
        assert await db.fetchval("SELECT count(*) FROM orders WHERE statement_id = 'stm_8'") == ORDERS // 40

        # Back and forth: the downgrade restores the full index, and the upgrade runs again.
        await asyncio.to_thread(command.downgrade, alembic_config(unmigrated_url), BEFORE)
        assert await _index(db) == (True, None, ORDERS)
        await asyncio.to_thread(command.upgrade, alembic_config(unmigrated_url), "head")
        assert await _index(db) == (True, "(statement_id IS NOT NULL)", BILLED)
    finally:
        await db.close()
