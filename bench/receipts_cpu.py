"""CPU per receipt request, in-process: the app called directly as ASGI, one request after another.

    .venv/bin/python bench/receipts_cpu.py [--orders 5000] [--requests 3000] [--rounds 3]

Loads `--orders` receipts into a fresh database on `DATABASE_URL`'s server as `bench/receipts.py` does, builds the
app as `g4g serve` does (`app_factory`: logging, frozen heap), and for each round times `--requests` page requests
(`GET /r/{token}`, English) and as many JSON ones (`GET /v1/receipts/{token}`) with `time.process_time()`. No HTTP,
no concurrency: the figure is what one request costs this process (its database round trip's client side
included), the quantity that decides how many a core serves. Rounds alternate page and JSON, so a shared machine's
drift shows as spread between rounds. Drops the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.database import asyncpg_url
from app.core.migrations import upgrade_to_head
from bench.receipts import _sql, load

PATHS = {"page": "/r/{}", "JSON": "/v1/receipts/{}"}


async def _call(app: Any, path: str) -> tuple[int, int]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"accept-language", b"en")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], len(sent[1].get("body", b""))


async def measure(args: argparse.Namespace, dsn: str, lookup_key: str, workdir: str) -> None:
    tokens = await load(dsn, args.orders, lookup_key)
    os.environ.update(
        DATABASE_URL=dsn,
        G4G_DATA_KEY=Fernet.generate_key().decode(),
        G4G_LOOKUP_KEY=lookup_key,
        G4G_DATA_DIR=workdir,
        G4G_LOG_LEVEL="warning",
    )
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from app.main import app_factory

    app = app_factory()
    # As uvicorn wraps it (its ASGI types are narrower than Starlette's).
    served = ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")  # type: ignore[arg-type]
    sample = random.Random(7).sample(tokens, min(args.requests, len(tokens)))
    async with app.router.lifespan_context(app):
        for path in PATHS.values():  # warm up: statement caches, templates, the public report
            for token in sample[:200]:
                await _call(served, path.format(token))
        for round_ in range(1, args.rounds + 1):
            for label, path in PATHS.items():
                started = time.process_time()
                for token in sample:
                    status, size = await _call(served, path.format(token))
                    if status != 200:
                        raise SystemExit(f"{label}: status {status}")
                cpu_us = (time.process_time() - started) / len(sample) * 1e6
                print(f"  round {round_}  {label:<5} {cpu_us:7.1f} µs of CPU a request  ({size:,} bytes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin_dsn = asyncpg_url(server).replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"g4g_bench_receipts_cpu_{uuid.uuid4().hex[:8]}"
    asyncio.run(_sql(admin_dsn, f'CREATE DATABASE "{name}"'))
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    lookup_key = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    try:
        upgrade_to_head(asyncpg_url(dsn))
        print(
            f"{args.orders:,} orders with receipt links; {args.requests:,} requests of each kind per round:"
        )
        with tempfile.TemporaryDirectory(prefix="g4g-bench-") as workdir:
            import uvloop

            uvloop.run(measure(args, dsn, lookup_key, workdir))
    finally:
        asyncio.run(_sql(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
