"""The order batch's statements keep one generic plan per inbox connection, made whenever PostgreSQL decides: on an
empty database too. Such a plan must still find each row by an index probe, or it would scan whole tables for as
long as the connection lives (docs/scaling.md, the order webhook)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.core.database import Database
from app.core.partitions import partitions
from app.donations import repository
from app.donations.tasks import INBOX
from tests.conftest import make_settings

# Configuration, one row per endpoint: scanning it is what an index probe would cost.
SMALL_TABLES = {"webhook_endpoints"}


@pytest.mark.parametrize("name", ["_READ_BATCH", "_WRITE_BATCH"])
async def test_generic_plans_on_empty_tables_probe_indexes(
    name: str, database_url: str, tmp_path: Path
) -> None:
    statement: str = getattr(repository, name)
    pool = await Database(make_settings(database_url, tmp_path)).inbox_pool(size=1)
    try:
        async with pool.acquire() as db:
            assert await db.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            await db.execute(f"PREPARE batch AS {statement}")
            parameters = max(int(n) for n in re.findall(r"\$(\d+)", statement))
            plan = "\n".join(
                row[0] for row in await db.fetch(f"EXPLAIN EXECUTE batch({', '.join(['NULL'] * parameters)})")
            )
    finally:
        await pool.close()
    assert "Index Scan" in plan
    scanned = set(re.findall(r"Seq Scan on (\w+)", plan))
    assert scanned <= SMALL_TABLES, plan


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
