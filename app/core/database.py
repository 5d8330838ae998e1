"""Engine, sessions and the one-unit-of-work-per-request dependency."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import structlog
from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.core.embedded import start_embedded_postgres
from app.core.settings import Settings

log = structlog.get_logger("g4g.database")


def asyncpg_url(url: str) -> str:
    """The SQLAlchemy URL for asyncpg, whatever postgres scheme the operator wrote. libpq's multi-host form
    (`postgresql://u@h1:5432,h2:5432/db?target_session_attrs=read-write`, SPEC §17) becomes SQLAlchemy's (one
    `host=h:port` query parameter per host), which its asyncpg dialect hands to asyncpg as lists."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+asyncpg://" + url[len(prefix) :]
            break
    else:
        raise ValueError("not a PostgreSQL URL")
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return url
    query = [("host", host) for host in hosts.split(",")] + parse_qsl(parts.query)
    return urlunsplit(parts._replace(netloc=userinfo + at, query=urlencode(query, safe=":/")))


def driver_dsn(url: str) -> str:
    """asyncpg's own DSN for a SQLAlchemy-style URL: several `host=` parameters back into libpq's multi-host
    form (asyncpg would keep only the last of them)."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query)
    hosts = [value for name, value in query if name == "host"]
    userinfo, at, netloc_host = parts.netloc.rpartition("@")
    if len(hosts) < 2 or netloc_host:
        return dsn
    rest = [(name, value) for name, value in query if name != "host"]
    return urlunsplit(
        parts._replace(netloc=userinfo + at + ",".join(hosts), query=urlencode(rest, safe=":/"))
    )


# Failures that mean "no usable primary right now" (a failover, a restart, a network cut), not a bug: requests
# meeting one are answered 503 with `Retry-After` (SPEC §17), and pools drop the connection it happened on.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # 08xxx: the connection broke, was refused, or is gone
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: the server is starting up or shutting down
    asyncpg.exceptions.AdminShutdownError,  # 57P01: fast shutdown (a switchover)
    asyncpg.exceptions.CrashShutdownError,  # 57P02: another backend crashed
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: a write reached a server that is now a standby
    asyncpg.exceptions.TargetServerAttributeNotMatched,  # no listed host accepts writes (yet)
    ConnectionError,  # refused, reset, broken pipe
    TimeoutError,  # connecting took longer than CONNECT_TIMEOUT_SECONDS
)

# How long opening a connection may take before it counts as a failure (asyncpg's default is 60 s, longer than
# any client waits): with several hosts, each is tried in turn within this bound.
CONNECT_TIMEOUT_SECONDS = 5.0


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it, however SQLAlchemy or an exception group wrapped it) says the database
    cannot be reached or is not the primary right now."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _UNAVAILABLE):
            return True
        if isinstance(current, asyncpg.InterfaceError) and "connection is closed" in str(current):
            return True
        if isinstance(current, asyncpg.InternalClientError) and "cannot switch to state" in str(current):
            # A pooled connection the server dropped with a FATAL error (postmaster gone) before asyncpg saw it
            # close: nothing was sent on it; it must be dropped like a closed one.
            return True
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        linked = (
            current.__cause__,
            current.__context__,
            getattr(current, "orig", None),
        )  # orig: SQLAlchemy's
        pending.extend(each for each in linked if isinstance(each, BaseException))
    return False


_SERVER_SETTINGS = {"application_name": "g4g", "timezone": "UTC"}
# For connections whose statements are all index probes: PostgreSQL keeps one generic plan per prepared statement
# instead of planning afresh each time it judges a custom plan cheaper (a receipt's read: ~0.1–0.2 ms of planning
# for ~0.2 ms of execution). Not behind a transaction pooler, where no statement is kept.
_PROBES = {**_SERVER_SETTINGS, "plan_cache_mode": "force_generic_plan"}


def _unique_statement_name() -> str:
    return f"__g4g_{uuid.uuid4().hex}__"


def asyncpg_options(settings: Settings) -> dict[str, Any]:
    """asyncpg's connection options for `DATABASE_URL`: behind a pooler in transaction mode
    (`G4G_TRANSACTION_POOLING`), no statement cache: asyncpg then sends each statement unnamed, parsed and run in
    one exchange, which any server connection can take."""
    return {"statement_cache_size": 0} if settings.transaction_pooling else {}


def sqlalchemy_connect_args(settings: Settings) -> dict[str, Any]:
    """`connect_args` for a SQLAlchemy engine on `DATABASE_URL`. SQLAlchemy prepares every statement by name
    inside its transaction; behind a transaction pooler its cache is off and the names are unique, so a
    statement never meets another client's of the same name left on a server connection."""
    args: dict[str, Any] = {"server_settings": _SERVER_SETTINGS, "timeout": CONNECT_TIMEOUT_SECONDS}
    if settings.transaction_pooling:
        args |= {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    return args


def drop_connections_when_unavailable(engine: AsyncEngine) -> AsyncEngine:
    """Make SQLAlchemy treat "the database is unavailable" (a failover) as a disconnect: the connection it
    happened on, and every other connection of the pool opened before it, are replaced rather than reused. (By
    itself it only does so for a connection already closed; one killed mid-statement may not be, yet.)"""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _unavailable_is_a_disconnect(context: ExceptionContext) -> None:
        if database_unavailable(context.original_exception):
            context.is_disconnect = True

    return engine


class FairPool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no types
    """An asyncpg pool that hands out its connections first come, first served (through `pooled`).

    asyncpg keeps its free connections in an `asyncio.Queue`: a connection coming back wakes the longest waiter,
    but a request arriving before that waiter has run finds the connection free and takes it, and the waiter goes
    to the back of the line. Under a sustained queue (32 buyers opening receipts on a pool of 10) some requests
    waited twenty times the median that way (docs/scaling.md). A semaphore of the pool's size in front of it
    queues everyone in arrival order, so the pool itself never has a waiter to pass over."""

    __slots__ = ("turns",)

    def __init__(self, dsn: str, *, max_size: int, **options: Any) -> None:
        super().__init__(
            dsn,
            max_size=max_size,
            **{
                "init_size": None,
                "max_queries": 50_000,  # asyncpg's defaults, as `asyncpg.create_pool` passes them
                "max_inactive_connection_lifetime": 300.0,
                "loop": None,
                "connection_class": asyncpg.Connection,
                "record_class": asyncpg.Record,
                **options,
            },
        )
        self.turns = asyncio.Semaphore(max_size)


async def fair_pool(dsn: str, **options: Any) -> FairPool:
    pool = FairPool(dsn, **options)
    await pool  # opens `min_size` connections, as `asyncpg.create_pool` does
    return pool


@contextlib.asynccontextmanager
async def pooled(pool: FairPool) -> AsyncIterator[asyncpg.Connection]:
    """A connection of a pool, in turn. One whose statement failed because the database went away is closed
    rather than put back: asyncpg may not have noticed yet, and would hand it out again mid-error."""
    async with pool.turns, pool.acquire() as connection:
        try:
            yield connection
        except Exception as exc:
            if database_unavailable(exc):
                connection.terminate()
            raise


class Database:
    """Where the service's data lives: the configured server, or an embedded one started on demand."""

    def __init__(self, settings: Settings) -> None:
        self._embedded: Any = None
        if settings.database_url is not None:
            self.url = asyncpg_url(settings.database_url)
        else:
            self._embedded, self.url = start_embedded_postgres(settings.data_dir)
        self.dsn = driver_dsn(self.url)
        self._settings = settings

    def engine(self, *, pool_size: int = 10) -> AsyncEngine:
        engine = create_async_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No ping on checkout (a round trip per request): a connection found broken is dropped by SQLAlchemy
            # when its error arrives (a primary's connections all break when it stops being primary).
            pool_pre_ping=False,
            connect_args=sqlalchemy_connect_args(self._settings),
        )
        return drop_connections_when_unavailable(engine)

    async def read_pool(self, *, size: int = 10) -> FairPool:
        """Plain asyncpg connections for requests whose database work is one read statement (quotes). Under a
        burst the engine's pool opens overflow connections and closes them on return, so each burst pays for new
        connections with empty statement caches; this pool queues instead, and its connections stay open (opened
        on first use) with their prepared statements, and each statement with one generic plan (`_PROBES`): every
        statement run here is an index probe (a quote's merchant and rule, a receipt by its token's hash)."""
        return await fair_pool(
            self.dsn,
            min_size=0,
            max_size=size,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings=_SERVER_SETTINGS if self._settings.transaction_pooling else _PROBES,
            reset=_session_untouched,
            **asyncpg_options(self._settings),
        )

    async def inbox_pool(self, *, size: int) -> FairPool:
        """Plain asyncpg connections for the order-webhook inbox, whose few batch statements PostgreSQL would
        otherwise plan afresh on every execution (their custom plans, with each batch's array sizes, look cheaper
        than a generic one; planning the read and the write costs ~0.9 ms per batch). Here each statement keeps one
        generic plan per connection, so whatever runs on these connections must have a safe plan whatever the
        statistics said when it was made: the batch statements are index probes by construction
        (app/donations/repository.py); the rest insert, or read the small rules table by id.

        Behind a transaction pooler there is no statement kept, hence no plan to keep either (and PgBouncer
        refuses a startup setting it does not track): the statements are planned on each execution."""
        pooling = self._settings.transaction_pooling
        return await fair_pool(
            self.dsn,
            min_size=0,
            max_size=size,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings=_SERVER_SETTINGS if pooling else _PROBES,
            reset=_session_untouched,
            **asyncpg_options(self._settings),
        )


async def _session_untouched(connection: asyncpg.Connection) -> None:
    """A connection of the read pool goes back as it is: its single read statements set no session state (no SET,
    LISTEN, cursor or advisory lock), so asyncpg's reset statement would cost each request a round trip for
    nothing. (asyncpg still rolls back a transaction left open.)"""


# A standby's replay lag in seconds: 0 when it has replayed all it received (or is a primary); None when it
# streams from nobody (its figures could be arbitrarily old). `hidden`: the role can't see the WAL receiver's
# state (PostgreSQL shows it only to roles with pg_read_all_stats, e.g. through pg_monitor), so a streaming
# replica would look like one streaming from nobody.
_REPLICA_LAG = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN NOT EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN NULL
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
    ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
END AS lag,
EXISTS (SELECT FROM pg_stat_wal_receiver WHERE pid IS NOT NULL AND status IS NULL) AS hidden
"""


class ReadReplica:
    """`DATABASE_READ_URL`: a streaming replica for reads that can be a little behind. Its lag is checked at most
    once a second (shared by every request); past `max_lag_seconds`, or unreachable, the primary answers."""

    CHECK_EVERY_SECONDS = 1.0

    def __init__(self, url: str, *, max_lag_seconds: float, pool_size: int) -> None:
        self.engine = drop_connections_when_unavailable(
            create_async_engine(
                asyncpg_url(url),
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"server_settings": _SERVER_SETTINGS, "timeout": CONNECT_TIMEOUT_SECONDS},
            )
        )
        self.sessionmaker = make_sessionmaker(self.engine)
        self._dsn = driver_dsn(asyncpg_url(url))
        self._pool_size = pool_size
        # Plain asyncpg connections for single-statement reads (receipts), like the primary's read pool.
        self.pool: FairPool | None = None
        self.max_lag_seconds = max_lag_seconds
        self._usable = False
        self._checked_at = float("-inf")
        self._warned_hidden = False

    async def open(self) -> ReadReplica:
        self.pool = await fair_pool(
            self._dsn,
            min_size=0,
            max_size=self._pool_size,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings=_PROBES,  # receipts' reads, as on the primary's read pool
            reset=_session_untouched,
        )
        return self

    async def usable(self) -> bool:
        if time.monotonic() - self._checked_at < self.CHECK_EVERY_SECONDS:
            return self._usable
        self._checked_at = time.monotonic()
        try:
            async with self.engine.connect() as connection:
                row = (await connection.exec_driver_sql(_REPLICA_LAG)).mappings().one()
            lag, hidden = row["lag"], row["hidden"]
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            lag, hidden = None, False
        if hidden and not self._warned_hidden:
            self._warned_hidden = True
            log.warning(
                "replica.lag_unknown",
                reason="DATABASE_READ_URL's role can't see pg_stat_wal_receiver; grant it pg_monitor",
                effect="the primary answers every read",
            )
        self._usable = lag is not None and lag <= self.max_lag_seconds
        return self._usable

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        await self.engine.dispose()


async def usable_replica(state: Any) -> ReadReplica | None:
    """The app's replica (`DATABASE_READ_URL`) if it has one and it is within its lag bound right now."""
    replica: ReadReplica | None = getattr(state, "replica", None)
    return replica if replica is not None and await replica.usable() else None


async def reading_sessionmaker(state: Any) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads that may be a little behind: on the replica while it is within its lag bound, else
    on the primary."""
    replica = await usable_replica(state)
    primary: async_sessionmaker[AsyncSession] = state.sessionmaker
    return replica.sessionmaker if replica is not None else primary


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


async def _report_session(request: Request) -> AsyncIterator[AsyncSession]:
    """For a report or public page that only reads and may be a little behind: a session on the replica
    (`DATABASE_READ_URL`) while its lag is within bounds, else on the primary."""
    sessionmaker = await reading_sessionmaker(request.app.state)
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


ReportSessionDep = Annotated[AsyncSession, Depends(_report_session, scope="function")]


async def _read_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the read pool for a request whose database work is one read statement: no transaction is
    opened or committed around it (a single statement is its own snapshot)."""
    pool: FairPool = request.app.state.read_pool
    async with pooled(pool) as connection:
        yield connection


ReadConnectionDep = Annotated[asyncpg.Connection, Depends(_read_connection, scope="function")]


def public_read_pool(state: Any, replica: ReadReplica | None) -> FairPool:
    pool: FairPool = replica.pool if replica is not None and replica.pool is not None else state.read_pool
    return pool


async def _public_read_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """Like `_read_connection`, for public pages' single-statement reads that may be a little behind: on the
    replica while it is within its lag bound, else on the primary."""
    pool = public_read_pool(request.app.state, await usable_replica(request.app.state))
    request.state.read_on_replica = pool is not request.app.state.read_pool
    async with pooled(pool) as connection:
        yield connection


PublicReadConnectionDep = Annotated[asyncpg.Connection, Depends(_public_read_connection, scope="function")]


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
