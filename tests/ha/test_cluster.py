"""The HA set-up itself (tests/ha/cluster.py): a commit the primary acknowledged survives `kill -9` of the
primary's postmaster, the standby takes over, and a client naming every node with
`target_session_attrs=read-write` finds the new primary by itself."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from tests.ha.cluster import HaCluster


async def _connect(url: str, *, within: float = 30) -> asyncpg.Connection:
    deadline = time.monotonic() + within
    while True:
        try:
            return await asyncpg.connect(url, timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_an_acknowledged_commit_survives_the_primary_being_killed(ha_cluster: HaCluster) -> None:
    url = ha_cluster.database_url()
    db = await _connect(url)
    await db.execute("CREATE TABLE IF NOT EXISTS acknowledged (n int PRIMARY KEY)")
    await db.execute("TRUNCATE acknowledged")
    assert await db.fetchval("SHOW synchronous_standby_names") != ""  # Patroni named the standby
    await db.executemany("INSERT INTO acknowledged VALUES ($1)", [(n,) for n in range(100)])
    await db.close()

    old = ha_cluster.kill_primary()
    new = ha_cluster.wait_for_primary(other_than=old)
    db = await _connect(url)
    try:
        assert await db.fetchval("SELECT inet_server_port()") == new.port
        assert not await db.fetchval("SELECT pg_is_in_recovery()")
        assert await db.fetchval("SELECT count(*) FROM acknowledged") == 100
    finally:
        await db.close()
    ha_cluster.wait_healthy()  # the old primary is back, as the synchronous standby
    assert ha_cluster.primary() is new
