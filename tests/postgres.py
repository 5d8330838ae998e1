"""The PostgreSQL server the tests run on: `DATABASE_URL`'s server, or an embedded one in a temp dir.

Each test gets its own database, cloned from a template migrated once per run with `alembic upgrade head`."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.core.database import asyncpg_url
from app.core.embedded import start_embedded_postgres


class TestServer:
    __test__ = False

    def __init__(self) -> None:
        self._embedded: Any = None
        configured = os.environ.get("DATABASE_URL")
        if configured:
            self.base_url = asyncpg_url(configured)
            self.kind = "configured"
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="g4g-test-pg-")
            self._embedded, self.base_url = start_embedded_postgres(Path(self._tmp.name))
            self.kind = "embedded"
        # Databases this run creates are named after the configured one, so a run cleans up only its own.
        self.prefix = (self._database_name(self.base_url) + "_" + uuid.uuid4().hex[:6])[:40]
        self.template = f"{self.prefix}_tpl"

    @staticmethod
    def _database_name(url: str) -> str:
        return urlsplit(url).path.lstrip("/") or "postgres"

    def url_for(self, database: str) -> str:
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    def dsn_for(self, database: str) -> str:
        return self.url_for(database).replace("postgresql+asyncpg://", "postgresql://", 1)

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn_for(self._database_name(self.base_url)))

    async def create_database(self, name: str, *, template: str | None = None) -> str:
        connection = await self.admin()
        try:
            clause = f' TEMPLATE "{template}"' if template else ""
            await connection.execute(f'CREATE DATABASE "{name}"{clause}')
        finally:
            await connection.close()
        return self.url_for(name)

    async def drop_database(self, name: str) -> None:
        connection = await self.admin()
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    def close(self) -> None:
        if self._embedded is not None:
            self._embedded.cleanup()  # stops the server
            self._embedded = None
            self._tmp.cleanup()
