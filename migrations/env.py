"""Alembic environment: async engine on asyncpg; the URL comes from the caller, `DATABASE_URL`, or the
embedded server."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.models import Base

config = context.config
target_metadata = Base.metadata

# Two replicas starting at once both run `g4g migrate`: the second waits for the first, then finds the schema at
# head and does nothing (without the lock, both create the same types and one fails on a unique violation).
MIGRATION_LOCK = 0x6734_676D_6967_7261


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return str(url)
    from app.core.database import Database
    from app.core.settings import get_settings

    database = Database(get_settings())
    config.attributes["embedded"] = database  # keep the embedded server alive while migrating
    return database.url


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """The job queue's tables (pgqueuer's own schema, created from its SQL by a migration) are not our models:
    autogenerate leaves them alone."""
    if type_ == "table" and name is not None and name.startswith("pgqueuer"):
        return False
    table = getattr(obj, "table", None)
    return not (table is not None and str(getattr(table, "name", "")).startswith("pgqueuer"))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=_include_object,
    )
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


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
