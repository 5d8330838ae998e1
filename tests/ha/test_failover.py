"""Jepsen-style: the primary PostgreSQL is killed (`kill -9` of its postmaster) under load, three times in a row,
back and forth between the nodes (tests/ha/cluster.py), while two `g4g serve` processes take signed order
webhooks (new orders, duplicates, refunds) and quotes on 32 connections, and a `g4g worker` runs jobs.

Then (SPEC §17): no answer other than 2xx or 503 with `Retry-After`, none later than the bound; every order
answered 2xx is stored exactly once with the right donation, every refund answered 2xx applied once, nothing
answered 503 half-applied (whatever exists is whole: its ledger entry and its event with it), and after the
platform's retries of what failed, nothing is missing; `g4g audit` passes; a settlement run queued just before
each kill finishes after it. Each failover prints its unavailability window (first 503 to the first 2xx of a
request sent after it) and the p99 latency of the requests sent during the switch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import DATA_KEY
from tests.ha.cluster import HaCluster
from tests.ha.load import (
    ANSWER_BOUND_S,
    DONATION,
    REVERSED,
    Load,
    percentile,
    post,
    set_up,
    start_worker,
    whole,
)
from tests.live import LiveServer, g4g_env, run_g4g

ROUNDS = 3
LOAD_BEFORE_KILL_S = 3.0
LOAD_AFTER_PROMOTION_S = 3.0


@pytest.fixture
def service(ha_cluster: HaCluster, tmp_path: Path) -> Iterator[tuple[list[LiveServer], dict[str, str], str]]:
    admin_dsn = ha_cluster.database_url("postgres")

    async def create_database() -> None:
        db = await asyncpg.connect(admin_dsn)
        try:
            await db.execute("DROP DATABASE IF EXISTS g4g WITH (FORCE)")
            await db.execute("CREATE DATABASE g4g")
        finally:
            await db.close()

    asyncio.run(create_database())
    env = g4g_env(
        DATABASE_URL=ha_cluster.database_url("g4g"),
        G4G_DATA_KEY=DATA_KEY,
        G4G_DATA_DIR=str(tmp_path),
        G4G_EMBEDDED_WORKER="false",  # a `g4g worker` process runs the jobs
        G4G_JOB_HEARTBEAT_SECONDS="3",
    )
    migrated = run_g4g("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    admin_token = run_g4g("create-api-key", "--role", "admin", "--name", "ops", env=env).stdout.strip()
    servers: list[LiveServer] = []
    try:
        for name in ("first", "second"):
            servers.append(LiveServer(env, tmp_path / f"{name}.log"))
        yield servers, env, admin_token
    finally:
        for server in servers:
            server.stop()


async def test_killing_the_primary_under_load_loses_no_acknowledged_order_three_times(
    ha_cluster: HaCluster,
    service: tuple[list[LiveServer], dict[str, str], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    servers, env, admin_token = service
    platform, quote_token = set_up(servers[0].url, admin_token)
    load = Load([s.url for s in servers], platform, quote_token)
    worker = start_worker(env, tmp_path / "worker.log")
    admin = {"Authorization": f"Bearer {admin_token}"}
    figures = []
    try:
        for round_ in range(ROUNDS):
            ha_cluster.wait_healthy()
            stop = asyncio.Event()
            running = asyncio.create_task(load.run(round_, stop))
            await asyncio.sleep(LOAD_BEFORE_KILL_S)

            # A settlement run queued just before the kill, while the worker is frozen: it runs after it.
            worker.send_signal(signal.SIGSTOP)
            # (Blocking calls in a thread: the load's event loop keeps running, so its latencies are the service's.)
            run = await asyncio.to_thread(post, servers[1].url + "/v1/settlement-runs", admin_token, {})
            killed_at = time.monotonic()
            old = await asyncio.to_thread(ha_cluster.kill_primary)
            worker.send_signal(signal.SIGCONT)
            new = await asyncio.to_thread(ha_cluster.wait_for_primary, other_than=old)
            promoted_at = time.monotonic()
            await asyncio.sleep(LOAD_AFTER_PROMOTION_S)
            stop.set()
            await running

            this_round = [s for s in load.sent if s.round == round_]
            statuses = Counter(s.status for s in this_round)
            assert set(statuses) <= {200, 202, 503}, statuses  # never a 500, never no answer
            assert all(s.retry_after for s in this_round if s.status == 503)
            assert max(s.finished - s.started for s in this_round) <= ANSWER_BOUND_S
            unavailable = [s for s in this_round if s.status == 503]
            first_503 = min((s.finished for s in unavailable), default=killed_at)
            recovered = min(s.finished for s in this_round if s.started >= first_503 and s.status < 300)
            switch = [s.finished - s.started for s in this_round if killed_at <= s.started <= recovered]
            figures.append(
                {
                    "round": round_ + 1,
                    "killed": old.name,
                    "promoted": new.name,
                    "promotion_s": round(promoted_at - killed_at, 2),
                    "unavailable_s": round(recovered - first_503, 2),
                    "p99_switch_ms": round(percentile(switch, 0.99) * 1000),
                    "max_ms": round(max(s.finished - s.started for s in this_round) * 1000),
                    "slowest": [
                        (s.kind, s.status, round(s.started - killed_at, 2), round(s.finished - s.started, 2))
                        for s in sorted(this_round, key=lambda s: s.started - s.finished)[:3]
                    ],
                    "requests": len(this_round),
                    "503": len(unavailable),
                }
            )
            with capsys.disabled():
                print("\nfailover", json.dumps(figures[-1]))

            # Nothing half-applied, before the platform retries anything.
            await whole(ha_cluster.database_url("g4g"))
            for retried in await load.retry_failed(round_):
                assert retried.answer["status"] in ("applied", "duplicate"), retried.answer

            # The run queued before the kill finishes after it, on the new primary.
            deadline = time.monotonic() + 60
            async with httpx.AsyncClient(base_url=servers[0].url, timeout=30) as client:
                while True:
                    status = (await client.get(f"/v1/settlement-runs/{run['id']}", headers=admin)).json()
                    if status["status"] in ("done", "failed"):
                        break
                    assert time.monotonic() < deadline, status
                    await asyncio.sleep(0.2)
            assert status["status"] == "done", status
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(timeout=30)
        if worker.poll() is None:
            worker.kill()

    stored_rows = await whole(ha_cluster.database_url("g4g"))
    # Every order a platform sent is stored once (acknowledged, or retried until it was), with its donation.
    stored = Counter(row["external_id"] for row in stored_rows["orders"])
    assert stored == Counter(dict.fromkeys(load.bodies, 1))
    assert {row["donation_amount"] for row in stored_rows["orders"]} == {DONATION}
    assert set(load.acknowledged) <= set(stored)
    refunded = Counter(row["refund_id"] for row in stored_rows["refunds"])
    acknowledged_refunds = {f"R-{s.order}" for s in load.sent if s.kind == "refund" and s.status < 300}
    assert acknowledged_refunds <= set(refunded)
    assert refunded == Counter({f"R-{order}": 1 for order in load.refunded})
    assert {row["reversed_amount"] for row in stored_rows["refunds"]} <= {REVERSED}
    # Duplicates answered as such, never applied again.
    for sent in load.sent:
        if sent.kind == "duplicate" and sent.status < 300:
            assert sent.answer["status"] in ("duplicate", "applied"), sent.answer
    audit = run_g4g("audit", env=env)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert len(figures) == ROUNDS
    with capsys.disabled():
        print("\nfailovers", json.dumps(figures))
