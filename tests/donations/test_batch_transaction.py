"""A batch's transaction begins holding its natural keys' advisory locks, sent with BEGIN in one round trip
(`repository.transaction_holding`): what another transaction sees of them, and what a failure leaves behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from app.core.database import Database
from app.donations import repository
from tests.conftest import make_settings

SHARED, EXCLUSIVE = True, False
KEYS = [(0, 41, SHARED), (1, -9_000_000_000_000_000_001, EXCLUSIVE), (1, 7, EXCLUSIVE)]


async def _can_lock(other: asyncpg.Connection, key: int, *, shared: bool) -> bool:
    """Whether another session could take the lock now (and then lets go of it)."""
    suffix = "_shared" if shared else ""
    taken = await other.fetchval(f"SELECT pg_try_advisory_lock{suffix}($1)", key)
    if taken:
        await other.fetchval(f"SELECT pg_advisory_unlock{suffix}($1)", key)
    return bool(taken)


@pytest.fixture
async def connections(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    """Two of the inbox's own connections: the batch's, and another session looking at its locks."""
    pool = await Database(make_settings(database_url, tmp_path)).inbox_pool(size=2)
    try:
        async with pool.acquire() as db, pool.acquire() as other:
            yield db, other
    finally:
        await pool.close()


async def test_the_locks_are_held_until_commit_and_the_work_commits(
    connections: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    db, other = connections
    await db.execute("CREATE TEMP TABLE IF NOT EXISTS t (x int)")
    async with repository.transaction_holding(db, KEYS):
        assert db.is_in_transaction()
        await db.execute("INSERT INTO t VALUES (1)")
        # Exclusive keys: nobody else gets them; the shared one: others may share it, not take it alone.
        assert not await _can_lock(other, KEYS[1][1], shared=True)
        assert not await _can_lock(other, KEYS[2][1], shared=False)
        assert await _can_lock(other, KEYS[0][1], shared=True)
        assert not await _can_lock(other, KEYS[0][1], shared=False)
    assert not db.is_in_transaction()
    assert await db.fetchval("SELECT count(*) FROM t") == 1
    for _, key, _ in KEYS:
        assert await _can_lock(other, key, shared=False)


async def test_a_failure_rolls_back_and_lets_go_of_the_locks(
    connections: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    db, other = connections
    await db.execute("CREATE TEMP TABLE IF NOT EXISTS t (x int)")
    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
        async with repository.transaction_holding(db, KEYS):
            await db.execute("INSERT INTO t VALUES (1)")
            await db.execute("SELECT 1 / 0")
    assert not db.is_in_transaction()
    assert await db.fetchval("SELECT count(*) FROM t") == 0
    for _, key, _ in KEYS:
        assert await _can_lock(other, key, shared=False)
    async with repository.transaction_holding(db, []):  # no keys: a plain BEGIN
        assert db.is_in_transaction()


async def test_a_lock_that_cannot_be_had_leaves_no_transaction_open(
    connections: tuple[asyncpg.Connection, asyncpg.Connection],
) -> None:
    db, other = connections
    await other.execute("SELECT pg_advisory_lock($1)", KEYS[2][1])
    await db.execute("SET lock_timeout = '50ms'")
    with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
        async with repository.transaction_holding(db, KEYS):
            pytest.fail("the block ran without its locks")
    assert not db.is_in_transaction()
    # The keys taken before the one that timed out were let go with the transaction.
    assert await _can_lock(other, KEYS[1][1], shared=False)
    await other.execute("SELECT pg_advisory_unlock($1)", KEYS[2][1])
    await db.execute("RESET lock_timeout")
