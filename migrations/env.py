"""Alembic environment: async engine on asyncpg; the URL comes from the caller, `DATABASE_URL`, or the
embedded server."""

from __future__ import annotations

import asyncio
import time

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.models import Base

config = context.config
target_metadata = Base.metadata

# Two replicas starting at once both run `g4g migrate`: the second waits for the first, then finds the schema at
# head and does nothing (without the lock, both create the same types and one fails on a unique violation). A
# session lock, not a transaction's: a migration that builds an index CONCURRENTLY commits part way
# (`autocommit_block`), and the lock must outlast that commit. Let go of when done (and with the connection).
MIGRATION_LOCK = 0x6734_676D_6967_7261


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return str(url)
    from app.core.database import Database, asyncpg_url
    from app.core.settings import get_settings

    settings = get_settings()
    if settings.transaction_pooling and settings.database_listen_url is not None:
        # Behind a transaction pooler, straight to the server: the migration lock is a session's (a pooler would
        # leave it held on a server connection it hands to others, and the next `g4g migrate` would wait forever).
        return asyncpg_url(settings.database_listen_url)
    database = Database(settings)
    config.attributes["embedded"] = database  # keep the embedded server alive while migrating
    return database.url


def _not_ours(table: str) -> bool:
    return table.startswith("pgqueuer") or table in _partitions


# The partitions of partitioned tables (months made by a job, `app/core/partitions.py`): the model is the parent.
_partitions: set[str] = set()


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """The job queue's tables (pgqueuer's own schema, created from its SQL by a migration) and the partitions of
    partitioned tables are not our models: autogenerate leaves them alone."""
    if type_ == "table" and name is not None and _not_ours(name):
        return False
    # A foreign key to a partitioned table shows, when reflected, one more per partition it references.
    referred = getattr(obj, "referred_table", None)
    if type_ == "foreign_key_constraint" and referred is not None and _not_ours(str(referred.name)):
        return False
    table = getattr(obj, "table", None)
    return not (table is not None and _not_ours(str(getattr(table, "name", ""))))


def _lock(connection: Connection) -> None:
    """Take the migration lock, trying twice a second between short transactions: a migrator waiting inside a
    transaction would hold a snapshot that the other's `CREATE INDEX CONCURRENTLY` waits for (a deadlock)."""
    while True:
        taken = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK}
        ).scalar()
        connection.commit()
        if taken:
            return
        time.sleep(0.5)


def _run(connection: Connection) -> None:
    _lock(connection)
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=_include_object,
    )
    with context.begin_transaction():
        _partitions.update(
            connection.execute(text("SELECT relname FROM pg_class WHERE relispartition")).scalars()
        )
        context.run_migrations()
    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
    connection.commit()


async def _run_online() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
