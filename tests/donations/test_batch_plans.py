"""The order batch's statements, and a quote's and a receipt's, keep one generic plan per connection, made whenever
PostgreSQL decides: on an empty database too. Such a plan must still find each row by an index probe, or it would
scan whole tables (or whole indexes) for as long as the connection lives (docs/scaling.md, the order webhook)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.core.database import Database
from app.core.partitions import partitions
from app.donations import repository
from app.donations.tasks import INBOX
from app.receipts import repository as receipts_repository
from tests.conftest import make_settings

# Configuration, one row per endpoint: scanning it is what an index probe would cost.
SMALL_TABLES = {"webhook_endpoints"}


# The statements run with one generic plan per connection: the order batch's (inbox pool), and a quote's and a
# receipt's (read pool, the same settings).
GENERIC_PLANS = {
    "order batch read": repository._READ_BATCH,
    "order batch write": repository._WRITE_BATCH,
    "quote's merchant and rule": repository._MERCHANT_AND_RULE,
    "receipt": receipts_repository._FACTS + "WHERE l.token_hash = $1",
}


@pytest.mark.parametrize("name", GENERIC_PLANS)
async def test_generic_plans_on_empty_tables_probe_indexes(
    name: str, database_url: str, tmp_path: Path
) -> None:
    statement = GENERIC_PLANS[name]
    pool = await Database(make_settings(database_url, tmp_path)).inbox_pool(size=1)
    try:
        async with pool.acquire() as db:
            assert await db.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            await db.execute(f"PREPARE batch AS {statement}")
            parameters = max(int(n) for n in re.findall(r"\$(\d+)", statement))
            arguments = ", ".join(["NULL"] * parameters)
            plan = "\n".join(row[0] for row in await db.fetch(f"EXPLAIN EXECUTE batch({arguments})"))
            walks = await index_walks(db, f"EXECUTE batch({arguments})")
    finally:
        await pool.close()
    assert "Index Scan" in plan
    scanned = set(re.findall(r"Seq Scan on (\w+)", plan))
    assert scanned <= SMALL_TABLES, plan
    assert walks == [], plan


async def index_walks(db: Any, statement: str) -> list[str]:
    """The index scans in `statement`'s plan that don't constrain their index's first column: each walks the whole
    index, which costs as much as the table is long (an order's refund was found that way once, by its refund id
    alone)."""
    [[document]] = await db.fetch(f"EXPLAIN (FORMAT JSON) {statement}")  # asyncpg gives `json` as text
    walks = []
    pending = [json.loads(document)[0]["Plan"]]
    while pending:
        node = pending.pop()
        pending.extend(node.get("Plans", []))
        if "Index Name" not in node:
            continue
        first_column = await db.fetchval(
            "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE c.relname = $1",
            node["Index Name"],
        )
        # An index condition is written with the index's column on the left: "((order_id)::text = o.id)". An
        # index on an expression (first_column None) is used only through a condition on it.
        condition = node.get("Index Cond", "")
        if not condition or (first_column and not re.search(rf"\(\(?{first_column}\b", condition)):
            walks.append(f"{node['Index Name']}: {node.get('Index Cond')}")
    return walks


async def test_the_inbox_probes_skip_the_months_ahead(app: Any, database_url: str, tmp_path: Path) -> None:
    """The migration makes the inbox's next months (and a default partition) in advance, empty: a lookup by webhook
    id must not visit them (each partition visited costs every batch its executor set-up). A month beginning within
    a day may be visited: the lookups' bound keeps a day's margin."""
    async with app.state.sessionmaker() as session:
        found = await partitions(session, INBOX)
    pool = await Database(make_settings(database_url, tmp_path)).inbox_pool(size=1)
    try:
        async with pool.acquire() as db:
            await db.execute(f"PREPARE batch AS {repository._READ_BATCH}")
            plan = "\n".join(
                row[0] for row in await db.fetch(f"EXPLAIN EXECUTE batch({', '.join(['NULL'] * 14)})")
            )
    finally:
        await pool.close()
    soon = datetime.now(UTC) + timedelta(days=1)
    ahead = {p.name for p in found if p.lower is not None and p.lower > soon}  # months not begun by then
    ahead |= {p.name for p in found if p.lower is None and p.upper is None}  # the default partition
    assert len(ahead) >= 4, found  # three months ahead and the default
    visited = set(re.findall(rf"on ({INBOX}_\w+)", plan))
    assert visited and not visited & ahead, plan
