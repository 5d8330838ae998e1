"""The ledger keeps itself honest: balanced, append-only, and audited from its entries alone."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from tests.conftest import DATA_KEY, Shop
from tests.helpers import order_paid, order_refunded, send_event
from tests.live import g4g_env, run_g4g


async def _paid_and_refunded(client: httpx.AsyncClient, shop: Shop) -> None:
    await send_event(client, shop.platform, order_paid("L-1", merchant=shop.external_id))
    await send_event(client, shop.platform, order_refunded("L-1", "R-1", 3200, merchant=shop.external_id))


async def test_entries_and_postings_cannot_be_changed_or_unbalanced(
    client: httpx.AsyncClient, shop: Shop, database_url: str
) -> None:
    await _paid_and_refunded(client, shop)
    db = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        entry_id = await db.fetchval("SELECT id FROM ledger_entries LIMIT 1")
        for statement in (
            "UPDATE ledger_postings SET amount = amount + 1",
            "DELETE FROM ledger_postings",
            "UPDATE ledger_entries SET memo = 'edited'",
            "DELETE FROM ledger_entries",
            "TRUNCATE ledger_postings",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await db.execute(statement)
        with pytest.raises(asyncpg.PostgresError, match="does not balance"):
            await db.execute(
                "INSERT INTO ledger_postings (entry_id, account, currency, amount) VALUES ($1, 'x', 'CNY', 5)",
                entry_id,
            )
        # Balanced within one currency is not enough when another currency is off.
        with pytest.raises(asyncpg.PostgresError, match="does not balance"):
            await db.execute(
                """INSERT INTO ledger_postings (entry_id, account, currency, amount)
                   VALUES ($1, 'x', 'CNY', 5), ($1, 'y', 'CNY', -5), ($1, 'z', 'JPY', 1)""",
                entry_id,
            )
    finally:
        await db.close()


async def test_audit_recomputes_from_entries_and_reports_tampering(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    shop: Shop,
    app: object,
    database_url: str,
    tmp_path: Path,
) -> None:
    await _paid_and_refunded(client, shop)
    report = (await client.get("/v1/audit", headers=admin)).json()
    assert report["ok"] and {c["name"] for c in report["checks"]} >= {
        "entries_balance",
        "orders_match_ledger",
        "reversals_follow_rule",
        "balances_match_orders",
    }
    env = g4g_env(DATABASE_URL=database_url, G4G_DATA_KEY=DATA_KEY, G4G_DATA_DIR=str(tmp_path))
    assert run_g4g("audit", env=env).returncode == 0

    # Someone edits an order behind the ledger's back: the audit names it, and the CLI fails.
    async with app.state.engine.begin() as connection:  # type: ignore[attr-defined]
        await connection.execute(text("UPDATE orders SET reversed_amount = 0 WHERE external_id = 'L-1'"))
    report = (await client.get("/v1/audit", headers=admin)).json()
    broken = {c["name"]: c for c in report["checks"] if not c["ok"]}
    assert not report["ok"]
    assert {"orders_match_ledger", "reversals_follow_rule", "balances_match_orders"} <= set(broken)
    assert broken["orders_match_ledger"]["examples"][0]["order_id"] == "L-1"
    result = run_g4g("audit", env=env)
    assert result.returncode == 1 and '"ok": false' in result.stdout

    # Each run is recorded for the console's overview: by what, which key, and only the failed checks' names.
    async with app.state.engine.connect() as connection:  # type: ignore[attr-defined]
        runs = (await connection.execute(text("SELECT via, ok, failed_checks, key_id FROM audit_runs"))).all()
    ran = sorted((r.via, r.ok) for r in runs)
    assert ran == [("api", False), ("api", True), ("cli", False), ("cli", True)]
    assert all((r.key_id is not None) == (r.via == "api") for r in runs)
    assert all(set(broken) == set(r.failed_checks) for r in runs if not r.ok)
