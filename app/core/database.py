"""Engine, sessions and the one-unit-of-work-per-request dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.core.embedded import start_embedded_postgres
from app.core.settings import Settings


def asyncpg_url(url: str) -> str:
    """The SQLAlchemy URL for asyncpg, whatever postgres scheme the operator wrote."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("not a PostgreSQL URL")


_SERVER_SETTINGS = {"application_name": "g4g", "timezone": "UTC"}


class Database:
    """Where the service's data lives: the configured server, or an embedded one started on demand."""

    def __init__(self, settings: Settings) -> None:
        self._embedded: Any = None
        if settings.database_url is not None:
            self.url = asyncpg_url(settings.database_url)
        else:
            self._embedded, self.url = start_embedded_postgres(settings.data_dir)

    def engine(self, *, pool_size: int = 10) -> AsyncEngine:
        return create_async_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=False,
            connect_args={"server_settings": _SERVER_SETTINGS},
        )

    async def read_pool(self, *, size: int = 10) -> asyncpg.Pool:
        """Plain asyncpg connections for requests whose database work is one read statement (quotes). Under a
        burst the engine's pool opens overflow connections and closes them on return, so each burst pays for new
        connections with empty statement caches; this pool queues instead, and its connections stay open (opened
        on first use) with their prepared statements."""
        return await asyncpg.create_pool(
            "postgresql://" + self.url.removeprefix("postgresql+asyncpg://"),
            min_size=0,
            max_size=size,
            server_settings=_SERVER_SETTINGS,
            reset=_session_untouched,
        )

    async def inbox_pool(self, *, size: int) -> asyncpg.Pool:
        """Plain asyncpg connections for the order-webhook inbox, whose few batch statements PostgreSQL would
        otherwise plan afresh on every execution (their custom plans, with each batch's array sizes, look cheaper
        than a generic one; planning the read and the write costs ~0.9 ms per batch). Here each statement keeps one
        generic plan per connection, so whatever runs on these connections must have a safe plan whatever the
        statistics said when it was made: the batch statements are index probes by construction
        (app/donations/repository.py); the rest insert, or read the small rules table by id."""
        return await asyncpg.create_pool(
            "postgresql://" + self.url.removeprefix("postgresql+asyncpg://"),
            min_size=0,
            max_size=size,
            server_settings={**_SERVER_SETTINGS, "plan_cache_mode": "force_generic_plan"},
            reset=_session_untouched,
        )


async def _session_untouched(connection: asyncpg.Connection) -> None:
    """A connection of the read pool goes back as it is: its single read statements set no session state (no SET,
    LISTEN, cursor or advisory lock), so asyncpg's reset statement would cost each request a round trip for
    nothing. (asyncpg still rolls back a transaction left open.)"""


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def _unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed before the response is sent, rolled back on any error."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


# scope="function": the exit code (the commit) runs before the response is sent, so a failed commit
# can never be answered with a 2xx.
SessionDep = Annotated[AsyncSession, Depends(_unit_of_work, scope="function")]


async def _read_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the read pool for a request whose database work is one read statement: no transaction is
    opened or committed around it (a single statement is its own snapshot)."""
    pool: asyncpg.Pool = request.app.state.read_pool
    async with pool.acquire() as connection:
        yield connection


ReadConnectionDep = Annotated[asyncpg.Connection, Depends(_read_connection, scope="function")]


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under a session, inside the session's transaction (for set-based statements).

    SQLAlchemy's asyncpg adapter sends BEGIN only with its own first statement; until then a statement sent on
    the raw connection would run (and release its locks) in autocommit. So make sure the transaction is open."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    assert driver.is_in_transaction()
    return driver
