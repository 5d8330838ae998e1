"""`DATABASE_READ_URL` (SPEC §17): the reads that may be a little behind — the merchant impact report, the public
transparency figures (`/v1/transparency` and the public page), receipts (`/r/{token}`, `/v1/receipts/{token}`),
a merchant's public page and badge — come from a streaming replica (a Patroni standby) while its replay lag is
within `G4G_MAX_REPLICA_LAG_SECONDS`, and from the primary once the replica falls further behind. The replica is
made to lag with `recovery_min_apply_delay`; what each client answers while it lags shows which server it read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import structlog

from app.core.database import ReadReplica
from app.main import create_app
from tests.conftest import DATA_KEY, make_settings
from tests.ha.cluster import HaCluster
from tests.helpers import (
    create_key,
    create_merchant,
    create_platform,
    create_token_directly,
    order_paid,
    order_refunded,
    send_event,
    set_rule,
)
from tests.live import g4g_env, run_g4g


@asynccontextmanager
async def _client(url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(make_settings(url, tmp_path, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://g4g.test") as client:
            yield app, client


async def _orders_on(dsn: str) -> int:
    db = await asyncpg.connect(dsn)
    try:
        return int(await db.fetchval("SELECT count(*) FROM orders"))
    finally:
        await db.close()


async def _apply_delay(
    cluster: HaCluster, standby: asyncpg.Connection, delay: str | None, *, shown: str
) -> None:
    patch = {"postgresql": {"parameters": {"recovery_min_apply_delay": delay}}}
    async with httpx.AsyncClient() as http:
        response = await http.patch(cluster.nodes[0].api + "/config", json=patch)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30
    while await standby.fetchval("SHOW recovery_min_apply_delay") != shown:
        assert time.monotonic() < deadline, "Patroni did not apply recovery_min_apply_delay"
        await asyncio.sleep(0.1)


async def test_reports_and_public_pages_read_the_replica_within_the_lag_bound_and_the_primary_past_it(
    ha_cluster: HaCluster, tmp_path: Path
) -> None:
    primary = ha_cluster.wait_healthy()
    standby = next(node for node in ha_cluster.nodes if node is not primary)
    admin_db = await asyncpg.connect(ha_cluster.database_url("postgres"))
    try:
        await admin_db.execute("DROP DATABASE IF EXISTS reports WITH (FORCE)")
        await admin_db.execute("CREATE DATABASE reports")
    finally:
        await admin_db.close()
    url = ha_cluster.database_url("reports")
    migrated = run_g4g("migrate", env=g4g_env(DATABASE_URL=url, G4G_DATA_KEY=DATA_KEY))
    assert migrated.returncode == 0, migrated.stderr
    replica_url = ha_cluster.node_url(standby, "reports")

    hourly = {"transparency_refresh_seconds": 3600}  # the test refreshes the figures itself
    async with (
        _client(url, tmp_path / "primary", **hourly) as (app, client),
        _client(
            url, tmp_path / "patient", database_read_url=replica_url, max_replica_lag_seconds=3600, **hourly
        ) as (_, patient),
        _client(
            url, tmp_path / "strict", database_read_url=replica_url, max_replica_lag_seconds=1, **hourly
        ) as (_, strict),
    ):
        admin = {"Authorization": f"Bearer {await create_token_directly(app, role='admin', name='ops')}"}
        platform = await create_platform(client, admin, name="Tmall")
        merchant = await create_merchant(client, admin, platform_id=platform["id"], external_id="shop-1")
        await set_rule(client, admin, merchant["id"], rate_bps=150, fixed_per_unit=[])
        await asyncio.sleep(1.1)  # orders are placed after the rule took effect
        assert (await send_event(client, platform, order_paid("TM-1", merchant="shop-1"))).status_code == 200
        platform_key = {
            "Authorization": "Bearer "
            + (await create_key(client, admin, role="platform", platform_id=platform["id"]))["token"]
        }
        link = await client.post("/v1/orders/TM-1/receipt-link", headers=platform_key)
        assert link.status_code == 201, link.text
        receipt = "/v1/receipts/" + link.json()["url"].removeprefix("/r/")
        opted = await client.patch(
            f"/v1/merchants/{merchant['id']}", json={"public_profile": True}, headers=admin
        )
        assert opted.status_code == 200, opted.text
        badge, page = f"/v1/merchants/{merchant['id']}/badge", "/m/" + opted.json()["public_slug"]
        before = await app.state.transparency.refresh(wait=True)  # the public figures, stored on the primary
        deadline = time.monotonic() + 30
        while await _orders_on(replica_url) != 1:
            assert time.monotonic() < deadline, "the replica never replayed the order"
            await asyncio.sleep(0.1)
        impact = f"/v1/merchants/{merchant['id']}/impact"

        standby_db = await asyncpg.connect(ha_cluster.node_url(standby, "postgres"))
        try:
            # Replay a commit only once it is a minute old, set the Patroni way (it resumes a paused replay and
            # drops recovery settings made with ALTER SYSTEM).
            await _apply_delay(ha_cluster, standby_db, "60s", shown="1min")
            assert (
                await send_event(client, platform, order_paid("TM-2", merchant="shop-1"))
            ).status_code == 200
            refund = order_refunded("TM-1", "R-1", 6400, merchant="shop-1")
            assert (await send_event(client, platform, refund)).status_code == 200
            opted_out = {"public_profile": False}
            assert (
                await client.patch(f"/v1/merchants/{merchant['id']}", json=opted_out, headers=admin)
            ).is_success
            after = await app.state.transparency.refresh(wait=True)
            assert after is not None and before is not None and after.etag != before.etag
            new_link = await client.post("/v1/orders/TM-2/receipt-link", headers=platform_key)
            assert new_link.status_code == 201, new_link.text
            assert (await client.get(impact, headers=admin)).json()["orders"] == 2  # the primary
            await asyncio.sleep(1.5)  # the replica is now more than a second behind

            # Within its bound (an hour), the replica answers: it has not seen the second order, the refund, the
            # merchant opting out or the new figures.
            assert (await patient.get(impact, headers=admin)).json()["orders"] == 1
            assert (await patient.get(receipt)).json()["reversed"]["amount"] == 0
            assert (await patient.get("/r/" + receipt.rsplit("/", 1)[1])).status_code == 200
            assert (await patient.get(badge)).status_code == 200
            assert (await patient.get(page)).status_code == 200
            figures = await patient.get("/v1/transparency")
            assert figures.headers["etag"] == before.etag
            # ... with their real date: when the figures it has were computed.
            assert datetime.fromisoformat(figures.json()["updated_at"]) == before.updated_at
            assert (await patient.get("/")).status_code == 200
            # A receipt link made a moment ago, which the replica has not replayed: found on the primary.
            made_now = await patient.get("/v1/receipts/" + new_link.json()["url"].removeprefix("/r/"))
            assert made_now.status_code == 200, made_now.text

            # Past its bound (a second), the primary answers.
            assert (await strict.get(impact, headers=admin)).json()["orders"] == 2
            assert (await strict.get(receipt)).json()["reversed"]["amount"] == 96
            assert (await strict.get(badge)).status_code == 404
            assert (await strict.get(page)).status_code == 404
            assert (await strict.get("/v1/transparency")).headers["etag"] == after.etag

            # A link revoked a moment ago no longer opens, though the replica has not replayed the revocation:
            # whether a token opens a receipt is the primary's answer.
            revoked = await client.delete("/v1/orders/TM-1/receipt-link", headers=platform_key)
            assert revoked.status_code == 204, revoked.text
            assert (await patient.get(receipt)).status_code == 404
            assert (await patient.get("/r/" + receipt.rsplit("/", 1)[1])).status_code == 404
        finally:
            await _apply_delay(ha_cluster, standby_db, None, shown="0")
            await standby_db.close()
        deadline = time.monotonic() + 30
        while (await patient.get(impact, headers=admin)).json()["orders"] != 2:
            assert time.monotonic() < deadline, "the replica never caught up"
            await asyncio.sleep(0.2)


async def test_a_replica_role_that_cannot_see_replication_state_leaves_reads_on_the_primary(
    ha_cluster: HaCluster,
) -> None:
    """PostgreSQL shows a standby's WAL receiver state only to roles with pg_read_all_stats: without it a
    streaming replica looks like one streaming from nobody. The service then reads on the primary and says why
    once in its log; with pg_monitor granted the replica is used."""
    primary = ha_cluster.wait_healthy()
    standby = next(node for node in ha_cluster.nodes if node is not primary)
    admin_db = await asyncpg.connect(ha_cluster.database_url("postgres"))
    try:
        await admin_db.execute("DROP ROLE IF EXISTS g4g_reader")
        await admin_db.execute("CREATE ROLE g4g_reader LOGIN")
        position = await admin_db.fetchval("SELECT pg_current_wal_lsn()")
    finally:
        await admin_db.close()
    url = ha_cluster.node_url(standby, "postgres").replace("://postgres@", "://g4g_reader@")
    assert "g4g_reader@" in url
    standby_db = await asyncpg.connect(ha_cluster.node_url(standby, "postgres"))
    try:
        deadline = time.monotonic() + 30
        while await standby_db.fetchval("SELECT pg_last_wal_replay_lsn() < $1::pg_lsn", position):
            assert time.monotonic() < deadline, "the replica never replayed the role"
            await asyncio.sleep(0.1)
    finally:
        await standby_db.close()

    async def usable() -> tuple[bool, list[dict[str, Any]]]:
        replica = ReadReplica(url, max_lag_seconds=3600, pool_size=1)
        try:
            with structlog.testing.capture_logs() as logged:
                return await replica.usable(), logged
        finally:
            await replica.close()

    used, logged = await usable()
    assert not used
    assert [entry["event"] for entry in logged] == ["replica.lag_unknown"]
    admin_db = await asyncpg.connect(ha_cluster.database_url("postgres"))
    try:
        await admin_db.execute("GRANT pg_monitor TO g4g_reader")
    finally:
        await admin_db.close()
    deadline = time.monotonic() + 30
    while not (result := await usable())[0]:
        assert time.monotonic() < deadline, "the replica was not used with pg_monitor granted"
        await asyncio.sleep(0.2)
    assert result[1] == []
