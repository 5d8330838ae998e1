"""What benchmarks share: a scratch database (bench/receipts.py, bench/transparency.py, the in-process ones), the
app as `g4g serve` builds it, and one request made straight to it as ASGI (bench/receipts_cpu.py,
bench/ingest_cpu.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg

from app.core.database import asyncpg_url
from app.core.migrations import upgrade_to_head

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


async def fetch_value(dsn: str, sql: str) -> object:
    """One statement's first value, on a connection of its own."""
    db = await asyncpg.connect(dsn)
    try:
        return await db.fetchval(sql)
    finally:
        await db.close()


@contextlib.contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A fresh database on `DATABASE_URL`'s server, migrated to head; its plain DSN while in the block, dropped
    after it."""
    server = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    admin_dsn = asyncpg_url(server).replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    asyncio.run(fetch_value(admin_dsn, f'CREATE DATABASE "{name}"'))
    try:
        dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
        upgrade_to_head(asyncpg_url(dsn))
        yield dsn
    finally:
        asyncio.run(fetch_value(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def served_app() -> tuple[Any, Any]:
    """(the app, the app as uvicorn serves it): built by `app_factory` from the environment, as `g4g serve` does,
    behind uvicorn's proxy-headers middleware. Run the app's lifespan around the requests."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from app.main import app_factory

    app = app_factory()
    # uvicorn's ASGI types are narrower than Starlette's.
    return app, ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")  # type: ignore[arg-type]


async def call(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> list[dict[str, Any]]:
    """One request made straight to the ASGI app; the messages it sent back (start, then body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent
