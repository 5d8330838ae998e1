"""The read pools hand out connections in the order requests asked for them: a request arriving just as a
connection comes back queues behind those already waiting (docs/scaling.md, receipts: without it some buyers
waited twenty times the median)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.core.database import Database, pooled
from tests.conftest import make_settings


async def test_a_connection_given_back_goes_to_the_longest_waiter_not_to_a_late_arrival(
    database_url: str, tmp_path: Path
) -> None:
    pool = await Database(make_settings(database_url, tmp_path)).read_pool(size=1)
    served: list[str] = []
    late: list[asyncio.Task[None]] = []
    holding = asyncio.Event()
    give_back = asyncio.Event()

    async def request(name: str) -> None:
        async with pooled(pool) as db:
            served.append(name)
            await db.fetchval("SELECT 1")
            if name == "first":
                holding.set()
                await give_back.wait()
                # Another request arrives as the connection goes back (asyncpg puts it back from a task of its
                # own, scheduled as this block ends): its first step runs after that task has woken the
                # longest waiter, but before the waiter itself runs.
                asyncio.get_running_loop().call_soon(
                    lambda: late.append(asyncio.create_task(request("late")))
                )

    try:
        first = asyncio.create_task(request("first"))
        await holding.wait()
        waiting = [asyncio.create_task(request(f"waiting-{i}")) for i in range(3)]
        await asyncio.sleep(0.05)  # all three are queued
        give_back.set()
        await asyncio.wait_for(asyncio.gather(first, *waiting), timeout=10)
        await asyncio.wait_for(late[0], timeout=10)
    finally:
        await pool.close()
    assert served == ["first", "waiting-0", "waiting-1", "waiting-2", "late"]
