"""`g4g worker` as an operator runs it: real processes sharing one database, killed and stopped for real."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app.core.jobs import enqueue
from app.settlement.repository import SETTLEMENT_LOCK
from tests.conftest import DATA_KEY, Shop
from tests.helpers import order_paid, send_event
from tests.live import G4G, g4g_env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([G4G, "worker"], env=env, stdout=output, stderr=subprocess.STDOUT)


async def wait_for(what: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + 40
    while not await what():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_job_killed_mid_run_runs_again_on_another_worker_with_one_effect(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: Any, database_url: str, tmp_path: Path
) -> None:
    # A donation of a merchant with a billing profile; the workers run with no return window, so it is final and
    # settlement bills it.
    paid = await send_event(client, shop.platform, order_paid("TM-9", merchant=shop.external_id))
    assert paid.json() == {"status": "applied"}
    billing = {"method": "bank_transfer"}
    assert (
        await client.put(f"/v1/merchants/{shop.merchant['id']}/billing", json=billing, headers=admin)
    ).is_success

    db = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    env = g4g_env(
        DATABASE_URL=database_url,
        G4G_DATA_KEY=DATA_KEY,
        G4G_DATA_DIR=str(tmp_path),
        G4G_JOB_HEARTBEAT_SECONDS="2",
        G4G_RETURN_WINDOW_DAYS="0",
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # The job will be slow: settlement waits for its lock, which this test holds.
        await db.execute("SELECT pg_advisory_lock($1)", SETTLEMENT_LOCK)
        async with db.transaction():
            await enqueue(db, "settlement.run", [b""])

        async def waiting_on_the_lock() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' AND datname = current_database()"
                )
            )

        first = start_worker(env, tmp_path / "first.log")
        workers.append(first)
        await wait_for(waiting_on_the_lock)
        job = await db.fetchrow(
            "SELECT status::text, queue_manager_id FROM pgqueuer WHERE entrypoint = 'settlement.run'"
        )
        assert job["status"] == "picked"
        first.send_signal(signal.SIGKILL)
        first.wait(10)

        second = start_worker(env, tmp_path / "second.log")
        workers.append(second)

        async def picked_again() -> bool:
            # The stalled job, picked by the second worker once its heartbeat went stale, and waiting on the lock.
            holder = await db.fetchval(
                "SELECT queue_manager_id FROM pgqueuer WHERE entrypoint = 'settlement.run'"
            )
            return holder != job["queue_manager_id"] and await waiting_on_the_lock()

        await wait_for(picked_again)
        # SIGTERM now: the worker finishes the job it is running, then exits.
        second.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert second.poll() is None
        await db.execute("SELECT pg_advisory_unlock($1)", SETTLEMENT_LOCK)
        assert await asyncio.to_thread(second.wait, 30) == 0

        assert await db.fetchval("SELECT count(*) FROM settlement_runs") == 1
        assert await db.fetchval("SELECT count(*) FROM statements") == 1, await db.fetchval(
            "SELECT summary::text FROM settlement_runs"
        )
        assert await db.fetchval("SELECT count(*) FROM pgqueuer WHERE entrypoint = 'settlement.run'") == 0
        log = (tmp_path / "second.log").read_text()
        assert "worker_stopped" in log and "job_failed" not in log
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        await db.close()
