"""PgBouncer in transaction pooling in front of the primary (SPEC §17): two `g4g serve` processes and a `g4g worker`
with `DATABASE_URL` through it and `G4G_TRANSACTION_POOLING=true` take signed order webhooks (new orders,
duplicates, refunds) and quotes on 32 connections, and run a settlement run queued meanwhile; `g4g migrate`,
`g4g create-api-key` and `g4g audit` go through it too. The job queue's listener connects past it
(`DATABASE_LISTEN_URL`): LISTEN needs a session of its own.

Debian 12's PgBouncer is 1.18, without `max_prepared_statements`: the test first shows asyncpg with its statement
cache (its default) failing through it, and without it working."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.core.settings import Settings
from tests.conftest import DATA_KEY
from tests.ha.cluster import HaCluster
from tests.ha.load import DONATION, REVERSED, Load, post, set_up, start_worker, whole
from tests.ha.pgbouncer import PgBouncer, available
from tests.live import LiveServer, g4g_env, run_g4g

LOAD_S = 6.0


async def _statements_through(url: str, *, statement_cache_size: int) -> Counter[str]:
    """16 clients sharing a pool of two server connections, each running 50 statements outside a transaction:
    the errors, by kind."""
    errors: Counter[str] = Counter()

    async def client() -> None:
        db = await asyncpg.connect(url, statement_cache_size=statement_cache_size)
        try:
            for n in range(50):
                try:
                    await db.fetchval("SELECT count(*) + $1 FROM orders", n)
                except asyncpg.PostgresError as exc:
                    errors[type(exc).__name__] += 1
        finally:
            await db.close()

    await asyncio.gather(*(client() for _ in range(16)))
    return errors


async def _settled(server: str, admin_token: str, run_id: str) -> dict[str, Any]:
    """The settlement run once it is over, with when that was first seen."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        while True:
            status = dict((await client.get(f"/v1/settlement-runs/{run_id}", headers=admin)).json())
            if status["status"] in ("done", "failed"):
                return {**status, "seen_done_at": time.monotonic()}
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)


async def test_the_service_runs_through_pgbouncer_in_transaction_pooling(
    ha_cluster: HaCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = available()
    if missing:
        pytest.fail(missing)  # `.ci/run` installs it: never skip
    primary = ha_cluster.wait_healthy()
    admin_db = await asyncpg.connect(ha_cluster.database_url("postgres"))
    try:
        await admin_db.execute("DROP DATABASE IF EXISTS pooled WITH (FORCE)")
        await admin_db.execute("CREATE DATABASE pooled")
    finally:
        await admin_db.close()
    direct = ha_cluster.database_url("pooled")

    with PgBouncer(ha_cluster.root, server_port=primary.port, databases=["pooled"]) as bouncer:
        env = g4g_env(
            DATABASE_URL=bouncer.url("pooled"),
            G4G_TRANSACTION_POOLING="true",
            DATABASE_LISTEN_URL=direct,
            G4G_DATA_KEY=DATA_KEY,
            G4G_DATA_DIR=str(tmp_path),
            G4G_EMBEDDED_WORKER="false",  # a `g4g worker` process runs the jobs
        )
        migrated = run_g4g("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        # Again: its lock was let go of (held by a session through the pooler, it would be left on a server
        # connection and this one would wait for it for ever).
        again = run_g4g("migrate", env=env)
        assert again.returncode == 0, again.stderr

        # What Debian's PgBouncer 1.18 allows: a statement prepared by name (asyncpg's cache) is gone once the
        # transaction is over and the server connection serves another client; unnamed ones work.
        cached = await _statements_through(bouncer.url("pooled_small"), statement_cache_size=100)
        assert cached["InvalidSQLStatementNameError"] > 0, cached
        assert await _statements_through(bouncer.url("pooled_small"), statement_cache_size=0) == Counter()

        made = run_g4g("create-api-key", "--role", "admin", "--name", "ops", env=env)
        assert made.returncode == 0, made.stderr
        admin_token = made.stdout.strip()
        servers = [LiveServer(env, tmp_path / f"{name}.log") for name in ("first", "second")]
        worker: subprocess.Popen[bytes] | None = None
        try:
            platform, quote_token = set_up(servers[0].url, admin_token)
            worker = start_worker(env, tmp_path / "worker.log")
            load = Load([s.url for s in servers], platform, quote_token)
            before = bouncer.stats("pooled")
            stop = asyncio.Event()
            running = asyncio.create_task(load.run(0, stop))
            await asyncio.sleep(LOAD_S / 2)
            queued_at = time.monotonic()
            run = await asyncio.to_thread(post, servers[1].url + "/v1/settlement-runs", admin_token, {})
            settled = asyncio.create_task(_settled(servers[0].url, admin_token, run["id"]))
            await asyncio.sleep(LOAD_S / 2)
            stop.set()
            await running
            status = await settled
            settled_s = status.pop("seen_done_at") - queued_at
            assert status["status"] == "done", status
            # The worker heard of the job (LISTEN, past PgBouncer): without, it finds it at its next poll (10 s).
            assert settled_s < 5, settled_s
            after = bouncer.stats("pooled")
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.wait(timeout=30)
                if worker.poll() is None:
                    worker.kill()
            for server in servers:
                server.stop()

        statuses = Counter((s.kind, s.status) for s in load.sent)
        assert {status for _, status in statuses} <= {200, 202}, (
            statuses
        )  # every request answered, none failed
        stored_rows = await whole(direct)
        stored = Counter(row["external_id"] for row in stored_rows["orders"])
        assert stored == Counter(dict.fromkeys(load.bodies, 1))
        assert {row["donation_amount"] for row in stored_rows["orders"]} == {DONATION}
        refunded = Counter(row["refund_id"] for row in stored_rows["refunds"])
        assert refunded == Counter({f"R-{order}": 1 for order in load.refunded})
        assert {row["reversed_amount"] for row in stored_rows["refunds"]} <= {REVERSED}
        audit = run_g4g("audit", env=env)
        assert audit.returncode == 0, audit.stdout + audit.stderr

        # The requests' work went through PgBouncer: each quote is a statement of its own, and the order events share
        # transactions (the inbox applies whatever is waiting together, up to its batch size), so at least this
        # many. (Not one per request: the faster the service, the more events a batch holds.)
        transactions = after["total_xact_count"] - before["total_xact_count"]
        quotes = sum(1 for s in load.sent if s.kind == "quote")
        max_batch = Settings.model_fields["ingest_max_batch"].default
        assert transactions >= quotes + math.ceil((len(load.sent) - quotes) / max_batch), (
            transactions,
            quotes,
        )
        figures = {
            "requests": len(load.sent),
            "by_kind": dict(Counter(s.kind for s in load.sent)),
            "requests_per_s": round(len(load.sent) / LOAD_S),
            "pgbouncer_transactions": transactions,
            "pgbouncer_queries": after["total_query_count"] - before["total_query_count"],
            "settlement_run_done_s": round(settled_s, 2),
            "cached_statements_failed": cached["InvalidSQLStatementNameError"],
        }
        with capsys.disabled():
            print("\npgbouncer", json.dumps(figures))
