"""Alembic, driven from code: `g4g migrate`, the readiness check and the tests use the same scripts."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


def migrations_dir() -> Path:
    """`migrations/` beside `app/` in a checkout; `app/migrations/` in an installed wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("migration scripts not found")


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade_to_head(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(connection: AsyncConnection) -> str | None:
    """The schema's revision, read straight from Alembic's table: a readiness probe polled every few seconds must
    not log Alembic's start-up lines each time, as a migration context would."""
    if not (await connection.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))).scalar_one():
        return None
    revision = (await connection.execute(text("SELECT version_num FROM alembic_version LIMIT 1"))).scalar()
    return str(revision) if revision is not None else None
